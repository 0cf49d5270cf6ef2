use super::*;
use crate::event::Remediation;

const H: u64 = 3600;

fn engine(config: DecisionConfig) -> DecisionEngine {
    let allow = Allowlist::new(AllowlistConfig::default().compile(&["192.0.2.10".parse().unwrap()]).unwrap());
    DecisionEngine::new(config.compile().unwrap(), allow, StoredDecisions::default(), Timestamp(0), 1)
}

fn overflow(scenario: &str, value: &str) -> Overflow {
    Overflow::for_test(scenario, Scope::Ip, value)
}

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs as i64)
}

#[test]
fn default_ban_is_four_hours() {
    let mut e = engine(DecisionConfig::default());
    let v = e.on_overflow(&overflow("palisade/ssh-bf", "198.51.100.1"), t(100));
    let Verdict::Created(d) = v else { panic!("{v:?}") };
    assert_eq!(d.until, t(100 + 4 * H));
    assert_eq!(d.origin, Origin::Palisade);
    assert_eq!(d.id, 1);
    assert_eq!(e.take_changes().upserts, vec![d]);
}

#[test]
fn one_active_decision_per_key_extended_not_duplicated() {
    let mut e = engine(DecisionConfig { repeat_factor: 1.0, ..Default::default() });
    let first = e.on_overflow(&overflow("a", "198.51.100.1"), t(0));
    let again = e.on_overflow(&overflow("a", "198.51.100.1"), t(0));
    assert!(matches!(again, Verdict::AlreadyCovered(_)), "{again:?}");
    let later = e.on_overflow(&overflow("a", "198.51.100.1"), t(H));
    let Verdict::Extended { replaced, decision } = later else { panic!("{later:?}") };
    assert_eq!(replaced, first.decision().unwrap().id);
    assert_eq!(decision.until, t(5 * H));
    assert_eq!(decision.uuid, first.decision().unwrap().uuid);
    assert_eq!(e.book().active_len(), 1);
}

#[test]
fn repeat_offenders_get_longer_bans_up_to_the_cap() {
    let mut e = engine(DecisionConfig::default());
    let mut lengths = Vec::new();
    let mut now = 0;
    for _ in 0..6 {
        let v = e.on_overflow(&overflow("a", "198.51.100.1"), t(now));
        let d = v.decision().unwrap().clone();
        lengths.push((d.until.as_secs() as u64 - now) / H);
        now = d.until.as_secs() as u64 + 1;
        e.tick(t(now));
    }
    assert_eq!(lengths, vec![4, 8, 16, 32, 64, 128]);
    let mut e2 = engine(DecisionConfig { max_duration: "10h".into(), ..Default::default() });
    e2.on_overflow(&overflow("a", "198.51.100.1"), t(0));
    e2.tick(t(5 * H));
    let d = e2.on_overflow(&overflow("a", "198.51.100.1"), t(5 * H)).decision().unwrap().clone();
    assert_eq!(d.until, t(13 * H));
    e2.tick(t(14 * H));
    let d = e2.on_overflow(&overflow("a", "198.51.100.1"), t(14 * H)).decision().unwrap().clone();
    assert_eq!(d.until, t(24 * H), "capped at max_duration");
}

#[test]
fn simultaneous_scenarios_are_one_offence() {
    let mut e = engine(DecisionConfig::default());
    let first = e.on_overflow(&overflow("palisade/ssh-bf", "198.51.100.1"), t(0));
    let second = e.on_overflow(&overflow("palisade/ssh-user-enum", "198.51.100.1"), t(0));
    assert!(matches!(first, Verdict::Created(_)));
    assert!(matches!(second, Verdict::AlreadyCovered(_)), "{second:?}");
    // A minute later, still banned, another overflow extends by the base length only.
    let third = e.on_overflow(&overflow("palisade/ssh-bf", "198.51.100.1"), t(60));
    assert_eq!(third.decision().unwrap().until, t(60 + 4 * H));
    // After the ban ends, the comeback counts as the second offence: 8h.
    e.tick(t(5 * H));
    let comeback = e.on_overflow(&overflow("palisade/ssh-bf", "198.51.100.1"), t(5 * H));
    assert_eq!(comeback.decision().unwrap().until, t(13 * H));
}

