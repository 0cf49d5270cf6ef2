//! The sensor's side: a link to the central tier that a node (or `palisade central
//! sensor`) uses to report what it sees and to follow the community list.
//!
//! ```text
//! let mut link = client::start(config, node_key)?;          // inside a Tokio runtime
//! link.handle.report(vec![Sighting::from_overflow(&o)?]).await?;  // waits when full
//! while let Some(delta) = link.deltas.recv().await {         // verified, in order
//!     apply(&delta);                                         // idempotent
//!     link.handle.applied(&delta).await;                     // persisted: resume point
//! }
//! ```
//!
//! What it does:
//! - **Enrollment.** The first session presents the tenant's token; what the tier
//!   answers (tenant, opt-in, the secret to hash IPs with, the epoch length) is saved in
//!   `<data_dir>/central-enrollment.json` (mode 0600), so later starts need no token and
//!   can hash before the tier is reachable.
//! - **Pinning.** The tier's key comes from the token (or `tier_key`); the TLS handshake
//!   accepts no other server, and every delta must carry that key's signature.
//! - **Reports.** Sightings (raw IPs, kept in memory only) are hashed with the community
//!   key of their epoch, numbered, signed and sent in batches; at most `window` batches
//!   are unacknowledged. After a reconnect the unacknowledged batches are sent again
//!   first (the tier acks a resend it already holds as `replayed`). `report` waits when
//!   `max_pending` sightings are queued: backpressure, nothing is dropped.
//! - **Subscription.** Deltas are checked (signature, version continuity) and handed over
//!   in order. The caller confirms each applied delta with [`CentralHandle::applied`];
//!   the link saves the last confirmed version in `<data_dir>/central-state.json` and
//!   resumes from it after a restart (within a run, from the last delta handed over).
//! - **Reconnects** with exponential backoff (jittered), forever, until shutdown.

use palisade_gossip::net::{read_frame, write_frame};
use palisade_gossip::tls::{quic_crypto_with, NodeVerifier, SERVER_NAME};
use palisade_proto::central::{
    CentralMessage, DeltaKind, EnrollToken, ListDelta, RefusalCode, Report, SensorHello, Subscribe,
    MAX_REPORT_SIGNALS,
};
use palisade_proto::envelope::MAX_MESSAGE_BYTES;
use palisade_proto::{Epoch, HashKey, HashedIp, Message, NodeId, NodeKey, Signal, SignedSignal, Timestamp};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::server::ALPN;

const ENROLLMENT_FILE: &str = "central-enrollment.json";
pub(crate) const STATE_FILE: &str = "central-state.json";

/// What was not yet acknowledged when the link stopped: sent again after the restart.
const BACKLOG_FILE: &str = "central-backlog.bin";

/// The backlog file's content: signals already signed (sent or about to be resent, in
/// order) and sightings not yet made into signals.
#[derive(Debug, Default, bincode::Encode, bincode::Decode)]
struct Backlog {
    signals: Vec<SignedSignal>,
    sightings: Vec<Sighting>,
}
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_QUEUE: usize = 16;
/// `delivered` while a snapshot is half handed over: the caller dropped its list at part
/// 0, so the next subscription must start from nothing.
const MID_SNAPSHOT: u64 = u64::MAX;

/// How to reach and use the central tier.
#[derive(Debug, Clone)]
pub struct CentralLinkConfig {
    /// The tier's QUIC address, `host:port`.
    pub addr: String,
    /// The tenant's enrollment token (`palisade-central-...`); needed until enrolled.
    pub token: Option<String>,
    /// The tier's public key, when not taken from the token (or to check it).
    pub tier_key: Option<NodeId>,
    /// Where the link keeps its enrollment and resume point (created, mode 0700).
    pub data_dir: PathBuf,
    /// Local address to send from (the tier sees the connection's source address).
    pub bind: Option<IpAddr>,
    /// Follow the community list (only tenants that opted in may).
    pub subscribe: bool,
    /// Sightings queued before `report` waits.
    pub max_pending: usize,
    /// Signals per report (at most 512).
    pub batch: usize,
    /// Reports sent and not yet acknowledged.
    pub window: usize,
    /// Deltas queued for the caller before the link stops reading the subscription.
    pub deltas_queue: usize,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl Default for CentralLinkConfig {
    fn default() -> Self {
        CentralLinkConfig {
            addr: String::new(),
            token: None,
            tier_key: None,
            data_dir: PathBuf::from("."),
            bind: None,
            subscribe: true,
            max_pending: 100_000,
            batch: MAX_REPORT_SIGNALS,
            window: 8,
            deltas_queue: 256,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Why the link could not start or a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The configuration or the saved files are unusable.
    #[error("central link: {0}")]
    Config(String),
    /// The link has stopped.
    #[error("the central link has stopped")]
    Stopped,
}

/// What a node saw, before hashing: the raw address never leaves the node (a backlog
/// saved at shutdown keeps it in the link's private directory).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Sighting {
    /// The attacker.
    pub ip: IpAddr,
    /// The scenario that fired.
    pub scenario: String,
    /// Its confidence, 0..=3.
    pub confidence: u8,
    /// When (log time).
    pub observed_at: Timestamp,
    /// Events in the bucket.
    pub events_count: u32,
}

impl Sighting {
    /// The sighting of an overflow against one address; `None` for ranges and overflows
    /// without a usable address.
    #[allow(dead_code)] // the node's wiring of the link calls it; until then, the tests
    pub fn from_overflow(overflow: &palisade_actors::event::Overflow) -> Option<Sighting> {
        // Only this node's own detections: a fleet or community ban is not a sighting.
        if overflow.scope != palisade_proto::Scope::Ip || overflow.origin != palisade_proto::Origin::Palisade
        {
            return None;
        }
        Some(Sighting {
            ip: overflow.value.parse().ok()?,
            scenario: overflow.scenario.to_string(),
            confidence: overflow.confidence.min(3),
            observed_at: overflow.last_at,
            events_count: overflow.events_count,
        })
    }
}

/// The key material for community hashes: the secret the tier handed out and the
/// epoch length. Nodes need it to match list entries (hash an address with the key of
/// each entry's epoch) and to build signals.
#[derive(Clone, PartialEq, Eq)]
pub struct CommunityHashing {
    secret: [u8; 32],
    epoch_secs: u32,
}

impl std::fmt::Debug for CommunityHashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommunityHashing(epoch {} s, secret ..)", self.epoch_secs)
    }
}

