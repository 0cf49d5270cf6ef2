//! Memory per signal remembered: an engine holding `COUNT` signals of one origin (as it
//! does to answer repairs, up to `retain_per_origin`), each with a sealed address and a
//! typical scenario name. Prints the resident memory it took, per million signals.
//!
//! ```text
//! cargo run --release -p palisade-gossip --example held_signals -- [COUNT]
//! ```
//! The signals are signed as a node signs them, in Merkle batches of
//! [`SIGNING_BATCH`](palisade_proto::signal::SIGNING_BATCH), so each holds its proof.

use palisade_gossip::{Engine, EngineConfig, InEvent};
use palisade_proto::{Epoch, FleetId, HashKey, NodeKey, RevocationList, SealKey, Signal, Timestamp};
use rand::SeedableRng;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let count: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let key = NodeKey::from_bytes(&[7; 32]);
    let now = Timestamp::from_secs(1_800_000_000);
    let config = EngineConfig {
        retain_per_origin: count as usize,
        max_pending_per_origin: count as usize,
        ..EngineConfig::default()
    };
    let epoch = Epoch::containing(now, config.epoch_period_secs);
    let mut engine =
        Engine::new(key.clone(), FleetId([1; 32]), config, 1, RevocationList::empty(FleetId([1; 32])), now);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (hash, seal) = (HashKey::derive(&[2; 32], epoch), SealKey::derive(&[2; 32]));
    let before = rss_kib();
    let mut seq = 1;
    while seq <= count {
        let batch: Vec<Signal> = (seq..(seq + 10_000).min(count + 1))
            .map(|n| {
                let ip = std::net::IpAddr::from(u32::try_from(n).unwrap_or(0).to_be_bytes());
                let mut signal = Signal {
                    origin: key.node_id(),
                    seq: n,
                    epoch,
                    hashed_ip: hash.hash(ip),
                    scenario: "palisade/ssh-bf".into(),
                    confidence: 3,
                    observed_at: now,
                    events_count: 6,
                    sealed_ip: None,
                };
                signal.sealed_ip = Some(seal.seal(ip, &signal.id().aad(), &mut rng));
                signal
            })
            .collect();
        let batch = palisade_proto::signal::sign_batch(&key, batch);
        seq += batch.len() as u64;
        engine.handle(InEvent::PublishSigned(batch), now, &mut rng);
    }
    let held = engine.marks().iter().map(|m| m.high).sum::<u64>();
    let grown = rss_kib().saturating_sub(before);
    println!(
        "{{\"signals_held\": {held}, \"rss_growth_mib\": {:.1}, \"bytes_per_signal\": {:.0}, \"mib_per_million\": {:.1}}}",
        grown as f64 / 1024.0,
        grown as f64 * 1024.0 / held.max(1) as f64,
        grown as f64 / 1024.0 * 1_000_000.0 / held.max(1) as f64
    );
}
