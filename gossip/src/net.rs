//! The QUIC shell: one UDP port per node, admitted connections, and the tasks that
//! drive the [`Engine`] and chitchat.
//!
//! Tasks and channels (all bounded):
//! - the *driver* owns the engine, the connection table and the chitchat handle, and runs
//!   one `select!` loop over commands from [`GossipHandle`], connection events, chitchat's
//!   outgoing messages, a tick and incoming connections;
//! - one task per connection admits the peer (TLS identity + `Hello` with its membership
//!   certificate), then reads length-prefixed frames from the peer's uni-stream into the
//!   driver; a writer task per connection drains that peer's send queue (frames beyond
//!   `peer_queue` are dropped and repaired later by anti-entropy).
//!
//! Frames: a little-endian `u32` length, then one envelope (`palisade_proto::Message`).
//! A frame over `max_frame_bytes` is never read: the connection is closed and the peer
//! penalised.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, ChitchatMessage, FailureDetectorConfig};
use palisade_proto::{
    AdmissionError, FleetId, Hello, JoinReply, JoinRequest, JoinToken, Message, NodeId, NodeKey,
    RevocationList, Signal, SignedSignal, Timestamp,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::admission::{FleetKeys, Membership};
use crate::config::GossipConfig;
use crate::engine::{sign_own, ConfigError, Engine, InEvent, OutEvent};
use crate::membership::{self, QuicTransport, KEY_HWM_PREFIX, KEY_QUIC_ADDR, KEY_READY, KEY_VERSION};
use crate::stats::EngineStats;
use crate::tls::{self, RevokedSet, TlsError};
use palisade_proto::signal::Verifier;

/// Close codes of gossip connections.
mod close {
    /// Normal shutdown.
    pub const SHUTDOWN: u32 = 0;
    /// Not admitted (membership certificate missing, invalid, revoked, wrong fleet).
    pub const REFUSED: u32 = 1;
    /// Cut off for bad input.
    pub const MISBEHAVED: u32 = 2;
    /// A second connection to the same peer; the other one is kept.
    pub const DUPLICATE: u32 = 3;
}

/// How long a peer has to present its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two dials of the same address.
const REDIAL_AFTER: Duration = Duration::from_secs(3);
/// Software version advertised in `Hello` and chitchat.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Bounds of the internal channels.
const COMMAND_QUEUE: usize = 64;
const EVENT_QUEUE: usize = 256;
const DELIVER_QUEUE: usize = 64;
const MEMBERSHIP_QUEUE: usize = 128;
/// Batches of own signals being signed off the driver at once; more are signed inline.
const SIGNING_JOBS: usize = 4;
/// Batches of received signals being verified off the driver at once; more inline.
const VERIFY_JOBS: usize = 4;

/// A batch of received signals to verify, and the peer they came from.
type VerifyJob = (NodeId, Vec<SignedSignal>);
/// A verified batch: the job and one result per signal.
type VerifyDone = (NodeId, Vec<SignedSignal>, Vec<Result<(), palisade_proto::signal::VerifyError>>);

/// Why the endpoint could not start or a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS identity could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot bind the gossip QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The address from `gossip.listen`.
        addr: SocketAddr,
        /// The system's reason.
        source: std::io::Error,
    },
    /// This node's own certificate does not admit it.
    #[error("this node's membership certificate is not valid: {0}")]
    Membership(#[from] palisade_proto::AdmissionError),
    /// chitchat did not start.
    #[error("membership (chitchat) did not start: {0}")]
    Chitchat(String),
    /// The endpoint has stopped.
    #[error("the gossip endpoint has stopped")]
    Stopped,
}

