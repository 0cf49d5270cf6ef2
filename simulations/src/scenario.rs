//! Scenario files: the world, the attack and the algorithms to compare, as TOML.

use palisade_consensus::ConsensusConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::SimError;

/// One scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in output file names.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Part of the fast set that the baseline regression test runs.
    #[serde(default)]
    pub fast: bool,
    /// The honest world.
    #[serde(default)]
    pub world: WorldParams,
    /// The attack, if any.
    #[serde(default)]
    pub attack: AttackParams,
    /// Which algorithms run, and their parameters.
    #[serde(default)]
    pub algorithms: AlgorithmParams,
    /// The attacker-cost search and the budget curve.
    #[serde(default)]
    pub cost: CostParams,
}

/// The honest world: sensors, attackers, benign traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldParams {
    /// Honest sensors.
    pub honest_sensors: usize,
    /// ASNs they are spread over (Zipf).
    pub asns: usize,
    /// Zipf exponent of sensors over ASNs.
    pub asn_zipf: f64,
    /// Measured window, hours.
    pub hours: f64,
    /// Traffic before the measured window (trust builds up), hours.
    pub warmup_hours: f64,
    /// Verified presence of honest sensors before the warm-up, days.
    pub sensor_age_days: f64,
    /// New real attackers per day.
    pub attackers_per_day: f64,
    /// Mean sensors a mass-scanning attacker hits over its life (DShield: 33.8).
    pub targets_mean: f64,
    /// Log-space sigma of that count (heavy tail).
    pub targets_sigma: f64,
    /// Mean active life of an attacker, days (DShield: 10.8).
    pub lifetime_days_mean: f64,
    /// Fraction of its targets an attacker hits in its first scanning wave.
    pub first_wave_fraction: f64,
    /// Median spread of a wave, minutes (log-normal, sigma 1).
    pub wave_spread_minutes: f64,
    /// Fraction of attackers that target only 1 to 5 sensors.
    pub targeted_fraction: f64,
    /// Probability that a hit sensor detects and reports the attacker.
    pub detection_rate: f64,
    /// Median detection delay, seconds (log-normal, sigma 1).
    pub detection_delay_secs: f64,
    /// Shared benign IPs that honest sensors may falsely report (Zipf popularity).
    pub benign_ips: usize,
    /// Zipf exponent of that popularity.
    pub benign_zipf: f64,
    /// Fraction of false reports that hit a shared benign IP (the rest hit one of the
    /// sensor's own 50 clients).
    pub shared_false_report_fraction: f64,
    /// Independent false reports per honest sensor per day.
    pub false_reports_per_sensor_day: f64,
    /// Search-engine crawlers (allowlisted).
    pub crawlers: usize,
    /// CDN edge IPs (allowlisted).
    pub cdn_edges: usize,
    /// Competitors' servers and tenants' own services (protected).
    pub competitors: usize,
    /// Probability per crawler per day that it trips a scenario on many honest sensors.
    pub crawler_fp_daily_prob: f64,
    /// Fraction of honest sensors it trips when it does.
    pub crawler_fp_sensor_fraction: f64,
    /// A real attacker counts for recall when honest sensors of at least this many
    /// distinct ASNs reported it within the window.
    pub eligible_min_asns: usize,
    /// Minutes between `tick`s.
    pub tick_minutes: f64,
    /// Hours between sensor heartbeats.
    pub heartbeat_hours: f64,
}

impl Default for WorldParams {
    fn default() -> Self {
        WorldParams {
            honest_sensors: 1000,
            asns: 300,
            asn_zipf: 1.1,
            hours: 24.0,
            warmup_hours: 24.0,
            sensor_age_days: 60.0,
            attackers_per_day: 2000.0,
            targets_mean: 34.0,
            targets_sigma: 1.0,
            lifetime_days_mean: 10.8,
            first_wave_fraction: 0.6,
            wave_spread_minutes: 10.0,
            targeted_fraction: 0.2,
            detection_rate: 0.9,
            detection_delay_secs: 30.0,
            benign_ips: 100_000,
            benign_zipf: 1.0,
            shared_false_report_fraction: 0.1,
            false_reports_per_sensor_day: 0.2,
            crawlers: 50,
            cdn_edges: 200,
            competitors: 20,
            crawler_fp_daily_prob: 0.3,
            crawler_fp_sensor_fraction: 0.05,
            eligible_min_asns: 15,
            tick_minutes: 30.0,
            heartbeat_hours: 6.0,
        }
    }
}

/// Kinds of attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// No attack: the honest baseline.
    None,
    /// Sybil sensors report victims.
    Sybil,
    /// Sleepers build trust, then report victims.
    Sleeper,
    /// Sybils re-enrol with new identities every `churn_minutes`.
    Churn,
    /// Sybils try to keep a real botnet off the list.
    Suppression,
}

/// How sleepers earn trust before they strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Farming {
    /// They do nothing but stay connected (age only).
    None,
    /// They are real sensors and report the attackers that hit them, honestly.
    Honest,
    /// They report IPs after many others did (copying the list).
    CopyList,
}

/// How many victims of each class the attacker wants listed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Victims {
    /// CDN edges (allowlisted).
    pub cdn: usize,
    /// Search-engine crawlers (allowlisted).
    pub crawler: usize,
    /// Competitors (protected).
    pub competitor: usize,
    /// Ordinary benign servers (no protection).
    pub ordinary: usize,
}

