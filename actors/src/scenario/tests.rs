//! Unit tests of the bucket engine on virtual time, load errors, and the agreement of the
//! native evaluator with `cel-interpreter`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::event::{Fields, RawLine};
use proptest::prelude::*;

pub(crate) fn event(t_ms: i64, meta: &[(&str, &str)], parsed: &[(&str, &str)]) -> Event {
    let mut m = Fields::new();
    for (k, v) in meta {
        m.set(Arc::from(*k), *v);
    }
    let mut p = Fields::new();
    for (k, v) in parsed {
        p.set(Arc::from(*k), *v);
    }
    Event {
        time: Timestamp(t_ms),
        meta: m,
        parsed: p,
        parser: Arc::from("test"),
        line: RawLine {
            source: Arc::from("test"),
            log_type: Arc::from("syslog"),
            text: String::new(),
            received_at: Timestamp(t_ms),
        },
    }
}

fn ssh_fail(t_ms: i64, ip: &str) -> Event {
    event(t_ms, &[("log_type", "ssh_failed-auth"), ("source_ip", ip), ("service", "ssh")], &[])
}

fn hub(yaml: &str) -> Vec<HubFile> {
    vec![
        HubFile { path: "scenarios/test.yaml".into(), text: yaml.into() },
        HubFile { path: "data/list.txt".into(), text: "sqlmap\nnikto\n".into() },
    ]
}

fn engine(yaml: &str) -> Buckets {
    Buckets::new(Arc::new(Scenarios::load(&hub(yaml)).expect("loads")))
}

fn load_err(yaml: &str) -> HubError {
    Scenarios::load(&hub(yaml)).expect_err("must fail")
}

const LEAKY: &str = "
type: leaky
name: t/leaky
description: d
filter: \"evt.meta.log_type == 'ssh_failed-auth'\"
groupby: evt.meta.source_ip
capacity: 5
leakspeed: 10s
labels: {remediation: true, confidence: 3, service: ssh}
";

fn pour_all(b: &mut Buckets, evs: &[Event]) -> Vec<Overflow> {
    let mut out = Vec::new();
    for e in evs {
        b.pour(e, &mut out);
    }
    out
}

#[test]
fn burst_overflows_on_capacity_plus_one() {
    let mut b = engine(LEAKY);
    let mut out = Vec::new();
    for i in 0..5 {
        b.pour(&ssh_fail(1000 + i, "1.2.3.4"), &mut out);
    }
    assert!(out.is_empty(), "5 events fit in a capacity-5 bucket");
    b.pour(&ssh_fail(1005, "1.2.3.4"), &mut out);
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert_eq!(&*o.scenario, "t/leaky");
    assert_eq!(o.events_count, 6);
    assert_eq!(o.first_at, Timestamp(1000));
    assert_eq!(o.last_at, Timestamp(1005));
    assert_eq!(o.value, "1.2.3.4");
    assert_eq!(o.group_key, "1.2.3.4");
    assert_eq!(o.scope, Scope::Ip);
    assert_eq!(o.confidence, 3);
    assert_eq!(o.remediation.as_ref().map(|r| r.kind.clone()), Some(palisade_proto::DecisionType::Ban));
    assert_eq!(o.labels.get("service").map(String::as_str), Some("ssh"));
    // The bucket is destroyed after an overflow: the next event starts a fresh one.
    assert_eq!(b.live_buckets(), 0);
    b.pour(&ssh_fail(1006, "1.2.3.4"), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(b.live_buckets(), 1);
    assert_eq!(b.stats()[0].overflowed, 1);
    assert_eq!(b.stats()[0].instantiated, 2);
}

#[test]
fn tokens_leak_back() {
    let mut b = engine(LEAKY);
    // 5 at t=0, then one every 10 s: each finds the token that leaked back.
    let mut evs: Vec<Event> = (0..5).map(|_| ssh_fail(0, "1.2.3.4")).collect();
    for k in 1..20 {
        evs.push(ssh_fail(k * 10_000, "1.2.3.4"));
    }
    assert!(pour_all(&mut b, &evs).is_empty());
    // One 1 ms too early overflows.
    let out = pour_all(&mut b, &[ssh_fail(19 * 10_000 + 9_999, "1.2.3.4")]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].events_count, 25);
    assert_eq!(out[0].first_at, Timestamp(0));
}

