//! Feeds one world to every algorithm and measures each published list against the
//! ground truth.

use palisade_consensus::Report;
use palisade_proto::{HashedIp, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

use crate::algorithms::{AlgoSpec, Change};
use crate::rng::percentile;
use crate::world::{class_of, EventKind, IpClass, World};

/// How one algorithm did in one run. `None` stands for "not defined" (nothing listed, no
/// eligible attacker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Algorithm name.
    pub algorithm: String,
    /// Listed real attackers / listed IPs, over the window.
    pub precision: Option<f64>,
    /// Eligible attackers listed / eligible attackers.
    pub recall: Option<f64>,
    /// Attackers listed / attackers any honest sensor reported in the window.
    pub recall_all: Option<f64>,
    /// Eligible attackers (reported from at least `eligible_min_asns` honest ASNs).
    pub eligible: usize,
    /// Recall over the suppressor's botnet (suppression scenarios).
    pub botnet_recall: Option<f64>,
    /// Minutes from first honest report to listing: median.
    pub ttl_median_min: Option<f64>,
    /// Minutes from first honest report to listing: 95th percentile.
    pub ttl_p95_min: Option<f64>,
    /// Distinct non-attacker IPs listed during the window.
    pub benign_listed: usize,
    /// Hours non-attacker IPs spent listed during the window, summed.
    pub benign_hours: f64,
    /// The longest any single non-attacker IP stayed listed in the window, hours.
    pub benign_max_hours: f64,
    /// The attack's victims listed.
    pub victims_listed: usize,
    /// Victims in the attack.
    pub victims: usize,
    /// Allowlisted or protected IPs listed.
    pub protected_violations: usize,
    /// Most IPs the algorithm held state for at once (sampled at each tick).
    #[serde(default)]
    pub peak_tracked_ips: usize,
    /// Mean trust of honest sensors at the end (algorithms with trust).
    #[serde(default)]
    pub honest_trust: Option<f64>,
    /// Mean trust of attacker sensors at the end.
    #[serde(default)]
    pub attacker_trust: Option<f64>,
}

/// IPs a list-copying sleeper copies each time.
const COPIED: usize = 10;

/// Runs `spec` over `world` and returns its list changes and the mean trust of honest
/// and of attacker sensors at the end (for algorithms that have trust).
pub fn feed(world: &World, spec: &AlgoSpec, tick_ms: i64) -> (Vec<Change>, Option<(f64, f64)>, usize) {
    let mut algo = spec.build(&world.allowlist);
    for s in &world.sensors {
        if let Some(h) = s.history {
            algo.restore(s.node, s.address, h, world.warm_start);
        }
    }
    let mut changes: Vec<Change> = Vec::new();
    let mut next_tick = world.warm_start + tick_ms;
    let mut peak = 0usize;
    for e in &world.events {
        while e.t >= next_tick {
            peak = peak.max(algo.tracked_ips());
            algo.tick(next_tick);
            next_tick += tick_ms;
        }
        let Some(sensor) = world.sensors.get(e.sensor as usize) else {
            continue;
        };
        match e.kind {
            EventKind::Presence => algo.presence(sensor.node, sensor.address, e.t),
            EventKind::CopyList => {
                let recent: Vec<HashedIp> =
                    changes.iter().rev().filter(|c| c.listed).take(COPIED).map(|c| c.ip).collect();
                for ip in recent {
                    let report = Report {
                        sensor: sensor.node,
                        address: sensor.address,
                        hashed_ip: ip,
                        scenario: palisade_consensus::ScenarioKind::Application,
                        confidence: 3,
                        observed_at: Timestamp(e.t),
                    };
                    algo.ingest(&report, e.t);
                }
            }
            EventKind::Report { ip, scenario, confidence } => {
                let report = Report {
                    sensor: sensor.node,
                    address: sensor.address,
                    hashed_ip: ip,
                    scenario,
                    confidence,
                    observed_at: Timestamp(e.t),
                };
                algo.ingest(&report, e.t);
            }
        }
        if changes.len() < 1 << 24 {
            changes.extend(algo.changes());
        }
    }
    while next_tick <= world.end {
        algo.tick(next_tick);
        next_tick += tick_ms;
    }
    changes.extend(algo.changes());
    let mut sums = [(0.0, 0usize); 2];
    for s in &world.sensors {
        if let Some(t) = algo.trust(s.node, world.end) {
            let slot = &mut sums[usize::from(s.role == crate::world::Role::Attacker)];
            slot.0 += t;
            slot.1 += 1;
        }
    }
    let mean = |(sum, n): (f64, usize)| if n == 0 { 0.0 } else { sum / n as f64 };
    let trust = (sums[0].1 > 0).then(|| (mean(sums[0]), mean(sums[1])));
    (changes, trust, peak.max(algo.tracked_ips()))
}

