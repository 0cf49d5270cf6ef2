//! The node's fleet membership: joining, leaving, and the wiring between the gossip
//! endpoint and the actors.
//!
//! ```text
//!  own overflows -> ReputationActor (sign, fleet key) -> outbox (RocksDB) -> gossip.publish_signed
//!  gossip.signals (verified) -> ReputationActor (policy) -> bans   -> DecisionActor (origin fleet)
//!                                                        -> flags  -> ScenarioActor (on-sight check)
//! ```
//!
//! What a member keeps, in `<data_dir>` (mode 0600):
//! - `fleet.json`: its membership certificate, the fleet secret, the newest revocation
//!   list, the first sequence number it signed with the fleet key, and the QUIC
//!   addresses of the members it knew (dialled first at the next start);
//! - `fleet-admin.key`, on the node that ran `palisade fleet init` only: the fleet admin
//!   key and the fleet secret. Whoever holds it runs the fleet: back it up, keep it safe.
//!
//! The admin socket carries the operator's commands (`palisade fleet ...`, `palisade
//! node join|leave|peers`) to [`Fleet::answer`].

use actix::Addr;
use anyhow::{anyhow, bail, Context, Result};
use palisade_actors::actor::DecisionActor;
use palisade_actors::actor::{
    ApplyOverflows, FleetSignals, GetFleetStats, ReputationActor, ScenarioActor, SetSecret, Watch,
};
use palisade_actors::reputation::FleetStats;
use palisade_actors::store::Store;
use palisade_gossip::{FleetKeys, GossipConfig, GossipHandle, GossipStats, Membership, PeerState};
use palisade_proto::envelope::bincode_config;
use palisade_proto::{JoinToken, MembershipCert, NodeId, NodeKey, RevocationList, SignedSignal, Timestamp};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

use crate::metrics::Histogram;
use crate::run::wall_clock;

/// Most own signals handed back to gossip at start, so that peers can repair from us.
const SEED_LIMIT: usize = 100_000;
/// How often the known peers and the revocation list are saved.
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// Longest join token validity `palisade fleet invite --ttl` accepts.
const MAX_INVITE_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Most peer addresses remembered.
const MAX_SAVED_PEERS: usize = 256;

/// `fleet.json`, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedFile {
    fleet: String,
    certificate: String,
    fleet_secret: String,
    revocations: String,
    first_seq: u64,
    peers: Vec<String>,
}

/// `fleet.json`, decoded.
#[derive(Debug, Clone)]
struct Saved {
    cert: MembershipCert,
    fleet_secret: [u8; 32],
    revocations: RevocationList,
    /// The first own signal hashed with the fleet key: earlier ones are never published.
    first_seq: u64,
    peers: Vec<String>,
}

fn encode_hex<T: bincode::Encode>(value: &T) -> Result<String> {
    Ok(hex::encode(bincode::encode_to_vec(value, bincode_config())?))
}

fn decode_hex<T: bincode::Decode<()>>(text: &str, what: &str) -> Result<T> {
    let bytes = hex::decode(text.trim()).with_context(|| format!("{what}: not hex"))?;
    let (value, used) =
        bincode::decode_from_slice(&bytes, bincode_config()).map_err(|e| anyhow!("{what}: damaged ({e})"))?;
    if used != bytes.len() {
        bail!("{what}: extra bytes at the end");
    }
    Ok(value)
}

