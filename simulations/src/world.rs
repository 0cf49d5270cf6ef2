//! The simulated world: honest sensors over ASNs, real attackers, benign traffic with
//! honest false reports, and the attacker's own sensors; turned into one time-ordered
//! stream of events that every algorithm receives identically.

use palisade_consensus::{Allowlist, Asn, ScenarioKind, VerifiedAddress};
use palisade_proto::{HashedIp, NodeId};
use rand::Rng;
use std::collections::HashMap;

use crate::algorithms::History;
use crate::rng::{distinct, lognormal_mean, lognormal_median, rng, SimRng, Zipf};
use crate::scenario::{AttackKind, Farming, Scenario};

/// Start of the simulated clock (2026-01-01T00:00:00Z, in ms): any fixed value works.
pub const CLOCK_ORIGIN: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// Ground-truth class of an IP, stored in its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpClass {
    /// A real attacker.
    Attacker = 1,
    /// A benign address honest sensors sometimes report by mistake.
    Benign = 2,
    /// A CDN edge (allowlisted).
    Cdn = 3,
    /// A search-engine crawler (allowlisted).
    Crawler = 4,
    /// A competitor's server (protected).
    Competitor = 5,
    /// An ordinary benign server chosen as a victim.
    Ordinary = 6,
    /// An address a suppressor made up to burn rate budgets.
    Junk = 7,
}

impl IpClass {
    fn from_byte(b: u8) -> IpClass {
        match b {
            1 => IpClass::Attacker,
            3 => IpClass::Cdn,
            4 => IpClass::Crawler,
            5 => IpClass::Competitor,
            6 => IpClass::Ordinary,
            7 => IpClass::Junk,
            _ => IpClass::Benign,
        }
    }
}

/// The simulated hashed IP of an address of `class` number `id`.
pub fn hashed(class: IpClass, id: u64) -> HashedIp {
    let mut b = [0u8; 32];
    b[0] = class as u8;
    b[1..9].copy_from_slice(&id.to_be_bytes());
    // Spread the rest like a real keyed hash would (splitmix64).
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_mul(class as u64 + 1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    b[9..17].copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
    HashedIp(b)
}

/// The ground truth of a simulated hashed IP.
pub fn class_of(ip: &HashedIp) -> (IpClass, u64) {
    let mut id = [0u8; 8];
    id.copy_from_slice(&ip.0[1..9]);
    (IpClass::from_byte(ip.0[0]), u64::from_be_bytes(id))
}

/// Who runs a sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An honest operator.
    Honest,
    /// The attacker.
    Attacker,
}

/// One sensor of the world.
#[derive(Debug, Clone)]
pub struct SensorInfo {
    /// Its identity.
    pub node: NodeId,
    /// Its verified address.
    pub address: VerifiedAddress,
    /// Who runs it.
    pub role: Role,
    /// History before the warm-up, if any.
    pub history: Option<History>,
    /// Sends heartbeats.
    pub heartbeats: bool,
}

/// What happens at one instant.
#[derive(Debug, Clone, Copy)]
pub enum EventKind {
    /// A sensor reports an IP.
    Report {
        /// The IP.
        ip: HashedIp,
        /// Its scenario's kind.
        scenario: ScenarioKind,
        /// Confidence 0..=3.
        confidence: u8,
    },
    /// A sensor's verified heartbeat.
    Presence,
    /// A list-copying sleeper reports the IPs the algorithm it attacks listed last.
    CopyList,
}

/// One event.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// When, ms.
    pub t: i64,
    /// Which sensor (index into `World::sensors`).
    pub sensor: u32,
    /// What.
    pub kind: EventKind,
}

/// What is known about one real attacker in the measured window.
#[derive(Debug, Clone, Default)]
pub struct AttackerTruth {
    /// First honest report ever (warm-up included).
    pub first_honest: Option<i64>,
    /// Distinct ASNs of honest sensors that reported it within the window.
    pub window_asns: Vec<u32>,
    /// Part of the suppressor's botnet.
    pub botnet: bool,
}

/// The generated world.
#[derive(Debug, Clone)]
pub struct World {
    /// All sensors, honest first.
    pub sensors: Vec<SensorInfo>,
    /// Every event, in time order.
    pub events: Vec<Event>,
    /// Start of the warm-up.
    pub warm_start: i64,
    /// Start of the measured window.
    pub start: i64,
    /// End of the measured window.
    pub end: i64,
    /// Allowlisted (CDN, crawler) and protected (competitor) IPs.
    pub allowlist: Allowlist,
    /// Real attackers active in the window.
    pub attackers: HashMap<u64, AttackerTruth>,
    /// The attack's victims.
    pub victims: Vec<HashedIp>,
    /// Honest sensors' ASNs (distinct).
    pub honest_asns: usize,
}