#[test]
fn allowlist_wins_over_everything() {
    let mut e = engine(DecisionConfig::default());
    assert!(matches!(e.on_overflow(&overflow("a", "127.0.0.1"), t(0)), Verdict::Allowlisted(_)));
    assert!(matches!(e.on_overflow(&overflow("a", "::1"), t(0)), Verdict::Allowlisted(_)));
    assert!(matches!(e.on_overflow(&overflow("a", "192.0.2.10"), t(0)), Verdict::Allowlisted(_)));
    let mut range = overflow("a", "192.0.2.0/24");
    range.scope = Scope::Range;
    assert!(matches!(e.on_overflow(&range, t(0)), Verdict::Allowlisted(_)));
    let req = NewDecision {
        origin: Origin::Cli,
        kind: DecisionType::Ban,
        scope: Scope::Ip,
        value: "::ffff:127.0.0.1".into(),
        duration: Duration::from_secs(60),
        scenario: "manual".into(),
        simulated: false,
    };
    assert!(matches!(e.add(req, t(0)), Err(DecisionError::Allowlisted { .. })));
    assert!(e.take_changes().is_empty());
}

#[test]
fn profiles_pick_duration_type_and_skip() {
    let config = DecisionConfig {
        profiles: vec![
            ProfileConfig {
                name: "quiet".into(),
                scenarios: vec!["palisade/http-crawl*".into()],
                duration: None,
                kind: None,
                simulated: false,
                no_decision: true,
            },
            ProfileConfig {
                name: "ssh".into(),
                scenarios: vec!["palisade/ssh-*".into()],
                duration: Some("12h".into()),
                kind: Some("captcha".into()),
                simulated: true,
                no_decision: false,
            },
        ],
        ..Default::default()
    };
    let mut e = engine(config);
    assert_eq!(
        e.on_overflow(&overflow("palisade/http-crawl-non-statics", "198.51.100.1"), t(0)),
        Verdict::NoDecision
    );
    let d = e.on_overflow(&overflow("palisade/ssh-bf", "198.51.100.1"), t(0)).decision().unwrap().clone();
    assert_eq!((d.until, d.kind, d.simulated), (t(12 * H), DecisionType::Captcha, true));
    let mut o = overflow("palisade/http-probing", "198.51.100.2");
    o.remediation = Some(Remediation { kind: DecisionType::Ban, duration: Some(Duration::from_secs(60)) });
    assert_eq!(e.on_overflow(&o, t(0)).decision().unwrap().until, t(60));
    o.remediation = None;
    assert_eq!(e.on_overflow(&o, t(0)), Verdict::NoDecision);
}

#[test]
fn expiry_tombstones_and_purge() {
    let mut e = engine(DecisionConfig::default());
    e.on_overflow(&overflow("a", "198.51.100.1"), t(0));
    e.on_overflow(&overflow("a", "2001:db8::1"), t(10));
    e.take_changes();
    let report = e.tick(t(4 * H + 5));
    assert_eq!(report.expired.len(), 1);
    assert_eq!(e.book().active_len(), 1);
    assert_eq!(e.book().ended_len(), 1);
    assert_eq!(e.book().containing("198.51.100.1".parse().unwrap()).count(), 0);
    assert_eq!(e.book().containing("2001:db8::1".parse().unwrap()).count(), 1);
    let report = e.tick(t(4 * H + 6 * H + 10));
    assert_eq!(report.purged, 1);
    assert_eq!(e.take_changes().removed, vec![1]);
}

