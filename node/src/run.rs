//! `palisade run`: the node. Starts the actors, the log sources, the admin socket and
//! the clocks, then waits for SIGINT or SIGTERM and shuts down cleanly.
//!
//! ```text
//! sources --LineBatch--> bridge --> ScenarioActor --overflows--> ReputationActor (sign)
//!                                                   \----------> DecisionActor (decide,
//!                                  commit decisions + signals + checkpoint atomically)
//! ```
//! The bridge awaits each stage before feeding the next batch, so a slow store slows the
//! readers instead of filling memory.

use actix::prelude::*;
use anyhow::{anyhow, Context, Result};
use palisade_actors::actor::{
    Advance, ApplyOverflows, DecisionActor, ProcessBatch, ReputationActor, ScenarioActor, SignOverflows, Tick,
};
use palisade_actors::decision::{Allowlist, DecisionEngine};
use palisade_actors::event::{LineBatch, Overflow};
use palisade_actors::pipeline::Pipeline;
use palisade_actors::reputation::Reputation;
use palisade_actors::store::Store;
use palisade_proto::Timestamp;
use rand::RngCore;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use crate::config::{LogConfig, NodeConfig};
use crate::store::RocksStore;

/// The wall clock as a [`Timestamp`].
pub fn wall_clock() -> Timestamp {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
}