impl Default for Victims {
    fn default() -> Self {
        Victims { cdn: 5, crawler: 5, competitor: 5, ordinary: 20 }
    }
}

/// The attack.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttackParams {
    /// What the attacker does.
    pub kind: AttackKind,
    /// Attacker sensors (at any one time).
    pub sensors: usize,
    /// ASNs they are spread over.
    pub asns: usize,
    /// Use the largest honest ASNs (hosting providers everyone uses) instead of own ones.
    pub share_honest_asns: bool,
    /// Verified presence of the attacker sensors before the warm-up, days (0: fresh).
    pub age_days: f64,
    /// How sleepers earn trust.
    pub farming: Farming,
    /// Victims to get listed.
    pub victims: Victims,
    /// When the strike starts, hours into the measured window.
    pub start_hour: f64,
    /// Minutes between repeated reports of each victim.
    pub repeat_minutes: f64,
    /// Identity churn period, minutes.
    pub churn_minutes: f64,
    /// Real attackers the suppressor protects (its own botnet).
    pub botnet: usize,
    /// Junk IPs per suppressing sensor per hour (to exhaust rate budgets).
    pub junk_per_sensor_hour: f64,
}

impl Default for AttackParams {
    fn default() -> Self {
        AttackParams {
            kind: AttackKind::None,
            sensors: 0,
            asns: 1,
            share_honest_asns: false,
            age_days: 0.0,
            farming: Farming::None,
            victims: Victims::default(),
            start_hour: 2.0,
            repeat_minutes: 360.0,
            churn_minutes: 60.0,
            botnet: 0,
            junk_per_sensor_hour: 0.0,
        }
    }
}

/// Which algorithms to compare.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlgorithmParams {
    /// Names to run: `naive`, `abuseipdb`, `palisade`, and ablations `palisade-no-<defence>`
    /// (`group-cap`, `trust`, `novelty`, `min-groups`, `rate-limit`, `allowlist`, `decay`).
    /// Empty: all of them.
    pub run: Vec<String>,
    /// Distinct reporters the naive rule needs.
    pub naive_reporters: usize,
    /// Window of the naive rule, hours.
    pub naive_window_hours: f64,
    /// The AbuseIPDB-style score reaches 100% at this many (decayed) distinct reporters.
    pub abuse_full_reporters: f64,
    /// Its listing threshold, percent (AbuseIPDB recommends 75-100).
    pub abuse_threshold: f64,
    /// Half-life of its report weights, hours.
    pub abuse_half_life_hours: f64,
    /// Palisade's configuration (defaults when absent).
    pub palisade: ConsensusConfig,
}

impl Default for AlgorithmParams {
    fn default() -> Self {
        AlgorithmParams {
            run: Vec::new(),
            naive_reporters: 5,
            naive_window_hours: 24.0,
            abuse_full_reporters: 20.0,
            abuse_threshold: 75.0,
            abuse_half_life_hours: 24.0,
            palisade: ConsensusConfig::default(),
        }
    }
}

/// Attacker-cost search and budget curve.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CostParams {
    /// Run them at all.
    pub enabled: bool,
    /// Most ASNs the search tries.
    pub max_asns: usize,
    /// Most sensors per ASN in the search.
    pub sensors_per_asn: usize,
    /// Sensors per ASN on the curve (few, so that whether a network holds a trusted
    /// sensor is a matter of chance).
    pub curve_sensors_per_asn: usize,
    /// Budgets (ASNs) on the curve's x axis.
    pub budgets: Vec<usize>,
    /// Trials per point of the curve.
    pub trials: usize,
}

impl Default for CostParams {
    fn default() -> Self {
        CostParams {
            enabled: true,
            max_asns: 200,
            sensors_per_asn: 10,
            curve_sensors_per_asn: 3,
            budgets: vec![1, 2, 3, 5, 8, 10, 12, 15, 20, 30, 40, 50, 60, 80, 100],
            trials: 20,
        }
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Io(path.display().to_string(), e))?;
        let scenario: Scenario = toml::from_str(&text)
            .map_err(|e| SimError::Scenario(path.display().to_string(), e.to_string()))?;
        scenario.validate().map_err(|m| SimError::Scenario(path.display().to_string(), m))?;
        Ok(scenario)
    }

    /// Checks values a TOML schema cannot.
    pub fn validate(&self) -> Result<(), String> {
        let w = &self.world;
        if w.honest_sensors == 0 || w.asns == 0 {
            return Err("world.honest_sensors and world.asns must be at least 1".into());
        }
        if !(w.hours > 0.0 && w.tick_minutes > 0.0 && w.heartbeat_hours > 0.0 && w.warmup_hours >= 0.0) {
            return Err("world.hours, world.tick_minutes and world.heartbeat_hours must be positive".into());
        }
        if self.attack.kind != AttackKind::None && (self.attack.sensors == 0 || self.attack.asns == 0) {
            return Err("attack.sensors and attack.asns must be at least 1 when attack.kind is set".into());
        }
        if self.attack.repeat_minutes <= 0.0 || self.attack.churn_minutes <= 0.0 {
            return Err("attack.repeat_minutes and attack.churn_minutes must be positive".into());
        }
        self.algorithms.palisade.validate().map_err(|e| format!("algorithms.palisade: {e}"))?;
        for name in &self.algorithms.run {
            if crate::algorithms::AlgoSpec::parse(name, &self.algorithms).is_none() {
                return Err(format!("algorithms.run: unknown algorithm {name:?}"));
            }
        }
        Ok(())
    }
}
