//! The central tier (`palisade central ...`): many fleets (tenants) send it signals over
//! QUIC, it runs the ASN-diversity consensus of `palisade-consensus` on them and
//! publishes the community blocklist as signed, versioned deltas.
//!
//! - [`server`]: the QUIC endpoint and one task per sensor connection;
//! - [`tier`]: the core task that owns the consensus, tenants, sensors and the list;
//! - [`store`]: RocksDB; [`asn`]: IP-to-ASN databases; [`limits`]: rate limits;
//! - [`client`]: the sensor's side, for nodes and `palisade central sensor`;
//! - [`admin`]: the admin socket; [`metrics`]: `/metrics`.
//!
//! `PRIVACY.md` beside this file is the threat model: who can reverse what.
//!
//! It decides nothing about IPs itself: the consensus does.

pub mod admin;
pub mod asn;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod sensor;
pub mod server;
pub mod store;
pub mod tier;

use anyhow::{anyhow, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Semaphore};

use self::config::CentralConfig;

/// Commands queued for the core.
const CORE_QUEUE: usize = 1024;

/// Creates `dir` if needed, readable by the owner only (it holds the tier's secrets).
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    crate::config::ensure_data_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", dir.display()))
}

/// Runs the tier until SIGINT or SIGTERM.
pub fn run(config: CentralConfig) -> Result<()> {
    crate::run::init_tracing(&config.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("palisade-central")
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: CentralConfig) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    ensure_private_dir(&config.data_dir)?;
    let asn_path = config.asn_database.clone().ok_or_else(|| anyhow!("`asn_database` is required"))?;
    let asn = asn::AsnDb::open(&asn_path)?;
    tracing::info!(database = %asn.origin(), "ASN database loaded");
    let store = Arc::new(
        store::CentralStore::open(&config.db_dir(), config.sync_writes).map_err(|e| anyhow!("{e}"))?,
    );
    let counters = Arc::new(metrics::Counters::default());
    let tier = tier::Tier::open(config.clone(), store.clone(), counters.clone())?;
    let key = tier.key();

    let (server_crypto, _) = palisade_gossip::tls::quic_crypto_with(
        &key,
        Arc::new(palisade_gossip::tls::NodeVerifier::new(Default::default())),
        server::ALPN,
    )?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(
            quinn::IdleTimeout::try_from(std::time::Duration::from_secs(config.limits.idle_timeout_secs))
                .ok(),
        )
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(2))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .datagram_receive_buffer_size(None);
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server_config.transport_config(Arc::new(transport));
    let endpoint = palisade_gossip::net::bind_endpoint(&key, server_config, config.listen)
        .with_context(|| format!("binding the central tier's QUIC endpoint on {}", config.listen))?;
    let local = endpoint.local_addr()?;

    let (core_tx, core_rx) = mpsc::channel(CORE_QUEUE);
    let (stop_core, core_stopped) = oneshot::channel();
    let core = tokio::spawn(tier.run(core_rx, core_stopped));

    let socket = config.admin_socket();
    let admin_listener = crate::admin::bind(&socket)?;
    tokio::spawn(admin::serve(admin_listener, core_tx.clone()));
    if let Some(addr) = config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics endpoint on {addr}"))?;
        let bound = listener.local_addr()?;
        let core = core_tx.clone();
        tokio::spawn(metrics::serve(listener, move || {
            let core = core.clone();
            async move {
                let (tx, rx) = oneshot::channel();
                core.send(tier::Command::Admin(tier::AdminRequest::Status, tx)).await.ok()?;
                let value = rx.await.ok()?.ok()?;
                serde_json::from_value(value).ok()
            }
        }));
        tracing::info!(addr = %bound, "central metrics endpoint listening");
    }

    let ctx = Arc::new(server::Ctx {
        core: core_tx,
        store,
        asn,
        guard: limits::Guard::new(config.limits.clone()),
        counters,
        key: key.clone(),
        epoch_secs: config.epoch_secs(),
        max_connections: config.limits.max_connections,
        open: AtomicUsize::new(0),
        next_conn: AtomicU64::new(1),
        verify_slots: Arc::new(Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))),
        started: Instant::now(),
    });
    let accept = tokio::spawn(server::serve(endpoint.clone(), ctx));
    tracing::info!(addr = %local, tier = %key.node_id(), "central tier listening");
    let mut core = core;
    let result = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        r = &mut core => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow!("the central tier core failed: {e}")),
        },
    };
    tracing::info!("central tier stopping");
    endpoint.close(quinn::VarInt::from_u32(server::close::DONE), b"tier stopping");
    accept.abort();
    let _ = stop_core.send(());
    if !core.is_finished() {
        if let Ok(Err(e)) = core.await {
            tracing::error!(error = %format!("{e:#}"), "central tier core");
        }
    }
    let _ = std::fs::remove_file(&socket);
    // Let the close reach the sensors (without it a stopping tier's sessions would end
    // only at their idle timeout); bounded, as a sensor may be gone.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}