#[test]
fn idle_bucket_freed_after_capacity_plus_one_leaks() {
    let mut b = engine(LEAKY);
    let mut out = Vec::new();
    b.pour(&ssh_fail(0, "1.2.3.4"), &mut out);
    b.pour(&ssh_fail(0, "5.6.7.8"), &mut out);
    assert_eq!(b.live_buckets(), 2);
    b.advance(Timestamp(60_000), &mut out);
    assert_eq!(b.live_buckets(), 2, "idle for exactly 6 x 10 s: still alive");
    b.advance(Timestamp(60_001), &mut out);
    assert_eq!(b.live_buckets(), 0);
    assert_eq!(b.stats()[0].underflowed, 2);
    assert!(out.is_empty());
    // A bucket refreshed by an event lives on.
    b.pour(&ssh_fail(100_000, "1.2.3.4"), &mut out);
    b.pour(&ssh_fail(150_000, "1.2.3.4"), &mut out);
    b.advance(Timestamp(200_000), &mut out);
    assert_eq!(b.live_buckets(), 1);
    b.advance(Timestamp(210_001), &mut out);
    assert_eq!(b.live_buckets(), 0);
}

#[test]
fn event_time_frees_buckets_in_replay() {
    let mut b = engine(LEAKY);
    let mut out = Vec::new();
    for i in 0..1000 {
        b.pour(&ssh_fail(i * 1000, &format!("10.0.{}.{}", i / 250, i % 250 + 1)), &mut out);
    }
    // Only the buckets of the last 60 s are alive.
    assert!(b.live_buckets() <= 61, "{}", b.live_buckets());
}

const BLACKHOLE: &str = "
type: leaky
name: t/bh
description: d
filter: \"evt.meta.log_type == 'ssh_failed-auth'\"
capacity: 1
leakspeed: 10s
blackhole: 1m
";

#[test]
fn blackhole_per_key() {
    let mut b = engine(BLACKHOLE);
    let out = pour_all(&mut b, &[ssh_fail(0, "1.1.1.1"), ssh_fail(1, "1.1.1.1")]);
    assert_eq!(out.len(), 1);
    // Same key within a minute: overflow discarded.
    let out = pour_all(&mut b, &[ssh_fail(1000, "1.1.1.1"), ssh_fail(1001, "1.1.1.1")]);
    assert!(out.is_empty());
    assert_eq!(b.stats()[0].blackholed, 1);
    // Another key is independent.
    let out = pour_all(&mut b, &[ssh_fail(1000, "2.2.2.2"), ssh_fail(1001, "2.2.2.2")]);
    assert_eq!(out.len(), 1);
    // After the blackhole, the first key overflows again.
    let out = pour_all(&mut b, &[ssh_fail(61_001, "1.1.1.1"), ssh_fail(61_002, "1.1.1.1")]);
    assert_eq!(out.len(), 1);
}

#[test]
fn distinct_drops_duplicates_before_pouring() {
    let mut b = engine(
        "
type: leaky
name: t/enum
description: d
filter: \"evt.meta.log_type == 'ssh_failed-auth'\"
distinct: evt.meta.target_user
capacity: 2
leakspeed: 10s
",
    );
    let u = |t, user| {
        event(t, &[("log_type", "ssh_failed-auth"), ("source_ip", "1.2.3.4"), ("target_user", user)], &[])
    };
    let out = pour_all(
        &mut b,
        &[u(0, "root"), u(1, "root"), u(2, "root"), u(3, "admin"), u(4, "admin"), u(5, "root")],
    );
    assert!(out.is_empty());
    assert_eq!(b.stats()[0].distinct_dropped, 4);
    let out = pour_all(&mut b, &[u(6, "test")]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].events_count, 3);
}

#[test]
fn trigger_overflows_every_event() {
    let mut b = engine(
        "
type: trigger
name: t/trigger
description: d
filter: \"contains_any_from_file(evt.meta.http_user_agent, 'list.txt')\"
",
    );
    let e = |t, ua| event(t, &[("source_ip", "9.9.9.9"), ("http_user_agent", ua)], &[]);
    let out = pour_all(&mut b, &[e(0, "sqlmap/1.8"), e(1, "Mozilla"), e(2, "Mozilla/5.00 (Nikto/2.5.0)")]);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.events_count == 1 && o.first_at == o.last_at));
    assert_eq!(b.live_buckets(), 0);
}