impl CommunityHashing {
    /// From the secret and epoch length of a `Welcome`.
    pub fn new(secret: [u8; 32], epoch_secs: u32) -> Self {
        CommunityHashing { secret, epoch_secs: epoch_secs.max(1) }
    }

    /// The epoch containing `at`.
    pub fn epoch_of(&self, at: Timestamp) -> Epoch {
        Epoch::containing(at, self.epoch_secs)
    }

    /// The hashing key of `epoch`.
    pub fn key(&self, epoch: Epoch) -> HashKey {
        HashKey::derive(&self.secret, epoch)
    }

    /// `ip` hashed for the epoch of `at`.
    pub fn hash(&self, ip: IpAddr, at: Timestamp) -> (Epoch, HashedIp) {
        let epoch = self.epoch_of(at);
        (epoch, self.key(epoch).hash(ip))
    }
}

/// The community signal for a sighting, from `origin`: hashed with the community key
/// of the sighting's epoch (never the fleet key), without a sealed IP. Sign a report's
/// signals together with [`sign_batch`](palisade_proto::signal::sign_batch).
pub fn community_signal(hashing: &CommunityHashing, sighting: &Sighting, origin: NodeId, seq: u64) -> Signal {
    let (epoch, hashed_ip) = hashing.hash(sighting.ip, sighting.observed_at);
    Signal {
        origin,
        seq,
        epoch,
        hashed_ip,
        scenario: palisade_proto::central::truncate_text(
            &sighting.scenario,
            palisade_proto::signal::MAX_SCENARIO_LEN,
        ),
        confidence: sighting.confidence.min(3),
        observed_at: sighting.observed_at,
        events_count: sighting.events_count,
        sealed_ip: None,
    }
}

/// Counters and state of the link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// A session is open.
    pub connected: bool,
    /// The tenant, once enrolled.
    pub tenant: Option<String>,
    /// The tenant opted in.
    pub community: bool,
    /// Sightings waiting to be sent.
    pub pending: usize,
    /// Signals sent and not yet acknowledged.
    pub in_flight: usize,
    /// Signals sent (resends included).
    pub sent: u64,
    /// Signals the tier took in.
    pub accepted: u64,
    /// Signals the tier refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Deltas handed to the caller.
    pub deltas: u64,
    /// The list version last handed over.
    pub list_version: u64,
    /// The version last confirmed applied.
    pub applied_version: u64,
    /// Sessions opened.
    pub sessions: u64,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
}

enum LinkCommand {
    Report(Vec<Sighting>),
    Applied(u64),
    Shutdown(oneshot::Sender<()>),
}

/// The caller's handle. Cheap to clone.
#[derive(Clone)]
pub struct CentralHandle {
    commands: mpsc::Sender<LinkCommand>,
    /// Wakes the link out of a connection attempt when the caller stops it.
    stop: Arc<tokio::sync::Notify>,
    hashing: watch::Receiver<Option<CommunityHashing>>,
    stats: Arc<Mutex<LinkStats>>,
}

impl std::fmt::Debug for CentralHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CentralHandle")
    }
}

impl CentralHandle {
    /// Queues sightings for the tier; waits while `max_pending` are queued.
    pub async fn report(&self, sightings: Vec<Sighting>) -> Result<(), LinkError> {
        self.commands.send(LinkCommand::Report(sightings)).await.map_err(|_| LinkError::Stopped)
    }

    /// Confirms that `delta` is applied (durably, on the caller's side): the link
    /// resumes after it. Call it for every delta, in order.
    pub async fn applied(&self, delta: &ListDelta) -> Result<(), LinkError> {
        let version = match delta.kind {
            DeltaKind::Changes => delta.version,
            DeltaKind::Snapshot { part, parts } if part + 1 == parts => delta.version,
            // A snapshot half applied: the list must be fetched whole again.
            DeltaKind::Snapshot { .. } => 0,
        };
        self.commands.send(LinkCommand::Applied(version)).await.map_err(|_| LinkError::Stopped)
    }