/// Why joining a fleet failed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token itself is expired, tampered or not yet valid.
    #[error("join token refused: {0}")]
    Token(AdmissionError),
    /// The peer address does not resolve.
    #[error("cannot resolve the peer address {peer:?}: {reason}")]
    Resolve {
        /// The address in the token.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The peer could not be reached or the exchange broke off.
    #[error("cannot reach the fleet member at {peer}: {reason} (is it running, and is its UDP port open?)")]
    Connect {
        /// The address dialled.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The peer refused to admit this node.
    #[error("the fleet member at {peer} refused to admit this node: {reason}")]
    Refused {
        /// The address dialled.
        peer: SocketAddr,
        /// Its reason.
        reason: String,
    },
    /// The certificate received does not admit this node.
    #[error("the certificate received does not admit this node: {0}")]
    BadCertificate(AdmissionError),
    /// The TLS identity could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Counters of the QUIC shell (the engine's are in [`EngineStats`]).
#[derive(Debug, Default)]
struct NetCounters {
    handshakes_admitted: AtomicU64,
    handshakes_refused: AtomicU64,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_dropped_queue_full: AtomicU64,
    membership_in: AtomicU64,
    membership_out: AtomicU64,
    membership_dropped: AtomicU64,
    dials: AtomicU64,
    joins_accepted: AtomicU64,
    joins_refused: AtomicU64,
    /// UDP bytes of admitted connections that have closed (open ones are read live).
    closed_udp_tx: AtomicU64,
    closed_udp_rx: AtomicU64,
}

/// A snapshot of the shell's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetStats {
    /// Connections whose peer proved fleet membership.
    pub handshakes_admitted: u64,
    /// Connections refused at the handshake or the first frame.
    pub handshakes_refused: u64,
    /// Frames written to peers.
    pub frames_sent: u64,
    /// Bytes written to peers (frame headers included).
    pub bytes_sent: u64,
    /// Frames dropped because a peer's send queue was full.
    pub frames_dropped_queue_full: u64,
    /// chitchat messages received from admitted peers.
    pub membership_in: u64,
    /// chitchat messages sent.
    pub membership_out: u64,
    /// chitchat messages dropped (undecodable, or no connection yet).
    pub membership_dropped: u64,
    /// Outgoing connection attempts.
    pub dials: u64,
    /// Join requests answered with a certificate.
    pub joins_accepted: u64,
    /// Join requests refused.
    pub joins_refused: u64,
}

impl NetCounters {
    fn snapshot(&self) -> NetStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetStats {
            handshakes_admitted: get(&self.handshakes_admitted),
            handshakes_refused: get(&self.handshakes_refused),
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            frames_dropped_queue_full: get(&self.frames_dropped_queue_full),
            membership_in: get(&self.membership_in),
            membership_out: get(&self.membership_out),
            membership_dropped: get(&self.membership_dropped),
            dials: get(&self.dials),
            joins_accepted: get(&self.joins_accepted),
            joins_refused: get(&self.joins_refused),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Everything the node exports as gossip metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GossipStats {
    /// The dissemination engine's counters.
    pub engine: EngineStats,
    /// The QUIC shell's counters.
    pub net: NetStats,
    /// Admitted connections open now.
    pub peers_connected: u64,
    /// Nodes chitchat considers alive (this node excluded).
    pub peers_alive: u64,
    /// UDP bytes sent on admitted connections (QUIC headers, acks and handshakes
    /// included), since the endpoint started.
    pub udp_bytes_sent: u64,
    /// UDP bytes received on admitted connections.
    pub udp_bytes_received: u64,
}

/// What this node knows of another fleet member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// The member.
    pub node: NodeId,
    /// Its QUIC address, from its `Hello` or from chitchat.
    pub quic_addr: Option<SocketAddr>,
    /// Whether an admitted connection to it is open.
    pub connected: bool,
    /// Whether chitchat's failure detector considers it alive.
    pub alive: bool,
    /// Whether it announced readiness.
    pub ready: bool,
    /// Its software version.
    pub version: Option<String>,
    /// Its per-origin high-water marks, as published in chitchat.
    pub marks: BTreeMap<NodeId, u64>,
    /// When it was last heard from and the signals exchanged with it.
    pub traffic: crate::engine::PeerTraffic,
}

/// What the node must persist to restart gossip where it left off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistent {
    /// The sequence number the next own signal gets: pass it to [`start`] on restart.
    pub next_seq: u64,
    /// The newest verified revocation list: pass it to [`start`] on restart.
    pub revocations: RevocationList,
}

enum Command {
    Publish(Vec<Signal>),
    PublishSigned(Vec<SignedSignal>),
    Persistent(oneshot::Sender<Persistent>),
    Stats(oneshot::Sender<GossipStats>),
    Peers(oneshot::Sender<Vec<PeerState>>),
    Revocations(RevocationList),
    Dial(SocketAddr),
    Shutdown,
}

/// The node's handle on its gossip endpoint. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GossipHandle {
    commands: mpsc::Sender<Command>,
    node_id: NodeId,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl GossipHandle {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The UDP address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Hands the node's own new signals to gossip: they are numbered, signed with the
    /// node key and spread. Waits while the endpoint is busy (backpressure).
    pub async fn publish(&self, signals: Vec<Signal>) -> Result<(), NetError> {
        self.commands.send(Command::Publish(signals)).await.map_err(|_| NetError::Stopped)
    }

    /// Hands the node's own signals, already numbered (gap-free, continuing its
    /// numbering) and signed by the node, to gossip to spread. A node that keeps its own
    /// outbox uses this instead of [`GossipHandle::publish`], and on restart hands back
    /// the signals it still holds so that peers can repair from it.
    pub async fn publish_signed(&self, signals: Vec<SignedSignal>) -> Result<(), NetError> {
        self.commands.send(Command::PublishSigned(signals)).await.map_err(|_| NetError::Stopped)
    }

    /// Current counters.
    pub async fn stats(&self) -> Result<GossipStats, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Stats(tx)).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// What the node must persist (own sequence number, revocation list); read it
    /// periodically and at shutdown.
    pub async fn persistent(&self) -> Result<Persistent, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Persistent(tx)).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// What this node knows of the other members.
    pub async fn peers(&self) -> Result<Vec<PeerState>, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Peers(tx)).await.map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Adopts a newer revocation list (ignored unless signed by the admin with a higher
    /// serial); revoked peers are cut off and the list is relayed to the fleet.
    pub async fn revoke(&self, list: RevocationList) -> Result<(), NetError> {
        self.commands.send(Command::Revocations(list)).await.map_err(|_| NetError::Stopped)
    }

    /// Connects to a member's QUIC address (seeds are dialled on their own).
    pub async fn dial(&self, addr: SocketAddr) -> Result<(), NetError> {
        self.commands.send(Command::Dial(addr)).await.map_err(|_| NetError::Stopped)
    }

    /// Stops the endpoint: closes connections, stops chitchat.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
        self.commands.closed().await;
    }
}

/// The key of an endpoint's QUIC stateless resets, derived from the node's key.
///
/// A QUIC endpoint answers a packet of a connection it does not know with a stateless
/// reset, which the peer believes only if it carries the token the connection was given
/// (an HMAC of the connection id under this key). With a random key per process, a node
/// killed and restarted on the same port could not end its earlier run's connections,
/// and its peers kept sending into them until their idle timeout. Derived from the node
/// key, the restarted node's resets are believed, so peers reconnect at once.
struct ResetKey([u8; 32]);

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], out: &mut [u8]) {
        let mac = blake3::keyed_hash(&self.0, data);
        let n = out.len().min(32);
        out[..n].copy_from_slice(&mac.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        let expected = blake3::keyed_hash(&self.0, data);
        // blake3::Hash compares in constant time.
        match <[u8; 32]>::try_from(signature) {
            Ok(given) if expected == blake3::Hash::from(given) => Ok(()),
            _ => Err(quinn::crypto::CryptoError),
        }
    }
}

/// Random 8-byte connection ids that every run accepts as possibly its own.
///
/// quinn's default ids carry a tag keyed per process, and a packet whose id fails the
/// tag is dropped without a reset: a restarted endpoint would never reset its
/// predecessor's connections. Untagged ids let it answer them with a stateless reset
/// (quinn sends at most one per 20 ms, each smaller than the packet that caused it).
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut id = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Binds a QUIC endpoint on `addr` that serves `server_config`, with stateless resets
/// keyed from `key` (see [`ResetKey`]), so that a restarted node or tier ends its
/// predecessor's connections at once.
pub fn bind_endpoint(
    key: &NodeKey,
    server_config: quinn::ServerConfig,
    addr: SocketAddr,
) -> std::io::Result<Endpoint> {
    let reset = ResetKey(key.derive_key("palisade 2026-12 quic stateless reset key"));
    let mut config = quinn::EndpointConfig::new(Arc::new(reset));
    config.cid_generator(|| Box::new(RandomCids));
    let socket = std::net::UdpSocket::bind(addr)?;
    Endpoint::new(config, Some(server_config), socket, Arc::new(quinn::TokioRuntime))
}

/// A running gossip endpoint: its handle, and the verified signals of other nodes.
#[derive(Debug)]
pub struct Gossip {
    /// Commands and queries.
    pub handle: GossipHandle,
    /// Verified signals from other nodes, each delivered once, in batches. Read it
    /// steadily: when it is full the endpoint stops reading from peers.
    pub signals: mpsc::Receiver<Vec<SignedSignal>>,
    /// The driver task; ends after [`GossipHandle::shutdown`].
    pub task: JoinHandle<()>,
}

/// The wall clock as a [`Timestamp`] (the shell is the only place that reads it).
pub fn wall_clock() -> Timestamp {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    Timestamp(i64::try_from(millis).unwrap_or(i64::MAX))
}

/// Starts the endpoint: binds `config.listen`, starts chitchat over it, dials the seeds.
///
/// `next_seq` is the sequence number of the node's next own signal and `revocations` the
/// latest list the node verified, both as last read from [`GossipHandle::persistent`]
/// (a new node: 1 and `RevocationList::empty(fleet)`).
pub async fn start(
    config: GossipConfig,
    membership: Membership,
    revocations: RevocationList,
    next_seq: u64,
) -> Result<Gossip, NetError> {
    start_inner(config, membership, revocations, next_seq, None).await
}