#[test]
fn counter_fires_after_duration() {
    let mut b = engine(
        "
type: counter
name: t/counter
description: d
filter: \"evt.meta.log_type == 'ssh_failed-auth'\"
duration: 1m
capacity: -1
",
    );
    let mut out = Vec::new();
    for i in 0..5 {
        b.pour(&ssh_fail(i * 1000, "1.2.3.4"), &mut out);
    }
    b.advance(Timestamp(60_000), &mut out);
    assert!(out.is_empty());
    b.advance(Timestamp(60_001), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].events_count, 5);
    assert_eq!(out[0].first_at, Timestamp(0));
    assert_eq!(out[0].last_at, Timestamp(4000));
    assert_eq!(out[0].value, "1.2.3.4");
    assert_eq!(b.live_buckets(), 0);
}

#[test]
fn range_scope() {
    let yaml = "
type: trigger
name: t/range
description: d
filter: 'true'
scope: {type: Range, v4_prefix: 24, v6_prefix: 64}
";
    let mut b = engine(yaml);
    let out = pour_all(
        &mut b,
        &[
            event(0, &[("source_ip", "192.0.2.77")], &[]),
            event(0, &[("source_ip", "2001:db8:1:2:3:4:5:6")], &[]),
            event(0, &[("source_ip", "::ffff:198.51.100.9")], &[]),
        ],
    );
    let values: Vec<&str> = out.iter().map(|o| o.value.as_str()).collect();
    assert_eq!(values, ["192.0.2.0/24", "2001:db8:1:2::/64", "198.51.100.0/24"]);
    assert!(out.iter().all(|o| o.scope == Scope::Range));
}

#[test]
fn missing_or_invalid_source_gives_empty_value() {
    let mut b = engine("type: trigger\nname: t/x\ndescription: d\nfilter: 'true'\n");
    let out = pour_all(&mut b, &[event(0, &[], &[]), event(0, &[("source_ip", "not-an-ip")], &[])]);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.value.is_empty()));
}

#[test]
fn out_of_order_events_count_as_same_time() {
    let mut b = engine(LEAKY);
    let times = [100_000, 50_000, 99_000, 0, 100_000];
    let out = pour_all(&mut b, &times.map(|t| ssh_fail(t, "1.2.3.4")));
    assert!(out.is_empty());
    let out = pour_all(&mut b, &[ssh_fail(1, "1.2.3.4")]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].first_at, Timestamp(100_000));
    assert_eq!(out[0].last_at, Timestamp(100_000));
}

#[test]
fn bucket_cap_evicts_and_counts() {
    let sc = Arc::new(Scenarios::load(&hub(LEAKY)).expect("loads"));
    let mut b = Buckets::with_max_buckets(sc, 3);
    let mut out = Vec::new();
    for i in 0..10 {
        b.pour(&ssh_fail(i, &format!("10.0.0.{i}")), &mut out);
    }
    assert_eq!(b.live_buckets(), 3);
    assert_eq!(b.stats()[0].evicted, 7);
    // The engine still works for the survivors.
    for _ in 0..5 {
        b.pour(&ssh_fail(20, "10.0.0.9"), &mut out);
    }
    assert_eq!(out.len(), 1);
}

#[test]
fn missing_fields_read_as_empty_and_has() {
    let mut b = engine(
        "
type: trigger
name: t/has
description: d
filter: \"!has(evt.meta.target_user) && evt.meta.nope == '' && evt.parsed.x != 'y'\"
",
    );
    let out = pour_all(
        &mut b,
        &[
            event(0, &[], &[]),
            event(0, &[("target_user", "root")], &[]),
            event(0, &[("target_user", "")], &[]),
        ],
    );
    assert_eq!(out.len(), 2);
}

