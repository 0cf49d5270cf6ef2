//! The algorithms compared: the naive N-distinct-reporters rule, an AbuseIPDB-style
//! log-of-reporters score with decay, and Palisade's consensus (whole, and with one
//! defence removed at a time).

use foldhash::fast::FixedState;
use palisade_consensus::{
    Allowlist, AsnOrgs, Consensus, ConsensusConfig, Defences, ListChangeKind, Report, SensorRecord,
    VerifiedAddress,
};
use palisade_proto::{HashedIp, NodeId, Timestamp};
use std::collections::HashMap;

type Map<K, V> = HashMap<K, V, FixedState>;
type Reporters = (Map<NodeId, i64>, bool);

use crate::scenario::AlgorithmParams;

/// What an attacker sensor or an aged honest sensor had before the simulation started.
#[derive(Debug, Clone, Copy)]
pub struct History {
    /// Verified presence since (ms).
    pub verified_since: i64,
    /// Corroborated novel reports.
    pub confirmed: f64,
    /// Unconfirmed novel reports.
    pub unconfirmed: f64,
}

/// A change to an algorithm's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The IP.
    pub ip: HashedIp,
    /// When.
    pub at: i64,
    /// Listed (true) or delisted.
    pub listed: bool,
}

/// A blocklist algorithm fed with the same reports as the others.
pub trait Algorithm: Send {
    /// A sensor with prior history (aged presence, track record).
    fn restore(&mut self, sensor: NodeId, address: VerifiedAddress, history: History, now: i64);
    /// A verified heartbeat.
    fn presence(&mut self, sensor: NodeId, address: VerifiedAddress, now: i64);
    /// One report.
    fn ingest(&mut self, report: &Report, now: i64);
    /// Time passes.
    fn tick(&mut self, now: i64);
    /// List changes since the last call, in order.
    fn changes(&mut self) -> Vec<Change>;
    /// A sensor's trust, for algorithms that have one.
    fn trust(&self, _sensor: NodeId, _now: i64) -> Option<f64> {
        None
    }
    /// IPs the algorithm holds state for.
    fn tracked_ips(&self) -> usize;
}

/// Which algorithm, with its parameters.
#[derive(Debug, Clone)]
pub enum AlgoSpec {
    /// N distinct reporters within a window.
    Naive {
        /// Reporters needed.
        reporters: usize,
        /// Window, ms.
        window_ms: i64,
    },
    /// AbuseIPDB-style score.
    Abuse {
        /// Decayed distinct reporters for 100%.
        full: f64,
        /// Threshold, percent.
        threshold: f64,
        /// Half-life, ms.
        half_life_ms: f64,
    },
    /// Palisade's consensus.
    Palisade(Box<ConsensusConfig>),
}

/// All algorithm names, in display order.
pub const ALL: &[&str] = &[
    "naive",
    "abuseipdb",
    "palisade",
    "palisade-no-group-cap",
    "palisade-no-trust",
    "palisade-no-novelty",
    "palisade-no-min-groups",
    "palisade-no-rate-limit",
    "palisade-no-allowlist",
    "palisade-no-decay",
];

impl AlgoSpec {
    /// The algorithm called `name`, or `None`.
    pub fn parse(name: &str, params: &AlgorithmParams) -> Option<AlgoSpec> {
        let base = params.palisade.clone();
        let with = |f: fn(&mut Defences)| {
            let mut c = base.clone();
            f(&mut c.defences);
            Some(AlgoSpec::Palisade(Box::new(c)))
        };
        match name {
            "naive" => Some(AlgoSpec::Naive {
                reporters: params.naive_reporters.max(1),
                window_ms: (params.naive_window_hours * 3_600_000.0) as i64,
            }),
            "abuseipdb" => Some(AlgoSpec::Abuse {
                full: params.abuse_full_reporters.max(1.0),
                threshold: params.abuse_threshold,
                half_life_ms: params.abuse_half_life_hours * 3_600_000.0,
            }),
            "palisade" => Some(AlgoSpec::Palisade(Box::new(base))),
            "palisade-no-group-cap" => with(|d| d.group_cap = false),
            "palisade-no-trust" => with(|d| d.trust = false),
            "palisade-no-novelty" => with(|d| d.novelty_credit = false),
            "palisade-no-min-groups" => with(|d| d.min_groups = false),
            "palisade-no-rate-limit" => with(|d| d.rate_limit = false),
            "palisade-no-allowlist" => with(|d| d.allowlist = false),
            "palisade-no-decay" => with(|d| d.decay = false),
            _ => None,
        }
    }

    /// A fresh instance.
    pub fn build(&self, allowlist: &Allowlist) -> Box<dyn Algorithm> {
        match self {
            AlgoSpec::Naive { reporters, window_ms } => Box::new(Naive {
                reporters: *reporters,
                window_ms: *window_ms,
                ips: Map::default(),
                changes: Vec::new(),
            }),
            AlgoSpec::Abuse { full, threshold, half_life_ms } => Box::new(Abuse {
                need: (1.0 + full).powf(threshold / 100.0) - 1.0,
                half_life_ms: *half_life_ms,
                ips: Map::default(),
                changes: Vec::new(),
            }),
            AlgoSpec::Palisade(config) => {
                match Consensus::new((**config).clone(), AsnOrgs::new(), allowlist.clone()) {
                    Ok(c) => Box::new(Palisade(c)),
                    // Scenario validation ran the same check; an invalid config lists nothing.
                    Err(_) => Box::new(Naive {
                        reporters: usize::MAX,
                        window_ms: 0,
                        ips: Map::default(),
                        changes: Vec::new(),
                    }),
                }
            }
        }
    }
}

