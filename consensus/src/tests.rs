//! Unit and property tests of the scoring rules.

use super::*;
use palisade_proto::{HashedIp, NodeId, Timestamp};
use proptest::prelude::*;

const DAY: i64 = 86_400_000;
const T0: i64 = 100 * DAY;

fn node(i: u32) -> NodeId {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    b[31] = 1;
    NodeId(b)
}

fn ip(i: u32) -> HashedIp {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    HashedIp(b)
}

fn addr(asn: u32, net: u8) -> VerifiedAddress {
    VerifiedAddress { asn: Asn(asn), net24: [10, (asn % 250) as u8, net] }
}

fn report(sensor: u32, asn: u32, target: u32, at: i64) -> Report {
    Report {
        sensor: node(sensor),
        address: addr(asn, (sensor % 250) as u8),
        hashed_ip: ip(target),
        scenario: ScenarioKind::Application,
        confidence: 3,
        observed_at: Timestamp(at),
    }
}

fn engine() -> Consensus {
    Consensus::new(ConsensusConfig::default(), AsnOrgs::new(), Allowlist::new()).unwrap()
}

/// A sensor seen at its address for 60 days with a good record.
fn veteran(c: &mut Consensus, sensor: u32, asn: u32) {
    c.restore_sensor(
        &SensorRecord {
            sensor: node(sensor),
            address: addr(asn, (sensor % 250) as u8),
            verified_since: Timestamp(T0 - 60 * DAY),
            last_seen: Timestamp(T0),
            confirmed: 50.0,
            unconfirmed: 5.0,
        },
        Timestamp(T0),
    );
}

#[test]
fn veterans_trust_is_full_and_new_sensors_are_near_zero() {
    let mut c = engine();
    veteran(&mut c, 1, 100);
    c.observe_sensor(node(2), addr(200, 1), Timestamp(T0));
    let now = Timestamp(T0);
    assert!(c.sensor_trust(&node(1), now).unwrap() > 0.99);
    assert!((c.sensor_trust(&node(2), now).unwrap() - 0.02).abs() < 1e-9);
}

#[test]
fn one_asn_flood_never_exceeds_the_group_cap() {
    let mut c = engine();
    for s in 0..1000 {
        veteran(&mut c, s, 64500);
    }
    for s in 0..1000 {
        c.ingest(&report(s, 64500, 7, T0), Timestamp(T0));
    }
    let score = c.score(&ip(7), Timestamp(T0)).unwrap();
    assert!(score <= 1.0 + 1e-9, "score {score}");
    assert!(!c.is_listed(&ip(7)));
}

#[test]
fn twelve_proven_groups_list_and_eleven_do_not() {
    let mut c = engine();
    for g in 0..12 {
        for k in 0..3 {
            veteran(&mut c, g * 10 + k, 1000 + g);
        }
    }
    for g in 0..11 {
        for k in 0..3 {
            c.ingest(&report(g * 10 + k, 1000 + g, 1, T0), Timestamp(T0));
        }
    }
    assert!(!c.is_listed(&ip(1)), "11 groups must not list");
    let out = c.ingest(&report(110, 1011, 1, T0), Timestamp(T0));
    assert_eq!(out, IngestOutcome::Recorded { listed: true });
    let changes = c.drain_changes();
    assert_eq!(changes.len(), 1);
    assert!(matches!(changes[0].kind, ListChangeKind::Listed { groups: 12, .. }));
    // The explanation adds up to the score.
    let ex = c.explain(&ip(1), Timestamp(T0)).unwrap();
    let total: f64 = ex.groups.iter().map(|g| g.contribution).sum();
    assert!((total - ex.score).abs() < 1e-9);
    assert_eq!(ex.groups.len(), 12);
}

#[test]
fn fresh_sensors_in_many_asns_do_not_count_as_groups() {
    let mut c = engine();
    for g in 0..100 {
        for k in 0..5 {
            c.ingest(&report(g * 10 + k, 2000 + g, 3, T0), Timestamp(T0));
        }
    }
    let ex = c.explain(&ip(3), Timestamp(T0)).unwrap();
    assert_eq!(ex.groups_counted, 0);
    assert!(!c.is_listed(&ip(3)));
}

