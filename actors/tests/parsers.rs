//! The shipped parsers (`hub/parsers`) against sample lines of every supported form,
//! real logs, and the benchmark workload.

use palisade_actors::parser::{MissReason, Parsers};
use palisade_actors::{Event, HubFile, RawLine};
use palisade_proto::Timestamp;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// 2026-11-25T06:00:00Z, the start of the generated workload.
const RECEIVED: Timestamp = Timestamp(1_795_586_400_000);

fn hub_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub")
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<HubFile>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push(HubFile { path: rel, text });
        }
    }
}

fn parsers() -> Parsers {
    let root = hub_dir();
    let mut files = Vec::new();
    read_tree(&root, &root.join("parsers"), &mut files);
    Parsers::load(&files).unwrap_or_else(|e| panic!("hub parsers do not load: {e}"))
}

fn line(log_type: &str, text: &str) -> RawLine {
    RawLine {
        source: Arc::from("test"),
        log_type: Arc::from(log_type),
        text: text.to_owned(),
        received_at: RECEIVED,
    }
}

fn parse(p: &Parsers, log_type: &str, text: &str) -> Event {
    match p.parse(line(log_type, text)) {
        Ok(e) => e,
        Err(miss) => panic!(
            "{text:?} missed: {miss}\n{}",
            p.explain(&line(log_type, text))
        ),
    }
}

#[test]
fn smoke() {
    let p = parsers();
    let e = parse(
        &p,
        "syslog",
        "Mar 27 13:06:56 host sshd[1291]: Failed password for root from 1.2.3.4 port 22 ssh2",
    );
    println!("{:?}", e);
    println!(
        "{}",
        p.explain(&line(
            "syslog",
            "Mar 27 13:06:56 host sshd[1291]: Failed password for root from 1.2.3.4 port 22 ssh2"
        ))
    );
    let _ = MissReason::NoMatch;
}
