//! Every tunable of the consensus, in one serde tree with named, documented defaults.

use serde::{Deserialize, Serialize};

/// Which defences are on. All are on by default; the simulations switch one off at a
/// time to measure what it contributes. A production tier has no reason to turn any off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defences {
    /// Aggregate sensors per network group (ASN or organisation) and cap each group's
    /// contribution. Off: every sensor is its own group.
    pub group_cap: bool,
    /// Weight sensors by trust. Off: every sensor has trust 1.
    pub trust: bool,
    /// Credit only reports that were novel when made and later corroborated. Off: every
    /// report on an IP that ends up listed counts as corroborated, copies included.
    pub novelty_credit: bool,
    /// Require `min_groups` distinct groups. Off: one group is enough.
    pub min_groups: bool,
    /// Rate-limit the new IPs a sensor (and a group's unproven sensors) may report.
    pub rate_limit: bool,
    /// Drop reports on allowlisted IPs and demand more for protected ones.
    pub allowlist: bool,
    /// Decay reports with age. Off: a report keeps full weight until it expires.
    pub decay: bool,
}

impl Default for Defences {
    fn default() -> Self {
        Defences {
            group_cap: true,
            trust: true,
            novelty_credit: true,
            min_groups: true,
            rate_limit: true,
            allowlist: true,
            decay: true,
        }
    }
}

/// All parameters of [`crate::Consensus`]. Durations are in seconds.
///
/// The defaults were chosen with the `palisade-sim` scenarios (see `ALGORITHM.md`); each
/// field says what it trades.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusConfig {
    /// Score an IP needs to be listed. Default 6.0: about ten groups of honest, proven
    /// sensors, or six saturated groups.
    pub list_threshold: f64,
    /// Distinct groups whose contribution is at least `min_group_contribution` an IP
    /// needs to be listed. Default 12: more networks than the cheap "10 cloud providers"
    /// attacker of the reference notes can rent.
    pub min_groups: u32,
    /// A group counts towards `min_groups` only above this contribution. Default 0.1:
    /// a group of brand-new sensors (trust ~0.02) does not count at all.
    pub min_group_contribution: f64,
    /// Listed IPs stay listed while their score is at least this fraction of
    /// `list_threshold` (hysteresis). Default 0.5.
    pub delist_ratio: f64,
    /// Most one group can add to a score. Default 1.0.
    pub group_cap: f64,
    /// How much more than its single most trusted member a group may contribute, as a
    /// fraction (0.5 = 50% more). Default 0.5: many low-trust sensors in one network
    /// never add up to one trusted sensor.
    pub group_member_bonus: f64,
    /// Stricter rules for protected IPs (services tenants registered, infrastructure not
    /// on the hard allowlist): score needed. Default 30.0 (fifty proven groups).
    pub protected_threshold: f64,
    /// Distinct groups needed for a protected IP. Default 50.
    pub protected_min_groups: u32,
    /// Half-life of a report's weight, seconds. Default 12 h.
    pub report_half_life_secs: u64,
    /// A report is forgotten after this long, seconds. Default 48 h (blocklist.de's TTL).
    pub report_ttl_secs: u64,
    /// Trust of a sensor seen for the first time. Default 0.02.
    pub new_sensor_trust: f64,
    /// Verified time at a stable address after which the age part of trust is full,
    /// seconds. Default 30 days.
    pub trust_ramp_secs: u64,
    /// A sensor unseen for longer than this, seconds, restarts its verified age when it
    /// returns. Default 24 h.
    pub max_presence_gap_secs: u64,
    /// Prior corroborated reports of a new sensor (Beta prior alpha). Default 1.
    pub reliability_prior_confirmed: f64,
    /// Prior unconfirmed reports of a new sensor (Beta prior beta). Default 19: a new
    /// sensor starts at reliability 0.05, so age alone earns a tenth of full trust.
    pub reliability_prior_unconfirmed: f64,
    /// Reliability at which the reliability part of trust is full. Default 0.5: honest
    /// sensors also see attackers nobody else sees.
    pub reliability_target: f64,
    /// Half-life of a sensor's corroboration record, seconds. Default 30 days: a sensor
    /// that turns bad loses its standing.
    pub reliability_half_life_secs: u64,
    /// Weight of confidence 0..=3 reports. Default [0.25, 0.5, 0.8, 1.0].
    pub confidence_weights: [f64; 4],
    /// Weight of a report by how easily its scenario is triggered by a spoofed source:
    /// spoofable (SYN/UDP scans), handshake (TCP established), application (payload
    /// evidence). Default [0.2, 0.7, 1.0].
    pub scenario_weights: [f64; 3],
    /// New IPs one sensor may report per hour. Default 120.
    pub sensor_new_ips_per_hour: f64,
    /// Burst of new IPs one sensor may report. Default 200.
    pub sensor_new_ip_burst: f64,
    /// New IPs the unproven sensors (trust below `proven_trust`) of one group may report
    /// per hour, together. Default 1,000: bounds the memory a Sybil farm can fill.
    pub group_unproven_new_ips_per_hour: f64,
    /// Burst of the group budget above. Default 2,000.
    pub group_unproven_new_ip_burst: f64,
    /// Trust above which a sensor no longer draws on its group's shared budget. Default 0.5.
    pub proven_trust: f64,
    /// Most reports kept per IP. Default 128: room for `protected_min_groups` groups of
    /// low-trust sensors, bounded memory (3 KB per IP at most).
    pub max_reports_per_ip: usize,
    /// Most reports kept per IP from one group. Default 3: the group cap makes more useless.
    pub max_reports_per_group: usize,
    /// Reports whose `observed_at` is older than this, seconds, are refused as stale.
    /// Default 1 h.
    pub max_report_age_secs: u64,
    /// Seed of the hash tables' keyed hasher. The central tier picks it at random at
    /// start (hashed IPs in reports are attacker-chosen bytes); simulations fix it.
    pub hash_seed: u64,
    /// Defences switched on. All by default.
    pub defences: Defences,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        const HOUR: u64 = 3600;
        const DAY: u64 = 24 * HOUR;
        ConsensusConfig {
            list_threshold: 6.0,
            min_groups: 12,
            min_group_contribution: 0.1,
            delist_ratio: 0.5,
            group_cap: 1.0,
            group_member_bonus: 0.5,
            protected_threshold: 30.0,
            protected_min_groups: 50,
            report_half_life_secs: 12 * HOUR,
            report_ttl_secs: 48 * HOUR,
            new_sensor_trust: 0.02,
            trust_ramp_secs: 30 * DAY,
            max_presence_gap_secs: DAY,
            reliability_prior_confirmed: 1.0,
            reliability_prior_unconfirmed: 19.0,
            reliability_target: 0.5,
            reliability_half_life_secs: 30 * DAY,
            confidence_weights: [0.25, 0.5, 0.8, 1.0],
            scenario_weights: [0.2, 0.7, 1.0],
            sensor_new_ips_per_hour: 120.0,
            sensor_new_ip_burst: 200.0,
            group_unproven_new_ips_per_hour: 1000.0,
            group_unproven_new_ip_burst: 2000.0,
            proven_trust: 0.5,
            max_reports_per_ip: 128,
            max_reports_per_group: 3,
            max_report_age_secs: HOUR,
            hash_seed: 0x005e_ed0f_c05e_4505,
            defences: Defences::default(),
        }
    }
}