    /// The community hashing key material, once the tier handed it out (saved across
    /// restarts).
    pub fn hashing(&self) -> Option<CommunityHashing> {
        self.hashing.borrow().clone()
    }

    /// Waits until the link knows its hashing key material.
    pub async fn wait_hashing(&self) -> Result<CommunityHashing, LinkError> {
        let mut rx = self.hashing.clone();
        loop {
            if let Some(h) = rx.borrow_and_update().clone() {
                return Ok(h);
            }
            rx.changed().await.map_err(|_| LinkError::Stopped)?;
        }
    }

    /// Counters and state.
    pub fn stats(&self) -> LinkStats {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Saves the resume point and closes the session.
    pub async fn shutdown(&self) {
        self.stop.notify_one();
        let (tx, rx) = oneshot::channel();
        if self.commands.send(LinkCommand::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A running link.
#[derive(Debug)]
pub struct CentralLink {
    /// Reports, confirmations, stats.
    pub handle: CentralHandle,
    /// Verified deltas of the community list, in order (tenants that opted in and
    /// `subscribe = true` only). Part 0 of a snapshot means: drop every community entry,
    /// then apply. Read it steadily: when it is full the link stops reading deltas.
    pub deltas: mpsc::Receiver<ListDelta>,
    /// The link's task; ends after [`CentralHandle::shutdown`].
    pub task: JoinHandle<()>,
}

/// What enrollment returned, saved in the data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Enrollment {
    tier: String,
    tenant: String,
    community: bool,
    hash_secret: String,
    epoch_secs: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    applied_version: u64,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, LinkError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            LinkError::Config(format!("{} is damaged ({e}); delete it to start over", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LinkError::Config(format!("reading {}: {e}", path.display()))),
    }
}

/// The backlog a stopped link left, removed from disk (it is this run's to send now).
/// A damaged backlog is logged and dropped: it only delays reports, it cannot block the
/// link.
fn take_backlog(dir: &Path) -> Backlog {
    let path = dir.join(BACKLOG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Backlog::default(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the central link backlog");
            return Backlog::default();
        }
    };
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot remove the central link backlog");
    }
    let limit = bincode::config::standard().with_limit::<{ 512 << 20 }>();
    match bincode::decode_from_slice::<Backlog, _>(&bytes, limit) {
        Ok((backlog, _)) => {
            tracing::info!(
                signals = backlog.signals.len(),
                sightings = backlog.sightings.len(),
                "central link backlog from the last run queued"
            );
            backlog
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "the central link backlog is damaged; dropped");
            Backlog::default()
        }
    }
}

/// Starts the link (call inside a Tokio runtime); it connects in the background.
pub fn start(config: CentralLinkConfig, key: NodeKey) -> Result<CentralLink, LinkError> {
    if config.addr.trim().is_empty() {
        return Err(LinkError::Config("the central tier's address is empty".into()));
    }
    if config.batch == 0 || config.batch > MAX_REPORT_SIGNALS || config.window == 0 || config.max_pending == 0
    {
        return Err(LinkError::Config("batch must be 1 to 512, window and max_pending at least 1".into()));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| LinkError::Config(format!("creating {}: {e}", config.data_dir.display())))?;
    let token = config
        .token
        .as_deref()
        .map(EnrollToken::from_text)
        .transpose()
        .map_err(|e| LinkError::Config(e.to_string()))?;
    let enrollment: Option<Enrollment> = read_json(&config.data_dir.join(ENROLLMENT_FILE))?;
    let saved_tier = enrollment.as_ref().and_then(|e| e.tier.parse::<NodeId>().ok());
    let mut tier = None;
    for candidate in [config.tier_key, token.as_ref().map(|t| t.tier), saved_tier].into_iter().flatten() {
        match tier {
            None => tier = Some(candidate),
            Some(t) if t != candidate => {
                return Err(LinkError::Config(format!(
                    "the central tier key {candidate} (token, config or saved enrollment) differs from {t}: \
                     enroll with a token of this tier, or delete {} to enroll anew",
                    config.data_dir.join(ENROLLMENT_FILE).display()
                )))
            }
            Some(_) => {}
        }
    }
    let Some(tier) = tier else {
        return Err(LinkError::Config("not enrolled yet: give the tenant's enrollment token".into()));
    };
    let hashing = enrollment.as_ref().and_then(|e| {
        let mut secret = [0u8; 32];
        hex::decode_to_slice(&e.hash_secret, &mut secret).ok()?;
        Some(CommunityHashing::new(secret, e.epoch_secs))
    });
    let state: State = read_json(&config.data_dir.join(STATE_FILE))?.unwrap_or_default();
    let backlog = take_backlog(&config.data_dir);
    let (_, client_crypto) = quic_crypto_with(&key, Arc::new(NodeVerifier::pinned(tier)), ALPN)
        .map_err(|e| LinkError::Config(e.to_string()))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        // A tier that restarts resets the old session at once (its stateless resets are
        // keyed from its node key); a tier that is gone is noticed after 30 s.
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(30)).ok())
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_concurrent_bidi_streams(VarInt::from_u32(0));
    let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
    client_config.transport_config(Arc::new(transport));
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (deltas_tx, deltas_rx) = mpsc::channel(config.deltas_queue.max(1));
    let (hashing_tx, hashing_rx) = watch::channel(hashing);
    let stats = Arc::new(Mutex::new(LinkStats {
        tenant: enrollment.as_ref().map(|e| e.tenant.clone()),
        community: enrollment.as_ref().is_some_and(|e| e.community),
        applied_version: state.applied_version,
        list_version: state.applied_version,
        pending: backlog.sightings.len(),
        ..LinkStats::default()
    }));
    let link = Link {
        token_secret: token.map(|t| t.secret),
        enrolled: enrollment,
        tier,
        key,
        client_config,
        state,
        dirty: false,
        delivered: Arc::new(AtomicU64::new(0)),
        pending: backlog.sightings.into(),
        resend: backlog.signals.into(),
        inflight: VecDeque::new(),
        next_seq: 1,
        next_batch: 1,
        hashing: hashing_tx,
        deltas: deltas_tx,
        stats: stats.clone(),
        config,
    };
    link.delivered.store(link.state.applied_version, Ordering::Relaxed);
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(link.run(commands_rx, stop.clone()));
    let handle = CentralHandle { commands: commands_tx, stop, hashing: hashing_rx, stats };
    Ok(CentralLink { handle, deltas: deltas_rx, task })
}

