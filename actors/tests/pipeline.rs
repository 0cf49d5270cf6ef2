//! The pipeline with the shipped hub: parsers and buckets together, in live mode.

use palisade_actors::event::RawLine;
use palisade_actors::parser::Parsers;
use palisade_actors::pipeline::Pipeline;
use palisade_actors::scenario::Scenarios;
use palisade_actors::HubFile;
use palisade_proto::Timestamp;
use std::path::Path;
use std::sync::Arc;

fn hub_files(root: &Path, dir: &Path, out: &mut Vec<HubFile>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("hub dir").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            hub_files(root, &path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "txt")) {
            let rel = path.strip_prefix(root).expect("under hub").to_string_lossy().into_owned();
            out.push(HubFile { path: rel, text: std::fs::read_to_string(&path).expect("read") });
        }
    }
}

fn pipeline() -> Pipeline {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub");
    let mut files = Vec::new();
    hub_files(&root, &root, &mut files);
    let parsers = Parsers::load(&files).expect("parsers load");
    let scenarios = Scenarios::load(&files).expect("scenarios load");
    Pipeline::new(Arc::new(parsers), Arc::new(scenarios))
}

const HOUR_MS: i64 = 3_600_000;
/// 2026-11-25T06:00:00Z, the time written (zone-less) in the lines below.
const LOG_T0: i64 = 1_795_586_400_000;

/// Six sshd failures one second apart, stamped without a zone, read by a node whose wall
/// clock is 5 hours ahead of the stamps (a syslog written in UTC-5 local time). Between
/// lines the node's one-second clock ticks; `tick` decides how.
fn brute_force_with_ticks(
    tick: impl Fn(&mut Pipeline, Timestamp, &mut Vec<palisade_actors::Overflow>),
) -> usize {
    let mut p = pipeline();
    let mut out = Vec::new();
    for k in 0..6i64 {
        let wall = Timestamp(LOG_T0 + 5 * HOUR_MS + k * 1000);
        let text = format!(
            "Nov 25 06:00:0{k} web sshd[77]: Failed password for root from 198.51.100.9 port 4{k}00 ssh2"
        );
        p.process(
            RawLine { source: "auth.log".into(), log_type: "syslog".into(), text, received_at: wall },
            &mut out,
        );
        tick(&mut p, Timestamp(wall.0 + 500), &mut out);
    }
    out.iter().filter(|o| &*o.scenario == "palisade/ssh-bf" && o.value == "198.51.100.9").count()
}

#[test]
fn live_ticks_follow_the_logs_clock_not_the_wall_clock() {
    assert_eq!(brute_force_with_ticks(|p, wall, out| p.advance_wall(wall, out)), 1);
    // Advancing the buckets straight to the wall clock frees the bucket at every tick:
    // the brute force would never be seen. This is what `advance_wall` prevents.
    assert_eq!(brute_force_with_ticks(|p, wall, out| p.advance(wall, out)), 0);
}