/// Like [`start`], on the node that holds the fleet admin's keys: it also answers join
/// requests (see [`join`]) with certificates valid for `gossip.membership_validity`.
pub async fn start_admin(
    config: GossipConfig,
    membership: Membership,
    revocations: RevocationList,
    next_seq: u64,
    admin: FleetKeys,
) -> Result<Gossip, NetError> {
    start_inner(config, membership, revocations, next_seq, Some(admin)).await
}

async fn start_inner(
    config: GossipConfig,
    membership: Membership,
    revocations: RevocationList,
    next_seq: u64,
    admin: Option<FleetKeys>,
) -> Result<Gossip, NetError> {
    config.validate()?;
    let me = membership.key.node_id();
    let fleet = membership.fleet();
    let now = wall_clock();
    membership.cert.verify(&fleet, &me, now, config.engine.max_clock_skew)?;
    let revocations =
        if revocations.verify(&fleet).is_ok() { revocations } else { RevocationList::empty(fleet) };
    let revoked: RevokedSet = Arc::new(RwLock::new(revocations.revoked.iter().copied().collect()));

    let (server_crypto, client_crypto) = tls::quic_crypto(&membership.key, revoked.clone())?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(config.keep_alive))
        .max_idle_timeout(quinn::IdleTimeout::try_from(config.idle_timeout).ok())
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(4))
        .datagram_receive_buffer_size(None);
    let transport = Arc::new(transport);
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server_config.transport_config(transport.clone());
    let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
    client_config.transport_config(transport);
    let mut endpoint = bind_endpoint(&membership.key, server_config, config.listen)
        .map_err(|source| NetError::Bind { addr: config.listen, source })?;
    endpoint.set_default_client_config(client_config);
    let local_addr =
        endpoint.local_addr().map_err(|source| NetError::Bind { addr: config.listen, source })?;
    let advertise = match config.advertise {
        Some(addr) => addr,
        None if local_addr.ip().is_unspecified() => {
            return Err(ConfigError {
                key: "advertise",
                problem: "set the address peers should dial when listen is 0.0.0.0 or [::]",
            }
            .into())
        }
        None => local_addr,
    };

    // chitchat, on channels into this endpoint.
    let (membership_out_tx, membership_out_rx) = mpsc::channel(MEMBERSHIP_QUEUE);
    let (membership_in_tx, membership_in_rx) = mpsc::channel(MEMBERSHIP_QUEUE);
    let chitchat_transport = QuicTransport::new(membership_out_tx, membership_in_rx);
    let generation = u64::try_from(now.as_millis()).unwrap_or(0);
    let chitchat_config = ChitchatConfig {
        chitchat_id: ChitchatId::new(me.to_string(), generation, advertise),
        cluster_id: fleet.to_string(),
        gossip_interval: config.membership_interval,
        listen_addr: advertise,
        seed_nodes: config.seeds.iter().map(ToString::to_string).collect(),
        failure_detector_config: FailureDetectorConfig::default(),
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let initial = vec![
        (KEY_QUIC_ADDR.to_owned(), advertise.to_string()),
        (KEY_VERSION.to_owned(), VERSION.to_owned()),
        (KEY_READY.to_owned(), "true".to_owned()),
    ];
    let chitchat = chitchat::spawn_chitchat(chitchat_config, initial, &chitchat_transport)
        .await
        .map_err(|e| NetError::Chitchat(e.to_string()))?;

    let hello = Message::Hello(Hello {
        fleet,
        membership: membership.cert.clone(),
        quic_addr: advertise.to_string(),
        version: VERSION.to_owned(),
    })
    .encode()
    .map_err(|_| NetError::Membership(palisade_proto::AdmissionError::Invalid("hello does not encode")))?;

    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (deliver_tx, deliver_rx) = mpsc::channel(DELIVER_QUEUE);
    let counters = Arc::new(NetCounters::default());
    let context = Arc::new(ConnContext {
        fleet,
        hello,
        revoked: revoked.clone(),
        max_frame: config.max_frame_bytes,
        peer_queue: config.peer_queue,
        skew: config.engine.max_clock_skew,
        events: events_tx,
        counters: counters.clone(),
        next_conn_id: AtomicU64::new(1),
        admin,
        fleet_secret: membership.fleet_secret,
        membership_validity: config.membership_validity,
        revocations: Arc::new(RwLock::new(revocations.clone())),
        banned: Arc::default(),
        logged: std::sync::Mutex::default(),
    });
    let engine =
        Engine::new(membership.key.clone(), fleet, config.engine.clone(), next_seq, revocations, now);
    // Signing own signals is the costliest step of publishing: a blocking thread does it
    // while the driver keeps serving the network. At most SIGNING_JOBS batches are out,
    // so neither channel can fill up.
    let (jobs_tx, mut jobs_rx) = mpsc::channel::<Vec<Signal>>(SIGNING_JOBS);
    let (signed_tx, signed_rx) = mpsc::channel::<Vec<SignedSignal>>(SIGNING_JOBS);
    let signer_key = membership.key.clone();
    tokio::task::spawn_blocking(move || {
        while let Some(numbered) = jobs_rx.blocking_recv() {
            if signed_tx.blocking_send(sign_own(&signer_key, numbered)).is_err() {
                break;
            }
        }
    });
    // Signature checks of received signals run on another blocking thread, the same way.
    let (verify_tx, mut verify_rx) = mpsc::channel::<VerifyJob>(VERIFY_JOBS);
    let (verified_tx, verified_rx) = mpsc::channel::<VerifyDone>(VERIFY_JOBS);
    tokio::task::spawn_blocking(move || {
        // Remembers batch signatures across jobs: a batch's signals often arrive in
        // several messages (pushes, relays, repairs).
        let mut verifier = Verifier::default();
        while let Some((from, signals)) = verify_rx.blocking_recv() {
            let results = verifier.verify_batch(&signals);
            if verified_tx.blocking_send((from, signals, results)).is_err() {
                break;
            }
        }
    });
    let mut engine = engine;
    engine.defer_verification(config.offload_crypto);
    let offload = config.offload_crypto;
    let driver = Driver {
        verify_jobs: verify_tx,
        verifying_in_flight: 0,
        verifier: Verifier::default(),
        offload,
        key: membership.key.clone(),
        signing_jobs: jobs_tx,
        signing_in_flight: 0,
        engine,
        rng: ChaCha20Rng::from_entropy(),
        endpoint,
        me,
        config,
        links: HashMap::new(),
        by_addr: HashMap::new(),
        dialled: HashMap::new(),
        context,
        counters,
        deliver: deliver_tx,
        membership_in: membership_in_tx,
        chitchat,
        published_marks: BTreeMap::new(),
        revoked,
        last_marks_at: Instant::now(),
        relayed: HashMap::new(),
    };
    let task = tokio::spawn(driver.run(commands_rx, events_rx, membership_out_rx, signed_rx, verified_rx));
    let handle = GossipHandle { commands: commands_tx, node_id: me, local_addr };
    info!(node = %me.short(), fleet = %fleet.short(), addr = %local_addr, "gossip endpoint started");
    Ok(Gossip { handle, signals: deliver_rx, task })
}