impl Saved {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("fleet.json")
    }

    fn load(data_dir: &Path) -> Result<Option<Saved>> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!("reading {}: {e}", path.display()),
        };
        let file: SavedFile =
            serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
        let at = |what: &str| format!("{}: {what}", path.display());
        let mut fleet_secret = [0u8; 32];
        hex::decode_to_slice(file.fleet_secret.trim(), &mut fleet_secret)
            .map_err(|_| anyhow!("{}", at("fleet_secret must be 64 hex characters")))?;
        let cert: MembershipCert = decode_hex(&file.certificate, &at("certificate"))?;
        let revocations: RevocationList = decode_hex(&file.revocations, &at("revocations"))?;
        if cert.fleet.to_string() != file.fleet {
            bail!("{}", at("the certificate is for another fleet than `fleet` says"));
        }
        Ok(Some(Saved {
            cert,
            fleet_secret,
            revocations,
            first_seq: file.first_seq.max(1),
            peers: file.peers,
        }))
    }

    fn store(&self, data_dir: &Path) -> Result<()> {
        let file = SavedFile {
            fleet: self.cert.fleet.to_string(),
            certificate: encode_hex(&self.cert)?,
            fleet_secret: hex::encode(self.fleet_secret),
            revocations: encode_hex(&self.revocations)?,
            first_seq: self.first_seq,
            peers: self.peers.clone(),
        };
        write_private(&Self::path(data_dir), serde_json::to_string_pretty(&file)?.as_bytes())
    }
}

/// [`crate::keys::write_private`], with the path in the error.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::keys::write_private(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn admin_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("fleet-admin.key")
}

fn load_admin(data_dir: &Path) -> Result<Option<FleetKeys>> {
    let path = admin_key_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => bail!("reading {}: {e}", path.display()),
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let mut read = |what: &str| -> Result<[u8; 32]> {
        let mut out = [0u8; 32];
        let line = lines.next().ok_or_else(|| anyhow!("{}: the {what} line is missing", path.display()))?;
        hex::decode_to_slice(line, &mut out)
            .map_err(|_| anyhow!("{}: the {what} must be 64 hex characters", path.display()))?;
        Ok(out)
    };
    let admin = read("admin key")?;
    let secret = read("fleet secret")?;
    Ok(Some(FleetKeys::from_bytes(&admin, &secret)))
}

fn store_admin(data_dir: &Path, keys: &FleetKeys) -> Result<()> {
    let (admin, secret) = keys.to_bytes();
    let text = format!(
        "# Palisade fleet {} admin key, then fleet secret. Whoever holds this file runs the fleet.\n{}\n{}\n",
        keys.fleet_id(),
        hex::encode(admin),
        hex::encode(secret)
    );
    let path = admin_key_path(data_dir);
    if path.exists() {
        bail!("{} exists: this node already administers a fleet", path.display());
    }
    write_private(&path, text.as_bytes())
}

/// What an operator asks of the fleet layer, through the admin socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FleetRequest {
    /// Create a fleet administered by this node.
    Init,
    /// Make a join token valid for `ttl_secs`.
    Invite { ttl_secs: u64 },
    /// Join the fleet of `token` through the member at `peer`.
    Join { peer: String, token: String },
    /// Leave the fleet.
    Leave,
    /// Revoke a member fleet-wide.
    Revoke { node: String },
    /// The members this node knows.
    Peers,
    /// This node's membership.
    Status,
}

/// One member as `palisade node peers` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerRow {
    /// Node id (hex).
    pub node: String,
    /// `alive` (connected and live in membership), `suspect` (one of the two), `dead`.
    pub state: String,
    /// QUIC address.
    pub address: Option<String>,
    /// Milliseconds since the epoch when it was last heard from.
    pub last_heard_ms: Option<i64>,
    /// Signals sent to it.
    pub signals_out: u64,
    /// New signals received from it.
    pub signals_in: u64,
    /// Its version.
    pub version: Option<String>,
}

/// This node's membership, for `palisade fleet status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusRow {
    /// This node's id.
    pub node: String,
    /// The fleet, if a member.
    pub fleet: Option<String>,
    /// Whether this node holds the fleet admin key.
    pub admin: bool,
    /// The QUIC address peers dial.
    pub address: Option<String>,
    /// When the membership certificate expires (ms since the epoch).
    pub expires_ms: Option<i64>,
    /// Members connected now.
    pub peers_connected: u64,
    /// Own signals published, signals received from peers.
    pub signals_published: u64,
    /// Verified signals of other members received.
    pub signals_received: u64,
}

