//! `palisade central bench`: measures a running tier from the outside.
//!
//! - `--mode ingest`: `--sensors` sensors enroll, each signs `--signals` signals on
//!   distinct addresses *before* the clock starts (so the bench's own signing does not
//!   compete with the tier for CPU during the measure), then all send them with
//!   `--window` reports in flight; prints signals acknowledged per second.
//! - `--mode latency`: `--subscribers` links follow the list; for each of `--rounds`
//!   rounds, `--reporters` links bound to 127.0.0.1, 127.0.0.2, ... (one ASN each in the
//!   test fixture) report a fresh address; the clock starts when the last report (the
//!   one that crosses the threshold) is handed to its link and stops for each subscriber
//!   when its delta holding the address arrives. Prints p50/p99/max over all
//!   (round, subscriber) pairs.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use palisade_proto::central::{CentralMessage, EnrollToken, Report, MAX_REPORT_SIGNALS};
use palisade_proto::envelope::MAX_MESSAGE_BYTES;
use palisade_proto::{NodeKey, Timestamp};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::client::{self, CentralLinkConfig, CommunityHashing, Sighting};

/// What to measure.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Signals acknowledged per second.
    Ingest,
    /// Listing-to-subscriber latency.
    Latency,
}

/// Arguments of `palisade central bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// The tier's QUIC address.
    #[arg(long)]
    pub tier: SocketAddr,
    /// Enrollment token of a tenant that opted in to the community.
    #[arg(long)]
    pub token: String,
    /// Scratch directory for the bench's sensors.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// ingest: sensors sending at once.
    #[arg(long, default_value_t = 4)]
    pub sensors: usize,
    /// ingest: signals per sensor.
    #[arg(long, default_value_t = 100_000)]
    pub signals: usize,
    /// ingest: reports in flight per sensor.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// latency: subscribers.
    #[arg(long, default_value_t = 30)]
    pub subscribers: usize,
    /// latency: reporters (distinct 127.0.0.x sources; the last one crosses the threshold).
    #[arg(long, default_value_t = 3)]
    pub reporters: usize,
    /// latency: rounds.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
}

/// Runs the bench.
pub fn main(args: BenchArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match args.mode {
            Mode::Ingest => ingest(&args).await,
            Mode::Latency => latency(&args).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn ingest(args: &BenchArgs) -> Result<()> {
    let token = EnrollToken::from_text(&args.token)?;
    let mut sessions = Vec::new();
    let prep = Instant::now();
    for i in 0..args.sensors {
        let key = NodeKey::generate(&mut rand::rngs::OsRng);
        let (endpoint, conn, send, recv, welcome) = client::raw_session(
            &key,
            token.tier,
            args.tier,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(token.secret),
        )
        .await
        .map_err(|e| anyhow!("sensor {i}: {e}"))?;
        let hashing = CommunityHashing::new(welcome.hash_secret, welcome.epoch_secs);
        let base = u32::try_from(i).unwrap_or(0) << 24;
        let now = palisade_gossip::net::wall_clock();
        let signals: Vec<_> = (0..args.signals)
            .map(|n| {
                let ip = IpAddr::V4(Ipv4Addr::from(base | (n as u32 & 0x00ff_ffff)));
                let sighting = Sighting {
                    ip,
                    scenario: "palisade/ssh-bf".into(),
                    confidence: 3,
                    observed_at: now,
                    events_count: 6,
                };
                client::community_signal(&hashing, &sighting, key.node_id(), welcome.next_seq + n as u64)
            })
            .collect();
        // Signed per report, as a link signs them.
        let signals: Vec<_> = signals
            .chunks(MAX_REPORT_SIGNALS)
            .flat_map(|chunk| palisade_proto::signal::sign_batch(&key, chunk.to_vec()))
            .collect();
        let reports: Vec<Vec<u8>> = signals
            .chunks(MAX_REPORT_SIGNALS)
            .enumerate()
            .map(|(b, chunk)| {
                palisade_proto::Message::Central(CentralMessage::Report(Report {
                    batch: b as u64 + 1,
                    signals: chunk.to_vec(),
                }))
                .encode()
                .map_err(|e| anyhow!("{e}"))
            })
            .collect::<Result<_>>()?;
        sessions.push((endpoint, conn, send, recv, reports));
    }
    eprintln!("prepared {} signals in {:.1} s", args.sensors * args.signals, prep.elapsed().as_secs_f64());
    let start = Instant::now();
    let window = args.window.max(1);
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|(endpoint, conn, mut send, mut recv, reports)| {
            tokio::spawn(async move {
                let (mut accepted, mut rejected) = (0u64, 0u64);
                let total = reports.len();
                let mut sent = 0;
                let mut acked = 0;
                while acked < total {
                    while sent < total && sent - acked < window {
                        palisade_gossip::net::write_frame(&mut send, &reports[sent])
                            .await
                            .map_err(|e| e.to_string())?;
                        sent += 1;
                    }
                    let bytes = palisade_gossip::net::read_frame(&mut recv, MAX_MESSAGE_BYTES as u32)
                        .await
                        .map_err(|_| "session closed".to_owned())?;
                    match client::decode(&bytes) {
                        Some(CentralMessage::Ack(a)) => {
                            accepted += u64::from(a.accepted);
                            rejected += a.rejected.len() as u64;
                            acked += 1;
                        }
                        other => return Err(format!("unexpected frame {other:?}")),
                    }
                }
                conn.close(0u32.into(), b"done");
                endpoint.wait_idle().await;
                Ok::<_, String>((accepted, rejected))
            })
        })
        .collect();
    let (mut accepted, mut rejected) = (0, 0);
    for t in tasks {
        let (a, r) = t.await?.map_err(|e| anyhow!(e))?;
        accepted += a;
        rejected += r;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "mode": "ingest",
            "sensors": args.sensors,
            "signals": args.sensors * args.signals,
            "accepted": accepted,
            "rejected": rejected,
            "seconds": secs,
            "signals_per_sec": (accepted + rejected) as f64 / secs,
        })
    );
    Ok(())
}