/// What connection tasks share.
struct ConnContext {
    fleet: FleetId,
    hello: Vec<u8>,
    revoked: RevokedSet,
    max_frame: u32,
    peer_queue: usize,
    skew: Duration,
    events: mpsc::Sender<ConnEvent>,
    counters: Arc<NetCounters>,
    next_conn_id: AtomicU64,
    admin: Option<FleetKeys>,
    fleet_secret: [u8; 32],
    membership_validity: Duration,
    /// The latest verified revocation list, handed to joining nodes.
    revocations: Arc<RwLock<RevocationList>>,
    /// Peers cut off for misbehaving, and until when they are refused.
    banned: Arc<RwLock<HashMap<NodeId, Timestamp>>>,
    /// When each peer's trouble was last logged (see [`ConnContext::log_once`]).
    logged: std::sync::Mutex<HashMap<NodeId, Instant>>,
}

/// How often one peer's refusals and bad input are logged.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

impl ConnContext {
    /// Whether a problem with `peer` should be logged now: once per [`LOG_INTERVAL`], so
    /// a peer that keeps misbehaving or redialling cannot flood the log.
    fn log_once(&self, peer: &NodeId) -> bool {
        let Ok(mut logged) = self.logged.lock() else { return true };
        let now = Instant::now();
        if logged.len() > 10_000 {
            logged.retain(|_, at| now.duration_since(*at) < LOG_INTERVAL);
        }
        match logged.get(peer) {
            Some(at) if now.duration_since(*at) < LOG_INTERVAL => false,
            _ => {
                logged.insert(*peer, now);
                true
            }
        }
    }
}

enum ConnEvent {
    Up {
        peer: NodeId,
        conn: Connection,
        conn_id: u64,
        tx: mpsc::Sender<Vec<u8>>,
        addr: SocketAddr,
        dialled: bool,
        expires: Timestamp,
    },
    Frame {
        peer: NodeId,
        bytes: Vec<u8>,
    },
    Oversized {
        peer: NodeId,
        len: u64,
    },
    Down {
        peer: NodeId,
        conn_id: u64,
    },
    /// A joiner asked this member, which does not hold the admin key: relay it.
    RelayJoin {
        request: JoinRequest,
        reply: oneshot::Sender<JoinReply>,
    },
}

struct Link {
    conn: Connection,
    conn_id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    addr: SocketAddr,
    dialled: bool,
    /// When the peer's membership certificate expires: the connection ends then.
    expires: Timestamp,
}

struct Driver {
    /// Whether own signals are signed on the signer thread (see `offload_crypto`).
    offload: bool,
    verify_jobs: mpsc::Sender<VerifyJob>,
    verifying_in_flight: usize,
    /// Checks the received signals verified on the driver itself (when the blocking
    /// thread is busy or crypto is not offloaded).
    verifier: Verifier,
    key: NodeKey,
    signing_jobs: mpsc::Sender<Vec<Signal>>,
    signing_in_flight: usize,
    engine: Engine,
    rng: ChaCha20Rng,
    endpoint: Endpoint,
    me: NodeId,
    config: GossipConfig,
    links: HashMap<NodeId, Link>,
    by_addr: HashMap<SocketAddr, NodeId>,
    dialled: HashMap<SocketAddr, Instant>,
    context: Arc<ConnContext>,
    counters: Arc<NetCounters>,
    deliver: mpsc::Sender<Vec<SignedSignal>>,
    membership_in: mpsc::Sender<(SocketAddr, ChitchatMessage)>,
    chitchat: ChitchatHandle,
    published_marks: BTreeMap<NodeId, u64>,
    revoked: RevokedSet,
    last_marks_at: Instant,
    /// Joins relayed to the admin node, by joiner, waiting for its answer.
    relayed: HashMap<NodeId, oneshot::Sender<JoinReply>>,
}

/// Most joins a member relays at once.
const MAX_RELAYED_JOINS: usize = 64;

impl Driver {
    /// Forwards a joiner's request to the admin node named in its token, if connected.
    fn relay_join(&mut self, request: JoinRequest, reply: oneshot::Sender<JoinReply>) {
        self.relayed.retain(|_, waiting| !waiting.is_closed());
        let node = request.node;
        match self.forward_join(request) {
            Ok(()) => {
                self.relayed.insert(node, reply);
            }
            Err(why) => {
                let _ = reply.send(JoinReply::Refused(why));
            }
        }
    }

