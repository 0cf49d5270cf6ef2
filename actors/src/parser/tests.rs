//! Unit tests of the engine on small inline parser files.

use super::*;
use palisade_proto::Timestamp;

fn file(path: &str, text: &str) -> HubFile {
    HubFile { path: path.into(), text: text.into() }
}

fn raw(log_type: &str, text: &str) -> RawLine {
    RawLine {
        source: Arc::from("t"),
        log_type: Arc::from(log_type),
        text: text.into(),
        received_at: Timestamp(0),
    }
}

const FRAMING: &str = r#"
name: t/frame
filter: { log_type: [syslog] }
onsuccess: next_stage
nodes:
  - apply_on: line
    pattern: '^%{PROG:program}: %{GREEDYDATA:message}'
"#;

fn load_err(files: &[HubFile]) -> HubError {
    match Parsers::load(files) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn broken_yaml_reports_file_and_line() {
    let e = load_err(&[file("parsers/s00-raw/a.yaml", "name: a\nnodes:\n  - pattern: [unclosed\n")]);
    assert_eq!(e.file, "parsers/s00-raw/a.yaml");
    assert!(matches!(e.line, Some(3 | 4)), "{e}");
}

#[test]
fn unknown_key_reports_its_line_in_later_documents() {
    let text = "name: a\n---\nname: b\nnodes:\n  - pattern: 'x'\n    aply_on: message\n";
    let e = load_err(&[file("parsers/s01-parse/a.yaml", text)]);
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("aply_on"), "{e}");
    let e = load_err(&[file("parsers/s01-parse/a.yaml", "name: a\nfilter:\n  programme: [x]\n")]);
    assert_eq!(e.line, Some(3), "{e}");
}

#[test]
fn bad_regex_reports_its_line() {
    let text = "name: a\nnodes:\n  - name: ok\n    pattern: 'fine'\n  - name: broken\n    pattern: 'x(y'\n";
    let e = load_err(&[file("parsers/s01-parse/a.yaml", text)]);
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("node broken") && e.message.contains("bad regex"), "{e}");
}

#[test]
fn unknown_pattern_and_cycles_are_errors() {
    let text = "name: a\nnodes:\n  - pattern: '%{NO_SUCH_THING}'\n";
    let e = load_err(&[file("parsers/s01-parse/a.yaml", text)]);
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("unknown pattern %{NO_SUCH_THING}"), "{e}");
    let text = "name: a\npattern_syntax:\n  A: '%{B}'\n  B: 'x%{A}'\nnodes:\n  - pattern: '%{A}'\n";
    let e = load_err(&[file("parsers/s01-parse/a.yaml", text)]);
    assert!(e.message.contains("cycle: A -> B -> A"), "{e}");
}

#[test]
fn other_load_errors() {
    let dup = "name: same\n---\nname: same\n";
    let e = load_err(&[file("parsers/s01-parse/a.yaml", dup)]);
    assert!(e.message.contains("already used"), "{e}");
    let e = load_err(&[file("parsers/a.yaml", "name: a\n")]);
    assert!(e.message.contains("stage directory"), "{e}");
    let e = load_err(&[file("parsers/s01-parse/a.yaml", "name: a\nnodes:\n  - pattern: '(?P<message>x)'\n")]);
    assert!(e.message.contains("overwrite"), "{e}");
    let e = load_err(&[file("parsers/s01-parse/a.yaml", "name: a\nstatics:\n  - meta: x\n")]);
    assert!(e.message.contains("exactly one of value"), "{e}");
    let e = load_err(&[file(
        "parsers/s01-parse/a.yaml",
        "name: a\nnodes:\n  - pattern: x\n    method: normalize_ip\n",
    )]);
    assert!(e.message.contains("not both"), "{e}");
    let e = load_err(&[file("parsers/patterns/p.yaml", "IP: 'x'\n")]);
    assert!(e.message.contains("already defined"), "{e}");
}

#[test]
fn non_parser_files_are_ignored_and_global_patterns_load() {
    let files = [
        file("parsers/README.md", "# not yaml"),
        file("scenarios/x.yaml", "anything: [at all"),
        file("parsers/patterns/extra.yaml", "GREETING: 'hello|hi'\n"),
        file("parsers/s00-raw/f.yaml", FRAMING),
        file(
            "parsers/s01-parse/g.yaml",
            "name: t/g\nfilter: {program: [app]}\nnodes:\n  - pattern: '^%{GREETING:word} %{WORD:who}$'\n",
        ),
    ];
    let p = Parsers::load(&files).expect("loads");
    let e = p.parse(raw("syslog", "app: hi bob")).expect("parses");
    assert_eq!(e.parsed.get("who"), Some("bob"));
    assert_eq!(&*e.parser, "t/g");
    assert_eq!(p.stages(), vec!["s00-raw", "s01-parse"]);
    let list = p.list();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].stage, "s01-parse");
    assert_eq!(list[1].file, "parsers/s01-parse/g.yaml");
}