struct Link {
    config: CentralLinkConfig,
    key: NodeKey,
    tier: NodeId,
    token_secret: Option<[u8; 32]>,
    enrolled: Option<Enrollment>,
    client_config: quinn::ClientConfig,
    state: State,
    dirty: bool,
    /// The last version handed to the caller (the resume point within this run).
    delivered: Arc<AtomicU64>,
    pending: VecDeque<Sighting>,
    resend: VecDeque<SignedSignal>,
    inflight: VecDeque<(u64, Vec<SignedSignal>)>,
    next_seq: u64,
    next_batch: u64,
    hashing: watch::Sender<Option<CommunityHashing>>,
    deltas: mpsc::Sender<ListDelta>,
    stats: Arc<Mutex<LinkStats>>,
}

/// An open session.
struct Session {
    conn: Connection,
    send: SendStream,
    acks: mpsc::Receiver<Result<palisade_proto::central::Ack, String>>,
    reader: JoinHandle<()>,
    follower: Option<JoinHandle<()>>,
    ended: mpsc::Receiver<String>,
}

enum Flow {
    Continue,
    Stop,
}

impl Link {
    fn stats(&self, f: impl FnOnce(&mut LinkStats)) {
        f(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn save_state(&mut self) {
        if !self.dirty {
            return;
        }
        let path = self.config.data_dir.join(STATE_FILE);
        match serde_json::to_string(&self.state)
            .map_err(std::io::Error::other)
            .and_then(|t| crate::keys::write_private(&path, t.as_bytes()))
        {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot save the central link state")
            }
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<LinkCommand>, stop: Arc<tokio::sync::Notify>) {
        let mut backoff = self.config.backoff_min;
        let mut endpoint: Option<Endpoint> = None;
        loop {
            let attempt = tokio::select! {
                attempt = self.open(&mut endpoint) => attempt,
                _ = stop.notified() => break,
            };
            match attempt {
                Ok(session) => {
                    backoff = self.config.backoff_min;
                    let (flow, reason) = self.drive(session, &mut commands).await;
                    self.requeue();
                    self.stats(|s| {
                        s.connected = false;
                        s.last_error = reason.clone();
                    });
                    if matches!(flow, Flow::Stop) {
                        break;
                    }
                    if let Some(reason) = reason {
                        tracing::info!(reason = %reason, "central tier session ended; reconnecting");
                    }
                }
                Err((reason, fatal)) => {
                    tracing::warn!(tier = %self.config.addr, reason = %reason, "cannot open a session with the central tier");
                    self.stats(|s| s.last_error = Some(reason));
                    if fatal {
                        backoff = self.config.backoff_max;
                    }
                }
            }
            // Wait before the next attempt, serving the caller meanwhile.
            let jitter = rand::thread_rng().gen_range(0.5..1.0);
            let sleep = tokio::time::sleep(backoff.mul_f64(jitter));
            tokio::pin!(sleep);
            backoff = (backoff * 2).min(self.config.backoff_max);
            let stop = loop {
                tokio::select! {
                    _ = &mut sleep => break false,
                    cmd = commands.recv(), if self.pending.len() < self.config.max_pending => {
                        if let Flow::Stop = self.command(cmd) { break true; }
                    }
                }
            };
            if stop {
                break;
            }
        }
        self.save_state();
        self.save_backlog();
        if let Some(endpoint) = endpoint {
            endpoint.close(VarInt::from_u32(0), b"bye");
            // Let the close reach the tier, so it does not count us connected until its
            // idle timeout; bounded, as the tier may be gone.
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }

    /// Keeps what the tier has not acknowledged for the next start: resent first, then
    /// the sightings still queued. A kill -9 loses them, as before.
    fn save_backlog(&mut self) {
        self.requeue();
        if self.resend.is_empty() && self.pending.is_empty() {
            return;
        }
        let backlog = Backlog {
            signals: std::mem::take(&mut self.resend).into(),
            sightings: std::mem::take(&mut self.pending).into(),
        };
        let path = self.config.data_dir.join(BACKLOG_FILE);
        match bincode::encode_to_vec(&backlog, bincode::config::standard())
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::keys::write_private(&path, &bytes))
        {
            Ok(()) => tracing::info!(
                signals = backlog.signals.len(),
                sightings = backlog.sightings.len(),
                "central link backlog saved for the next start"
            ),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot save the central link backlog")
            }
        }
    }

    fn command(&mut self, cmd: Option<LinkCommand>) -> Flow {
        match cmd {
            Some(LinkCommand::Report(sightings)) => {
                self.pending.extend(sightings);
                let n = self.pending.len();
                self.stats(|s| s.pending = n);
                Flow::Continue
            }
            Some(LinkCommand::Applied(version)) => {
                self.state.applied_version = version;
                self.dirty = true;
                self.stats(|s| s.applied_version = version);
                Flow::Continue
            }
            Some(LinkCommand::Shutdown(done)) => {
                self.save_state();
                let _ = done.send(());
                Flow::Stop
            }
            None => Flow::Stop,
        }
    }

    /// Unacknowledged batches go back to the front of the queue, in order.
    fn requeue(&mut self) {
        for (_, signals) in self.inflight.drain(..).rev() {
            for s in signals.into_iter().rev() {
                self.resend.push_front(s);
            }
        }
        let in_flight = 0;
        self.stats(|s| s.in_flight = in_flight);
    }

    async fn open(&mut self, endpoint: &mut Option<Endpoint>) -> Result<Session, (String, bool)> {
        let addr = tokio::net::lookup_host(self.config.addr.as_str())
            .await
            .map_err(|e| (format!("cannot resolve {}: {e}", self.config.addr), false))?
            .next()
            .ok_or_else(|| (format!("{} resolves to no address", self.config.addr), false))?;
        let endpoint = match endpoint {
            Some(e) => e.clone(),
            None => {
                let bind: SocketAddr = match (self.config.bind, addr) {
                    (Some(ip), _) => (ip, 0).into(),
                    (None, SocketAddr::V4(_)) => ([0, 0, 0, 0], 0).into(),
                    (None, SocketAddr::V6(_)) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let mut e = Endpoint::client(bind).map_err(|e| (format!("cannot bind {bind}: {e}"), true))?;
                e.set_default_client_config(self.client_config.clone());
                endpoint.insert(e).clone()
            }
        };
        let connecting = endpoint.connect(addr, SERVER_NAME).map_err(|e| (e.to_string(), false))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| ("connection timed out".to_owned(), false))?
            .map_err(|e| (format!("cannot connect to {addr}: {e}"), false))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| (e.to_string(), false))?;
        let enroll = if self.enrolled.is_none() { self.token_secret } else { None };
        let hello = SensorHello { enroll, version: env!("CARGO_PKG_VERSION").to_owned() };
        send_message(&mut send, CentralMessage::Hello(hello)).await.map_err(|e| (e, false))?;
        let reply = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut recv, MAX_MESSAGE_BYTES as u32))
            .await
            .map_err(|_| ("no answer to the hello in time".to_owned(), false))?
            .map_err(|_| ("the tier closed the session".to_owned(), false))?;
        let welcome = match decode(&reply) {
            Some(CentralMessage::Welcome(w)) => w,
            Some(CentralMessage::Refused(r)) => {
                let fatal = matches!(
                    r.code,
                    RefusalCode::UnknownToken
                        | RefusalCode::NotEnrolled
                        | RefusalCode::OtherTenant
                        | RefusalCode::Banned
                );
                return Err((format!("the tier refused this sensor: {} ({:?})", r.reason, r.code), fatal));
            }
            _ => return Err(("the tier answered something other than a welcome".to_owned(), false)),
        };
        let enrollment = Enrollment {
            tier: self.tier.to_string(),
            tenant: welcome.tenant.clone(),
            community: welcome.community,
            hash_secret: hex::encode(welcome.hash_secret),
            epoch_secs: welcome.epoch_secs,
        };
        if self.enrolled.as_ref() != Some(&enrollment) {
            let path = self.config.data_dir.join(ENROLLMENT_FILE);
            let text = serde_json::to_string_pretty(&enrollment).map_err(|e| (e.to_string(), true))?;
            crate::keys::write_private(&path, text.as_bytes())
                .map_err(|e| (format!("cannot save {}: {e}", path.display()), true))?;
            tracing::info!(tenant = %welcome.tenant, community = welcome.community, "enrolled with the central tier");
            self.enrolled = Some(enrollment);
        }
        self.hashing.send_replace(Some(CommunityHashing::new(welcome.hash_secret, welcome.epoch_secs)));
        // Number after anything the tier has, and after anything signed but unacked.
        let resend_max = self.resend.iter().map(|s| s.signal.seq).max().unwrap_or(0);
        self.next_seq = self.next_seq.max(welcome.next_seq).max(resend_max + 1);
        let (acks_tx, acks) = mpsc::channel(self.config.window * 2);
        let reader = tokio::spawn(read_acks(recv, acks_tx));
        let (ended_tx, ended) = mpsc::channel(1);
        let follower = (self.config.subscribe && welcome.community).then(|| {
            let from = match self.delivered.load(Ordering::Relaxed) {
                MID_SNAPSHOT => 0,
                delivered => delivered.max(self.state.applied_version),
            };
            tokio::spawn(follow(
                conn.clone(),
                from,
                self.tier,
                self.deltas.clone(),
                self.delivered.clone(),
                self.stats.clone(),
                ended_tx,
            ))
        });
        if self.config.subscribe && !welcome.community {
            tracing::warn!(tenant = %welcome.tenant, "tenant did not opt in to the community: no list to follow");
        }
        self.stats(|s| {
            s.connected = true;
            s.sessions += 1;
            s.tenant = Some(welcome.tenant.clone());
            s.community = welcome.community;
            s.last_error = None;
        });
        tracing::info!(tier = %addr, tenant = %welcome.tenant, list_version = welcome.list_version, "central tier session open");
        Ok(Session { conn, send, acks, reader, follower, ended })
    }

    /// Serves one session until it ends or the caller stops the link.
    async fn drive(
        &mut self,
        mut session: Session,
        commands: &mut mpsc::Receiver<LinkCommand>,
    ) -> (Flow, Option<String>) {
        let mut save = tokio::time::interval(Duration::from_secs(1));
        let outcome = loop {
            let can_send = self.inflight.len() < self.config.window
                && (!self.resend.is_empty() || !self.pending.is_empty())
                && self.hashing.borrow().is_some();
            tokio::select! {
                cmd = commands.recv(), if self.pending.len() < self.config.max_pending => {
                    if let Flow::Stop = self.command(cmd) {
                        break (Flow::Stop, None);
                    }
                }
                ack = session.acks.recv() => match ack {
                    Some(Ok(ack)) => {
                        if let Err(e) = self.acked(ack) {
                            break (Flow::Continue, Some(e));
                        }
                    }
                    Some(Err(e)) => break (Flow::Continue, Some(e)),
                    None => break (Flow::Continue, Some("the session stream ended".into())),
                },
                reason = session.ended.recv(), if session.follower.is_some() => {
                    break (Flow::Continue, Some(reason.unwrap_or_else(|| "subscription ended".into())));
                }
                _ = save.tick() => self.save_state(),
                _ = std::future::ready(()), if can_send => {
                    if let Err(e) = self.send_batch(&mut session.send).await {
                        break (Flow::Continue, Some(e));
                    }
                }
            }
        };
        session.reader.abort();
        if let Some(f) = session.follower.take() {
            f.abort();
        }
        let _ = session.send.finish();
        session.conn.close(VarInt::from_u32(0), b"bye");
        self.save_state();
        outcome
    }

    async fn send_batch(&mut self, send: &mut SendStream) -> Result<(), String> {
        let mut signals = Vec::with_capacity(self.config.batch);
        while signals.len() < self.config.batch {
            match self.resend.pop_front() {
                Some(s) => signals.push(s),
                None => break,
            }
        }
        if signals.is_empty() {
            let Some(hashing) = self.hashing.borrow().clone() else { return Ok(()) };
            let mut fresh = Vec::with_capacity(self.config.batch);
            while fresh.len() < self.config.batch {
                let Some(sighting) = self.pending.pop_front() else { break };
                fresh.push(community_signal(&hashing, &sighting, self.key.node_id(), self.next_seq));
                self.next_seq += 1;
            }
            signals = palisade_proto::signal::sign_batch(&self.key, fresh);
        }
        if signals.is_empty() {
            return Ok(());
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        let n = signals.len();
        let report = CentralMessage::Report(Report { batch, signals });
        let result = send_message(send, report.clone()).await;
        let CentralMessage::Report(report) = report else { return Ok(()) };
        self.inflight.push_back((batch, report.signals));
        let (pending, in_flight) = (self.pending.len(), self.inflight.iter().map(|(_, s)| s.len()).sum());
        self.stats(|s| {
            s.sent += n as u64;
            s.pending = pending;
            s.in_flight = in_flight;
        });
        result
    }

    fn acked(&mut self, ack: palisade_proto::central::Ack) -> Result<(), String> {
        match self.inflight.front() {
            Some((batch, _)) if *batch == ack.batch => {
                self.inflight.pop_front();
            }
            _ => return Err(format!("the tier acknowledged batch {} out of order", ack.batch)),
        }
        let in_flight = self.inflight.iter().map(|(_, s)| s.len()).sum();
        self.stats(|s| {
            s.accepted += u64::from(ack.accepted);
            s.in_flight = in_flight;
            for r in &ack.rejected {
                *s.rejected.entry(r.reason.as_str().to_owned()).or_default() += 1;
            }
        });
        Ok(())
    }
}