#[test]
fn allowlisted_ips_are_never_listed_and_protected_ones_need_fifty_groups() {
    let mut allow = Allowlist::new();
    allow.allow(ip(10));
    allow.protect(ip(11));
    let mut c = Consensus::new(ConsensusConfig::default(), AsnOrgs::new(), allow).unwrap();
    for g in 0..60 {
        veteran(&mut c, g, 3000 + g);
    }
    for g in 0..60 {
        assert_eq!(c.ingest(&report(g, 3000 + g, 10, T0), Timestamp(T0)), IngestOutcome::Allowlisted);
        let out = c.ingest(&report(g, 3000 + g, 11, T0), Timestamp(T0));
        assert_eq!(out, IngestOutcome::Recorded { listed: g >= 49 }, "after {} groups", g + 1);
    }
    assert!(!c.is_listed(&ip(10)));
}

#[test]
fn new_ips_are_rate_limited_per_sensor_and_per_unproven_group() {
    let mut c = engine();
    let burst = c.config().sensor_new_ip_burst as u32;
    let mut limited = 0;
    for t in 0..burst + 10 {
        if c.ingest(&report(1, 64501, t, T0), Timestamp(T0)) == IngestOutcome::RateLimited {
            limited += 1;
        }
    }
    assert_eq!(limited, 10);
    // An hour later the budget is back.
    let later = T0 + 3_600_000;
    assert!(matches!(
        c.ingest(&report(1, 64501, 99_999, later), Timestamp(later)),
        IngestOutcome::Recorded { .. }
    ));
    // Unproven sensors of one group share a budget: 5,000 Sybils get at most its burst.
    let mut c = engine();
    let mut recorded = 0;
    for s in 0..5000 {
        if matches!(c.ingest(&report(s, 64502, s, T0), Timestamp(T0)), IngestOutcome::Recorded { .. }) {
            recorded += 1;
        }
    }
    assert_eq!(recorded, c.config().group_unproven_new_ip_burst as u32);
}

#[test]
fn early_reporters_earn_credit_and_copiers_do_not() {
    let mut c = engine();
    // Sensor 500: aged but with no record; it reports before the listing.
    c.restore_sensor(
        &SensorRecord {
            sensor: node(500),
            address: addr(9000, (500 % 250) as u8),
            verified_since: Timestamp(T0 - 60 * DAY),
            last_seen: Timestamp(T0),
            confirmed: 0.0,
            unconfirmed: 0.0,
        },
        Timestamp(T0),
    );
    // Sensor 501: same, but it copies the list after the fact.
    c.restore_sensor(
        &SensorRecord {
            sensor: node(501),
            address: addr(9001, (501 % 250) as u8),
            verified_since: Timestamp(T0 - 60 * DAY),
            last_seen: Timestamp(T0),
            confirmed: 0.0,
            unconfirmed: 0.0,
        },
        Timestamp(T0),
    );
    let before = c.sensor_trust(&node(500), Timestamp(T0)).unwrap();
    assert!((before - c.sensor_trust(&node(501), Timestamp(T0)).unwrap()).abs() < 1e-12);
    for round in 0..20u32 {
        let t = T0 + i64::from(round) * 1000;
        c.ingest(&report(500, 9000, 50 + round, t), Timestamp(t));
        for g in 0..12 {
            veteran(&mut c, g, 4000 + g);
            c.ingest(&report(g, 4000 + g, 50 + round, t), Timestamp(t));
        }
        assert!(c.is_listed(&ip(50 + round)));
        c.ingest(&report(501, 9001, 50 + round, t), Timestamp(t));
    }
    let now = Timestamp(T0 + 20_000);
    let early = c.sensor_trust(&node(500), now).unwrap();
    let copier = c.sensor_trust(&node(501), now).unwrap();
    assert!(early > 0.99, "early reporter trust {early}");
    assert!(copier < 0.25, "copier trust {copier}");
    assert_eq!(c.sensor_record(&node(501)).unwrap().confirmed, 0.0);
}

#[test]
fn unconfirmed_reports_lower_trust_when_they_expire() {
    let mut c = engine();
    veteran(&mut c, 1, 100);
    let before = c.sensor_trust(&node(1), Timestamp(T0)).unwrap();
    for t in 0..100 {
        c.ingest(&report(1, 100, 1000 + t, T0), Timestamp(T0));
    }
    let later = T0 + 3 * DAY;
    c.observe_sensor(node(1), addr(100, 1), Timestamp(later));
    c.tick(Timestamp(later));
    assert_eq!(c.stats().tracked_ips, 0, "expired reports are forgotten");
    let record = c.sensor_record(&node(1)).unwrap();
    assert!(record.unconfirmed > 90.0);
    let after = c.sensor_trust(&node(1), Timestamp(later)).unwrap();
    assert!(after < 0.5 * before, "trust {before} -> {after}");
}