    fn forward_join(&self, request: JoinRequest) -> Result<(), String> {
        let admin = request.token.peer.parse::<SocketAddr>().ok().and_then(|a| self.by_addr.get(&a).copied());
        let Some(link) = admin.and_then(|node| self.links.get(&node)) else {
            return Err(format!(
                "this member is not connected to the fleet admin node at {}; join through that address",
                request.token.peer
            ));
        };
        if self.relayed.len() >= MAX_RELAYED_JOINS {
            return Err("this member is relaying too many joins; retry in a few seconds".into());
        }
        let bytes = Message::RelayedJoin(request).encode().map_err(|e| e.to_string())?;
        link.tx.try_send(bytes).map_err(|_| "this member could not forward the request; retry".to_owned())
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<ConnEvent>,
        mut membership_out: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        mut signed: mpsc::Receiver<Vec<SignedSignal>>,
        mut verified: mpsc::Receiver<VerifyDone>,
    ) {
        let mut tick = tokio::time::interval(self.config.tick_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for seed in self.config.seeds.clone() {
            self.dial(seed);
        }
        let endpoint = self.endpoint.clone();
        loop {
            // Not biased: a flood of publishes must not starve the network, nor a flood of
            // frames the commands (shutdown included).
            tokio::select! {
                Some((from, signals, results)) = verified.recv() => {
                    self.verifying_in_flight = self.verifying_in_flight.saturating_sub(1);
                    self.step(InEvent::Verified { from, signals, results }).await;
                }
                Some(batch) = signed.recv() => {
                    self.signing_in_flight = self.signing_in_flight.saturating_sub(1);
                    self.step(InEvent::PublishSigned(batch)).await;
                }
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.on_command(command).await,
                },
                Some(event) = events.recv() => self.on_conn_event(event).await,
                Some((to, bytes)) = membership_out.recv() => self.send_membership(to, bytes),
                _ = tick.tick() => self.on_tick().await,
                incoming = endpoint.accept() => match incoming {
                    Some(incoming) => {
                        let context = self.context.clone();
                        tokio::spawn(async move {
                            match incoming.await {
                                Ok(conn) => connection(conn, false, context).await,
                                Err(e) => {
                                    bump(&context.counters.handshakes_refused);
                                    debug!(error = %e, "incoming QUIC handshake failed");
                                }
                            }
                        });
                    }
                    None => break,
                },
            }
        }
        let _ = self.chitchat.initiate_shutdown();
        for link in self.links.values() {
            link.conn.close(VarInt::from_u32(close::SHUTDOWN), b"shutdown");
        }
        self.endpoint.close(VarInt::from_u32(close::SHUTDOWN), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        info!(node = %self.me.short(), "gossip endpoint stopped");
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::PublishSigned(signed) => self.step(InEvent::PublishSigned(signed)).await,
            Command::Publish(signals) => {
                let numbered = self.engine.number_own(signals);
                if numbered.is_empty() {
                    return;
                }
                let inline = if self.offload && self.signing_in_flight < SIGNING_JOBS {
                    match self.signing_jobs.try_send(numbered) {
                        Ok(()) => {
                            self.signing_in_flight += 1;
                            None
                        }
                        Err(mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n)) => {
                            Some(n)
                        }
                    }
                } else {
                    Some(numbered)
                };
                if let Some(numbered) = inline {
                    let signed = sign_own(&self.key, numbered);
                    self.step(InEvent::PublishSigned(signed)).await;
                }
            }
            Command::Stats(reply) => {
                let peers_alive = self.live_nodes().await.len() as u64;
                let (mut tx, mut rx) = (
                    self.counters.closed_udp_tx.load(Ordering::Relaxed),
                    self.counters.closed_udp_rx.load(Ordering::Relaxed),
                );
                for link in self.links.values() {
                    let stats = link.conn.stats();
                    tx += stats.udp_tx.bytes;
                    rx += stats.udp_rx.bytes;
                }
                let _ = reply.send(GossipStats {
                    engine: *self.engine.stats(),
                    net: self.counters.snapshot(),
                    peers_connected: self.links.len() as u64,
                    peers_alive,
                    udp_bytes_sent: tx,
                    udp_bytes_received: rx,
                });
            }
            Command::Persistent(reply) => {
                let _ = reply.send(Persistent {
                    next_seq: self.engine.next_seq(),
                    revocations: self.engine.revocations().clone(),
                });
            }
            Command::Peers(reply) => {
                let peers = self.peer_states().await;
                let _ = reply.send(peers);
            }
            Command::Revocations(list) => self.step(InEvent::Revocations(list)).await,
            Command::Dial(addr) => self.dial(addr),
            Command::Shutdown => {}
        }
    }

    async fn step(&mut self, event: InEvent) {
        // Verifications done inline come back as events of their own: a queue, not recursion.
        let mut queue = std::collections::VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            self.step_one(event, &mut queue).await;
        }
    }

    async fn step_one(&mut self, event: InEvent, queue: &mut std::collections::VecDeque<InEvent>) {
        let out = self.engine.handle(event, wall_clock(), &mut self.rng);
        for event in out {
            match event {
                OutEvent::Verify { from, signals } => {
                    let job = (from, signals);
                    let inline = if self.verifying_in_flight < VERIFY_JOBS {
                        match self.verify_jobs.try_send(job) {
                            Ok(()) => {
                                self.verifying_in_flight += 1;
                                None
                            }
                            Err(
                                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j),
                            ) => Some(j),
                        }
                    } else {
                        Some(job)
                    };
                    if let Some((from, signals)) = inline {
                        let results = self.verifier.verify_batch(&signals);
                        queue.push_back(InEvent::Verified { from, signals, results });
                    }
                }
                OutEvent::Send { to, message } => match message.encode() {
                    Ok(bytes) => self.send_frame(&to, bytes),
                    Err(e) => warn!(error = %e, "engine produced a message that does not encode"),
                },
                OutEvent::Deliver(signals) => {
                    // Awaiting here is the backpressure: a slow node slows its peers'
                    // readers down instead of losing signals.
                    let _ = self.deliver.send(signals).await;
                }
                OutEvent::RelayedJoin { from, request } => {
                    // Only the admin node answers; the member vouched for the joiner's key.
                    if self.context.admin.is_none() {
                        continue;
                    }
                    let node = request.node;
                    let reply = decide_join(&node, &request, &self.context);
                    let frame = Message::RelayedJoinReply { node, reply }.encode();
                    if let (Some(link), Ok(bytes)) = (self.links.get(&from), frame) {
                        let _ = link.tx.try_send(bytes);
                    }
                    info!(node = %node.short(), via = %from.short(), "join relayed by a member");
                }
                OutEvent::RelayedJoinReply { node, reply } => {
                    if let Some(waiting) = self.relayed.remove(&node) {
                        let _ = waiting.send(reply);
                    }
                }
                OutEvent::Misbehaved { peer, reason } => {
                    if self.context.log_once(&peer) {
                        warn!(
                            peer = %peer.short(),
                            reason,
                            "bad input from a peer: dropped and counted (logged once a minute per peer)"
                        );
                    }
                }
                OutEvent::Disconnect { peer, reason } => {
                    let now = wall_clock();
                    if let (Some(until), Ok(mut banned)) =
                        (self.engine.banned_until(&peer, now), self.context.banned.write())
                    {
                        banned.retain(|_, until| *until > now);
                        banned.insert(peer, until);
                    }
                    if let Some(link) = self.links.remove(&peer) {
                        warn!(peer = %peer.short(), reason, "disconnecting peer");
                        link.conn.close(VarInt::from_u32(close::MISBEHAVED), reason.as_bytes());
                        self.by_addr.remove(&link.addr);
                    }
                }
                OutEvent::Membership { from, bytes } => {
                    let addr = self.links.get(&from).map(|l| l.addr);
                    match (addr, membership::decode(&bytes)) {
                        (Some(addr), Some(message)) => {
                            bump(&self.counters.membership_in);
                            if self.membership_in.try_send((addr, message)).is_err() {
                                bump(&self.counters.membership_dropped);
                            }
                        }
                        _ => bump(&self.counters.membership_dropped),
                    }
                }
                OutEvent::Revocations(list) => {
                    if let Ok(mut set) = self.revoked.write() {
                        *set = list.revoked.iter().copied().collect();
                    }
                    if let Ok(mut current) = self.context.revocations.write() {
                        *current = list.clone();
                    }
                    info!(
                        serial = list.serial,
                        revoked = list.revoked.len(),
                        "adopted a new revocation list"
                    );
                }
            }
        }
    }

    fn send_frame(&self, to: &NodeId, bytes: Vec<u8>) {
        let Some(link) = self.links.get(to) else { return };
        if link.tx.try_send(bytes).is_err() {
            bump(&self.counters.frames_dropped_queue_full);
        }
    }

    async fn on_conn_event(&mut self, event: ConnEvent) {
        match event {
            ConnEvent::Up { peer, conn, conn_id, tx, addr, dialled, expires } => {
                if let Some(existing) = self.links.get(&peer) {
                    // Both ends keep the connection dialled by the smaller node id.
                    let keep_new = dialled == (self.me < peer);
                    let keep_existing = existing.dialled == (self.me < peer);
                    if keep_existing && !keep_new {
                        conn.close(VarInt::from_u32(close::DUPLICATE), b"duplicate connection");
                        return;
                    }
                    existing.conn.close(VarInt::from_u32(close::DUPLICATE), b"duplicate connection");
                }
                debug!(peer = %peer.short(), %addr, dialled, "peer admitted");
                self.by_addr.insert(addr, peer);
                self.links.insert(peer, Link { conn, conn_id, tx, addr, dialled, expires });
                self.step(InEvent::PeerUp(peer)).await;
            }
            ConnEvent::Frame { peer, bytes } => self.step(InEvent::Received { from: peer, bytes }).await,
            ConnEvent::RelayJoin { request, reply } => self.relay_join(request, reply),
            ConnEvent::Oversized { peer, len } => self.step(InEvent::Oversized { from: peer, len }).await,
            ConnEvent::Down { peer, conn_id } => {
                if self.links.get(&peer).is_some_and(|l| l.conn_id == conn_id) {
                    if let Some(link) = self.links.remove(&peer) {
                        self.by_addr.remove(&link.addr);
                    }
                    self.step(InEvent::PeerDown(peer)).await;
                }
            }
        }
    }

    fn send_membership(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        let frame = Message::Membership(bytes).encode();
        match (self.by_addr.get(&to), frame) {
            (Some(peer), Ok(frame)) => {
                bump(&self.counters.membership_out);
                let peer = *peer;
                self.send_frame(&peer, frame);
            }
            (None, _) => {
                // chitchat wants to talk to an address we are not connected to (a seed,
                // or a node it heard of): connect; chitchat will gossip again.
                bump(&self.counters.membership_dropped);
                self.dial(to);
            }
            (_, Err(_)) => bump(&self.counters.membership_dropped),
        }
    }

    fn dial(&mut self, addr: SocketAddr) {
        if addr == self.context_advertise() || self.by_addr.contains_key(&addr) {
            return;
        }
        let now = Instant::now();
        if self.dialled.get(&addr).is_some_and(|at| now.duration_since(*at) < REDIAL_AFTER) {
            return;
        }
        self.dialled.insert(addr, now);
        bump(&self.counters.dials);
        let connecting = match self.endpoint.connect(addr, tls::SERVER_NAME) {
            Ok(connecting) => connecting,
            Err(e) => {
                debug!(%addr, error = %e, "cannot dial");
                return;
            }
        };
        let context = self.context.clone();
        tokio::spawn(async move {
            match connecting.await {
                Ok(conn) => connection(conn, true, context).await,
                Err(e) => debug!(%addr, error = %e, "dial failed"),
            }
        });
    }

    fn context_advertise(&self) -> SocketAddr {
        self.chitchat.chitchat_id().gossip_advertise_addr
    }

    async fn on_tick(&mut self) {
        self.step(InEvent::Tick).await;
        // A membership certificate that expires ends its connections (the peer must renew
        // it; until then its Hello is refused).
        let cutoff = wall_clock().saturating_sub(self.config.engine.max_clock_skew);
        let expired: Vec<NodeId> =
            self.links.iter().filter(|(_, l)| l.expires <= cutoff).map(|(p, _)| *p).collect();
        for peer in expired {
            if let Some(link) = self.links.remove(&peer) {
                info!(peer = %peer.short(), "membership certificate expired: closing");
                link.conn.close(VarInt::from_u32(close::REFUSED), b"membership certificate expired");
                self.by_addr.remove(&link.addr);
                self.step(InEvent::PeerDown(peer)).await;
            }
        }
        if self.last_marks_at.elapsed() < self.config.publish_marks_interval {
            return;
        }
        self.last_marks_at = Instant::now();
        // Publish changed high-water marks, then dial live members we are not connected to.
        let changed: Vec<(NodeId, u64)> = self
            .engine
            .marks()
            .into_iter()
            .filter(|m| self.published_marks.get(&m.origin) != Some(&m.high))
            .map(|m| (m.origin, m.high))
            .collect();
        for (origin, high) in &changed {
            self.published_marks.insert(*origin, *high);
        }
        let live = self
            .chitchat
            .with_chitchat(|c| {
                let state = c.self_node_state();
                for (origin, high) in &changed {
                    state.set(format!("{KEY_HWM_PREFIX}{origin}"), high);
                }
                c.live_nodes()
                    .filter_map(|id| {
                        let addr = c.node_state(id)?.get(KEY_QUIC_ADDR)?.parse::<SocketAddr>().ok()?;
                        Some((id.node_id.parse::<NodeId>().ok()?, addr))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        for (node, addr) in live {
            if node != self.me && !self.links.contains_key(&node) && !self.engine.is_revoked(&node) {
                self.dial(addr);
            }
        }
    }

    async fn live_nodes(&self) -> Vec<NodeId> {
        let me = self.me;
        self.chitchat
            .with_chitchat(|c| {
                c.live_nodes()
                    .filter_map(|id| id.node_id.parse::<NodeId>().ok())
                    .filter(|n| *n != me)
                    .collect()
            })
            .await
    }

    async fn peer_states(&self) -> Vec<PeerState> {
        let me = self.me;
        let mut states: BTreeMap<NodeId, PeerState> = self
            .chitchat
            .with_chitchat(|c| {
                let live: Vec<ChitchatId> = c.live_nodes().cloned().collect();
                c.node_states()
                    .iter()
                    .filter_map(|(id, state)| {
                        let node = id.node_id.parse::<NodeId>().ok()?;
                        let marks = state
                            .key_values()
                            .filter_map(|(k, v)| {
                                Some((
                                    k.strip_prefix(KEY_HWM_PREFIX)?.parse::<NodeId>().ok()?,
                                    v.parse::<u64>().ok()?,
                                ))
                            })
                            .collect();
                        Some((
                            node,
                            PeerState {
                                node,
                                quic_addr: state.get(KEY_QUIC_ADDR).and_then(|a| a.parse().ok()),
                                connected: false,
                                alive: live.contains(id),
                                ready: state.get(KEY_READY) == Some("true"),
                                version: state.get(KEY_VERSION).map(str::to_owned),
                                marks,
                                traffic: Default::default(),
                            },
                        ))
                    })
                    .filter(|(node, _)| *node != me)
                    .collect()
            })
            .await;
        for (node, link) in &self.links {
            let state = states.entry(*node).or_insert_with(|| PeerState {
                node: *node,
                quic_addr: Some(link.addr),
                connected: false,
                alive: false,
                ready: false,
                version: None,
                marks: BTreeMap::new(),
                traffic: Default::default(),
            });
            state.connected = true;
        }
        for state in states.values_mut() {
            state.traffic = self.engine.traffic(&state.node);
        }
        states.into_values().collect()
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The announced length is over the limit; the body was not read.
    Oversized(u64),
    /// The stream ended or broke.
    Closed,
}

/// Reads one frame (little-endian `u32` length, then that many bytes), refusing any
/// frame longer than `max` before reading its body.
pub async fn read_frame(recv: &mut RecvStream, max: u32) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await.map_err(|_| FrameError::Closed)?;
    let len = u32::from_le_bytes(header);
    if len > max {
        return Err(FrameError::Oversized(u64::from(len)));
    }
    let mut bytes = vec![0u8; len as usize];
    recv.read_exact(&mut bytes).await.map_err(|_| FrameError::Closed)?;
    Ok(bytes)
}

/// Writes one frame: the little-endian `u32` length of `bytes`, then `bytes`.
pub async fn write_frame(send: &mut SendStream, bytes: &[u8]) -> Result<(), quinn::WriteError> {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    send.write_all(&len.to_le_bytes()).await?;
    send.write_all(bytes).await
}

/// Checks the peer's `Hello`: right fleet, membership certificate for this very TLS
/// identity, signed by the fleet admin, unexpired, not revoked.
fn check_hello(bytes: &[u8], peer: &NodeId, context: &ConnContext) -> Result<Hello, String> {
    let hello = match Message::decode(bytes) {
        Ok(Message::Hello(hello)) => hello,
        Ok(_) => return Err("the first frame must be a hello".into()),
        Err(e) => return Err(format!("bad hello: {e}")),
    };
    if hello.fleet != context.fleet {
        return Err(format!("peer belongs to fleet {}, not {}", hello.fleet.short(), context.fleet.short()));
    }
    hello.membership.verify(&context.fleet, peer, wall_clock(), context.skew).map_err(|e| e.to_string())?;
    if context.revoked.read().map(|set| set.contains(peer)).unwrap_or(true) {
        return Err("peer is revoked".into());
    }
    let now = wall_clock();
    if let Some(until) =
        context.banned.read().ok().and_then(|b| b.get(peer).copied()).filter(|until| *until > now)
    {
        return Err(format!("peer is banned for misbehaving for {} s more", until.since(now).as_secs()));
    }
    Ok(hello)
}

/// Admits the peer of a fresh connection. The dialler speaks first; the accepting side
/// answers only once the dialler is admitted, so a stranger learns nothing.
async fn admit(
    conn: &Connection,
    peer: &NodeId,
    dialled: bool,
    context: &ConnContext,
) -> Result<(SendStream, RecvStream, Hello), String> {
    let io = |e: &dyn std::fmt::Display| e.to_string();
    if dialled {
        let mut send = conn.open_uni().await.map_err(|e| io(&e))?;
        write_frame(&mut send, &context.hello).await.map_err(|e| io(&e))?;
        let mut recv = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_uni())
            .await
            .map_err(|_| "no hello in time".to_owned())?
            .map_err(|e| io(&e))?;
        let bytes = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, context.max_frame))
            .await
            .map_err(|_| "no hello in time".to_owned())?
            .map_err(|_| "hello unreadable".to_owned())?;
        let hello = check_hello(&bytes, peer, context)?;
        Ok((send, recv, hello))
    } else {
        let mut recv = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_uni())
            .await
            .map_err(|_| "no hello in time".to_owned())?
            .map_err(|e| io(&e))?;
        let bytes = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, context.max_frame))
            .await
            .map_err(|_| "no hello in time".to_owned())?
            .map_err(|_| "hello unreadable".to_owned())?;
        if let Ok(Message::Join(request)) = Message::decode(&bytes) {
            let reply = if context.admin.is_some() || request.node != *peer {
                decide_join(peer, &request, context)
            } else {
                relay_join(request, context).await
            };
            answer_join(conn, reply).await;
            return Err(JOIN_ANSWERED.to_owned());
        }
        let hello = check_hello(&bytes, peer, context)?;
        let mut send = conn.open_uni().await.map_err(|e| io(&e))?;
        write_frame(&mut send, &context.hello).await.map_err(|e| io(&e))?;
        Ok((send, recv, hello))
    }
}