/// The answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FleetReply {
    /// A fleet was created.
    Initialized { fleet: String, node: String, address: String },
    /// A join token.
    Token { token: String, expires_ms: i64, peer: String },
    /// This node joined.
    Joined { fleet: String, peer: String },
    /// This node left.
    Left { fleet: String },
    /// A member was revoked.
    Revoked { node: String, serial: u64 },
    /// The members.
    Peers {
        /// One row per member.
        peers: Vec<PeerRow>,
    },
    /// This node.
    Status(StatusRow),
}

/// The actors the fleet talks to.
#[derive(Clone)]
pub struct Actors {
    /// Signs own signals, judges the fleet's.
    pub reputation: Addr<ReputationActor>,
    /// Holds the on-sight check.
    pub scenario: Addr<ScenarioActor>,
    /// Makes the decisions.
    pub decisions: Addr<DecisionActor>,
}

/// Counters of the fleet wiring, for `/metrics`.
#[derive(Debug, Default)]
pub struct FleetMetrics {
    /// From a signal's observed time (its log line) to its arrival here.
    pub propagation: Histogram,
}

/// A snapshot for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct FleetSnapshot {
    /// Whether the node is a member.
    pub member: bool,
    /// The endpoint's counters, when it runs.
    pub gossip: Option<GossipStats>,
    /// The reputation actor's fleet counters.
    pub reputation: FleetStats,
}

struct Running {
    handle: GossipHandle,
    task: JoinHandle<()>,
    pump: JoinHandle<()>,
    saver: JoinHandle<()>,
    /// The address peers dial.
    address: SocketAddr,
}

struct State {
    saved: Option<Saved>,
    admin: Option<FleetKeys>,
    running: Option<Running>,
}

/// The fleet layer of a running node.
pub struct Fleet {
    data_dir: PathBuf,
    key: NodeKey,
    config: GossipConfig,
    local_secret: [u8; 32],
    actors: Actors,
    store: Arc<dyn Store>,
    /// The running endpoint, for the stage that publishes own signals.
    publisher: watch::Sender<Option<GossipHandle>>,
    metrics: Arc<FleetMetrics>,
    state: Mutex<State>,
}

