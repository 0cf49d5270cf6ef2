//! Memory held by the decision book per active decision: adds N bans (distinct IPv4
//! addresses, like an imported blocklist) through the engine and prints the resident
//! memory before and after.
//!
//! `cargo run --release -p palisade-actors --example book_memory -- 1000000`

use palisade_actors::decision::{Allowlist, DecisionConfig, DecisionEngine, NewDecision, StoredDecisions};
use palisade_proto::{DecisionType, Origin, Scope, Timestamp};
use std::time::{Duration, Instant};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let policy = match DecisionConfig::default().compile() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let now = Timestamp::from_secs(1_700_000_000);
    let mut engine = DecisionEngine::new(policy, Allowlist::default(), StoredDecisions::default(), now, 1);
    let before = rss_kb();
    let started = Instant::now();
    for i in 0..n {
        let ip = std::net::Ipv4Addr::from((11u32 << 24) + i * 7);
        let request = NewDecision {
            origin: Origin::Cli,
            kind: DecisionType::Ban,
            scope: Scope::Ip,
            value: ip.to_string(),
            duration: Duration::from_secs(86_400),
            scenario: "import".into(),
            simulated: false,
        };
        if let Err(e) = engine.add(request, now) {
            panic!("{e}");
        }
        if i % 1_000 == 0 {
            // Persisting is the node's job; drop the change log as it would.
            engine.take_changes();
        }
    }
    engine.take_changes();
    let after = rss_kb();
    println!(
        "{n} decisions: {:.1} MB resident for the book ({} bytes per decision), added in {:.2?}",
        (after - before) as f64 / 1024.0,
        (after - before) * 1024 / u64::from(n.max(1)),
        started.elapsed()
    );
}