/// One connection's life: admission, then frames until it closes.
async fn connection(conn: Connection, dialled: bool, context: Arc<ConnContext>) {
    let Some(peer) = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().and_then(tls::node_id_of))
    else {
        bump(&context.counters.handshakes_refused);
        conn.close(VarInt::from_u32(close::REFUSED), b"no node certificate");
        return;
    };
    let (mut send, mut recv, hello) = match admit(&conn, &peer, dialled, &context).await {
        Ok(admitted) => admitted,
        Err(reason) if reason == JOIN_ANSWERED => return,
        Err(reason) => {
            bump(&context.counters.handshakes_refused);
            if context.log_once(&peer) {
                warn!(peer = %peer.short(), remote = %conn.remote_address(), reason = %reason, "peer refused (logged once a minute per peer)");
            }
            conn.close(VarInt::from_u32(close::REFUSED), reason.as_bytes());
            return;
        }
    };
    bump(&context.counters.handshakes_admitted);
    let addr = hello.quic_addr.parse().unwrap_or_else(|_| conn.remote_address());
    let conn_id = context.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(context.peer_queue);
    let counters = context.counters.clone();
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if write_frame(&mut send, &bytes).await.is_err() {
                break;
            }
            bump(&counters.frames_sent);
            counters.bytes_sent.fetch_add(bytes.len() as u64 + 4, Ordering::Relaxed);
        }
        let _ = send.finish();
    });
    let expires = hello.membership.expires;
    let up = ConnEvent::Up { peer, conn: conn.clone(), conn_id, tx, addr, dialled, expires };
    if context.events.send(up).await.is_err() {
        return;
    }
    loop {
        match read_frame(&mut recv, context.max_frame).await {
            Ok(bytes) => {
                if context.events.send(ConnEvent::Frame { peer, bytes }).await.is_err() {
                    break;
                }
            }
            Err(FrameError::Oversized(len)) => {
                let _ = context.events.send(ConnEvent::Oversized { peer, len }).await;
                conn.close(VarInt::from_u32(close::MISBEHAVED), b"oversized frame");
                break;
            }
            Err(FrameError::Closed) => break,
        }
    }
    let stats = conn.stats();
    context.counters.closed_udp_tx.fetch_add(stats.udp_tx.bytes, Ordering::Relaxed);
    context.counters.closed_udp_rx.fetch_add(stats.udp_rx.bytes, Ordering::Relaxed);
    let _ = context.events.send(ConnEvent::Down { peer, conn_id }).await;
}