/// Opens a bare session (for `palisade central bench`, which drives the protocol itself
/// to send pre-signed reports): connects from `bind`, pins `tier`, sends the hello.
pub(crate) async fn raw_session(
    key: &NodeKey,
    tier: NodeId,
    addr: SocketAddr,
    bind: IpAddr,
    enroll: Option<[u8; 32]>,
) -> Result<(Endpoint, Connection, SendStream, RecvStream, palisade_proto::central::Welcome), String> {
    let (_, crypto) =
        quic_crypto_with(key, Arc::new(NodeVerifier::pinned(tier)), ALPN).map_err(|e| e.to_string())?;
    let mut endpoint = Endpoint::client((bind, 0).into()).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn =
        endpoint.connect(addr, SERVER_NAME).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = SensorHello { enroll, version: env!("CARGO_PKG_VERSION").to_owned() };
    send_message(&mut send, CentralMessage::Hello(hello)).await?;
    let reply = read_frame(&mut recv, MAX_MESSAGE_BYTES as u32).await.map_err(|_| "no welcome".to_owned())?;
    match decode(&reply) {
        Some(CentralMessage::Welcome(w)) => Ok((endpoint, conn, send, recv, w)),
        Some(CentralMessage::Refused(r)) => Err(format!("refused: {}", r.reason)),
        _ => Err("unexpected answer".into()),
    }
}