#[test]
fn eval_errors_are_counted_not_matched() {
    let mut b = engine("type: trigger\nname: t/err\ndescription: d\nfilter: \"size(evt.time) > 1\"\n");
    let out = pour_all(&mut b, &[event(0, &[], &[])]);
    assert!(out.is_empty());
    assert_eq!(b.stats()[0].eval_errors, 1);
    // A filter that is not boolean is an error too.
    let mut b = engine("type: trigger\nname: t/str\ndescription: d\nfilter: \"evt.meta.source_ip\"\n");
    let out = pour_all(&mut b, &[event(0, &[("source_ip", "1.2.3.4")], &[])]);
    assert!(out.is_empty());
    assert_eq!(b.stats()[0].eval_errors, 1);
}

#[test]
fn cel_fallback_for_expressions_outside_the_subset() {
    let yaml = "
type: trigger
name: t/fallback
description: d
filter: \"['root', 'admin'].exists(u, evt.meta.target_user == u) && evt.meta.missing == ''\"
groupby: \"evt.meta.source_ip + string(evt.time)\"
";
    let sc = Scenarios::load(&hub(yaml)).expect("loads");
    assert!(!sc.list()[0].native);
    let mut b = Buckets::new(Arc::new(sc));
    let out = pour_all(
        &mut b,
        &[
            event(7, &[("target_user", "admin"), ("source_ip", "1.2.3.4")], &[]),
            event(8, &[("target_user", "bob")], &[]),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].group_key, "1.2.3.47");
}

#[test]
fn routing_only_reaches_candidates() {
    let yaml = "
type: trigger
name: t/a
description: d
filter: \"evt.meta.log_type == 'a' && evt.meta.x == '1'\"
---
type: trigger
name: t/b
description: d
filter: \"evt.meta.service in ['http', 'web'] && true\"
---
type: trigger
name: t/c
description: d
filter: \"evt.meta.x == '1' || evt.meta.log_type == 'a'\"
";
    let sc = Scenarios::load(&hub(yaml)).expect("loads");
    let mut c = Vec::new();
    sc.candidates(&event(0, &[("log_type", "a")], &[]), &mut c);
    assert_eq!(c, [0, 2]);
    sc.candidates(&event(0, &[("service", "web")], &[]), &mut c);
    assert_eq!(c, [1, 2]);
    sc.candidates(&event(0, &[], &[]), &mut c);
    assert_eq!(c, [2]);
    let mut b = Buckets::new(Arc::new(sc));
    let out = pour_all(&mut b, &[event(0, &[("log_type", "a"), ("x", "1"), ("service", "http")], &[])]);
    let names: Vec<&str> = out.iter().map(|o| &*o.scenario).collect();
    assert_eq!(names, ["t/a", "t/b", "t/c"]);
}

#[test]
fn load_errors_quote_file_and_line() {
    let e = load_err("type: leaky\nname: x\ndescription: d\nfilter: 'true'\ncapacity: 0\nleakspeed: 1s\n");
    assert_eq!((e.file.as_str(), e.line), ("scenarios/test.yaml", Some(5)), "{e}");
    assert!(e.message.contains("capacity"), "{e}");

    let e = load_err("type: leaky\nname: x\ndescription: d\nfilter: 'true'\ncapacity: 1\nleakspeed: 10\n");
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("duration"), "{e}");

    let e = load_err(
        "type: leaky\nname: x\ndescription: d\nfilter: \"evt.meta.a == \"\ncapacity: 1\nleakspeed: 1s\n",
    );
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("invalid CEL"), "{e}");

    let e = load_err("type: trigger\nname: x\ndescription: d\nfilter: 'true'\nbogus: 1\n");
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("bogus"), "{e}");

    let e = load_err("---\ntype: trigger\nname: x\ndescription: d\nfilter: 'true'\n---\n# second\ntype: trigger\nname: x\ndescription: d\nfilter: 'true'\n");
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.message.contains("duplicate"), "{e}");

    let e = load_err("type: trigger\nname: x\ndescription: d\nfilter: \"in_file(evt.meta.a, 'nope.txt')\"\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("data/nope.txt"), "{e}");

    let e = load_err("type: trigger\nname: x\ndescription: d\nfilter: \"evt.Meta.log_type == 'a'\"\n");
    assert!(e.message.contains("evt.meta"), "{e}");

    let e = load_err("type: trigger\nname: x\ndescription: d\nfilter: \"foo == 'a'\"\n");
    assert!(e.message.contains("unknown variable"), "{e}");

    let e = load_err("type: counter\nname: x\ndescription: d\nfilter: 'true'\ncapacity: 3\nduration: 1m\n");
    assert_eq!(e.line, Some(5), "{e}");

    let e = load_err("type: trigger\nname: x\ndescription: d\nfilter: \"evt.meta.a.matches('(')\"\n");
    assert!(e.message.contains("regex"), "{e}");

    let e = load_err("type: trigger\nname: x\nfilter: 'true'\n");
    assert!(e.message.contains("description"), "{e}");

    let e = load_err("type: trigger\nname: x\ndescription: d\nfilter: 'true'\nlabels: {confidence: 7}\n");
    assert!(e.message.contains("confidence"), "{e}");

    let e = load_err("type: trigger\nname: x\ndescription: d\nfilter: 'true'\nblackhole: soon\n");
    assert_eq!(e.line, Some(5), "{e}");
    assert!(format!("{e}").starts_with("scenarios/test.yaml:5: "), "{e}");
}