impl Fleet {
    /// The fleet layer; starts gossip when the node is a member (from `fleet.json`).
    /// `epoch_hours` is the reputation epoch, which the protocol's epoch follows.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        data_dir: &Path,
        key: NodeKey,
        mut config: GossipConfig,
        epoch_hours: u32,
        local_secret: [u8; 32],
        actors: Actors,
        store: Arc<dyn Store>,
        publisher: watch::Sender<Option<GossipHandle>>,
    ) -> Result<Arc<Fleet>> {
        config.engine.epoch_period_secs = epoch_hours.saturating_mul(3600);
        config.validate().map_err(|e| anyhow!("{e}"))?;
        let saved = Saved::load(data_dir)?;
        let admin = load_admin(data_dir)?;
        let fleet = Arc::new(Fleet {
            data_dir: data_dir.to_path_buf(),
            key,
            config,
            local_secret,
            actors,
            store,
            publisher,
            metrics: Arc::default(),
            state: Mutex::new(State { saved: None, admin, running: None }),
        });
        if let Some(saved) = saved {
            let mut state = fleet.state.lock().await;
            if let Some(admin) = &state.admin {
                if admin.fleet_id() != saved.cert.fleet {
                    // The admin key of another fleet: this node only administers its own.
                    state.admin = None;
                }
            }
            let name = saved.cert.fleet;
            if let Err(e) = fleet.launch(&mut state, saved).await {
                // The node still protects this host on its own; the operator sees why
                // it is not gossiping here, in `palisade fleet status` and on /metrics.
                tracing::error!(fleet = %name, error = %format!("{e:#}"), "fleet gossip did not start; running without the fleet");
            }
        }
        Ok(fleet)
    }

    /// The counters exported on `/metrics`.
    pub fn metrics(&self) -> Arc<FleetMetrics> {
        self.metrics.clone()
    }

    /// A snapshot for `/metrics`.
    pub async fn snapshot(&self) -> FleetSnapshot {
        let handle = self.publisher.borrow().clone();
        let gossip = match handle {
            Some(h) => h.stats().await.ok(),
            None => None,
        };
        let reputation = self.actors.reputation.send(GetFleetStats).await.unwrap_or_default();
        FleetSnapshot { member: gossip.is_some(), gossip, reputation }
    }

    /// Starts gossip for `saved`: hashing switches to the fleet key, own signals still
    /// held are handed to gossip, received signals flow to the actors.
    async fn launch(&self, state: &mut State, saved: Saved) -> Result<()> {
        let membership =
            Membership { key: self.key.clone(), cert: saved.cert.clone(), fleet_secret: saved.fleet_secret };
        let mut config = self.config.clone();
        for peer in &saved.peers {
            match peer.parse::<SocketAddr>() {
                Ok(addr) if !config.seeds.contains(&addr) => config.seeds.push(addr),
                Ok(_) => {}
                Err(_) => tracing::warn!(peer = %peer, "ignoring a saved peer address that does not parse"),
            }
        }
        self.actors.reputation.send(SetSecret(saved.fleet_secret)).await?;
        // Own signals since joining that the outbox still holds: peers repair from them.
        let held: Vec<SignedSignal> = self
            .store
            .outbox(saved.first_seq, SEED_LIMIT)
            .map_err(|e| anyhow!("{e}"))?
            .into_iter()
            .filter(|s| s.signal.origin == self.key.node_id())
            .collect();
        let next_seq = held.first().map_or_else(
            || {
                self.store
                    .last_signal_seq()
                    .map(|last| (last + 1).max(saved.first_seq))
                    .unwrap_or(saved.first_seq)
            },
            |s| s.signal.seq,
        );
        let started = match &state.admin {
            Some(admin) => {
                palisade_gossip::start_admin(
                    config,
                    membership,
                    saved.revocations.clone(),
                    next_seq,
                    admin.clone(),
                )
                .await
            }
            None => palisade_gossip::start(config, membership, saved.revocations.clone(), next_seq).await,
        };
        let gossip = match started {
            Ok(g) => g,
            Err(e) => {
                let _ = self.actors.reputation.send(SetSecret(self.local_secret)).await;
                return Err(anyhow!("starting fleet gossip: {e}"));
            }
        };
        let handle = gossip.handle.clone();
        if !held.is_empty() {
            handle.publish_signed(held).await.map_err(|e| anyhow!("{e}"))?;
        }
        let address = self.config.advertise.unwrap_or(handle.local_addr());
        let pump = actix::spawn(pump(gossip.signals, self.actors.clone(), self.metrics.clone()));
        let saver = actix::spawn(keep_saved(handle.clone(), self.data_dir.clone(), saved.clone()));
        self.publisher.send_replace(Some(handle.clone()));
        tracing::info!(
            fleet = %saved.cert.fleet,
            node = %self.key.node_id(),
            addr = %address,
            admin = state.admin.is_some(),
            "fleet gossip listening"
        );
        state.saved = Some(saved);
        state.running = Some(Running { handle, task: gossip.task, pump, saver, address });
        Ok(())
    }

    /// Stops gossip (at shutdown, or when leaving), saving what it knows.
    async fn halt(&self, state: &mut State) {
        self.publisher.send_replace(None);
        if let Some(running) = state.running.take() {
            running.saver.abort();
            if let Some(saved) = state.saved.as_mut() {
                refresh(&running.handle, saved).await;
                if let Err(e) = saved.store(&self.data_dir) {
                    tracing::warn!(error = %e, "cannot save the fleet state");
                }
            }
            running.handle.shutdown().await;
            let _ = running.task.await;
            running.pump.abort();
        }
    }

    /// Stops gossip at node shutdown.
    pub async fn stop(&self) {
        let mut state = self.state.lock().await;
        self.halt(&mut state).await;
    }

    /// Carries out an operator's request.
    pub async fn answer(&self, request: FleetRequest) -> Result<FleetReply> {
        let mut state = self.state.lock().await;
        match request {
            FleetRequest::Init => self.init(&mut state).await,
            FleetRequest::Invite { ttl_secs } => self.invite(&state, Duration::from_secs(ttl_secs)),
            FleetRequest::Join { peer, token } => self.join(&mut state, &peer, &token).await,
            FleetRequest::Leave => self.leave(&mut state).await,
            FleetRequest::Revoke { node } => self.revoke(&mut state, &node).await,
            FleetRequest::Peers => {
                let running = state.running.as_ref().ok_or_else(not_member)?;
                let peers = running.handle.peers().await.map_err(|e| anyhow!("{e}"))?;
                Ok(FleetReply::Peers { peers: peers.iter().map(peer_row).collect() })
            }
            FleetRequest::Status => {
                let mut row = StatusRow {
                    node: self.key.node_id().to_string(),
                    fleet: state.saved.as_ref().map(|s| s.cert.fleet.to_string()),
                    admin: state.admin.is_some(),
                    address: state.running.as_ref().map(|r| r.address.to_string()),
                    expires_ms: state.saved.as_ref().map(|s| s.cert.expires.as_millis()),
                    peers_connected: 0,
                    signals_published: 0,
                    signals_received: 0,
                };
                if let Some(running) = &state.running {
                    if let Ok(stats) = running.handle.stats().await {
                        row.peers_connected = stats.peers_connected;
                        row.signals_published = stats.engine.signals_published;
                        row.signals_received = stats.engine.signals_delivered;
                    }
                }
                Ok(FleetReply::Status(row))
            }
        }
    }

    async fn init(&self, state: &mut State) -> Result<FleetReply> {
        if let Some(saved) = &state.saved {
            bail!("this node is already a member of fleet {}; `palisade node leave` first", saved.cert.fleet);
        }
        if state.admin.is_some() {
            bail!(
                "{} exists: this node already administers a fleet; move the file away to create another",
                admin_key_path(&self.data_dir).display()
            );
        }
        let keys = FleetKeys::generate(&mut rand::rngs::OsRng);
        let now = wall_clock();
        let cert = keys.certify(self.key.node_id(), now, self.config.membership_validity);
        let saved = Saved {
            cert,
            fleet_secret: keys.fleet_secret(),
            revocations: RevocationList::empty(keys.fleet_id()),
            first_seq: self.adopt_secret(keys.fleet_secret()).await?,
            peers: Vec::new(),
        };
        if let Err(e) = store_admin(&self.data_dir, &keys) {
            self.actors.reputation.send(SetSecret(self.local_secret)).await?;
            return Err(e);
        }
        state.admin = Some(keys.clone());
        if let Err(e) = self.enter(state, saved).await {
            // Leave no half-made fleet behind.
            state.admin = None;
            let _ = std::fs::remove_file(admin_key_path(&self.data_dir));
            return Err(e);
        }
        let address = state.running.as_ref().map(|r| r.address.to_string()).unwrap_or_default();
        Ok(FleetReply::Initialized {
            fleet: keys.fleet_id().to_string(),
            node: self.key.node_id().to_string(),
            address,
        })
    }

    /// Hashes and seals with `secret` from now on; returns the sequence number of the
    /// first signal made with it (in the same actor step, so no signal falls between).
    async fn adopt_secret(&self, secret: [u8; 32]) -> Result<u64> {
        Ok(self.actors.reputation.send(SetSecret(secret)).await? + 1)
    }

    /// Saves a new membership and starts gossip for it; on failure nothing of it stays
    /// and the node hashes with its own secret again.
    async fn enter(&self, state: &mut State, saved: Saved) -> Result<()> {
        let result = match saved.store(&self.data_dir) {
            Ok(()) => self.launch(state, saved).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(Saved::path(&self.data_dir));
            self.actors.reputation.send(SetSecret(self.local_secret)).await?;
        }
        result
    }

    fn invite(&self, state: &State, ttl: Duration) -> Result<FleetReply> {
        let admin = state.admin.as_ref().ok_or_else(|| {
            anyhow!("this node does not hold the fleet admin key: run `palisade fleet invite` on the node that ran `palisade fleet init`")
        })?;
        if ttl.is_zero() || ttl > MAX_INVITE_TTL {
            bail!("--ttl must be between 1s and 30d");
        }
        let running = state.running.as_ref().ok_or_else(not_member)?;
        let peer = running.address.to_string();
        let now = wall_clock();
        let token = admin.invite(&peer, now, ttl, &mut rand::rngs::OsRng);
        Ok(FleetReply::Token { token: token.to_text(), expires_ms: token.expires.as_millis(), peer })
    }

    async fn join(&self, state: &mut State, peer: &str, token: &str) -> Result<FleetReply> {
        if let Some(saved) = &state.saved {
            bail!("this node is already a member of fleet {}; `palisade node leave` first", saved.cert.fleet);
        }
        let token = JoinToken::from_text(token).map_err(|e| anyhow!("the join token is not valid: {e}"))?;
        let (membership, revocations) =
            palisade_gossip::net::join_via(&token, &self.key, peer).await.map_err(|e| anyhow!("{e}"))?;
        let fleet = membership.fleet();
        let mut peers = vec![peer.to_owned()];
        if token.peer != peer {
            peers.push(token.peer.clone());
        }
        let saved = Saved {
            cert: membership.cert,
            fleet_secret: membership.fleet_secret,
            revocations,
            first_seq: self.adopt_secret(membership.fleet_secret).await?,
            peers,
        };
        self.enter(state, saved).await?;
        Ok(FleetReply::Joined { fleet: fleet.to_string(), peer: peer.to_owned() })
    }

    async fn leave(&self, state: &mut State) -> Result<FleetReply> {
        let fleet = state.saved.as_ref().map(|s| s.cert.fleet).ok_or_else(not_member)?;
        self.halt(state).await;
        state.saved = None;
        std::fs::remove_file(Saved::path(&self.data_dir))
            .with_context(|| format!("removing {}", Saved::path(&self.data_dir).display()))?;
        self.actors.reputation.send(SetSecret(self.local_secret)).await?;
        tracing::info!(fleet = %fleet, "left the fleet");
        Ok(FleetReply::Left { fleet: fleet.to_string() })
    }

    async fn revoke(&self, state: &mut State, node: &str) -> Result<FleetReply> {
        let admin = state.admin.clone().ok_or_else(|| {
            anyhow!("this node does not hold the fleet admin key: run `palisade fleet revoke` on the node that ran `palisade fleet init`")
        })?;
        let node: NodeId = node.parse().map_err(|_| {
            anyhow!("{node:?} is not a node id (64 hex characters, see `palisade node peers`)")
        })?;
        if node == self.key.node_id() {
            bail!("the admin node cannot revoke itself");
        }
        let running = state.running.as_ref().ok_or_else(not_member)?;
        let current = running.handle.persistent().await.map_err(|e| anyhow!("{e}"))?.revocations;
        let mut nodes = current.revoked.clone();
        nodes.push(node);
        let list = admin.revoke(current.serial + 1, nodes);
        let serial = list.serial;
        running.handle.revoke(list.clone()).await.map_err(|e| anyhow!("{e}"))?;
        if let Some(saved) = state.saved.as_mut() {
            saved.revocations = list;
            saved.store(&self.data_dir)?;
        }
        tracing::info!(node = %node, serial, "member revoked");
        Ok(FleetReply::Revoked { node: node.to_string(), serial })
    }
}

