//! Sustained signals per second between two admitted endpoints on loopback.
//!
//! One endpoint publishes `TOTAL` signals in batches as fast as it is allowed to (every
//! signal is numbered and signed on the way out, in Merkle batches under one ed25519
//! signature); the other verifies each one and counts what it delivers. Prints the rate seen by the
//! receiver, end to end.
//!
//! ```text
//! cargo run --release -p palisade-gossip --example throughput -- [TOTAL] [BATCH] [inline]
//! ```
//!
//! `inline` signs and verifies in the endpoints' driver tasks instead of on blocking
//! threads (`gossip.offload_crypto = false`).
//!
//! ```text
//! ```

use std::time::{Duration, Instant};

use palisade_gossip::net::wall_clock;
use palisade_gossip::{start, FleetKeys, GossipConfig, Membership};
use palisade_proto::{Epoch, HashKey, NodeId, NodeKey, RevocationList, Signal};
use rand::rngs::OsRng;

fn member(keys: &FleetKeys) -> Membership {
    let key = NodeKey::generate(&mut OsRng);
    let cert = keys.certify(key.node_id(), wall_clock(), Duration::from_secs(86_400));
    Membership { key, cert, fleet_secret: keys.fleet_secret() }
}

fn config(seeds: Vec<std::net::SocketAddr>, offload_crypto: bool) -> GossipConfig {
    GossipConfig { listen: ([127, 0, 0, 1], 0).into(), seeds, offload_crypto, ..GossipConfig::default() }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200_000);
    let batch: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(500);
    let offload = args.next().as_deref() != Some("inline");
    let keys = FleetKeys::generate(&mut OsRng);
    let fleet = keys.fleet_id();
    let a = start(config(vec![], offload), member(&keys), RevocationList::empty(fleet), 1).await?;
    let mut b =
        start(config(vec![a.handle.local_addr()], offload), member(&keys), RevocationList::empty(fleet), 1)
            .await?;
    while a.handle.stats().await?.peers_connected == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = wall_clock();
    let epoch = Epoch::containing(now, 86_400);
    let hash = HashKey::derive(&keys.fleet_secret(), epoch);
    let template: Vec<Signal> = (0..batch)
        .map(|i| Signal {
            origin: NodeId([0; 32]),
            seq: 0,
            epoch,
            hashed_ip: hash.hash(std::net::IpAddr::from((i as u32).to_be_bytes())),
            scenario: "palisade/ssh-bf".into(),
            confidence: 2,
            observed_at: now,
            events_count: 5,
            sealed_ip: None,
        })
        .collect();

    let publisher = a.handle.clone();
    let started = Instant::now();
    let template_for_producer = template.clone();
    let producer = tokio::spawn(async move {
        let template = template_for_producer;
        let mut sent = 0;
        while sent < total {
            let n = batch.min(total - sent);
            if publisher.publish(template[..n].to_vec()).await.is_err() {
                break;
            }
            sent += n;
        }
    });
    let mut received = 0usize;
    let mut last_report = Instant::now();
    let mut window = 0usize;
    while received < total {
        match tokio::time::timeout(Duration::from_secs(10), b.signals.recv()).await {
            Ok(Some(signals)) => {
                received += signals.len();
                window += signals.len();
            }
            _ => break,
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            println!("  {:>8.0} signals/s", window as f64 / last_report.elapsed().as_secs_f64());
            last_report = Instant::now();
            window = 0;
        }
    }
    let elapsed = started.elapsed();
    producer.await?;
    let sa = a.handle.stats().await?;
    let sb = b.handle.stats().await?;
    println!(
        "received {received} of {total} signals in {:.2} s: {:.0} signals/s end to end (batch {batch}, {})",
        elapsed.as_secs_f64(),
        received as f64 / elapsed.as_secs_f64(),
        if offload { "crypto on blocking threads" } else { "crypto inline" }
    );
    println!(
        "sender: {} frames, {} MB, {} frames dropped on a full queue; receiver: {} forged, {} duplicates, {} repaired",
        sa.net.frames_sent,
        sa.net.bytes_sent / 1_000_000,
        sa.net.frames_dropped_queue_full,
        sb.engine.forged,
        sb.engine.duplicates,
        sa.engine.repair_signals_sent
    );
    a.handle.shutdown().await;
    b.handle.shutdown().await;

    // The crypto ceiling of one core on this machine: what signing at the origin and
    // verification at the receiver cost per signal, one signature per signal (a quiet
    // node's batches of one) and in full Merkle batches (a busy node).
    let key = NodeKey::generate(&mut OsRng);
    let n = 20_000usize;
    let numbered: Vec<_> = (0..n)
        .map(|i| {
            let mut s = template[i % template.len()].clone();
            s.seq = i as u64 + 1;
            s
        })
        .collect();
    let t = Instant::now();
    let alone: Vec<_> = numbered.iter().cloned().map(|s| s.sign(&key)).collect();
    let sign_alone = t.elapsed();
    let t = Instant::now();
    let ok_alone =
        alone.chunks(500).flat_map(palisade_proto::signal::verify_batch).filter(Result::is_ok).count();
    let verify_alone = t.elapsed();
    println!(
        "one core, a signature per signal: signing {:.0} signals/s, batch verification {:.0} signals/s ({ok_alone} verified)",
        n as f64 / sign_alone.as_secs_f64(),
        n as f64 / verify_alone.as_secs_f64()
    );
    let t = Instant::now();
    let signed = palisade_proto::signal::sign_batch(&key, numbered);
    let sign = t.elapsed();
    let t = Instant::now();
    let ok = signed.chunks(500).flat_map(palisade_proto::signal::verify_batch).filter(Result::is_ok).count();
    let verify = t.elapsed();
    println!(
        "one core, Merkle batches of {}: signing {:.0} signals/s, verification {:.0} signals/s ({ok} verified)",
        palisade_proto::signal::SIGNING_BATCH,
        n as f64 / sign.as_secs_f64(),
        n as f64 / verify.as_secs_f64()
    );
    Ok(())
}