// ---------------------------------------------------------------- native vs CEL

/// Every shipped expression (filter, groupby, distinct), compiled with the shipped data.
fn shipped_hub() -> Vec<HubFile> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub");
    let mut files = Vec::new();
    for dir in ["scenarios", "data"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir)).expect("hub dir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let text = std::fs::read_to_string(e.path()).expect("read");
            files.push(HubFile { path: format!("{dir}/{}", e.file_name().to_string_lossy()), text });
        }
    }
    files
}

#[test]
fn shipped_scenarios_load_and_are_native() {
    let sc = Scenarios::load(&shipped_hub()).expect("shipped scenarios load");
    assert!(sc.len() >= 15, "{}", sc.len());
    for info in sc.list() {
        assert!(info.native, "{} is not fully native", info.name);
        assert!(info.labels.get("remediation").is_some_and(|r| r == "true"), "{}", info.name);
        assert!(info.name.starts_with("palisade/"));
    }
    // Every shipped scenario is routed by a field equality.
    assert!(sc.router.always.is_empty(), "unrouted: {:?}", sc.router.always);
}

fn compile_all(sources: &[String], hub_files: &[HubFile]) -> (Vec<expr::Expr>, FieldRefs, Context<'static>) {
    let mut data = DataLists::new(hub_files);
    let mut refs = FieldRefs::default();
    let exprs = sources
        .iter()
        .map(|s| expr::Expr::compile(s, &mut data, &mut refs).unwrap_or_else(|_| panic!("compiles: {s}")))
        .collect();
    let root = expr::root_context(Arc::new(data.into_matchers()));
    (exprs, refs, root)
}

fn agree(e: &expr::Expr, ev: &Event, root: &Context<'static>, refs: &FieldRefs) -> Result<(), TestCaseError> {
    let mut cel = CelScope::new(root, refs);
    let native = e.eval(ev, &mut cel);
    let mut cel = CelScope::new(root, refs);
    let via_cel = e.eval_cel_only(ev, &mut cel);
    prop_assert_eq!(native, via_cel, "expression `{}` on {:?} / {:?}", e.source, ev.meta, ev.parsed);
    Ok(())
}

const VALUES: &[&str] = &[
    "",
    "x",
    "ab",
    "abc",
    "ssh_failed-auth",
    "http",
    "ssh",
    "404",
    "200",
    "400",
    "GET",
    "POST",
    "root",
    "true",
    "false",
    "/wp-login.php",
    "/.env",
    "/search?q=tent",
    "/a/../../etc/passwd",
    "/x?id=1%27%20UNION%20SELECT%20NULL--",
    "/?q=%3Cscript%3E",
    "sqlmap/1.8",
    "Mozilla/5.0",
    "1.2.3.4",
    "2001:db8::1",
    "http_access-log",
    "A%42+c",
];