#[test]
fn delete_ends_now_and_keeps_a_tombstone() {
    let mut e = engine(DecisionConfig::default());
    e.on_overflow(&overflow("palisade/ssh-bf", "198.51.100.1"), t(0));
    e.on_overflow(&overflow("palisade/http-probing", "198.51.100.2"), t(0));
    let filter = DecisionFilter { scenario: Some("SSH".into()), ..Default::default() };
    let gone = e.delete(&filter, t(50));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].until, t(50));
    assert_eq!(e.book().active_len(), 1);
    assert_eq!(e.book().ending_after((t(0), 0), t(100)).count(), 1);
    let by_ip = DecisionFilter { ip: Some("198.51.100.2".parse().unwrap()), ..Default::default() };
    assert_eq!(e.select(&by_ip).len(), 1);
}

#[test]
fn restart_restores_state_and_ids_never_repeat() {
    let mut e = engine(DecisionConfig::default());
    e.on_overflow(&overflow("a", "198.51.100.1"), t(0));
    e.on_overflow(&overflow("a", "198.51.100.2"), t(0));
    let changes = e.take_changes();
    let stored = StoredDecisions { decisions: changes.upserts, offences: changes.offences, last_id: 5 };
    let allow = Allowlist::default();
    let mut again =
        DecisionEngine::new(DecisionConfig::default().compile().unwrap(), allow, stored, t(10), 2);
    assert_eq!(again.book().active_len(), 2);
    let d = again.on_overflow(&overflow("a", "198.51.100.3"), t(20)).decision().unwrap().clone();
    assert_eq!(d.id, 6);
    // The repeat history survived: a second offence by .1 after expiry lasts 8h.
    again.tick(t(5 * H));
    let d = again.on_overflow(&overflow("a", "198.51.100.1"), t(5 * H)).decision().unwrap().clone();
    assert_eq!(d.until, t(13 * H));
}

#[test]
fn unpersisted_changes_can_be_requeued_in_order() {
    let mut e = engine(DecisionConfig::default());
    e.on_overflow(&overflow("a", "198.51.100.1"), t(0));
    let failed = e.take_changes();
    e.on_overflow(&overflow("a", "198.51.100.2"), t(1));
    e.requeue(failed);
    let all = e.take_changes();
    let values: Vec<&str> = all.upserts.iter().map(|d| d.value.as_str()).collect();
    assert_eq!(values, ["198.51.100.1", "198.51.100.2"]);
    assert_eq!(all.offences.len(), 2);
    assert!(e.take_changes().is_empty());
}

#[test]
fn stream_pages_see_new_ids_and_every_ending_once() {
    let mut e = engine(DecisionConfig::default());
    e.on_overflow(&overflow("a", "198.51.100.1"), t(0)); // id 1, until 4h
    e.on_overflow(&overflow("a", "198.51.100.2"), t(10)); // id 2, until 4h+10
    e.on_overflow(&overflow("a", "198.51.100.3"), t(20)); // id 3
    let ids = |it: &mut dyn Iterator<Item = &Decision>| it.map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(ids(&mut e.book().after_id(1)), vec![2, 3]);
    assert_eq!(ids(&mut e.book().after_id(u64::MAX)), Vec::<u64>::new());
    let filter = DecisionFilter { value: Some("198.51.100.3".into()), ..Default::default() };
    e.delete(&filter, t(30)); // id 3 ends at 30: a tombstone
                              // At 4h+15, id 1 and 2 are due but not yet expired by a tick: still reported.
    let book = e.book();
    let ending = ids(&mut book.ending_after((t(0), 0), t(4 * H + 15)));
    assert_eq!(ending, vec![3, 1, 2], "tombstones and due decisions merged by end time");
    // Paging: resume after the first one.
    let first = book.ending_after((t(0), 0), t(4 * H + 15)).next().map(|d| (d.until, d.id)).unwrap();
    assert_eq!(ids(&mut book.ending_after(first, t(4 * H + 15))), vec![1, 2]);
    assert_eq!(ids(&mut book.ending_after((t(4 * H + 15), u64::MAX), t(4 * H + 15))), Vec::<u64>::new());
    assert_eq!(ids(&mut book.ending_after((t(4 * H + 16), 0), t(4 * H + 15))), Vec::<u64>::new());
}