pub(crate) fn decode(bytes: &[u8]) -> Option<CentralMessage> {
    match Message::decode(bytes) {
        Ok(Message::Central(m)) => Some(m),
        _ => None,
    }
}

pub(crate) async fn send_message(send: &mut SendStream, message: CentralMessage) -> Result<(), String> {
    let bytes = Message::Central(message).encode().map_err(|e| e.to_string())?;
    write_frame(send, &bytes).await.map_err(|e| format!("sending to the tier: {e}"))
}

async fn read_acks(mut recv: RecvStream, acks: mpsc::Sender<Result<palisade_proto::central::Ack, String>>) {
    loop {
        let item = match read_frame(&mut recv, MAX_MESSAGE_BYTES as u32).await {
            Ok(bytes) => match decode(&bytes) {
                Some(CentralMessage::Ack(ack)) => Ok(ack),
                Some(CentralMessage::Refused(r)) => Err(format!("the tier ended the session: {}", r.reason)),
                _ => Err("the tier sent something other than an ack".into()),
            },
            Err(_) => Err("the session stream ended".into()),
        };
        let stop = item.is_err();
        if acks.send(item).await.is_err() || stop {
            return;
        }
    }
}

/// The subscription: verifies each delta against the pinned key, checks that versions
/// follow on, and hands them over in order.
async fn follow(
    conn: Connection,
    from: u64,
    tier: NodeId,
    deltas: mpsc::Sender<ListDelta>,
    delivered: Arc<AtomicU64>,
    stats: Arc<Mutex<LinkStats>>,
    ended: mpsc::Sender<String>,
) {
    let reason = follow_inner(conn, from, tier, deltas, delivered, stats).await;
    let _ = ended.send(reason).await;
}