#[test]
fn scores_decay_and_listings_end() {
    let mut c = engine();
    for g in 0..15 {
        veteran(&mut c, g, 5000 + g);
        c.ingest(&report(g, 5000 + g, 1, T0), Timestamp(T0));
    }
    assert!(c.is_listed(&ip(1)));
    let s0 = c.score(&ip(1), Timestamp(T0)).unwrap();
    let s1 = c.score(&ip(1), Timestamp(T0 + DAY / 2)).unwrap();
    assert!(s1 < s0);
    c.drain_changes();
    c.tick(Timestamp(T0 + DAY));
    assert!(c.is_listed(&ip(1)), "hysteresis keeps it listed a while");
    c.tick(Timestamp(T0 + DAY + DAY / 2));
    assert!(!c.is_listed(&ip(1)), "a day and a half without reports delists");
    let changes = c.drain_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ListChangeKind::Delisted);
}

#[test]
fn moving_address_restarts_verified_age() {
    let mut c = engine();
    veteran(&mut c, 1, 100);
    assert!(c.sensor_trust(&node(1), Timestamp(T0)).unwrap() > 0.99);
    c.observe_sensor(node(1), addr(101, 1), Timestamp(T0 + 1000));
    assert!(c.sensor_trust(&node(1), Timestamp(T0 + 1000)).unwrap() < 0.03);
    // So does a long absence.
    let mut c = engine();
    veteran(&mut c, 1, 100);
    c.observe_sensor(node(1), addr(100, 1), Timestamp(T0 + 3 * DAY));
    assert!(c.sensor_trust(&node(1), Timestamp(T0 + 3 * DAY)).unwrap() < 0.03);
}

#[test]
fn stale_reports_are_refused_and_sensor_timestamps_are_not_trusted() {
    let mut c = engine();
    let mut r = report(1, 100, 1, T0 - 2 * 3_600_000);
    assert_eq!(c.ingest(&r, Timestamp(T0)), IngestOutcome::Stale);
    // A report claiming the future is recorded at the tier's time.
    r.observed_at = Timestamp(T0 + 10 * DAY);
    assert!(matches!(c.ingest(&r, Timestamp(T0)), IngestOutcome::Recorded { .. }));
    let ex = c.explain(&ip(1), Timestamp(T0)).unwrap();
    assert_eq!(ex.groups[0].sensors[0].reported_at, Timestamp(T0));
}

#[test]
fn organisations_are_one_group() {
    let orgs: AsnOrgs = (0..20).map(|i| (Asn(7000 + i), OrgId(1))).collect();
    let mut c = Consensus::new(ConsensusConfig::default(), orgs, Allowlist::new()).unwrap();
    for g in 0..20 {
        veteran(&mut c, g, 7000 + g);
        c.ingest(&report(g, 7000 + g, 1, T0), Timestamp(T0));
    }
    assert!(c.score(&ip(1), Timestamp(T0)).unwrap() <= 1.0 + 1e-9);
    assert!(!c.is_listed(&ip(1)));
}

#[test]
fn weak_reports_do_not_push_out_strong_ones() {
    let mut c = engine();
    for k in 0..3 {
        veteran(&mut c, k, 100);
        c.ingest(&report(k, 100, 1, T0), Timestamp(T0));
    }
    for s in 10..200 {
        assert_eq!(c.ingest(&report(s, 100, 1, T0), Timestamp(T0)), IngestOutcome::Crowded);
    }
    let ex = c.explain(&ip(1), Timestamp(T0)).unwrap();
    assert!(ex.groups[0].sensors.iter().all(|s| s.trust > 0.99));
}

