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

// ------------------------------------------------- single-pass matcher vs the regex

/// The shipped parser files.
fn shipped_parsers() -> Vec<HubFile> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<HubFile>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("hub dir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|x| x == "yaml") {
                let rel =
                    path.strip_prefix(root).expect("under the hub").to_string_lossy().replace('\\', "/");
                out.push(HubFile { path: rel, text: std::fs::read_to_string(&path).expect("read") });
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub");
    let mut out = Vec::new();
    walk(&root, &root.join("parsers"), &mut out);
    out
}

/// Every regex node of the shipped parsers that runs single-pass.
fn stepped_nodes(parsers: &Parsers) -> Vec<&engine::RegexNode> {
    fn visit<'a>(n: &'a engine::Node, out: &mut Vec<&'a engine::RegexNode>) {
        if let engine::NodeKind::Regex(r) = &n.kind {
            if r.step.is_some() {
                out.push(r);
            }
        }
        n.children.iter().for_each(|c| visit(c, out));
    }
    let mut out = Vec::new();
    for p in parsers.stages.iter().flat_map(|s| s.parsers.iter()) {
        p.nodes.iter().for_each(|n| visit(n, &mut out));
    }
    out
}

/// The log lines of the parser samples, and the values parsers capture from them (what
/// child nodes apply on).
fn sample_texts() -> Vec<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/parsers/samples.txt");
    let text = std::fs::read_to_string(path).expect("samples.txt");
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(['@', '#']) && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let parsers = Parsers::load(&shipped_parsers()).expect("shipped parsers load");
    let mut out: Vec<Vec<u8>> = Vec::new();
    for l in &lines {
        out.push(l.clone().into_bytes());
        for log_type in ["syslog", "nginx", "apache"] {
            if let Ok(ev) = parsers.parse(raw(log_type, l)) {
                out.extend(ev.parsed.iter().map(|(_, v)| v.as_bytes().to_vec()));
                out.extend(ev.meta.iter().map(|(_, v)| v.as_bytes().to_vec()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn assert_agree(node: &engine::RegexNode, hay: &[u8]) {
    let Some(step) = &node.step else { return };
    let mut slots = [0; 2 * stepper::MAX_GROUPS];
    let stepped = step
        .captures(hay, &mut slots)
        .then(|| (0..node.re.captures_len()).map(|g| stepper::group(&slots, g)).collect::<Vec<_>>());
    let mut locs = node.re.capture_locations();
    let reference = node
        .re
        .captures_read(&mut locs, hay)
        .map(|_| (0..locs.len()).map(|g| locs.get(g)).collect::<Vec<_>>());
    assert_eq!(stepped, reference, "pattern {:?} on {:?}", node.re.as_str(), String::from_utf8_lossy(hay));
}

#[test]
fn shipped_patterns_run_single_pass_where_they_can() {
    let parsers = Parsers::load(&shipped_parsers()).expect("shipped parsers load");
    let stepped: Vec<&str> = stepped_nodes(&parsers).iter().map(|n| n.re.as_str()).collect();
    // The nginx access line, the hot path of web logs, must not fall back to the regex.
    assert!(stepped.iter().any(|p| p.contains("(?P<http_user_agent>")), "{stepped:#?}");
    for node in stepped_nodes(&parsers) {
        for text in sample_texts() {
            assert_agree(node, &text);
        }
    }
}

mod single_pass {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Every shipped pattern that runs single-pass gives the regex's captures on
        /// sample lines and values with a random stretch replaced by random bytes.
        #[test]
        fn shipped_patterns_agree_with_the_regex(
            pick in any::<prop::sample::Index>(),
            cut in (any::<prop::sample::Index>(), 0usize..12),
            insert in proptest::collection::vec(
                prop_oneof![any::<u8>(), prop::sample::select(b" \"\\[]-:/.0123456789\n".to_vec())], 0..8),
        ) {
            thread_local! {
                static CASES: (Parsers, Vec<Vec<u8>>) =
                    (Parsers::load(&shipped_parsers()).expect("loads"), sample_texts());
            }
            CASES.with(|(parsers, texts)| {
                let text = &texts[pick.index(texts.len())];
                let from = cut.0.index(text.len() + 1);
                let to = (from + cut.1).min(text.len());
                let hay = [&text[..from], &insert[..], &text[to..]].concat();
                for node in stepped_nodes(parsers) {
                    assert_agree(node, &hay);
                }
            });
        }
    }
}