/// Marks a connection that carried a join exchange rather than gossip.
const JOIN_ANSWERED: &str = "join request answered";

/// How long a join exchange may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

fn check_join(peer: &NodeId, request: &JoinRequest, context: &ConnContext) -> Result<JoinReply, String> {
    let Some(admin) = &context.admin else {
        return Err(
            "this member does not hold the fleet admin key; ask the admin for a token naming the admin node"
                .into(),
        );
    };
    if request.node != *peer {
        return Err("the join request names a node other than the key of its connection".into());
    }
    request
        .token
        .verify(&context.fleet, wall_clock(), context.skew)
        .map_err(|e| format!("join token refused: {e}"))?;
    if context.revoked.read().map(|set| set.contains(peer)).unwrap_or(true) {
        return Err(format!("node {peer} has been revoked from this fleet"));
    }
    let membership = admin.certify(*peer, wall_clock(), context.membership_validity);
    let revocations = context
        .revocations
        .read()
        .map(|list| list.clone())
        .unwrap_or_else(|_| RevocationList::empty(context.fleet));
    Ok(JoinReply::Accepted { membership, fleet_secret: context.fleet_secret, revocations })
}

/// Asks the admin node, through this member's admitted connection to it, to answer a
/// joiner's request.
async fn relay_join(request: JoinRequest, context: &ConnContext) -> JoinReply {
    let (tx, rx) = oneshot::channel();
    let admin = request.token.peer.clone();
    if context.events.send(ConnEvent::RelayJoin { request, reply: tx }).await.is_err() {
        return JoinReply::Refused("this member is shutting down".into());
    }
    match tokio::time::timeout(JOIN_TIMEOUT, rx).await {
        Ok(Ok(reply)) => reply,
        _ => JoinReply::Refused(format!(
            "this member could not reach the fleet admin node at {admin} in time; try that address"
        )),
    }
}

