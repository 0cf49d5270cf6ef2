//! `palisade central sensor`: a sensor without a node, on the same client library.
//!
//! For operators: feed a honeypot's or an IDS's detections into the tier, follow the
//! community list as JSON lines (to load it elsewhere), or check that a tier is reachable
//! and a token works. Input, one per line on stdin:
//!
//! - `IP [SCENARIO [CONFIDENCE]]`: report the address (hashed here; it never leaves);
//! - `? IP`: print whether the community list holds it (any held epoch).
//!
//! Output, one JSON object per line on stdout: `{"event":"delta",...}` for each list
//! change, `{"event":"match",...}` for each question, `{"event":"stats",...}` when the
//! link's counters change. At the end of stdin it waits until every report is
//! acknowledged, prints the last stats and exits.

use anyhow::{anyhow, Context, Result};
use clap::Args;
use palisade_proto::central::{DeltaKind, ListEntry};
use palisade_proto::{HashedIp, NodeId, Timestamp};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

use super::client::{self, CentralLinkConfig, Sighting};

/// Arguments of `palisade central sensor`.
#[derive(Debug, Args)]
pub struct SensorArgs {
    /// The tier's QUIC address, host:port.
    #[arg(long)]
    pub tier: String,
    /// The tenant's enrollment token (needed the first time).
    #[arg(long, env = "PALISADE_CENTRAL_TOKEN")]
    pub token: Option<String>,
    /// The tier's public key (64 hex), when not taken from the token.
    #[arg(long)]
    pub tier_key: Option<NodeId>,
    /// Where the sensor keeps its key (`node.key`), enrollment and resume point.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Local address to send from.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Do not follow the community list.
    #[arg(long)]
    pub no_subscribe: bool,
    /// Scenario of lines that name none.
    #[arg(long, default_value = "palisade/external")]
    pub scenario: String,
    /// Confidence (0-3) of lines that give none.
    #[arg(long, default_value_t = 2)]
    pub confidence: u8,
}

/// Runs the sensor.
pub fn main(args: SensorArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(sensor(args))
}

fn entry_json(e: &ListEntry) -> serde_json::Value {
    serde_json::json!({
        "hashed_ip": e.ip.to_hex(),
        "epoch": e.epoch.0,
        "scenario": e.scenario,
        "score": e.score,
        "groups": e.groups,
        "until_ms": e.until.0,
    })
}

/// Writes one JSON line to stdout; `false` when stdout is gone (the reader quit).
fn emit(value: &serde_json::Value) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}").and_then(|()| out.flush()).is_ok()
}

fn now() -> Timestamp {
    palisade_gossip::net::wall_clock()
}

async fn sensor(args: SensorArgs) -> Result<ExitCode> {
    crate::config::ensure_data_dir(&args.data_dir)?;
    let key = crate::keys::node_key(&args.data_dir)?;
    let config = CentralLinkConfig {
        addr: args.tier.clone(),
        token: args.token.clone(),
        tier_key: args.tier_key,
        data_dir: args.data_dir.clone(),
        bind: args.bind,
        subscribe: !args.no_subscribe,
        ..CentralLinkConfig::default()
    };
    let mut link = client::start(config, key).map_err(|e| anyhow!("{e}"))?;
    let handle = link.handle.clone();
    let mut list: HashMap<HashedIp, ListEntry> = HashMap::new();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut last_stats = String::new();
    let mut input_open = true;
    let mut reported = 0u64;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            line = lines.next_line(), if input_open => match line {
                Ok(Some(line)) => {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    if let Some(rest) = line.strip_prefix('?') {
                        let question = rest.trim();
                        match question.parse::<IpAddr>() {
                            Ok(ip) => {
                                let found = handle.hashing().and_then(|h| {
                                    list.values().find(|e| h.key(e.epoch).hash(ip) == e.ip).cloned()
                                });
                                let answer = serde_json::json!({
                                    "event": "match",
                                    "ip": ip.to_string(),
                                    "listed": found.is_some(),
                                    "entry": found.as_ref().map(entry_json),
                                });
                                if !emit(&answer) {
                                    break;
                                }
                            }
                            Err(_) => eprintln!("palisade central sensor: not an address: {question:?}"),
                        }
                        continue;
                    }
                    let mut fields = line.split_whitespace();
                    let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
                        eprintln!("palisade central sensor: expected `IP [SCENARIO [CONFIDENCE]]`: {line:?}");
                        continue;
                    };
                    let scenario = fields.next().map_or_else(|| args.scenario.clone(), str::to_owned);
                    let confidence = fields.next().and_then(|c| c.parse().ok()).unwrap_or(args.confidence).min(3);
                    let sighting = Sighting { ip, scenario, confidence, observed_at: now(), events_count: 1 };
                    handle.report(vec![sighting]).await.map_err(|e| anyhow!("{e}"))?;
                    reported += 1;
                }
                _ => {
                    input_open = false;
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(60));
                }
            },
            delta = link.deltas.recv() => {
                let Some(delta) = delta else { break };
                if matches!(delta.kind, DeltaKind::Snapshot { part: 0, .. }) {
                    list.clear();
                }
                for e in &delta.added {
                    list.insert(e.ip, e.clone());
                }
                for ip in &delta.removed {
                    list.remove(ip);
                }
                let (kind, part) = match delta.kind {
                    DeltaKind::Changes => ("changes", None),
                    DeltaKind::Snapshot { part, parts } => ("snapshot", Some((part, parts))),
                };
                let printed = emit(&serde_json::json!({
                    "event": "delta",
                    "version": delta.version,
                    "kind": kind,
                    "part": part,
                    "added": delta.added.iter().map(entry_json).collect::<Vec<_>>(),
                    "removed": delta.removed.iter().map(HashedIp::to_hex).collect::<Vec<_>>(),
                    "held": list.len(),
                }));
                if !printed {
                    break;
                }
                handle.applied(&delta).await.map_err(|e| anyhow!("{e}"))?;
            }
            _ = ticker.tick() => {
                let stats = handle.stats();
                let text = serde_json::to_string(&stats).unwrap_or_default();
                if text != last_stats {
                    if !emit(&serde_json::json!({ "event": "stats", "stats": stats })) {
                        break;
                    }
                    last_stats = text;
                }
                if let Some(deadline) = drain_deadline {
                    let answered = stats.accepted + stats.rejected.values().sum::<u64>();
                    if answered >= reported || tokio::time::Instant::now() > deadline {
                        break;
                    }
                }
            }
        }
    }
    let stats = handle.stats();
    emit(&serde_json::json!({ "event": "stats", "stats": stats }));
    handle.shutdown().await;
    let _ = link.task.await;
    let unsent = reported.saturating_sub(stats.accepted + stats.rejected.values().sum::<u64>());
    if unsent > 0 {
        eprintln!(
            "palisade central sensor: {unsent} signal(s) not acknowledged by the tier: {:?}",
            stats.last_error
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