struct Palisade(Consensus);

impl Algorithm for Palisade {
    fn restore(&mut self, sensor: NodeId, address: VerifiedAddress, h: History, now: i64) {
        self.0.restore_sensor(
            &SensorRecord {
                sensor,
                address,
                verified_since: Timestamp(h.verified_since),
                last_seen: Timestamp(now),
                confirmed: h.confirmed,
                unconfirmed: h.unconfirmed,
            },
            Timestamp(now),
        );
    }
    fn presence(&mut self, sensor: NodeId, address: VerifiedAddress, now: i64) {
        self.0.observe_sensor(sensor, address, Timestamp(now));
    }
    fn ingest(&mut self, report: &Report, now: i64) {
        self.0.ingest(report, Timestamp(now));
    }
    fn tick(&mut self, now: i64) {
        self.0.tick(Timestamp(now));
    }
    fn tracked_ips(&self) -> usize {
        self.0.stats().tracked_ips
    }
    fn trust(&self, sensor: NodeId, now: i64) -> Option<f64> {
        self.0.sensor_trust(&sensor, Timestamp(now))
    }
    fn changes(&mut self) -> Vec<Change> {
        self.0
            .drain_changes()
            .into_iter()
            .map(|c| Change { ip: c.ip, at: c.at.0, listed: matches!(c.kind, ListChangeKind::Listed { .. }) })
            .collect()
    }
}

/// Lists an IP once `reporters` distinct sensors reported it within the window; the
/// secwatch-style rule, with no notion of networks or trust.
struct Naive {
    reporters: usize,
    window_ms: i64,
    ips: Map<HashedIp, Reporters>,
    changes: Vec<Change>,
}

impl Algorithm for Naive {
    fn restore(&mut self, _: NodeId, _: VerifiedAddress, _: History, _: i64) {}
    fn presence(&mut self, _: NodeId, _: VerifiedAddress, _: i64) {}
    fn ingest(&mut self, report: &Report, now: i64) {
        let (reporters, listed) = self.ips.entry(report.hashed_ip).or_default();
        reporters.insert(report.sensor, now);
        if !*listed && reporters.len() >= self.reporters {
            *listed = true;
            self.changes.push(Change { ip: report.hashed_ip, at: now, listed: true });
        }
    }
    fn tick(&mut self, now: i64) {
        let (window, need, changes) = (self.window_ms, self.reporters, &mut self.changes);
        self.ips.retain(|ip, (reporters, listed)| {
            reporters.retain(|_, at| now - *at <= window);
            if *listed && reporters.len() < need {
                *listed = false;
                changes.push(Change { ip: *ip, at: now, listed: false });
            }
            !reporters.is_empty()
        });
        changes.sort_by(|a, b| a.at.cmp(&b.at).then(a.ip.cmp(&b.ip)));
    }
    fn changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }
    fn tracked_ips(&self) -> usize {
        self.ips.len()
    }
}

/// AbuseIPDB-style confidence: `100 * ln(1 + n) / ln(1 + full)`, where `n` sums the
/// distinct reporters' weights decayed by age; listed at `threshold` percent. Like
/// AbuseIPDB's public description: logarithmic in distinct reporters, decaying, no
/// single reporter can dominate; no notion of networks.
struct Abuse {
    need: f64,
    half_life_ms: f64,
    ips: Map<HashedIp, Reporters>,
    changes: Vec<Change>,
}

impl Abuse {
    fn effective(&self, reporters: &Map<NodeId, i64>, now: i64) -> f64 {
        reporters
            .values()
            .map(|at| (-((now - at) as f64) / self.half_life_ms * std::f64::consts::LN_2).exp())
            .sum()
    }
}

impl Algorithm for Abuse {
    fn restore(&mut self, _: NodeId, _: VerifiedAddress, _: History, _: i64) {}
    fn presence(&mut self, _: NodeId, _: VerifiedAddress, _: i64) {}
    fn ingest(&mut self, report: &Report, now: i64) {
        let entry = self.ips.entry(report.hashed_ip).or_default();
        entry.0.insert(report.sensor, now);
        if !entry.1 {
            let reporters = std::mem::take(&mut entry.0);
            let n = self.effective(&reporters, now);
            let entry = self.ips.entry(report.hashed_ip).or_default();
            entry.0 = reporters;
            if n >= self.need {
                entry.1 = true;
                self.changes.push(Change { ip: report.hashed_ip, at: now, listed: true });
            }
        }
    }
    fn tick(&mut self, now: i64) {
        let horizon = (self.half_life_ms * 7.0) as i64;
        let mut ips = std::mem::take(&mut self.ips);
        ips.retain(|ip, (reporters, listed)| {
            reporters.retain(|_, at| now - *at <= horizon);
            if *listed && self.effective(reporters, now) < self.need {
                *listed = false;
                self.changes.push(Change { ip: *ip, at: now, listed: false });
            }
            !reporters.is_empty()
        });
        self.ips = ips;
        self.changes.sort_by(|a, b| a.at.cmp(&b.at).then(a.ip.cmp(&b.ip)));
    }
    fn changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }
    fn tracked_ips(&self) -> usize {
        self.ips.len()
    }
}