async fn latency(args: &BenchArgs) -> Result<()> {
    if args.reporters == 0 || args.reporters > 19 {
        bail!("--reporters must be 1 to 19 (127.0.0.1 to 127.0.0.19)");
    }
    let link = |name: String, bind: Option<IpAddr>, subscribe: bool| {
        let config = CentralLinkConfig {
            addr: args.tier.to_string(),
            token: Some(args.token.clone()),
            data_dir: args.data_dir.join(name),
            bind,
            subscribe,
            window: 1,
            backoff_min: Duration::from_millis(100),
            ..CentralLinkConfig::default()
        };
        client::start(config, NodeKey::generate(&mut rand::rngs::OsRng)).map_err(|e| anyhow!("{e}"))
    };
    let mut reporters = Vec::new();
    for r in 0..args.reporters {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(r + 1).unwrap_or(1)));
        reporters.push(link(format!("reporter-{r}"), Some(ip), false)?);
    }
    let (found_tx, mut found_rx) =
        tokio::sync::mpsc::channel::<(usize, palisade_proto::HashedIp, Instant)>(4096);
    let mut hashing = None;
    for s in 0..args.subscribers {
        let mut sub = link(format!("subscriber-{s}"), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 30))), true)?;
        if hashing.is_none() {
            hashing = Some(sub.handle.wait_hashing().await?);
        }
        let tx = found_tx.clone();
        tokio::spawn(async move {
            while let Some(delta) = sub.deltas.recv().await {
                let at = Instant::now();
                for e in &delta.added {
                    if tx.send((s, e.ip, at)).await.is_err() {
                        return;
                    }
                }
                let _ = sub.handle.applied(&delta).await;
            }
        });
    }
    let hashing = hashing.context("no subscriber")?;
    for r in &reporters {
        r.handle.wait_hashing().await?;
    }
    // Let every subscriber catch up before the first round.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while found_rx.try_recv().is_ok() {}
    let mut latencies = Vec::new();
    for round in 0..args.rounds {
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, (round / 250) as u8, (round % 250) as u8 + 1));
        let sighting = |at: Timestamp| Sighting {
            ip,
            scenario: "palisade/ssh-bf".into(),
            confidence: 3,
            observed_at: at,
            events_count: 6,
        };
        let now = palisade_gossip::net::wall_clock();
        let target = hashing.hash(ip, now).1;
        for r in &reporters[..reporters.len() - 1] {
            r.handle.report(vec![sighting(now)]).await?;
        }
        // Wait until the first reports are acknowledged, so the last one crosses.
        let deadline = Instant::now() + Duration::from_secs(10);
        while reporters[..reporters.len() - 1]
            .iter()
            .any(|r| r.handle.stats().in_flight + r.handle.stats().pending > 0)
        {
            if Instant::now() > deadline {
                bail!("reports not acknowledged in 10 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let start = Instant::now();
        if let Some(last) = reporters.last() {
            last.handle.report(vec![sighting(now)]).await?;
        }
        let mut seen = vec![false; args.subscribers];
        let deadline = start + Duration::from_secs(30);
        while seen.iter().any(|s| !s) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some((s, h, at))) = tokio::time::timeout(left, found_rx.recv()).await else {
                bail!(
                    "round {round}: only {} of {} subscribers got the entry in 30 s",
                    seen.iter().filter(|s| **s).count(),
                    seen.len()
                );
            };
            if h == target && !seen[s] {
                seen[s] = true;
                latencies.push(at.duration_since(start));
            }
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "{}",
        serde_json::json!({
            "mode": "latency",
            "subscribers": args.subscribers,
            "rounds": args.rounds,
            "samples": latencies.len(),
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
        })
    );
    for r in &reporters {
        r.handle.shutdown().await;
    }
    Ok(())
}