/// Generates the world of `scenario` for `seed`.
pub fn generate(scenario: &Scenario, seed: u64) -> World {
    let w = &scenario.world;
    let a = &scenario.attack;
    let warm_start = CLOCK_ORIGIN;
    let start = warm_start + (w.warmup_hours * HOUR as f64) as i64;
    let end = start + (w.hours * HOUR as f64) as i64;
    let strike = start + (a.start_hour * HOUR as f64) as i64;

    // Honest sensors over ASNs.
    let mut r = rng(seed, 1);
    let zipf = Zipf::new(w.asns, w.asn_zipf);
    let honest_since = warm_start - (w.sensor_age_days * DAY as f64) as i64;
    let mut sensors: Vec<SensorInfo> = Vec::with_capacity(w.honest_sensors + a.sensors);
    let mut asn_counts: HashMap<u32, usize> = HashMap::new();
    for i in 0..w.honest_sensors {
        // Every ASN gets one sensor first (when there are enough), the rest follow Zipf.
        let rank = if i < w.asns { i } else { zipf.sample(&mut r) };
        let asn = 10_000 + rank as u32;
        *asn_counts.entry(asn).or_default() += 1;
        sensors.push(SensorInfo {
            node: node_id(1, i as u64),
            address: VerifiedAddress { asn: Asn(asn), net24: [(rank >> 8) as u8, rank as u8, r.gen()] },
            role: Role::Honest,
            history: Some(History { verified_since: honest_since, confirmed: 0.0, unconfirmed: 0.0 }),
            heartbeats: true,
        });
    }
    let honest_asns = asn_counts.len();
    let mut biggest: Vec<(u32, usize)> = asn_counts.into_iter().collect();
    biggest.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));

    // The attacker's sensors (the first generation, for churn).
    let attacker_first = sensors.len();
    let attacker_asn = |k: usize| -> u32 {
        if a.share_honest_asns {
            biggest.get(k % biggest.len().max(1)).map_or(60_000 + k as u32, |b| b.0)
        } else {
            60_000 + k as u32
        }
    };
    let attacker_history = (a.age_days > 0.0).then(|| History {
        verified_since: warm_start - (a.age_days * DAY as f64) as i64,
        confirmed: 0.0,
        unconfirmed: 0.0,
    });
    if a.kind != AttackKind::None {
        for j in 0..a.sensors {
            sensors.push(attacker_sensor(j as u64, attacker_asn(j % a.asns), attacker_history));
        }
    }
    let attacker_count = sensors.len() - attacker_first;

    // Who real attackers can hit: honest sensors, and sleepers that farm honestly.
    let mut population: Vec<u32> = (0..w.honest_sensors as u32).collect();
    if a.kind == AttackKind::Sleeper && a.farming == Farming::Honest {
        population.extend(attacker_first as u32..(attacker_first + attacker_count) as u32);
    }

    let mut events: Vec<Event> = Vec::new();
    let mut attackers: HashMap<u64, AttackerTruth> = HashMap::new();
    let mut honest_times: HashMap<u64, Vec<i64>> = HashMap::new();

    // Real attackers.
    let mut r = rng(seed, 2);
    let history_days = 60.0;
    let span_days = history_days + (end - warm_start) as f64 / DAY as f64;
    let count = (w.attackers_per_day * span_days).round() as u64;
    let mut botnet_left = if a.kind == AttackKind::Suppression { a.botnet } else { 0 };
    for id in 0..count {
        let mut t0 = warm_start - (history_days * DAY as f64) as i64
            + (r.gen::<f64>() * span_days * DAY as f64) as i64;
        let lifetime = (lognormal_mean(&mut r, w.lifetime_days_mean, 1.0).min(60.0) * DAY as f64) as i64;
        let targeted = r.gen::<f64>() < w.targeted_fraction;
        let botnet = !targeted && botnet_left > 0 && t0 > start + HOUR && t0 < end - 4 * HOUR;
        if botnet {
            botnet_left -= 1;
        }
        if t0 + lifetime < warm_start {
            continue;
        }
        let n = if targeted {
            r.gen_range(1..=5)
        } else {
            lognormal_mean(&mut r, w.targets_mean, w.targets_sigma).round().max(1.0) as usize
        };
        let n_wave = (n as f64 * w.first_wave_fraction).round() as usize;
        if botnet {
            t0 = t0.max(start + HOUR);
        }
        let ip = hashed(IpClass::Attacker, id);
        let mut truth = AttackerTruth { botnet, ..AttackerTruth::default() };
        let targets = distinct(&mut r, population.len(), n);
        for (j, target) in targets.into_iter().enumerate() {
            let hit = if j < n_wave {
                t0 + (lognormal_median(&mut r, w.wave_spread_minutes, 1.0) * MIN as f64) as i64
            } else {
                t0 + (r.gen::<f64>() * lifetime as f64) as i64
            };
            let detected = r.gen::<f64>() < w.detection_rate;
            let t = hit + (lognormal_median(&mut r, w.detection_delay_secs, 1.0) * 1000.0) as i64;
            let scenario =
                if r.gen::<f64>() < 0.7 { ScenarioKind::Application } else { ScenarioKind::Handshake };
            let confidence = if r.gen::<f64>() < 0.8 { 3 } else { 2 };
            if !detected || t < warm_start || t >= end {
                continue;
            }
            let sensor = population[target];
            events.push(Event { t, sensor, kind: EventKind::Report { ip, scenario, confidence } });
            if sensors[sensor as usize].role == Role::Honest {
                honest_times.entry(id).or_default().push(t);
                if t >= start {
                    let asn = sensors[sensor as usize].address.asn.0;
                    if !truth.window_asns.contains(&asn) {
                        truth.window_asns.push(asn);
                    }
                }
            }
        }
        if let Some(times) = honest_times.get(&id) {
            truth.first_honest = times.iter().min().copied();
        }
        if truth.first_honest.is_some() || botnet {
            attackers.insert(id, truth);
        }
    }

    // Honest false reports: independent ones, mostly on the sensor's own clients (a
    // user failing to log in), sometimes on popular shared benign IPs...
    let mut r = rng(seed, 3);
    let benign = Zipf::new(w.benign_ips, w.benign_zipf);
    let span = end - warm_start;
    for s in 0..w.honest_sensors as u32 {
        let expected = w.false_reports_per_sensor_day * span as f64 / DAY as f64;
        let n = poisson(&mut r, expected);
        for _ in 0..n {
            let t = warm_start + (r.gen::<f64>() * span as f64) as i64;
            let ip = if r.gen::<f64>() < w.shared_false_report_fraction {
                hashed(IpClass::Benign, benign.sample(&mut r) as u64)
            } else {
                hashed(IpClass::Benign, (1 << 40) | (u64::from(s) << 8) | r.gen_range(0..50))
            };
            events.push(Event {
                t,
                sensor: s,
                kind: EventKind::Report { ip, scenario: ScenarioKind::Handshake, confidence: 2 },
            });
        }
    }
    // ...and correlated ones: a crawler trips a scenario on many sensors the same day.
    let days = (span as f64 / DAY as f64).ceil() as i64;
    for day in 0..days {
        for c in 0..w.crawlers as u64 {
            if r.gen::<f64>() >= w.crawler_fp_daily_prob {
                continue;
            }
            let k = (w.honest_sensors as f64 * w.crawler_fp_sensor_fraction).round() as usize;
            for s in distinct(&mut r, w.honest_sensors, k) {
                let t = warm_start + day * DAY + (r.gen::<f64>() * DAY as f64) as i64;
                if t < end {
                    let ip = hashed(IpClass::Crawler, c);
                    events.push(Event {
                        t,
                        sensor: s as u32,
                        kind: EventKind::Report { ip, scenario: ScenarioKind::Application, confidence: 2 },
                    });
                }
            }
        }
    }

    // Heartbeats of sensors that stay connected.
    let mut r = rng(seed, 4);
    let every = (w.heartbeat_hours * HOUR as f64) as i64;
    for (i, s) in sensors.iter().enumerate() {
        let honest_or_aged = s.role == Role::Honest || a.age_days > 0.0;
        if !(s.heartbeats && honest_or_aged) || a.kind == AttackKind::Churn && s.role == Role::Attacker {
            continue;
        }
        let mut t = warm_start + r.gen_range(0..every.max(1));
        while t < end {
            events.push(Event { t, sensor: i as u32, kind: EventKind::Presence });
            t += every;
        }
    }

    // Victims and the allowlist.
    let mut allowlist = Allowlist::new();
    for c in 0..w.cdn_edges as u64 {
        allowlist.allow(hashed(IpClass::Cdn, c));
    }
    for c in 0..w.crawlers as u64 {
        allowlist.allow(hashed(IpClass::Crawler, c));
    }
    for c in 0..w.competitors as u64 {
        allowlist.protect(hashed(IpClass::Competitor, c));
    }
    let v = &a.victims;
    let mut victims: Vec<HashedIp> = Vec::new();
    if matches!(a.kind, AttackKind::Sybil | AttackKind::Sleeper | AttackKind::Churn) {
        victims.extend((0..v.cdn.min(w.cdn_edges) as u64).map(|i| hashed(IpClass::Cdn, i)));
        victims.extend((0..v.crawler.min(w.crawlers) as u64).map(|i| hashed(IpClass::Crawler, i)));
        victims.extend((0..v.competitor.min(w.competitors) as u64).map(|i| hashed(IpClass::Competitor, i)));
        victims.extend((0..v.ordinary as u64).map(|i| hashed(IpClass::Ordinary, i)));
    }

    // The attack.
    let mut r = rng(seed, 5);
    let repeat = (a.repeat_minutes * MIN as f64) as i64;
    let strike_report =
        |events: &mut Vec<Event>, r: &mut SimRng, sensor: u32, ip: HashedIp, from: i64, until: i64| {
            let mut t = from + r.gen_range(0..10 * MIN);
            while t < until.min(end) {
                events.push(Event {
                    t,
                    sensor,
                    kind: EventKind::Report { ip, scenario: ScenarioKind::Application, confidence: 3 },
                });
                t += repeat;
            }
        };
    match a.kind {
        AttackKind::None => {}
        AttackKind::Sybil | AttackKind::Sleeper => {
            if a.farming == Farming::CopyList {
                // Every 30 minutes before the strike, each sleeper copies the IPs most
                // recently published by the algorithm under attack.
                for j in 0..attacker_count {
                    let mut t = warm_start + r.gen_range(0..30 * MIN);
                    while t < strike {
                        events.push(Event {
                            t,
                            sensor: (attacker_first + j) as u32,
                            kind: EventKind::CopyList,
                        });
                        t += 30 * MIN;
                    }
                }
            }
            for j in 0..attacker_count {
                for ip in &victims {
                    strike_report(&mut events, &mut r, (attacker_first + j) as u32, *ip, strike, end);
                }
            }
        }
        AttackKind::Churn => {
            let period = (a.churn_minutes * MIN as f64) as i64;
            let mut generation = 0u64;
            let mut from = strike;
            while from < end {
                for j in 0..a.sensors {
                    let sensor = if generation == 0 {
                        (attacker_first + j) as u32
                    } else {
                        let idx = generation * a.sensors as u64 + j as u64;
                        sensors.push(attacker_sensor(idx, attacker_asn(j % a.asns), None));
                        (sensors.len() - 1) as u32
                    };
                    for ip in &victims {
                        strike_report(&mut events, &mut r, sensor, *ip, from, from + period);
                    }
                }
                generation += 1;
                from += period;
            }
        }
        AttackKind::Suppression => {
            let mut botnet: Vec<(u64, i64)> = attackers
                .iter()
                .filter(|(_, t)| t.botnet)
                .map(|(id, t)| (*id, t.first_honest.unwrap_or(start + HOUR)))
                .collect();
            botnet.sort();
            for j in 0..attacker_count {
                let sensor = (attacker_first + j) as u32;
                for (id, first) in &botnet {
                    // Pre-fill the botnet IPs' slots with the Sybils' own reports.
                    strike_report(
                        &mut events,
                        &mut r,
                        sensor,
                        hashed(IpClass::Attacker, *id),
                        first - 15 * MIN,
                        end,
                    );
                }
                let junk = poisson(&mut r, a.junk_per_sensor_hour * (end - strike) as f64 / HOUR as f64);
                for k in 0..junk {
                    let t = strike + (r.gen::<f64>() * (end - strike) as f64) as i64;
                    let ip = hashed(IpClass::Junk, (j as u64) << 32 | k);
                    events.push(Event {
                        t,
                        sensor,
                        kind: EventKind::Report { ip, scenario: ScenarioKind::Application, confidence: 3 },
                    });
                }
            }
        }
    }

    events.sort_by_key(|e| e.t);
    World { sensors, events, warm_start, start, end, allowlist, attackers, victims, honest_asns }
}

fn node_id(tag: u8, i: u64) -> NodeId {
    let mut b = [0u8; 32];
    b[0] = tag;
    b[1..9].copy_from_slice(&i.to_be_bytes());
    NodeId(b)
}

fn attacker_sensor(idx: u64, asn: u32, history: Option<History>) -> SensorInfo {
    SensorInfo {
        node: node_id(2, idx),
        address: VerifiedAddress {
            asn: Asn(asn),
            net24: [100 + (idx % 100) as u8, (idx >> 8) as u8, idx as u8],
        },
        role: Role::Attacker,
        history,
        heartbeats: true,
    }
}

/// A Poisson draw (Knuth for small means, normal approximation above 30).
pub fn poisson(r: &mut SimRng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        return (mean + mean.sqrt() * crate::rng::normal(r)).round().max(0.0) as u64;
    }
    let limit = (-mean).exp();
    let mut k = 0;
    let mut p = r.gen::<f64>();
    while p > limit {
        k += 1;
        p *= r.gen::<f64>();
    }
    k
}

/// Sensor ids a cost-search attacker uses.
pub fn cost_node(i: u64) -> NodeId {
    node_id(3, i)
}