fn arb_event() -> impl Strategy<Value = Event> {
    let names = [
        "log_type",
        "service",
        "source_ip",
        "target_user",
        "http_path",
        "http_status",
        "http_verb",
        "http_user_agent",
        "target_fqdn",
        "sub_type",
        "a",
        "b",
    ];
    let pnames = ["static_ressource", "file_name", "c"];
    (
        proptest::collection::vec((0..names.len(), 0..VALUES.len()), 0..10),
        proptest::collection::vec((0..pnames.len(), 0..VALUES.len()), 0..4),
        0i64..2_000_000_000_000,
    )
        .prop_map(move |(m, p, t)| {
            let meta: Vec<(&str, &str)> = m.iter().map(|(k, v)| (names[*k], VALUES[*v])).collect();
            let parsed: Vec<(&str, &str)> = p.iter().map(|(k, v)| (pnames[*k], VALUES[*v])).collect();
            event(t, &meta, &parsed)
        })
}

/// Random expressions from a small grammar covering the lowered subset.
fn arb_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("evt.meta.a".to_owned()),
        Just("evt.meta.b".to_owned()),
        Just("evt.meta.http_path".to_owned()),
        Just("evt.meta.missing".to_owned()),
        Just("evt.parsed.c".to_owned()),
        Just("evt.meta['a']".to_owned()),
        Just("evt.time".to_owned()),
        Just("evt.log_type".to_owned()),
        Just("has(evt.meta.a)".to_owned()),
        Just("has(evt.parsed.c)".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        (0..VALUES.len()).prop_map(|i| format!("'{}'", VALUES[i])),
        prop_oneof![Just(0i64), Just(1), Just(5), Just(404), Just(-3)].prop_map(|i| i.to_string()),
    ];
    leaf.prop_recursive(4, 40, 3, |inner| {
        let bin = ["==", "!=", "<", "<=", ">", ">=", "&&", "||", "+", "in"];
        prop_oneof![
            (inner.clone(), 0..bin.len(), inner.clone())
                .prop_map(move |(a, o, b)| format!("({a} {} {b})", bin[o])),
            inner.clone().prop_map(|a| format!("!({a})")),
            inner.clone().prop_map(|a| format!("-({a})")),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
            (inner.clone(), prop::sample::subsequence(VALUES.to_vec(), 0..4)).prop_map(|(a, l)| format!(
                "({a} in [{}])",
                l.iter().map(|v| format!("'{v}'")).collect::<Vec<_>>().join(", ")
            )),
            (inner.clone(), prop_oneof![Just("1"), Just("'x'"), Just("true")])
                .prop_map(|(a, l)| format!("({a} in [{l}, 'ab'])")),
            (inner.clone(), 0..3usize, inner.clone())
                .prop_map(|(a, f, b)| format!("({a}).{}({b})", ["startsWith", "endsWith", "contains"][f])),
            (inner.clone(), prop_oneof![Just("^a"), Just("b$"), Just("(?i)ABC"), Just("[0-9]+")])
                .prop_map(|(a, r)| format!("({a}).matches('{r}')")),
            inner.clone().prop_map(|a| format!("size({a})")),
            inner.clone().prop_map(|a| format!("({a}).size()")),
            inner.clone().prop_map(|a| format!("url_decode({a})")),
            inner.clone().prop_map(|a| format!("lower({a})")),
            (inner.clone(), 0..4usize).prop_map(|(a, f)| format!(
                "{}({a}, 'bad_user_agents.txt')",
                ["in_file", "in_file_nocase", "contains_any_from_file", "regex_from_file"][f]
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn shipped_expressions_agree_with_cel(events in proptest::collection::vec(arb_event(), 1..8)) {
        let files = shipped_hub();
        let sc = Scenarios::load(&files).expect("loads");
        let mut sources = Vec::new();
        for s in &sc.list {
            sources.push(s.filter.source.clone());
            sources.push(s.groupby.source.clone());
            if let Some(d) = &s.distinct {
                sources.push(d.source.clone());
            }
        }
        let (exprs, refs, root) = compile_all(&sources, &files);
        for ev in &events {
            for e in &exprs {
                agree(e, ev, &root, &refs)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn random_expressions_agree_with_cel(src in arb_expr(), events in proptest::collection::vec(arb_event(), 1..4)) {
        let mut files = shipped_hub();
        files.retain(|f| f.path.starts_with("data/"));
        let (exprs, refs, root) = compile_all(std::slice::from_ref(&src), &files);
        prop_assert!(exprs[0].is_native(), "not lowered: {}", src);
        for ev in &events {
            agree(&exprs[0], ev, &root, &refs)?;
        }
    }
}