fn not_member() -> anyhow::Error {
    anyhow!("this node is not in a fleet: `palisade fleet init` creates one, `palisade node join` joins one")
}

fn peer_row(p: &PeerState) -> PeerRow {
    let state = match (p.connected, p.alive) {
        (true, true) => "alive",
        (false, false) => "dead",
        _ => "suspect",
    };
    PeerRow {
        node: p.node.to_string(),
        state: state.into(),
        address: p.quic_addr.map(|a| a.to_string()),
        last_heard_ms: p.traffic.last_heard.map(Timestamp::as_millis),
        signals_out: p.traffic.signals_out,
        signals_in: p.traffic.signals_in,
        version: p.version.clone(),
    }
}

/// Verified signals of other members -> reputation policy -> bans and flags.
async fn pump(mut signals: mpsc::Receiver<Vec<SignedSignal>>, actors: Actors, metrics: Arc<FleetMetrics>) {
    while let Some(batch) = signals.recv().await {
        let now = wall_clock();
        for s in &batch {
            metrics.propagation.observe(now.since(s.signal.observed_at));
        }
        let outcome = match actors.reputation.send(FleetSignals(batch, now)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(error = %e, "reputation actor unavailable; fleet signals dropped");
                continue;
            }
        };
        if !outcome.flags.is_empty() {
            let _ = actors.scenario.send(Watch(outcome.flags)).await;
        }
        if !outcome.bans.is_empty() {
            let apply =
                ApplyOverflows { overflows: Arc::new(outcome.bans), signals: Vec::new(), checkpoint: None };
            match actors.decisions.send(apply).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot persist fleet decisions"),
                Err(e) => tracing::warn!(error = %e, "decision actor unavailable"),
            }
        }
    }
}