async fn follow_inner(
    conn: Connection,
    from: u64,
    tier: NodeId,
    deltas: mpsc::Sender<ListDelta>,
    delivered: Arc<AtomicU64>,
    stats: Arc<Mutex<LinkStats>>,
) -> String {
    let Ok((mut send, mut recv)) = conn.open_bi().await else { return "cannot open the subscription".into() };
    if let Err(e) = send_message(&mut send, CentralMessage::Subscribe(Subscribe { from_version: from })).await
    {
        return e;
    }
    let mut version = from;
    // (next part expected, parts) while a snapshot is coming in.
    let mut snapshot: Option<(u32, u32)> = None;
    loop {
        let Ok(bytes) = read_frame(&mut recv, MAX_MESSAGE_BYTES as u32).await else {
            return "the subscription stream ended".into();
        };
        let signed = match decode(&bytes) {
            Some(CentralMessage::Delta(d)) => d,
            Some(CentralMessage::Refused(r)) => return format!("subscription refused: {}", r.reason),
            _ => return "the tier sent something other than a delta".into(),
        };
        if let Err(e) = signed.verify(&tier) {
            return format!("refused a list delta: {e}");
        }
        let delta = signed.delta;
        match delta.kind {
            DeltaKind::Changes => {
                if snapshot.is_some() {
                    return "a delta arrived in the middle of a snapshot".into();
                }
                if delta.version <= version {
                    continue;
                }
                if delta.version != version + 1 {
                    return format!("list version gap: {} after {version}", delta.version);
                }
                version = delta.version;
            }
            DeltaKind::Snapshot { part, parts } => {
                let expected = snapshot.map_or(0, |(next, _)| next);
                if part != expected || snapshot.is_some_and(|(_, p)| p != parts) {
                    return "snapshot parts out of order".into();
                }
                if part == 0 {
                    // The list is being replaced: until the last part, resume from scratch.
                    delivered.store(MID_SNAPSHOT, Ordering::Relaxed);
                }
                if part + 1 == parts {
                    snapshot = None;
                    version = delta.version;
                } else {
                    snapshot = Some((part + 1, parts));
                }
            }
        }
        let complete = snapshot.is_none();
        if deltas.send(delta).await.is_err() {
            return "the caller stopped reading deltas".into();
        }
        if complete {
            delivered.store(version, Ordering::Relaxed);
        }
        let mut s = stats.lock().unwrap_or_else(PoisonError::into_inner);
        s.deltas += 1;
        if complete {
            s.list_version = version;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;

    fn sighting(confidence: u8) -> Sighting {
        Sighting {
            ip: "203.0.113.9".parse().unwrap(),
            scenario: "palisade/ssh-bf".into(),
            confidence,
            observed_at: Timestamp::from_secs(5 * 3600 + 10),
            events_count: 6,
        }
    }

    #[test]
    fn a_backlog_is_taken_once_and_a_damaged_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::from_bytes(&[1; 32]);
        let sighting = sighting(3);
        let hashing = CommunityHashing::new([9; 32], 3600);
        let signed = community_signal(&hashing, &sighting, key.node_id(), 7).sign(&key);
        let backlog = Backlog { signals: vec![signed.clone()], sightings: vec![sighting.clone()] };
        let bytes = bincode::encode_to_vec(&backlog, bincode::config::standard()).unwrap();
        std::fs::write(dir.path().join(BACKLOG_FILE), bytes).unwrap();
        let taken = take_backlog(dir.path());
        assert_eq!((taken.signals, taken.sightings), (vec![signed], vec![sighting]));
        assert!(take_backlog(dir.path()).signals.is_empty(), "taken once");
        std::fs::write(dir.path().join(BACKLOG_FILE), [0xff; 40]).unwrap();
        let damaged = take_backlog(dir.path());
        assert!(damaged.signals.is_empty() && damaged.sightings.is_empty());
        assert!(!dir.path().join(BACKLOG_FILE).exists());
    }

    #[test]
    fn community_signals_use_the_community_key_of_their_epoch_and_never_seal() {
        let hashing = CommunityHashing::new([9; 32], 3600);
        let key = NodeKey::from_bytes(&[1; 32]);
        let sighting = sighting(7);
        let s = community_signal(&hashing, &sighting, key.node_id(), 42).sign(&key);
        assert_eq!(s.verify(), Ok(()));
        assert_eq!(s.signal.epoch, Epoch(5));
        assert_eq!(s.signal.hashed_ip, HashKey::derive(&[9; 32], Epoch(5)).hash(sighting.ip));
        assert_ne!(s.signal.hashed_ip, HashKey::derive(&[8; 32], Epoch(5)).hash(sighting.ip));
        assert_eq!((s.signal.seq, s.signal.confidence, s.signal.origin), (42, 3, key.node_id()));
        assert!(s.signal.sealed_ip.is_none());
        // The same address an epoch later is another hash.
        let later = Sighting { observed_at: Timestamp::from_secs(6 * 3600), ..sighting };
        assert_ne!(community_signal(&hashing, &later, key.node_id(), 43).hashed_ip, s.signal.hashed_ip);
    }

    #[test]
    fn sightings_come_from_single_address_overflows_only() {
        use palisade_actors::event::Overflow;
        let overflow = Overflow {
            scenario: "palisade/ssh-bf".into(),
            scope: palisade_proto::Scope::Ip,
            value: "2001:db8::7".into(),
            group_key: "2001:db8::7".into(),
            events_count: 6,
            first_at: Timestamp(1),
            last_at: Timestamp(9),
            remediation: None,
            confidence: 5,
            labels: Default::default(),
            origin: palisade_proto::Origin::Palisade,
        };
        let s = Sighting::from_overflow(&overflow).unwrap();
        assert_eq!(
            (s.ip, s.confidence, s.observed_at, s.events_count),
            ("2001:db8::7".parse().unwrap(), 3, Timestamp(9), 6)
        );
        assert_eq!(s.scenario, "palisade/ssh-bf");
        let range = Overflow {
            scope: palisade_proto::Scope::Range,
            value: "192.0.2.0/24".into(),
            ..overflow.clone()
        };
        assert_eq!(Sighting::from_overflow(&range), None);
        let empty = Overflow { value: String::new(), ..overflow };
        assert_eq!(Sighting::from_overflow(&empty), None);
    }

    #[test]
    fn starting_needs_a_token_or_an_enrollment_and_refuses_two_tier_keys() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let key = NodeKey::from_bytes(&[1; 32]);
        let base = CentralLinkConfig {
            addr: "127.0.0.1:1".into(),
            data_dir: dir.path().into(),
            ..Default::default()
        };
        rt.block_on(async {
            let e = start(base.clone(), key.clone()).unwrap_err().to_string();
            assert!(e.contains("enrollment token"), "{e}");
            let token =
                EnrollToken { tier: NodeKey::from_bytes(&[2; 32]).node_id(), secret: [3; 32] }.to_text();
            let other = NodeKey::from_bytes(&[4; 32]).node_id();
            let both =
                CentralLinkConfig { token: Some(token.clone()), tier_key: Some(other), ..base.clone() };
            let e = start(both, key.clone()).unwrap_err().to_string();
            assert!(e.contains("differs"), "{e}");
            let bad = CentralLinkConfig { token: Some("palisade-central-zz".into()), ..base.clone() };
            assert!(start(bad, key.clone()).is_err());
            let link = start(CentralLinkConfig { token: Some(token), ..base }, key).unwrap();
            assert!(link.handle.hashing().is_none());
            link.handle.shutdown().await;
        });
    }
}