#[test]
fn group_contribution_is_capped_concave_and_bounded_by_its_best_member() {
    let config = ConsensusConfig::default();
    let f = |sum, max| super::engine::tests_support::group_score(&config, sum, max);
    assert!((f(1.0, 1.0) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
    assert!(f(1000.0, 1.0) <= 1.0);
    assert!((f(1000.0 * 0.02, 0.02) - 0.03).abs() < 1e-12);
    assert!(f(2.0, 1.0) - f(1.0, 1.0) < f(1.0, 1.0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Adding sensors from an ASN that already reports an IP never raises its score by
    /// more than that ASN's cap.
    #[test]
    fn more_sensors_in_a_reporting_asn_add_at_most_its_cap(
        groups in proptest::collection::vec((1u32..6, any::<bool>()), 1..20),
        extra in 1u32..50,
        target_group in 0usize..20,
        extra_aged in any::<bool>(),
    ) {
        let mut c = engine();
        let mut sensor = 0u32;
        for (g, (n, aged)) in groups.iter().enumerate() {
            for _ in 0..*n {
                if *aged { veteran(&mut c, sensor, 100 + g as u32); }
                c.ingest(&report(sensor, 100 + g as u32, 1, T0), Timestamp(T0));
                sensor += 1;
            }
        }
        let before = c.score(&ip(1), Timestamp(T0)).unwrap();
        let g = (target_group % groups.len()) as u32;
        for _ in 0..extra {
            if extra_aged { veteran(&mut c, sensor, 100 + g); }
            c.ingest(&report(sensor, 100 + g, 1, T0), Timestamp(T0));
            sensor += 1;
        }
        let after = c.score(&ip(1), Timestamp(T0)).unwrap();
        prop_assert!(after <= before + c.config().group_cap + 1e-9, "{before} -> {after}");
        prop_assert!(after <= groups.len() as f64 * c.config().group_cap + 1e-9);
    }

    /// The same reports in the same order give the same list changes.
    #[test]
    fn replay_is_deterministic(reports in proptest::collection::vec((0u32..40, 0u32..15, 0u32..5, 0i64..3_600_000), 1..300)) {
        let run = || {
            let mut c = engine();
            for s in 0..40 { veteran(&mut c, s, 100 + s % 15); }
            let mut sorted = reports.clone();
            sorted.sort_by_key(|r| r.3);
            for (s, _g, t, at) in &sorted {
                c.ingest(&report(*s, 100 + s % 15, *t, T0 + at), Timestamp(T0 + at));
            }
            c.tick(Timestamp(T0 + 2 * DAY));
            c.drain_changes()
        };
        prop_assert_eq!(run(), run());
    }
}

#[test]
fn restored_listings_hold_through_the_hysteresis_band_without_credit() {
    let mut c = engine();
    for g in 0..8 {
        veteran(&mut c, g, 2000 + g);
        c.ingest(&report(g, 2000 + g, 7, T0), Timestamp(T0));
    }
    // Eight groups: under the 12 needed to list, above half the threshold.
    assert!(!c.is_listed(&ip(7)));
    let before = c.sensor_record(&node(0)).unwrap();
    assert!(c.restore_listing(&ip(7), Timestamp(T0 - 1000)));
    assert!(c.is_listed(&ip(7)));
    assert_eq!(c.stats().listed, 1);
    assert!(c.drain_changes().is_empty(), "restoring publishes nothing");
    assert_eq!(c.sensor_record(&node(0)).unwrap(), before, "restoring credits nobody");
    // Still listed after a tick: the score is above the delisting level.
    c.tick(Timestamp(T0 + 1000));
    assert!(c.is_listed(&ip(7)));
    // Restoring twice does not count it twice; an IP without reports is refused.
    assert!(c.restore_listing(&ip(7), Timestamp(T0)));
    assert_eq!(c.stats().listed, 1);
    assert!(!c.restore_listing(&ip(8), Timestamp(T0)));
}

#[test]
fn forgotten_sensors_stop_counting_and_their_listings_fall() {
    let mut c = engine();
    for g in 0..13 {
        veteran(&mut c, g, 1000 + g);
    }
    // Thirteen groups list ip 1; sensors 0-2 also report ip 2 alone.
    for g in 0..13 {
        c.ingest(&report(g, 1000 + g, 1, T0), Timestamp(T0));
    }
    for g in 0..3 {
        c.ingest(&report(g, 1000 + g, 2, T0), Timestamp(T0));
    }
    assert!(c.is_listed(&ip(1)));
    c.drain_changes();
    let reports_before = c.stats().reports;
    // Forgetting one sensor leaves twelve groups: still listed.
    assert_eq!(c.forget_sensors(&[node(0)], Timestamp(T0 + 1)), 2);
    assert!(c.is_listed(&ip(1)));
    assert!(c.drain_changes().is_empty());
    // Eight more (and one unknown): four groups fall below half the threshold, and ip 2
    // is gone with its reporters.
    let gone: Vec<NodeId> = (1..=8).chain([99]).map(node).collect();
    assert_eq!(c.forget_sensors(&gone, Timestamp(T0 + 2)), 10);
    assert!(!c.is_listed(&ip(1)));
    let changes = c.drain_changes();
    assert!(
        changes.iter().any(|ch| ch.ip == ip(1) && matches!(ch.kind, ListChangeKind::Delisted)),
        "{changes:?}"
    );
    assert_eq!(c.stats().reports, reports_before - 12);
    assert_eq!(c.stats().tracked_ips, 1);
    assert!(c.sensor_trust(&node(0), Timestamp(T0 + 2)).is_none(), "its standing is gone");
    assert_eq!(c.forget_sensors(&[node(0)], Timestamp(T0 + 3)), 0, "forgetting twice does nothing");
}