/// The admin's answer to a join request from `peer` (the joiner's TLS identity, or for a
/// relayed request the joiner the relaying member vouches for).
fn decide_join(peer: &NodeId, request: &JoinRequest, context: &ConnContext) -> JoinReply {
    match check_join(peer, request, context) {
        Ok(reply) => {
            bump(&context.counters.joins_accepted);
            info!(node = %peer.short(), "admitted a new member");
            reply
        }
        Err(mut reason) => {
            bump(&context.counters.joins_refused);
            warn!(node = %peer.short(), reason = %reason, "join refused");
            reason.truncate(palisade_proto::gossip::MAX_REASON_LEN);
            JoinReply::Refused(reason)
        }
    }
}

/// Sends the answer to a join on the connection it arrived on, then lets the joiner close.
async fn answer_join(conn: &Connection, reply: JoinReply) {
    let Ok(bytes) = Message::JoinReply(reply).encode() else { return };
    if let Ok(mut send) = conn.open_uni().await {
        if write_frame(&mut send, &bytes).await.is_ok() {
            let _ = send.finish();
            let _ = tokio::time::timeout(JOIN_TIMEOUT, conn.closed()).await;
        }
    }
}

/// Joins a fleet: dials the member named in `token` with the node's key, presents the
/// token, and returns the membership (certificate + fleet secret) and the fleet's
/// revocation list. The member must be the one holding the admin key ([`start_admin`]).
pub async fn join(token: &JoinToken, key: &NodeKey) -> Result<(Membership, RevocationList), JoinError> {
    join_via(token, key, &token.peer).await
}

/// Like [`join`], dialling `via` (`host:port`) instead of the address in the token: the
/// same admin node seen from this node's network (a NAT, another interface).
pub async fn join_via(
    token: &JoinToken,
    key: &NodeKey,
    via: &str,
) -> Result<(Membership, RevocationList), JoinError> {
    let skew = crate::engine::EngineConfig::default().max_clock_skew;
    // The token is signed by the fleet it names; checking it here gives a plain error
    // for an expired or damaged token before any network traffic.
    token.verify(&token.fleet, wall_clock(), skew).map_err(JoinError::Token)?;
    let resolve = |reason: String| JoinError::Resolve { peer: via.to_owned(), reason };
    let peer = tokio::net::lookup_host(via)
        .await
        .map_err(|e| resolve(e.to_string()))?
        .next()
        .ok_or_else(|| resolve("no address".into()))?;
    let connect_err = |reason: String| JoinError::Connect { peer, reason };
    let (_, client) = tls::quic_crypto(key, RevokedSet::default())?;
    let bind: SocketAddr =
        if peer.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let mut endpoint = Endpoint::client(bind).map_err(|e| connect_err(e.to_string()))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(client)));
    let exchange = async {
        let conn = endpoint
            .connect(peer, tls::SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let request = Message::Join(JoinRequest { token: token.clone(), node: key.node_id() })
            .encode()
            .map_err(|e| connect_err(e.to_string()))?;
        let mut send = conn.open_uni().await.map_err(|e| connect_err(e.to_string()))?;
        write_frame(&mut send, &request).await.map_err(|e| connect_err(e.to_string()))?;
        let mut recv = conn.accept_uni().await.map_err(|e| connect_err(e.to_string()))?;
        let bytes = read_frame(&mut recv, palisade_proto::envelope::MAX_MESSAGE_BYTES as u32)
            .await
            .map_err(|_| connect_err("the answer was cut off".into()))?;
        conn.close(VarInt::from_u32(close::SHUTDOWN), b"joined");
        match Message::decode(&bytes) {
            Ok(Message::JoinReply(reply)) => Ok(reply),
            _ => Err(connect_err("the answer is not a join reply".into())),
        }
    };
    let reply =
        tokio::time::timeout(JOIN_TIMEOUT, exchange).await.map_err(|_| connect_err("timed out".into()))??;
    endpoint.close(VarInt::from_u32(close::SHUTDOWN), b"joined");
    match reply {
        JoinReply::Refused(reason) => Err(JoinError::Refused { peer, reason }),
        JoinReply::Accepted { membership, fleet_secret, revocations } => {
            membership
                .verify(&token.fleet, &key.node_id(), wall_clock(), skew)
                .map_err(JoinError::BadCertificate)?;
            let revocations = if revocations.verify(&token.fleet).is_ok() {
                revocations
            } else {
                RevocationList::empty(token.fleet)
            };
            Ok((Membership { key: key.clone(), cert: membership, fleet_secret }, revocations))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quinn::crypto::HmacKey;

    #[test]
    fn reset_keys_are_stable_per_node_and_verify_only_their_own_tags() {
        let node = NodeKey::from_bytes(&[3; 32]);
        let (a, b) = (ResetKey(node.derive_key("ctx")), ResetKey(node.derive_key("ctx")));
        let other = ResetKey(NodeKey::from_bytes(&[4; 32]).derive_key("ctx"));
        let mut tag = [0u8; 32];
        a.sign(b"connection id", &mut tag);
        assert!(b.verify(b"connection id", &tag).is_ok(), "a restarted node makes the same tags");
        assert!(other.verify(b"connection id", &tag).is_err());
        assert!(a.verify(b"another id", &tag).is_err());
        assert!(a.verify(b"connection id", &tag[..16]).is_err());
        let mut short = [0u8; 16];
        a.sign(b"connection id", &mut short);
        assert_eq!(short, tag[..16]);
    }
}