/// Copies the known peers' addresses and the newest revocation list into `saved`.
async fn refresh(handle: &GossipHandle, saved: &mut Saved) -> bool {
    let mut changed = false;
    if let Ok(peers) = handle.peers().await {
        let mut addresses: Vec<String> = peers
            .iter()
            .filter(|p| p.alive || p.connected)
            .filter_map(|p| p.quic_addr.map(|a| a.to_string()))
            .collect();
        // Keep the ones we had (the join peer first) and add the new ones.
        for a in saved.peers.iter().rev() {
            if !addresses.contains(a) {
                addresses.insert(0, a.clone());
            }
        }
        addresses.truncate(MAX_SAVED_PEERS);
        if addresses != saved.peers {
            saved.peers = addresses;
            changed = true;
        }
    }
    if let Ok(keep) = handle.persistent().await {
        if keep.revocations.serial > saved.revocations.serial {
            saved.revocations = keep.revocations;
            changed = true;
        }
    }
    changed
}

/// Saves the peers and revocations every few seconds when they changed.
async fn keep_saved(handle: GossipHandle, data_dir: PathBuf, mut saved: Saved) {
    let mut every = tokio::time::interval(SAVE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if refresh(&handle, &mut saved).await {
            if let Err(e) = saved.store(&data_dir) {
                tracing::warn!(error = %e, "cannot save the fleet state");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Saved::load(dir.path()).unwrap().is_none());
        let keys = FleetKeys::generate(&mut rand::rngs::OsRng);
        let node = NodeKey::generate(&mut rand::rngs::OsRng).node_id();
        let saved = Saved {
            cert: keys.certify(node, Timestamp(1_000), Duration::from_secs(60)),
            fleet_secret: keys.fleet_secret(),
            revocations: keys.revoke(3, vec![node]),
            first_seq: 7,
            peers: vec!["127.0.0.1:7946".into()],
        };
        saved.store(dir.path()).unwrap();
        let back = Saved::load(dir.path()).unwrap().unwrap();
        assert_eq!((back.cert, back.revocations.serial, back.first_seq), (saved.cert, 3, 7));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(Saved::path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(Saved::path(dir.path()), "{\"fleet\": 1}").unwrap();
        let err = Saved::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("fleet.json is damaged"), "{err}");

        store_admin(dir.path(), &keys).unwrap();
        assert_eq!(load_admin(dir.path()).unwrap().unwrap().fleet_id(), keys.fleet_id());
        assert!(store_admin(dir.path(), &keys).is_err(), "never overwritten");
    }
}