#[test]
fn misses_name_their_stage_and_reason() {
    let files = [
        file("parsers/s00-raw/f.yaml", FRAMING),
        file(
            "parsers/s01-parse/g.yaml",
            "name: t/g\nfilter: {program: [app]}\nnodes:\n  - pattern: '^ok$'\n",
        ),
    ];
    let p = Parsers::load(&files).expect("loads");
    let m = p.parse(raw("syslog", "no colon here")).expect_err("miss");
    assert_eq!((&*m.stage, &m.reason), ("s00-raw", &MissReason::NoMatch));
    assert_eq!(m.line.text, "no colon here", "the miss gives the line back");
    assert_eq!(m.log_type(), "syslog");
    let m = p.parse(raw("nginx", "x")).expect_err("miss");
    assert_eq!((&*m.stage, &m.reason), ("s00-raw", &MissReason::NoParser));
    let m = p.parse(raw("syslog", "other: ok")).expect_err("miss");
    assert_eq!((&*m.stage, &m.reason), ("s01-parse", &MissReason::NoParser));
    let m = p.parse(raw("syslog", "app: not ok")).expect_err("miss");
    assert_eq!((&*m.stage, &m.reason), ("s01-parse", &MissReason::NoMatch));
}

#[test]
fn nodes_children_statics_and_onsuccess() {
    let parse = r#"
name: t/app
filter: { program: [app] }
onsuccess: next_stage
nodes:
  - name: first
    pattern: '^login (?P<who>\w+) (?P<result>\w+)$'
    statics:
      - { meta: kind, value: login }
    nodes:
      - apply_on: result
        pattern: '^failed$'
        statics:
          - { meta: kind, value: child-loses }
          - { meta: outcome, value: failure }
      - apply_on: result
        pattern: '^ok$'
        statics:
          - { meta: outcome, value: success }
  - name: group
    nodes:
      - pattern: '^ping$'
        statics: [{ meta: kind, value: ping }]
statics:
  - { meta: user, capture: who }
  - { meta: host, capture: host, default: "" }
  - { parsed: src, raw: source }
---
name: t/never
filter: { program: [app] }
nodes:
  - pattern: '.*'
    statics: [{ meta: never, value: "yes" }]
"#;
    let enrich = r#"
name: t/e1
onsuccess: continue
nodes:
  - method: parse_timestamp
---
name: t/e2
filter: { meta: { kind: [login] } }
statics: [{ meta: enriched, value: "yes" }]
"#;
    let files = [
        file("parsers/s00-raw/f.yaml", FRAMING),
        file("parsers/s01-parse/app.yaml", parse),
        file("parsers/s02-enrich/e.yaml", enrich),
    ];
    let p = Parsers::load(&files).expect("loads");
    let e = p.parse(raw("syslog", "app: login bob failed")).expect("parses");
    assert_eq!(e.meta.get("kind"), Some("login"), "a parent's statics win over a child's");
    assert_eq!(e.meta.get("outcome"), Some("failure"));
    assert_eq!(e.meta.get("user"), Some("bob"));
    assert_eq!(e.meta.get("host"), Some(""));
    assert_eq!(e.parsed.get("src"), Some("t"));
    assert_eq!(e.meta.get("never"), None, "next_stage stops the stage");
    assert_eq!(e.meta.get("enriched"), Some("yes"));
    assert_eq!(e.time, Timestamp(0), "no timestamp: received_at");
    let e = p.parse(raw("syslog", "app: login bob maybe")).expect("a parent matches without children");
    assert_eq!(e.meta.get("outcome"), None);
    let e = p.parse(raw("syslog", "app: ping")).expect("a group matches through a child");
    assert_eq!(e.meta.get("kind"), Some("ping"));
    assert_eq!(e.meta.get("enriched"), None);
    let e = p.parse(raw("syslog", "app: pong")).expect("the next parser of the stage gets its turn");
    assert_eq!((e.meta.get("never"), &*e.parser), (Some("yes"), "t/never"));
}

#[test]
fn explain_agrees_with_parse() {
    let files = [
        file("parsers/s00-raw/f.yaml", FRAMING),
        file(
            "parsers/s01-parse/a.yaml",
            "name: t/a\nfilter: {program: [a]}\nnodes:\n  - pattern: '^x (?P<n>[0-9]+)$'\n",
        ),
        file(
            "parsers/s01-parse/b.yaml",
            "name: t/b\nfilter: {program_prefix: b}\nnodes:\n  - name: only\n    pattern: '^y$'\n",
        ),
    ];
    let p = Parsers::load(&files).expect("loads");
    let x = p.explain(&raw("syslog", "a: x 42"));
    match &x.result {
        ExplainResult::Parsed { parser, parsed, .. } => {
            assert_eq!(parser, "t/a");
            assert!(parsed.iter().any(|f| f.field == "n" && f.value == "42"));
        }
        other => panic!("{other:?}"),
    }
    let s1 = &x.stages[1];
    assert_eq!(s1.parsers[1].skipped.as_deref(), Some("program \"a\" does not start with any of [b]"));
    let x = p.explain(&raw("syslog", "bee: z"));
    assert_eq!(
        x.result,
        ExplainResult::Missed { stage: "s01-parse".into(), reason: "no parser's pattern matched".into() }
    );
    let text = x.to_string();
    assert!(text.contains("node only: no match"), "{text}");
    assert!(text.contains("MISSED at s01-parse"), "{text}");
    let json = serde_json::to_value(&x).expect("serialises");
    assert_eq!(json["result"]["status"], "missed");
}