/// A configuration value is out of range. The message names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("consensus config: `{key}` {problem}")]
pub struct ConfigError {
    /// The offending key, as spelt in TOML.
    pub key: &'static str,
    /// What is wrong with it and what is allowed.
    pub problem: &'static str,
}

impl ConsensusConfig {
    /// Checks every value; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, problem| Err(ConfigError { key, problem });
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let unit = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        if !positive(self.list_threshold) {
            return err("list_threshold", "must be a positive number");
        }
        if self.min_groups == 0 {
            return err("min_groups", "must be at least 1");
        }
        if !unit(self.min_group_contribution) {
            return err("min_group_contribution", "must be within 0..=1");
        }
        if !unit(self.delist_ratio) {
            return err("delist_ratio", "must be within 0..=1");
        }
        if !positive(self.group_cap) {
            return err("group_cap", "must be a positive number");
        }
        if !(self.group_member_bonus.is_finite() && self.group_member_bonus >= 0.0) {
            return err("group_member_bonus", "must be zero or positive");
        }
        if !positive(self.protected_threshold) || self.protected_min_groups == 0 {
            return err("protected_threshold", "and protected_min_groups must be positive");
        }
        if self.report_half_life_secs == 0 || self.report_ttl_secs == 0 {
            return err("report_ttl_secs", "and report_half_life_secs must be at least 1 s");
        }
        if !unit(self.new_sensor_trust) || self.new_sensor_trust == 0.0 {
            return err("new_sensor_trust", "must be within (0, 1]");
        }
        if self.trust_ramp_secs == 0 || self.reliability_half_life_secs == 0 {
            return err("trust_ramp_secs", "and reliability_half_life_secs must be at least 1 s");
        }
        if !positive(self.reliability_prior_confirmed) || !positive(self.reliability_prior_unconfirmed) {
            return err("reliability_prior_confirmed", "and reliability_prior_unconfirmed must be positive");
        }
        if !unit(self.reliability_target) || self.reliability_target == 0.0 {
            return err("reliability_target", "must be within (0, 1]");
        }
        if !self.confidence_weights.iter().all(|w| unit(*w)) {
            return err("confidence_weights", "must all be within 0..=1");
        }
        if !self.scenario_weights.iter().all(|w| unit(*w)) {
            return err("scenario_weights", "must all be within 0..=1");
        }
        if !positive(self.sensor_new_ips_per_hour) || !positive(self.sensor_new_ip_burst) {
            return err("sensor_new_ips_per_hour", "and sensor_new_ip_burst must be positive");
        }
        if !positive(self.group_unproven_new_ips_per_hour) || !positive(self.group_unproven_new_ip_burst) {
            return err("group_unproven_new_ips_per_hour", "and its burst must be positive");
        }
        if !unit(self.proven_trust) {
            return err("proven_trust", "must be within 0..=1");
        }
        if self.max_reports_per_ip == 0 || self.max_reports_per_group == 0 {
            return err("max_reports_per_ip", "and max_reports_per_group must be at least 1");
        }
        if self.max_reports_per_ip > u16::MAX as usize {
            return err("max_reports_per_ip", "must be at most 65535");
        }
        let most_groups = self.min_groups.max(self.protected_min_groups) as usize;
        if self.max_reports_per_ip < most_groups {
            return err("max_reports_per_ip", "must be at least min_groups and protected_min_groups");
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_the_key() {
        assert_eq!(ConsensusConfig::default().validate(), Ok(()));
        let bad = ConsensusConfig { min_groups: 0, ..ConsensusConfig::default() };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.key, "min_groups");
        assert!(e.to_string().contains("`min_groups`"));
        let bad = ConsensusConfig { list_threshold: f64::NAN, ..ConsensusConfig::default() };
        assert_eq!(bad.validate().unwrap_err().key, "list_threshold");
    }
}
