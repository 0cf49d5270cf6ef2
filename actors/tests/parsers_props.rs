//! Whatever an attacker writes into a log line, parsing never panics.

use palisade_actors::parser::Parsers;
use palisade_actors::{HubFile, RawLine};
use palisade_proto::Timestamp;
use proptest::prelude::*;
use std::path::Path;
use std::sync::{Arc, OnceLock};

fn parsers() -> &'static Parsers {
    static P: OnceLock<Parsers> = OnceLock::new();
    P.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub");
        let mut files = Vec::new();
        let mut dirs = vec![root.join("parsers")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("hub dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel =
                        path.strip_prefix(&root).expect("under root").to_string_lossy().replace('\\', "/");
                    files.push(HubFile { path: rel, text: std::fs::read_to_string(&path).expect("read") });
                }
            }
        }
        Parsers::load(&files).expect("hub parsers load")
    })
}

fn check(log_type: &str, text: String, received_at: i64) {
    let line = RawLine {
        source: Arc::from("prop"),
        log_type: Arc::from(log_type),
        text,
        received_at: Timestamp(received_at),
    };
    let explained = parsers().explain(&line);
    let parsed = parsers().parse(line);
    // explain and parse agree on the outcome.
    assert_eq!(
        parsed.is_ok(),
        matches!(explained.result, palisade_actors::parser::ExplainResult::Parsed { .. })
    );
    let _ = explained.to_string();
}

/// Real line shapes with arbitrary text spliced in, so the fuzz reaches deep nodes.
const TEMPLATES: &[(&str, &str)] = &[
    ("syslog", "Mar 27 13:06:56 host sshd[12]: Failed password for {} from {} port 22 ssh2"),
    ("syslog", "Mar 27 13:06:56 host sshd[12]: Invalid user {} from {}"),
    ("syslog", "<34>1 2003-10-11T22:14:15.003Z h sshd - - {} {}"),
    ("syslog", "2026-11-25T06:00:00{}+00:00 h sshd[1]: Connection closed by {} [preauth]"),
    ("nginx", "{} - - [25/Nov/2026:06:00:17 +0000] \"GET {} HTTP/1.1\" 200 1 \"-\" \"-\""),
    ("nginx", "2026/11/25 06:01:02 [error] 1#0: *5 user \"{}\" was not found in \"/x\", client: {}, server: s"),
    ("apache", "[Sat Jun 01 02:17:42.391337 2013] [auth_basic:error] [pid 1] [client {}:1] AH01617: user {}: authentication failure for \"/\": x"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), lt in prop::sample::select(vec!["syslog", "nginx", "apache", "other"]), t in any::<i64>()) {
        check(lt, text, t);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check("syslog", String::from_utf8_lossy(&bytes).into_owned(), 0);
        check("nginx", String::from_utf8_lossy(&bytes).into_owned(), 0);
    }

    #[test]
    fn spliced_fields_never_panic(idx in 0..TEMPLATES.len(), a in "\\PC{0,40}", b in "[0-9a-fA-F:.\\[\\] %]{0,45}", t in any::<i64>()) {
        let (lt, tpl) = TEMPLATES[idx];
        let text = tpl.replacen("{}", &a, 1).replacen("{}", &b, 1);
        check(lt, text, t);
    }
}

#[test]
fn huge_lines_never_panic() {
    let unit = "Failed password for invalid user from 1.2.3.4 ";
    let huge = format!("Mar 27 13:06:56 host sshd[1]: {} from 9.9.9.9 port 22 ssh2", unit.repeat(20_000));
    check("syslog", huge.clone(), 0);
    check("nginx", huge, 0);
    check("syslog", "\u{0}\u{FEFF}\u{10FFFF}".repeat(50_000), i64::MIN);
    check("apache", "[".repeat(100_000), i64::MAX);
}