/// This host's own addresses, read from /proc (never banned by default).
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // IPv4: /proc/net/fib_trie lists local addresses as "|-- A.B.C.D" followed by
    // "/32 host LOCAL".
    if let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<IpAddr> = None;
        for line in text.lines() {
            let line = line.trim_start_matches([' ', '|', '+', '-', '`']);
            if let Ok(ip) = line.trim().parse::<IpAddr>() {
                last = Some(ip);
            } else if line.contains("host LOCAL") {
                if let Some(ip) = last.take() {
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
        }
    }
    // IPv6: /proc/net/if_inet6, first column is the address in 32 hex digits.
    if let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in text.lines() {
            let Some(hex) = line.split_whitespace().next() else { continue };
            if let Ok(bits) = u128::from_str_radix(hex, 16) {
                let ip = IpAddr::V6(bits.into());
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// The decision engine over the stored state, with the configured policy and allowlist.
pub fn decision_engine(config: &NodeConfig, store: &dyn Store, now: Timestamp) -> Result<DecisionEngine> {
    let policy = config.decisions.compile()?;
    let allowlist = Allowlist::new(config.allowlist.compile(&host_addresses())?);
    let stored = store.load_decisions().map_err(|e| anyhow!("{e}"))?;
    Ok(DecisionEngine::new(policy, allowlist, stored, now, rand::rngs::OsRng.next_u64()))
}

/// Sets up logging to stderr.
pub fn init_tracing(log: &LogConfig) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level).map_err(|e| anyhow!("log.level: {e}"))?;
    // Colours only on a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = if log.format == "json" { builder.json().try_init() } else { builder.try_init() };
    result.map_err(|e| anyhow!("setting up logging: {e}"))
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(config: NodeConfig) -> Result<()> {
    init_tracing(&config.log)?;
    crate::config::ensure_data_dir(&config.data_dir)?;
    let hub = crate::hub::load(config.hub_dir.as_deref())?;
    let store = Arc::new(RocksStore::open(&config.db_dir()).map_err(|e| anyhow!("{e}"))?);
    let engine = decision_engine(&config, store.as_ref(), wall_clock())?;
    let key = crate::keys::node_key(&config.data_dir)?;
    let secret = crate::keys::signal_secret(&config.data_dir)?;
    let last_seq = store.last_signal_seq().map_err(|e| anyhow!("{e}"))?;
    let reputation =
        Reputation::new(key.clone(), secret, &config.reputation, last_seq, rand::rngs::OsRng.next_u64());
    let admin_listener_path = config.admin_socket();
    let bouncers = Arc::new(crate::bouncers::Registry::load(store.clone())?);
    let machines = Arc::new(crate::machines::Registry::load(store.clone())?);
    let alerts = Arc::new(crate::lapi::watchers::Alerts::open(store.clone())?);
    let jwt_key = crate::keys::jwt_secret(&config.data_dir)?;
    let book = engine.shared_book();

    let system = actix::System::new();
    // Detection is CPU-bound and the store may block on disk: each gets a thread, so
    // neither delays the other nor the sockets. They are joined before returning: an
    // actor thread still holding the database while the process exits makes RocksDB's
    // background threads abort ("pthread lock: Invalid argument").
    let scenario_arbiter = Arbiter::new();
    let decision_arbiter = Arbiter::new();
    let (scenario_handle, decision_handle) = (scenario_arbiter.handle(), decision_arbiter.handle());
    let result = system.block_on(async move {
        let stop = StopSignals::listen();
        let admin = crate::admin::bind(&admin_listener_path)?;
        let metrics = Arc::new(crate::metrics::Metrics::default());
        if config.bouncer.nftables.enabled {
            crate::nft::check(&config.bouncer.nftables).await?;
        }
        let pipeline = Pipeline::new(hub.parsers.clone(), hub.scenarios.clone());
        let scenario =
            ScenarioActor::start_in_arbiter(&scenario_handle, move |_| ScenarioActor::new(pipeline));
        let active = engine.book().active_len();
        let store_dyn: Arc<dyn Store> = store.clone();
        let outbox_keep = config.reputation.outbox_keep;
        let (changed_tx, changed_rx) = watch::channel(0u64);
        let decisions = DecisionActor::start_in_arbiter(&decision_handle, move |_| {
            DecisionActor::new(engine, store_dyn, outbox_keep, wall_clock).notifying(changed_tx)
        });
        let reputation = ReputationActor::new(reputation).start();
        let (publisher, gossip) = watch::channel(None);
        let fleet = crate::fleet::Fleet::start(
            &config.data_dir,
            key.clone(),
            config.gossip.clone(),
            config.reputation.epoch_hours,
            secret,
            crate::fleet::Actors {
                reputation: reputation.clone(),
                scenario: scenario.clone(),
                decisions: decisions.clone(),
            },
            store.clone(),
            publisher,
        )
        .await?;
        let community = crate::community::Community::start(
            &config.central,
            &config.data_dir,
            key.clone(),
            scenario.clone(),
        )?
        .map(Arc::new);
        let stages = Stages {
            scenario,
            reputation,
            decisions: decisions.clone(),
            gossip,
            community: community.clone(),
        };
        let lapi = if config.api.enabled {
            let lapi = crate::lapi::Lapi {
                book: book.clone(),
                bouncers: bouncers.clone(),
                clock: wall_clock,
                metrics: metrics.clone(),
                machines: machines.clone(),
                jwt: crate::machines::Jwt::new(jwt_key),
                decisions: decisions.clone(),
                alerts: alerts.clone(),
                community: community.as_ref().map(|c| c.list.clone()),
            };
            let running = crate::lapi::start(&config.api, lapi)?;
            let tls = config.api.tls_cert.is_some();
            tracing::info!(addr = %running.addr, tls, "local API listening");
            Some(running)
        } else {
            None
        };

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel::<LineBatch>(config.ingest.channel_capacity);
        let cursors = Arc::new(StoreCursors(store.clone()));
        let ingest = palisade_actors::ingest::spawn(&config.ingest, cursors, tx, shutdown_rx.clone())
            .context("starting log sources")?;

        let metrics_server = if config.metrics.enabled {
            let sources = crate::metrics::Sources {
                metrics: metrics.clone(),
                book: book.clone(),
                ingest: ingest.stats().to_vec(),
                scenario: stages.scenario.clone(),
                fleet: fleet.clone(),
                community: community.clone(),
                started: wall_clock().as_millis() as f64 / 1000.0,
            };
            let (addr, handle) = crate::metrics::start(&config.metrics, sources)?;
            tracing::info!(addr = %addr, "metrics endpoint listening");
            Some(handle)
        } else {
            None
        };
        let nft = config.bouncer.nftables.enabled.then(|| {
            actix::spawn(crate::nft::run(
                config.bouncer.nftables.clone(),
                book.clone(),
                wall_clock,
                changed_rx,
                shutdown_rx.clone(),
                metrics.clone(),
            ))
        });
        tracing::info!(
            node = %key.node_id(),
            data_dir = %config.data_dir.display(),
            hub = %hub.origin,
            parsers = hub.parsers.list().len(),
            scenarios = hub.scenarios.list().len(),
            sources = ingest.source_count(),
            decisions = active,
            "palisade node started"
        );
        let bridge = actix::spawn(bridge(rx, stages.clone()));
        actix::spawn(clock(stages.clone(), shutdown_rx.clone()));
        actix::spawn(crate::admin::serve(
            admin,
            crate::admin::Node { decisions: decisions.clone(), bouncers, machines, fleet: fleet.clone() },
        ));

        stop.wait().await;
        tracing::info!("shutting down: finishing the lines already read");
        let _ = shutdown_tx.send(true);
        if let Some(lapi) = lapi {
            lapi.stop().await;
        }
        if let Some(handle) = metrics_server {
            handle.stop(true).await;
        }
        if let Some(nft) = nft {
            let _ = nft.await;
        }
        ingest.join().await;
        // The sources dropped their senders: the bridge drains what is left and ends.
        let _ = bridge.await;
        fleet.stop().await;
        if let Some(community) = &community {
            community.handle.shutdown().await;
        }
        let _ = std::fs::remove_file(&admin_listener_path);
        System::current().stop();
        Ok::<(), anyhow::Error>(())
    });
    for arbiter in [scenario_arbiter, decision_arbiter] {
        arbiter.stop();
        let _ = arbiter.join();
    }
    drop(system);
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Source positions are read from the store; they are written with each batch's commit.
struct StoreCursors(Arc<RocksStore>);

impl palisade_actors::ingest::CursorStore for StoreCursors {
    fn load(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.load_cursor(key).map_err(|e| e.to_string())
    }
}

#[derive(Clone)]
struct Stages {
    scenario: Addr<ScenarioActor>,
    reputation: Addr<ReputationActor>,
    decisions: Addr<DecisionActor>,
    /// The fleet's gossip endpoint while the node is a member.
    gossip: watch::Receiver<Option<palisade_gossip::GossipHandle>>,
    /// The link to the central tier, when configured.
    community: Option<Arc<crate::community::Community>>,
}

impl Stages {
    /// Signs and decides on overflows, and persists them with `checkpoint`.
    async fn settle(
        &self,
        overflows: Vec<Overflow>,
        checkpoint: Option<palisade_actors::event::Checkpoint>,
    ) -> Result<()> {
        if overflows.is_empty() && checkpoint.is_none() {
            return Ok(());
        }
        if let Some(community) = &self.community {
            community.report(&overflows);
        }
        let overflows = Arc::new(overflows);
        let signals = if overflows.is_empty() {
            Vec::new()
        } else {
            self.reputation.send(SignOverflows(overflows.clone())).await?
        };
        let gossip = self.gossip.borrow().clone();
        let publish = match &gossip {
            Some(_) if !signals.is_empty() => signals.clone(),
            _ => Vec::new(),
        };
        self.decisions
            .send(ApplyOverflows { overflows, signals, checkpoint })
            .await?
            .map_err(|e| anyhow!("{e}"))?;
        // In the outbox now: a signal lost here is repaired from it after a restart.
        if let (Some(handle), false) = (gossip, publish.is_empty()) {
            if let Err(e) = handle.publish_signed(publish).await {
                tracing::warn!(error = %e, "fleet gossip unavailable; signals stay in the outbox");
            }
        }
        Ok(())
    }
}

async fn bridge(mut rx: mpsc::Receiver<LineBatch>, stages: Stages) {
    while let Some(batch) = rx.recv().await {
        let result = async {
            let processed = stages.scenario.send(ProcessBatch(batch)).await?;
            stages.settle(processed.overflows, processed.checkpoint).await
        }
        .await;
        if let Err(e) = result {
            // The store retried and gave up: stop rather than read on and lose lines.
            tracing::error!(error = %e, "cannot persist results; stopping the node");
            System::current().stop_with_code(1);
            return;
        }
    }
}

async fn clock(stages: Stages, mut shutdown: watch::Receiver<bool>) {
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = every_second.tick() => {}
        }
        let now = wall_clock();
        match stages.scenario.send(Advance(now)).await {
            Ok(overflows) if !overflows.is_empty() => {
                if let Err(e) = stages.settle(overflows, None).await {
                    tracing::error!(error = %e, "applying timed overflows failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "scenario actor unavailable"),
        }
        match stages.decisions.send(Tick).await {
            Ok(Ok(report)) => {
                for d in &report.expired {
                    tracing::info!(value = %d.value, scenario = %d.scenario, "decision expired");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "expiring decisions failed"),
            Err(e) => tracing::warn!(error = %e, "decision actor unavailable"),
        }
    }
}

/// SIGTERM and SIGINT, listened for from the start: a signal that arrives while the node
/// is still starting stops it cleanly instead of killing it.
struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, signal = name, "cannot listen for this signal");
                None
            }
        };
        StopSignals {
            term: listen(SignalKind::terminate(), "SIGTERM"),
            int: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = recv(&mut self.term) => {}
            _ = recv(&mut self.int) => {}
        }
    }
}

/// The next delivery of `signal`, or never when it could not be listened for.
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
