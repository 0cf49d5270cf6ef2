//! The attacker's cost to get one chosen victim listed, found by search, and the
//! probability of listing a victim against the attacker's budget.

use palisade_consensus::{Allowlist, Asn, Report, ScenarioKind, VerifiedAddress};
use palisade_proto::Timestamp;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::algorithms::{AlgoSpec, History};
use crate::rng::rng;
use crate::world::{cost_node, hashed, IpClass, CLOCK_ORIGIN};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Which kind of victim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VictimClass {
    /// No protection at all.
    Ordinary,
    /// On the protected list.
    Protected,
    /// On the hard allowlist.
    Allowlisted,
}

/// How the attacker's sensors look to the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Enrolled just now.
    Fresh,
    /// 60 days of verified presence, no track record (heartbeats only, or list copying).
    Aged,
    /// 60 days of presence and a record of 30 corroborated novel reports: sleepers that
    /// did honest detection work (the strongest attacker).
    Trusted,
}

/// The cheapest attack found: fewest ASNs, then fewest sensors at that ASN count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Distinct ASNs needed (`None`: not reached within the search bounds).
    pub asns: Option<usize>,
    /// Sensors needed at that ASN count.
    pub sensors: Option<usize>,
}

/// Whether `asns` ASNs with `per_asn` sensors each, all reporting the victim four times
/// over a day, get it listed within 24 hours.
pub fn victim_listed(
    spec: &AlgoSpec,
    class: VictimClass,
    asns: usize,
    per_asn: usize,
    profiles: &dyn Fn(usize) -> History,
) -> bool {
    let victim = hashed(IpClass::Ordinary, 999_999);
    let mut allowlist = Allowlist::new();
    match class {
        VictimClass::Ordinary => {}
        VictimClass::Protected => allowlist.protect(victim),
        VictimClass::Allowlisted => allowlist.allow(victim),
    }
    let mut algo = spec.build(&allowlist);
    let t0 = CLOCK_ORIGIN;
    let mut sensors = Vec::with_capacity(asns * per_asn);
    for k in 0..asns {
        for j in 0..per_asn {
            let i = k * per_asn + j;
            let node = cost_node(i as u64);
            let address =
                VerifiedAddress { asn: Asn(80_000 + k as u32), net24: [50, (i >> 8) as u8, i as u8] };
            let h = profiles(i);
            if h.verified_since < t0 {
                algo.restore(node, address, h, t0);
            }
            sensors.push((node, address));
        }
    }
    for round in 0..4i64 {
        let t = t0 + round * 6 * HOUR;
        for (i, (node, address)) in sensors.iter().enumerate() {
            let at = t + i as i64;
            let report = Report {
                sensor: *node,
                address: *address,
                hashed_ip: victim,
                scenario: ScenarioKind::Application,
                confidence: 3,
                observed_at: Timestamp(at),
            };
            algo.ingest(&report, at);
        }
        algo.tick(t + HOUR);
        if algo.changes().iter().any(|c| c.listed) {
            return true;
        }
    }
    false
}

fn profile_history(p: Profile) -> History {
    match p {
        Profile::Fresh => History { verified_since: CLOCK_ORIGIN, confirmed: 0.0, unconfirmed: 0.0 },
        Profile::Aged => {
            History { verified_since: CLOCK_ORIGIN - 60 * DAY, confirmed: 0.0, unconfirmed: 0.0 }
        }
        Profile::Trusted => {
            History { verified_since: CLOCK_ORIGIN - 60 * DAY, confirmed: 30.0, unconfirmed: 3.0 }
        }
    }
}

/// The cheapest attack (fewest ASNs, then fewest sensors per ASN) on a victim of `class`
/// with sensors of `profile`, searching up to `max_asns` ASNs of `per_asn` sensors.
pub fn search(
    spec: &AlgoSpec,
    class: VictimClass,
    profile: Profile,
    max_asns: usize,
    per_asn: usize,
) -> Cost {
    let h = profile_history(profile);
    let works = |k: usize, s: usize| victim_listed(spec, class, k, s, &|_| h);
    if !works(max_asns, per_asn) {
        return Cost { asns: None, sensors: None };
    }
    let (mut lo, mut hi) = (0usize, max_asns);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if works(mid, per_asn) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let k = hi;
    let (mut lo, mut hi) = (0usize, per_asn);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if works(k, mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Cost { asns: Some(k), sensors: Some(k * hi) }
}

/// P(victim listed within 24 h) for each budget (in ASNs, `per_asn` sensors each), over
/// `trials` attacks whose sensors have random ages (0-90 days) and random records (half
/// of them farmed 0-40 corroborated reports). The same attackers face every algorithm.
pub fn curve(spec: &AlgoSpec, seed: u64, budgets: &[usize], per_asn: usize, trials: usize) -> Vec<f64> {
    budgets
        .iter()
        .map(|&k| {
            let mut hits = 0;
            for trial in 0..trials {
                let mut r = rng(seed, 10_000 + (k as u64) * 1000 + trial as u64);
                let profiles: Vec<History> = (0..k * per_asn)
                    .map(|_| {
                        let age = r.gen_range(0.0..90.0);
                        let farmed = r.gen::<f64>() < 0.5;
                        History {
                            verified_since: CLOCK_ORIGIN - (age * DAY as f64) as i64,
                            confirmed: if farmed { r.gen_range(0.0..40.0) } else { 0.0 },
                            unconfirmed: if farmed { r.gen_range(0.0..5.0) } else { 0.0 },
                        }
                    })
                    .collect();
                let fallback = profile_history(Profile::Fresh);
                let lookup = |i: usize| profiles.get(i).copied().unwrap_or(fallback);
                if victim_listed(spec, VictimClass::Ordinary, k, per_asn, &lookup) {
                    hits += 1;
                }
            }
            if trials == 0 {
                0.0
            } else {
                hits as f64 / trials as f64
            }
        })
        .collect()
}