/// Measures one algorithm's changes against the truth.
pub fn measure(world: &World, name: &str, changes: &[Change], eligible_min_asns: usize) -> Measured {
    // Listing intervals within the window, per IP.
    let mut intervals: BTreeMap<HashedIp, Vec<(i64, i64)>> = BTreeMap::new();
    let mut open: BTreeMap<HashedIp, i64> = BTreeMap::new();
    let mut first_listed: BTreeMap<HashedIp, Vec<i64>> = BTreeMap::new();
    for c in changes {
        if c.listed {
            open.insert(c.ip, c.at);
            first_listed.entry(c.ip).or_default().push(c.at);
        } else if let Some(from) = open.remove(&c.ip) {
            intervals.entry(c.ip).or_default().push((from, c.at));
        }
    }
    for (ip, from) in open {
        intervals.entry(ip).or_default().push((from, world.end));
    }
    let mut listed_in_window: HashSet<HashedIp> = HashSet::new();
    let (mut benign_hours, mut benign_max, mut benign_listed, mut victims_listed, mut violations) =
        (0.0, 0.0f64, 0, 0, 0);
    let mut attackers_listed = 0usize;
    let victims: HashSet<HashedIp> = world.victims.iter().copied().collect();
    for (ip, spans) in &intervals {
        let inside: f64 = spans
            .iter()
            .map(|(a, b)| ((*b).min(world.end) - (*a).max(world.start)).max(0) as f64 / 3_600_000.0)
            .sum();
        let touches = spans.iter().any(|(a, b)| *a < world.end && *b > world.start);
        if !touches {
            continue;
        }
        listed_in_window.insert(*ip);
        let (class, _) = class_of(ip);
        if class == IpClass::Attacker {
            attackers_listed += 1;
            continue;
        }
        benign_listed += 1;
        benign_hours += inside;
        benign_max = benign_max.max(inside);
        if victims.contains(ip) {
            victims_listed += 1;
        }
        if world.allowlist.is_allowed(ip) || world.allowlist.is_protected(ip) {
            violations += 1;
        }
    }
    let total_listed = listed_in_window.len();
    let precision = (total_listed > 0).then(|| attackers_listed as f64 / total_listed as f64);

    let mut ids: Vec<&u64> = world.attackers.keys().collect();
    ids.sort();
    let (mut eligible, mut eligible_listed, mut seen, mut seen_listed) = (0usize, 0usize, 0usize, 0usize);
    let (mut botnet, mut botnet_listed) = (0usize, 0usize);
    let mut ttl: Vec<f64> = Vec::new();
    for id in ids {
        let truth = &world.attackers[id];
        let ip = crate::world::hashed(IpClass::Attacker, *id);
        let listed = listed_in_window.contains(&ip);
        if !truth.window_asns.is_empty() {
            seen += 1;
            seen_listed += usize::from(listed);
        }
        if truth.window_asns.len() >= eligible_min_asns {
            eligible += 1;
            eligible_listed += usize::from(listed);
            if truth.botnet {
                botnet += 1;
                botnet_listed += usize::from(listed);
            }
            if let Some(first) = truth.first_honest.filter(|f| *f >= world.start) {
                if let Some(at) = first_listed.get(&ip).and_then(|v| v.iter().find(|t| **t >= first)) {
                    ttl.push((at - first) as f64 / 60_000.0);
                }
            }
        }
    }
    ttl.sort_by(f64::total_cmp);
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    Measured {
        algorithm: name.to_owned(),
        precision,
        recall: ratio(eligible_listed, eligible),
        recall_all: ratio(seen_listed, seen),
        eligible,
        botnet_recall: ratio(botnet_listed, botnet),
        ttl_median_min: percentile(&ttl, 50.0),
        ttl_p95_min: percentile(&ttl, 95.0),
        benign_listed,
        benign_hours,
        benign_max_hours: benign_max,
        victims_listed,
        victims: world.victims.len(),
        protected_violations: violations,
        peak_tracked_ips: 0,
        honest_trust: None,
        attacker_trust: None,
    }
}

/// Runs `specs` over `world` on up to `threads` threads; results keep `specs`' order.
pub fn run_all(
    world: &World,
    specs: &[(String, AlgoSpec)],
    tick_ms: i64,
    eligible_min_asns: usize,
    threads: usize,
) -> Vec<Measured> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Measured>>> = std::sync::Mutex::new(vec![None; specs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(specs.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, spec)) = specs.get(i) else {
                    break;
                };
                let (changes, trust, peak) = feed(world, spec, tick_ms);
                let mut m = measure(world, name, &changes, eligible_min_asns);
                m.honest_trust = trust.map(|t| t.0);
                m.peak_tracked_ips = peak;
                m.attacker_trust = trust
                    .map(|t| t.1)
                    .filter(|_| world.sensors.iter().any(|s| s.role == crate::world::Role::Attacker));
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(m);
                }
            });
        }
    });
    results.into_inner().unwrap_or_default().into_iter().flatten().collect()
}
