//! The dissemination protocol as a state machine without I/O.
//!
//! [`Engine::handle`] takes one [`InEvent`] (a peer came up, bytes arrived, the node
//! published signals, a timer ticked), the current time and a random number generator,
//! and returns the [`OutEvent`]s to carry out (send a message, deliver verified signals
//! to the node, cut a peer off). The QUIC shell in [`crate::net`] and the in-memory
//! network of the tests drive the same code. See `ALGORITHM.md` for the reasoning.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use palisade_proto::envelope::{MAX_MESSAGE_BYTES, MAX_SIGNALS_PER_MESSAGE};
use palisade_proto::signal::{sign_batch, Verifier, VerifyError};
use palisade_proto::{
    Digest, Epoch, FleetId, Message, NodeId, NodeKey, OriginMark, RangeRequest, RevocationList, Signal,
    SignalId, SignedSignal, Timestamp, WireError,
};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::stats::EngineStats;

/// Tunables of the dissemination protocol. Defaults suit fleets of 2 to ~100 nodes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// How many random live peers a node that first receives a signal from someone else
    /// relays it to.
    pub fanout: usize,
    /// How many random live peers a node pushes its own new signals to (default: all; a
    /// fleet is a full mesh of connections, so one hop reaches everyone).
    pub origin_fanout: usize,
    /// How often a node sends its digest (per-origin marks) to one random peer.
    #[serde(with = "crate::config::duration_text")]
    pub anti_entropy_interval: Duration,
    /// How long a range request may stay unanswered before another peer is asked.
    #[serde(with = "crate::config::duration_text")]
    pub request_timeout: Duration,
    /// Most signals sent in answer to one request or one digest, per origin.
    pub repair_batch: u64,
    /// Clock difference between nodes that is tolerated: a signal observed further than
    /// this in the future is refused, and epochs are checked with this slack.
    #[serde(with = "crate::config::duration_text")]
    pub max_clock_skew: Duration,
    /// Length of a hashing epoch, in seconds (must match the node's `HashKey` epochs).
    pub epoch_period_secs: u32,
    /// How many epochs before the current one are still accepted and kept.
    pub accepted_past_epochs: u32,
    /// Signals kept per origin to answer repairs; older ones are pruned.
    pub retain_per_origin: usize,
    /// Signals held per origin beyond a gap, waiting for the gap to fill.
    pub max_pending_per_origin: usize,
    /// Penalty points at which a peer is disconnected (forged signature: 10 points, bad
    /// frame: 10, wrong fleet: 10, unknown epoch or skewed clock: 2). Above half of it,
    /// the peer's messages are dropped unread (rate limiting).
    pub penalty_limit: f64,
    /// Penalty points forgiven per second.
    pub penalty_leak_per_sec: f64,
    /// How long a disconnected peer stays refused.
    #[serde(with = "crate::config::duration_text")]
    pub ban_duration: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            fanout: 2,
            origin_fanout: usize::MAX,
            anti_entropy_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            repair_batch: 4096,
            max_clock_skew: Duration::from_secs(300),
            epoch_period_secs: 86_400,
            accepted_past_epochs: 1,
            retain_per_origin: 100_000,
            max_pending_per_origin: 100_000,
            penalty_limit: 100.0,
            penalty_leak_per_sec: 5.0,
            ban_duration: Duration::from_secs(600),
        }
    }
}

/// Why a configuration was refused; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gossip.{key}: {problem}")]
pub struct ConfigError {
    /// The offending key.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl EngineConfig {
    /// Checks the values that would break the protocol.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, problem| Err(ConfigError { key, problem });
        if self.fanout == 0 {
            return err("fanout", "must be at least 1");
        }
        if self.origin_fanout == 0 {
            return err("origin_fanout", "must be at least 1");
        }
        if self.anti_entropy_interval.is_zero() {
            return err("anti_entropy_interval", "must be above zero");
        }
        if self.repair_batch == 0 {
            return err("repair_batch", "must be at least 1");
        }
        if self.epoch_period_secs == 0 {
            return err("epoch_period_secs", "must be at least 1");
        }
        if self.retain_per_origin == 0 || self.max_pending_per_origin == 0 {
            return err(
                "retain_per_origin",
                "retain_per_origin and max_pending_per_origin must be at least 1",
            );
        }
        let penalties_ok = self.penalty_limit > 0.0 && self.penalty_leak_per_sec >= 0.0;
        if !penalties_ok {
            return err(
                "penalty_limit",
                "penalty_limit must be above zero and penalty_leak_per_sec not negative",
            );
        }
        Ok(())
    }
}

/// What happened that the engine must react to.
#[derive(Debug, Clone)]
pub enum InEvent {
    /// An admitted peer is connected (or membership says it is alive).
    PeerUp(NodeId),
    /// A peer is gone.
    PeerDown(NodeId),
    /// One frame from an admitted peer, still encoded.
    Received {
        /// The authenticated sender.
        from: NodeId,
        /// The frame's bytes (one envelope).
        bytes: Vec<u8>,
    },
    /// A peer announced a frame larger than the limit; the shell did not read it.
    Oversized {
        /// The sender.
        from: NodeId,
        /// The announced length.
        len: u64,
    },
    /// The node's own new signals: the engine numbers them, signs them and spreads them.
    Publish(Vec<Signal>),
    /// Own signals numbered by [`Engine::number_own`] and signed by [`sign_own`] outside
    /// the engine (so that signing does not hold up the protocol); the engine spreads them.
    PublishSigned(Vec<SignedSignal>),
    /// A newer revocation list from the operator.
    Revocations(RevocationList),
    /// The outcome of an [`OutEvent::Verify`]: one result per signal, in order.
    Verified {
        /// The peer the signals came from.
        from: NodeId,
        /// The signals, as handed out.
        signals: Vec<SignedSignal>,
        /// `palisade_proto::signal::verify_batch` of them.
        results: Vec<Result<(), VerifyError>>,
    },
    /// Time passed: send digests, forgive penalties, prune.
    Tick,
}

/// What the engine asks its shell to do.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // short-lived, consumed right after `handle` returns
pub enum OutEvent {
    /// Send a message to a peer (best effort: a lost message is repaired later).
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// Verified signals from other nodes, each delivered once, for the node to use.
    Deliver(Vec<SignedSignal>),
    /// Close the connection to this peer and refuse it for a while.
    Disconnect {
        /// The peer.
        peer: NodeId,
        /// Why, for logs.
        reason: &'static str,
    },
    /// Membership bytes from a peer, for the membership layer.
    Membership {
        /// The sender.
        from: NodeId,
        /// chitchat's encoding of one message.
        bytes: Vec<u8>,
    },
    /// A newer revocation list was adopted (the node should persist it).
    Revocations(RevocationList),
    /// Verify these signals (with `verify_batch`) and hand the results back as
    /// [`InEvent::Verified`]; only with [`Engine::defer_verification`].
    Verify {
        /// The peer they came from.
        from: NodeId,
        /// Signals that passed every cheaper check.
        signals: Vec<SignedSignal>,
    },
    /// A member relayed a join request (the shell holding the admin key answers it).
    RelayedJoin {
        /// The member that relayed it.
        from: NodeId,
        /// The request.
        request: palisade_proto::JoinRequest,
    },
    /// The admin node answered a join this node relayed.
    RelayedJoinReply {
        /// The joiner.
        node: NodeId,
        /// The answer.
        reply: palisade_proto::JoinReply,
    },
    /// A peer sent something bad (already counted and penalised), for the operator's log;
    /// the shell logs it at most once per peer and interval.
    Misbehaved {
        /// The peer.
        peer: NodeId,
        /// What it did.
        reason: &'static str,
    },
}

/// One origin's signals as held here.
#[derive(Debug)]
struct OriginLog {
    /// Lowest sequence number that can still be held.
    floor: u64,
    /// Every number in `floor..=high` is held (`high == floor - 1`: none).
    high: u64,
    /// Held signals: the contiguous run and, above `high + 1`, those waiting for a gap.
    held: BTreeMap<u64, SignedSignal>,
    /// Highest number some peer's digest claimed at least one anti-entropy interval ago.
    settled: u64,
    /// The claim being aged: (high, when first seen).
    fresh: Option<(u64, Timestamp)>,
}

impl Default for OriginLog {
    fn default() -> Self {
        OriginLog::new()
    }
}

impl OriginLog {
    fn new() -> Self {
        OriginLog { floor: 1, high: 0, held: BTreeMap::new(), settled: 0, fresh: None }
    }

    /// Records that a peer holds up to `high` at `now`; returns the highest number
    /// claimed at least `grace` ago (what is surely not still in flight to us).
    fn claim(&mut self, high: u64, now: Timestamp, grace: Duration) -> u64 {
        match self.fresh {
            Some((claimed, at)) if now.since(at) >= grace => {
                self.settled = self.settled.max(claimed);
                self.fresh = Some((high, now));
            }
            Some(_) => {}
            None => self.fresh = Some((high, now)),
        }
        self.settled
    }

    fn holds(&self, seq: u64) -> bool {
        seq < self.floor || self.held.contains_key(&seq)
    }

    /// Signals held above the gap. `held` is exactly `floor..=high` plus these.
    fn pending(&self) -> usize {
        let contiguous = usize::try_from((self.high + 1).saturating_sub(self.floor)).unwrap_or(usize::MAX);
        self.held.len().saturating_sub(contiguous)
    }

    /// Moves `high` up over every held successor.
    fn advance(&mut self) {
        while self.held.contains_key(&(self.high + 1)) {
            self.high += 1;
        }
    }

    /// Accepts that numbers below `floor` will never come.
    fn raise_floor(&mut self, floor: u64) {
        if floor > self.high + 1 {
            self.held = self.held.split_off(&floor);
            self.floor = floor;
            self.high = floor - 1;
            self.advance();
        }
    }

    fn mark(&self, origin: NodeId) -> OriginMark {
        OriginMark { origin, floor: self.floor, high: self.high }
    }
}

/// What the engine knows of one connected peer.
#[derive(Debug)]
struct Peer {
    /// The peer's last digest: origin -> (floor, high).
    marks: BTreeMap<NodeId, (u64, u64)>,
    /// Whether a digest arrived since the connection came up. The first one is acted on
    /// in full: nothing can be in flight to us on a connection that just opened, and it
    /// is how a node that was away catches up at once.
    digested: bool,
    /// When we last answered one of its digests with ours.
    answered_at: Option<Timestamp>,
    /// Misbehaviour points, leaking at `penalty_leak_per_sec`.
    penalty: f64,
    penalty_at: Timestamp,
}

impl Peer {
    fn new(now: Timestamp) -> Self {
        Peer { marks: BTreeMap::new(), digested: false, answered_at: None, penalty: 0.0, penalty_at: now }
    }

    fn knows(&self, id: &SignalId) -> bool {
        self.marks.get(&id.origin).is_some_and(|&(_, high)| id.seq <= high)
    }
}

/// What this node exchanged with one peer, kept across reconnections (for operators).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerTraffic {
    /// When the peer last sent anything.
    pub last_heard: Option<Timestamp>,
    /// Signals sent to the peer (push and repair).
    pub signals_out: u64,
    /// New signals accepted from the peer.
    pub signals_in: u64,
}

/// A range request waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    peer: NodeId,
    to: u64,
    at: Timestamp,
}

/// Penalty points per kind of misbehaviour.
const PENALTY_SEVERE: f64 = 10.0;
const PENALTY_MILD: f64 = 2.0;
const PENALTY_WHILE_LIMITED: f64 = 2.0;

/// The dissemination state machine of one node.
pub struct Engine {
    key: NodeKey,
    me: NodeId,
    fleet: FleetId,
    config: EngineConfig,
    next_seq: u64,
    logs: BTreeMap<NodeId, OriginLog>,
    peers: BTreeMap<NodeId, Peer>,
    banned: BTreeMap<NodeId, Timestamp>,
    /// Penalty points of disconnected peers (points, as of when).
    penalties: BTreeMap<NodeId, (f64, Timestamp)>,
    outstanding: BTreeMap<NodeId, Outstanding>,
    traffic: BTreeMap<NodeId, PeerTraffic>,
    revocations: RevocationList,
    next_digest_at: Timestamp,
    stats: EngineStats,
    deferred_verification: bool,
    /// Checks received signals when verification is not deferred to the shell.
    verifier: Verifier,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("me", &self.me)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A node's engine. `next_seq` is the sequence number its next own signal gets (1 for
    /// a new node; the node persists it across restarts). `revocations` is the latest
    /// verified list, or [`RevocationList::empty`].
    pub fn new(
        key: NodeKey,
        fleet: FleetId,
        config: EngineConfig,
        next_seq: u64,
        revocations: RevocationList,
        now: Timestamp,
    ) -> Self {
        let me = key.node_id();
        let next_seq = next_seq.max(1);
        let mut logs = BTreeMap::new();
        let mut own = OriginLog::new();
        own.raise_floor(next_seq);
        logs.insert(me, own);
        Engine {
            key,
            me,
            fleet,
            config,
            next_seq,
            logs,
            peers: BTreeMap::new(),
            banned: BTreeMap::new(),
            penalties: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            traffic: BTreeMap::new(),
            revocations,
            next_digest_at: now,
            stats: EngineStats::default(),
            deferred_verification: false,
            verifier: Verifier::default(),
        }
    }

    /// Hands signature checks of received signals to the shell ([`OutEvent::Verify`],
    /// answered with [`InEvent::Verified`]) instead of doing them inside `handle`, so that
    /// a shell can run them on other cores. Off by default.
    pub fn defer_verification(&mut self, deferred: bool) {
        self.deferred_verification = deferred;
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The counters, for metrics.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The sequence number the next published signal will get (persist it).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// What this node holds, per origin.
    pub fn marks(&self) -> Vec<OriginMark> {
        self.logs.iter().map(|(origin, log)| log.mark(*origin)).collect()
    }

    /// Whether this node has (or has pruned) the signal.
    pub fn holds(&self, id: &SignalId) -> bool {
        self.logs.get(&id.origin).is_some_and(|log| log.holds(id.seq))
    }

    /// Connected peers.
    pub fn peers(&self) -> impl Iterator<Item = &NodeId> {
        self.peers.keys()
    }

    /// What this node exchanged with `peer` since it started.
    pub fn traffic(&self, peer: &NodeId) -> PeerTraffic {
        self.traffic.get(peer).copied().unwrap_or_default()
    }

    /// Whether `peer` is currently refused, and until when.
    pub fn banned_until(&self, peer: &NodeId, now: Timestamp) -> Option<Timestamp> {
        self.banned.get(peer).copied().filter(|until| *until > now)
    }

    /// Whether `node` is on the current revocation list.
    pub fn is_revoked(&self, node: &NodeId) -> bool {
        self.revocations.contains(node)
    }

    /// The current revocation list.
    pub fn revocations(&self) -> &RevocationList {
        &self.revocations
    }

    /// Handles one event at time `now`; every random choice is drawn from `rng`.
    pub fn handle<R: Rng>(&mut self, event: InEvent, now: Timestamp, rng: &mut R) -> Vec<OutEvent> {
        let mut out = Vec::new();
        match event {
            InEvent::PeerUp(peer) => self.peer_up(peer, now, &mut out),
            InEvent::PeerDown(peer) => {
                if let Some(mut gone) = self.peers.remove(&peer) {
                    // Penalty points outlive the connection: reconnecting does not wipe them.
                    leak(&mut gone, now, self.config.penalty_leak_per_sec);
                    if gone.penalty > 0.0 {
                        self.penalties.insert(peer, (gone.penalty, now));
                    }
                }
            }
            InEvent::Received { from, bytes } => {
                self.stats.messages_in += 1;
                self.traffic.entry(from).or_default().last_heard = Some(now);
                self.stats.bytes_in += bytes.len() as u64;
                if self.refuse_input(from, now, &mut out) {
                    return out;
                }
                match Message::decode(&bytes) {
                    Ok(message) => self.on_message(from, message, now, rng, &mut out),
                    Err(WireError::TooLarge { .. }) => {
                        self.stats.oversized += 1;
                        self.penalize(from, PENALTY_SEVERE, now, "oversized frame", &mut out);
                    }
                    Err(_) => {
                        self.stats.malformed += 1;
                        self.penalize(from, PENALTY_SEVERE, now, "malformed frame", &mut out);
                    }
                }
            }
            InEvent::Oversized { from, len: _ } => {
                self.stats.oversized += 1;
                self.penalize(from, PENALTY_SEVERE, now, "oversized frame", &mut out);
            }
            InEvent::Publish(signals) => self.publish(signals, now, rng, &mut out),
            InEvent::PublishSigned(signed) => self.publish_signed(signed, now, rng, &mut out),
            InEvent::Revocations(list) => self.adopt_revocations(list, &mut out),
            InEvent::Verified { from, signals, results } => {
                self.accept(from, signals, results, now, rng, &mut out)
            }
            InEvent::Tick => self.tick(now, rng, &mut out),
        }
        out
    }

    fn peer_up(&mut self, peer: NodeId, now: Timestamp, out: &mut Vec<OutEvent>) {
        if peer == self.me {
            return;
        }
        if self.banned_until(&peer, now).is_some() || self.revocations.contains(&peer) {
            out.push(OutEvent::Disconnect { peer, reason: "refused: banned or revoked" });
            return;
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = self.peers.entry(peer) {
            let mut fresh = Peer::new(now);
            if let Some((penalty, at)) = self.penalties.remove(&peer) {
                fresh.penalty = penalty;
                fresh.penalty_at = at;
            }
            slot.insert(fresh);
            // A new peer learns at once what we hold, and we learn what it holds.
            let digest = self.digest();
            self.stats.digests_sent += 1;
            out.push(OutEvent::Send { to: peer, message: Message::Digest(digest) });
            if self.revocations.serial > 0 {
                out.push(OutEvent::Send {
                    to: peer,
                    message: Message::Revocations(self.revocations.clone()),
                });
            }
        }
    }

    /// Drops input from banned or rate-limited peers; returns whether it was dropped.
    fn refuse_input(&mut self, from: NodeId, now: Timestamp, out: &mut Vec<OutEvent>) -> bool {
        if self.banned_until(&from, now).is_some() || self.revocations.contains(&from) {
            self.stats.rate_limited += 1;
            out.push(OutEvent::Disconnect { peer: from, reason: "refused: banned or revoked" });
            return true;
        }
        let config = &self.config;
        let peer = self.peers.entry(from).or_insert_with(|| Peer::new(now));
        leak(peer, now, config.penalty_leak_per_sec);
        if peer.penalty > config.penalty_limit / 2.0 {
            // Rate limited: dropped unread, and a peer that keeps sending while limited
            // runs into the disconnect threshold.
            self.stats.rate_limited += 1;
            self.penalize(from, PENALTY_WHILE_LIMITED, now, "kept sending while rate limited", out);
            return true;
        }
        false
    }

    fn penalize(
        &mut self,
        from: NodeId,
        points: f64,
        now: Timestamp,
        reason: &'static str,
        out: &mut Vec<OutEvent>,
    ) {
        out.push(OutEvent::Misbehaved { peer: from, reason });
        let config = &self.config;
        let peer = self.peers.entry(from).or_insert_with(|| Peer::new(now));
        leak(peer, now, config.penalty_leak_per_sec);
        peer.penalty += points;
        if peer.penalty >= config.penalty_limit {
            self.peers.remove(&from);
            self.banned.insert(from, now.saturating_add(self.config.ban_duration));
            self.outstanding.retain(|_, o| o.peer != from);
            self.stats.peers_disconnected += 1;
            out.push(OutEvent::Disconnect { peer: from, reason });
        }
    }

    fn on_message<R: Rng>(
        &mut self,
        from: NodeId,
        message: Message,
        now: Timestamp,
        rng: &mut R,
        out: &mut Vec<OutEvent>,
    ) {
        match message {
            Message::Signals(signals) => self.on_signals(from, signals, now, rng, out),
            Message::Digest(digest) => {
                if digest.fleet != self.fleet {
                    self.stats.wrong_fleet += 1;
                    self.penalize(from, PENALTY_SEVERE, now, "digest for another fleet", out);
                    return;
                }
                self.on_digest(from, digest, now, out);
            }
            Message::Request(request) => self.on_request(from, request, out),
            Message::Membership(bytes) => out.push(OutEvent::Membership { from, bytes }),
            Message::Revocations(list) => {
                if list.verify(&self.fleet).is_err() {
                    self.stats.wrong_fleet += 1;
                    self.penalize(
                        from,
                        PENALTY_SEVERE,
                        now,
                        "revocation list not signed by the fleet admin",
                        out,
                    );
                    return;
                }
                self.adopt_revocations(list, out);
            }
            Message::RelayedJoin(request) => out.push(OutEvent::RelayedJoin { from, request }),
            Message::RelayedJoinReply { node, reply } => out.push(OutEvent::RelayedJoinReply { node, reply }),
            Message::Hello(_) | Message::Join(_) | Message::JoinReply(_) | Message::Central(_) => {
                // The shell consumes the one Hello (or join exchange) of a connection;
                // another, or a central-tier message, is a protocol error.
                self.stats.malformed += 1;
                self.penalize(from, PENALTY_SEVERE, now, "unexpected hello", out);
            }
        }
    }

    fn adopt_revocations(&mut self, list: RevocationList, out: &mut Vec<OutEvent>) {
        if list.serial <= self.revocations.serial || list.verify(&self.fleet).is_err() {
            return;
        }
        for peer in list.revoked.iter().filter(|p| self.peers.contains_key(p)).copied().collect::<Vec<_>>() {
            self.peers.remove(&peer);
            out.push(OutEvent::Disconnect { peer, reason: "revoked by the fleet admin" });
        }
        for peer in self.peers.keys() {
            out.push(OutEvent::Send { to: *peer, message: Message::Revocations(list.clone()) });
        }
        self.revocations = list.clone();
        out.push(OutEvent::Revocations(list));
    }

    /// Numbers the node's own new signals: drops (and counts) the invalid ones, gives the
    /// others consecutive sequence numbers. The shell may then sign them off the engine's
    /// thread with [`sign_own`] and hand them back as [`InEvent::PublishSigned`].
    pub fn number_own(&mut self, signals: Vec<Signal>) -> Vec<Signal> {
        let mut numbered = Vec::with_capacity(signals.len());
        for mut signal in signals {
            signal.origin = self.me;
            signal.seq = self.next_seq;
            if signal.validate().is_err() {
                // A bad local signal (empty scenario...) would be refused by every peer.
                self.stats.local_invalid += 1;
                continue;
            }
            self.next_seq += 1;
            numbered.push(signal);
        }
        numbered
    }

    fn publish<R: Rng>(
        &mut self,
        signals: Vec<Signal>,
        now: Timestamp,
        rng: &mut R,
        out: &mut Vec<OutEvent>,
    ) {
        let numbered = self.number_own(signals);
        let signed = sign_own(&self.key, numbered);
        self.publish_signed(signed, now, rng, out);
    }

    fn publish_signed<R: Rng>(
        &mut self,
        signed: Vec<SignedSignal>,
        now: Timestamp,
        rng: &mut R,
        out: &mut Vec<OutEvent>,
    ) {
        let me = self.me;
        let log = self.logs.entry(me).or_default();
        // Own signals not held yet: numbered here, or by the node itself (which keeps
        // its own gap-free numbering and outbox); numbers move past the highest seen.
        let signed: Vec<SignedSignal> =
            signed.into_iter().filter(|s| s.signal.origin == me && !log.holds(s.signal.seq)).collect();
        for s in &signed {
            log.held.insert(s.signal.seq, s.clone());
            self.next_seq = self.next_seq.max(s.signal.seq + 1);
        }
        log.advance();
        self.stats.signals_published += signed.len() as u64;
        self.prune_origin(me, now);
        self.push(signed, None, rng, out);
    }

    /// Pushes freshly accepted signals to `fanout` random peers (not `source`, and not
    /// to a peer whose digest says it has them).
    fn push<R: Rng>(
        &mut self,
        signals: Vec<SignedSignal>,
        source: Option<NodeId>,
        rng: &mut R,
        out: &mut Vec<OutEvent>,
    ) {
        if signals.is_empty() {
            return;
        }
        let fanout = if source.is_none() { self.config.origin_fanout } else { self.config.fanout };
        let candidates: Vec<NodeId> = self.peers.keys().filter(|p| Some(**p) != source).copied().collect();
        let chosen: Vec<NodeId> = candidates.choose_multiple(rng, fanout).copied().collect();
        for to in chosen {
            let Some(peer) = self.peers.get(&to) else { continue };
            // Not to a peer known to have it, nor back to its origin.
            let wanted: Vec<SignedSignal> = signals
                .iter()
                .filter(|s| s.signal.origin != to && !peer.knows(&s.signal.id()))
                .cloned()
                .collect();
            for chunk in chunks(wanted) {
                self.stats.signals_pushed += chunk.len() as u64;
                self.traffic.entry(to).or_default().signals_out += chunk.len() as u64;
                self.stats.messages_out += 1;
                out.push(OutEvent::Send { to, message: Message::Signals(chunk) });
            }
        }
    }

    fn epoch_ok(&self, epoch: Epoch, now: Timestamp) -> bool {
        let period = self.config.epoch_period_secs;
        let newest = Epoch::containing(now.saturating_add(self.config.max_clock_skew), period);
        let oldest = Epoch::containing(now.saturating_sub(self.config.max_clock_skew), period);
        epoch <= newest && epoch.0.saturating_add(self.config.accepted_past_epochs) >= oldest.0
    }

    fn on_signals<R: Rng>(
        &mut self,
        from: NodeId,
        signals: Vec<SignedSignal>,
        now: Timestamp,
        rng: &mut R,
        out: &mut Vec<OutEvent>,
    ) {
        let mut candidates = Vec::with_capacity(signals.len());
        let mut seen = HashSet::with_capacity(signals.len());
        let mut mild = 0usize;
        let mut severe = 0usize;
        let latest = now.saturating_add(self.config.max_clock_skew);
        for s in signals {
            let id = s.signal.id();
            let known = self.logs.get(&id.origin).map(|log| (log.holds(id.seq), log.held.get(&id.seq)));
            match known {
                Some((true, Some(held))) if *held != s => {
                    // Same id, other content: a forgery or an origin signing twice.
                    if s.verify().is_ok() {
                        self.stats.conflicting += 1;
                    } else {
                        self.stats.forged += 1;
                        severe += 1;
                    }
                    continue;
                }
                Some((true, _)) => {
                    self.stats.duplicates += 1;
                    continue;
                }
                _ => {}
            }
            if !seen.insert(id) {
                self.stats.duplicates += 1;
                continue;
            }
            if self.revocations.contains(&id.origin) {
                self.stats.revoked_origin += 1;
                continue;
            }
            if s.signal.observed_at > latest {
                self.stats.clock_skew += 1;
                mild += 1;
                continue;
            }
            if !self.epoch_ok(s.signal.epoch, now) {
                self.stats.unknown_epoch += 1;
                mild += 1;
                continue;
            }
            candidates.push(s);
        }
        if severe > 0 {
            self.penalize(from, PENALTY_SEVERE * severe as f64, now, "forged signals", out);
        }
        if mild > 0 {
            let reason = "signals from an unknown epoch or a skewed clock";
            self.penalize(from, PENALTY_MILD * mild as f64, now, reason, out);
        }
        if candidates.is_empty() {
            return;
        }
        if self.deferred_verification {
            out.push(OutEvent::Verify { from, signals: candidates });
        } else {
            let results = self.verifier.verify_batch(&candidates);
            self.accept(from, candidates, results, now, rng, out);
        }
    }

    /// Second half of receiving signals: keeps those whose signature verified.
    fn accept<R: Rng>(
        &mut self,
        from: NodeId,
        candidates: Vec<SignedSignal>,
        results: Vec<Result<(), VerifyError>>,
        now: Timestamp,
        rng: &mut R,
        out: &mut Vec<OutEvent>,
    ) {
        let mut severe = 0usize;
        let mut accepted = Vec::with_capacity(candidates.len());
        let mut touched = BTreeSet::new();
        for (i, s) in candidates.into_iter().enumerate() {
            // A missing result (a shell that lost count) counts as a failure.
            if !matches!(results.get(i), Some(Ok(()))) {
                self.stats.forged += 1;
                severe += 1;
                continue;
            }
            let origin = s.signal.origin;
            let log = self.logs.entry(origin).or_default();
            if log.holds(s.signal.seq) {
                // Accepted from another peer while this batch was being verified.
                self.stats.duplicates += 1;
                continue;
            }
            if s.signal.seq > log.high.saturating_add(1)
                && log.pending() >= self.config.max_pending_per_origin
            {
                self.stats.pending_overflow += 1;
                continue;
            }
            log.held.insert(s.signal.seq, s.clone());
            touched.insert(origin);
            accepted.push(s);
        }
        for origin in &touched {
            if let Some(log) = self.logs.get_mut(origin) {
                log.advance();
            }
            self.prune_origin(*origin, now);
        }
        if severe > 0 {
            self.penalize(from, PENALTY_SEVERE * severe as f64, now, "forged signals", out);
        }
        self.stats.signals_accepted += accepted.len() as u64;
        self.traffic.entry(from).or_default().signals_in += accepted.len() as u64;
        // The sender obviously has them: remember so we do not push them back.
        if let Some(peer) = self.peers.get_mut(&from) {
            for s in &accepted {
                let mark = peer.marks.entry(s.signal.origin).or_insert((1, 0));
                if s.signal.seq == mark.1 + 1 {
                    mark.1 = s.signal.seq;
                }
            }
        }
        // Continue a repair that this answer completed.
        for origin in touched {
            self.continue_repair(origin, now, out);
        }
        let delivered: Vec<SignedSignal> =
            accepted.iter().filter(|s| s.signal.origin != self.me).cloned().collect();
        if !delivered.is_empty() {
            self.stats.signals_delivered += delivered.len() as u64;
            out.push(OutEvent::Deliver(delivered));
        }
        self.push(accepted, Some(from), rng, out);
    }

    fn continue_repair(&mut self, origin: NodeId, now: Timestamp, out: &mut Vec<OutEvent>) {
        let Some(outstanding) = self.outstanding.get(&origin).copied() else { return };
        let high = self.logs.get(&origin).map_or(0, |l| l.high);
        if high < outstanding.to {
            return;
        }
        self.outstanding.remove(&origin);
        let settled = self.logs.get(&origin).map_or(0, |l| l.settled);
        let target =
            self.peers.get(&outstanding.peer).and_then(|p| p.marks.get(&origin)).map(|m| m.1.min(settled));
        if let Some(target) = target {
            if target > high {
                self.request(outstanding.peer, origin, high + 1, target, now, out);
            }
        }
    }

    fn request(
        &mut self,
        peer: NodeId,
        origin: NodeId,
        from: u64,
        to: u64,
        now: Timestamp,
        out: &mut Vec<OutEvent>,
    ) {
        let to = to.min(from.saturating_add(self.config.repair_batch - 1));
        self.outstanding.insert(origin, Outstanding { peer, to, at: now });
        self.stats.requests_sent += 1;
        self.stats.messages_out += 1;
        out.push(OutEvent::Send { to: peer, message: Message::Request(RangeRequest { origin, from, to }) });
    }

    fn on_digest(&mut self, from: NodeId, digest: Digest, now: Timestamp, out: &mut Vec<OutEvent>) {
        let theirs: BTreeMap<NodeId, (u64, u64)> =
            digest.marks.iter().map(|m| (m.origin, (m.floor, m.high))).collect();
        let first = match self.peers.get_mut(&from) {
            Some(peer) => {
                peer.marks = theirs.clone();
                !std::mem::replace(&mut peer.digested, true)
            }
            None => false,
        };
        // Pull what they have that we lack. Push gossip is usually already carrying the
        // newest signals, so only numbers claimed by some digest at least one
        // anti-entropy interval ago are asked for: repair does not race the pushes.
        let grace = self.config.anti_entropy_interval;
        for (origin, (floor, high)) in &theirs {
            if self.revocations.contains(origin) {
                continue;
            }
            let mine = self.logs.get(origin).map_or(0, |l| l.high);
            if *floor > mine + 1 {
                // Numbers below their floor are gone from them. Stop waiting for them,
                // unless another peer's digest says it still holds the next one.
                let elsewhere = self
                    .peers
                    .iter()
                    .filter(|(p, _)| **p != from)
                    .any(|(_, p)| p.marks.get(origin).is_some_and(|&(f, h)| f <= mine + 1 && h > mine));
                if !elsewhere {
                    self.logs.entry(*origin).or_default().raise_floor(*floor);
                }
            }
            let log = self.logs.entry(*origin).or_default();
            let settled = log.claim(*high, now, grace);
            if *origin == self.me && *high >= self.next_seq {
                // We lost our own state: never reuse numbers peers already hold.
                self.next_seq = high + 1;
            }
            let mine = log.high;
            let target = if first { *high } else { (*high).min(settled) };
            if target > mine {
                let busy = self
                    .outstanding
                    .get(origin)
                    .is_some_and(|o| now.since(o.at) < self.config.request_timeout);
                if !busy {
                    self.request(from, *origin, mine + 1, target, now, out);
                }
            }
        }
        // The sender lacks signals we hold: answer with our digest (at most once an
        // interval per peer), so that it pulls them now rather than when some peer's
        // random digest happens to reach it. Pull only doubles its chances this way;
        // its own settling rule still keeps repair from racing the pushes.
        let lacking = self
            .logs
            .iter()
            .any(|(origin, log)| log.high > 0 && theirs.get(origin).is_none_or(|&(_, high)| high < log.high));
        if lacking {
            if let Some(peer) = self.peers.get_mut(&from) {
                if peer.answered_at.is_none_or(|at| now.since(at) >= grace) {
                    peer.answered_at = Some(now);
                    self.stats.digests_sent += 1;
                    self.stats.messages_out += 1;
                    out.push(OutEvent::Send { to: from, message: Message::Digest(self.digest()) });
                }
            }
        }
    }

    fn on_request(&mut self, from: NodeId, request: RangeRequest, out: &mut Vec<OutEvent>) {
        let Some(log) = self.logs.get(&request.origin) else { return };
        let start = request.from.max(log.floor);
        let end = request.to.min(start.saturating_add(self.config.repair_batch - 1));
        if start > end {
            return;
        }
        let repair: Vec<SignedSignal> = log.held.range(start..=end).map(|(_, s)| s.clone()).collect();
        self.send_repair(from, repair, out);
    }

    fn send_repair(&mut self, to: NodeId, repair: Vec<SignedSignal>, out: &mut Vec<OutEvent>) {
        for chunk in chunks(repair) {
            self.stats.repair_signals_sent += chunk.len() as u64;
            self.traffic.entry(to).or_default().signals_out += chunk.len() as u64;
            self.stats.messages_out += 1;
            out.push(OutEvent::Send { to, message: Message::Signals(chunk) });
        }
    }

    fn digest(&self) -> Digest {
        Digest { fleet: self.fleet, marks: self.marks() }
    }

    fn tick<R: Rng>(&mut self, now: Timestamp, rng: &mut R, out: &mut Vec<OutEvent>) {
        self.banned.retain(|_, until| *until > now);
        let leak_rate = self.config.penalty_leak_per_sec;
        self.penalties.retain(|_, (points, at)| *points - now.since(*at).as_secs_f64() * leak_rate > 0.0);
        let timeout = self.config.request_timeout;
        self.outstanding.retain(|_, o| now.since(o.at) < timeout);
        let leak_rate = self.config.penalty_leak_per_sec;
        for peer in self.peers.values_mut() {
            leak(peer, now, leak_rate);
        }
        if now < self.next_digest_at {
            return;
        }
        self.next_digest_at = now.saturating_add(self.config.anti_entropy_interval);
        let origins: Vec<NodeId> = self.logs.keys().copied().collect();
        for origin in origins {
            self.prune_origin(origin, now);
        }
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        if let Some(peer) = peers.choose(rng) {
            self.stats.digests_sent += 1;
            self.stats.messages_out += 1;
            out.push(OutEvent::Send { to: *peer, message: Message::Digest(self.digest()) });
        }
    }

    /// Drops the oldest held signals beyond `retain_per_origin` or from expired epochs.
    fn prune_origin(&mut self, origin: NodeId, now: Timestamp) {
        let period = self.config.epoch_period_secs;
        let oldest = Epoch::containing(now.saturating_sub(self.config.max_clock_skew), period)
            .0
            .saturating_sub(self.config.accepted_past_epochs);
        let retain = self.config.retain_per_origin as u64;
        let Some(log) = self.logs.get_mut(&origin) else { return };
        let mut floor = log.floor;
        while floor <= log.high {
            let Some(s) = log.held.get(&floor) else { break };
            let too_many = log.high - floor + 1 > retain;
            if too_many || s.signal.epoch.0 < oldest {
                log.held.remove(&floor);
                floor += 1;
            } else {
                break;
            }
        }
        log.floor = floor;
    }
}

/// Signs signals numbered by [`Engine::number_own`] with the node's key, in Merkle
/// batches under one signature each. Pure and CPU-bound: the QUIC shell runs it on a
/// blocking thread.
pub fn sign_own(key: &NodeKey, numbered: Vec<Signal>) -> Vec<SignedSignal> {
    sign_batch(key, numbered)
}

fn leak(peer: &mut Peer, now: Timestamp, per_sec: f64) {
    let elapsed = now.since(peer.penalty_at).as_secs_f64();
    peer.penalty = (peer.penalty - elapsed * per_sec).max(0.0);
    peer.penalty_at = now;
}

/// Splits signals into messages under the envelope's count and size limits.
fn chunks(signals: Vec<SignedSignal>) -> Vec<Vec<SignedSignal>> {
    let budget = MAX_MESSAGE_BYTES - 64;
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for s in signals {
        let cost = s.encoded_len_bound();
        if !current.is_empty() && (current.len() == MAX_SIGNALS_PER_MESSAGE || size + cost > budget) {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += cost;
        current.push(s);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::{HashKey, HashedIp};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn signal(i: u32) -> Signal {
        let key = HashKey::derive(&[1; 32], Epoch::containing(T0, 86_400));
        Signal {
            origin: NodeId([0; 32]),
            seq: 0,
            epoch: Epoch::containing(T0, 86_400),
            hashed_ip: key.hash(std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8])),
            scenario: "palisade/ssh-bf".into(),
            confidence: 2,
            observed_at: T0,
            events_count: 5,
            sealed_ip: None,
        }
    }

    fn engine(seed: u8, admin: &NodeKey) -> Engine {
        let fleet = FleetId::of_admin(admin);
        Engine::new(
            NodeKey::from_bytes(&[seed; 32]),
            fleet,
            EngineConfig::default(),
            1,
            RevocationList::empty(fleet),
            T0,
        )
    }

    fn sends(out: &[OutEvent]) -> Vec<(NodeId, Message)> {
        out.iter()
            .filter_map(|e| match e {
                OutEvent::Send { to, message } => Some((*to, message.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn forged_duplicated_and_skewed_signals_are_counted_and_cut_off() {
        let admin = NodeKey::from_bytes(&[99; 32]);
        let mut a = engine(1, &admin);
        let mut b = engine(2, &admin);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        b.handle(InEvent::PeerUp(a.node_id()), T0, &mut rng);
        let out = a.handle(InEvent::PeerUp(b.node_id()), T0, &mut rng);
        assert_eq!(sends(&out).len(), 1, "a new peer gets a digest");
        let out = a.handle(InEvent::Publish((0..4).map(signal).collect()), T0, &mut rng);
        let (_, Message::Signals(good)) = &sends(&out)[0] else { panic!("expected signals") };
        assert_eq!(good.len(), 4);
        let bytes = Message::Signals(good.clone()).encode().unwrap();
        let out = b.handle(InEvent::Received { from: a.node_id(), bytes: bytes.clone() }, T0, &mut rng);
        let delivered: Vec<_> =
            out.iter().filter(|e| matches!(e, OutEvent::Deliver(s) if s.len() == 4)).collect();
        assert_eq!(delivered.len(), 1);
        // The same bytes again: duplicates, nothing delivered, no penalty.
        let out = b.handle(InEvent::Received { from: a.node_id(), bytes }, T0, &mut rng);
        assert!(!out.iter().any(|e| matches!(e, OutEvent::Deliver(_))));
        assert_eq!(b.stats().duplicates, 4);
        // A signal from the future beyond the skew: counted, not delivered.
        let mut future = signal(50);
        future.observed_at = T0.saturating_add(Duration::from_secs(3600));
        future.seq = 5;
        let future = future.sign(&NodeKey::from_bytes(&[1; 32]));
        let bytes = Message::Signals(vec![future]).encode().unwrap();
        b.handle(InEvent::Received { from: a.node_id(), bytes }, T0, &mut rng);
        assert_eq!(b.stats().clock_skew, 1);
        // An unknown epoch.
        let mut old = signal(51);
        old.epoch = Epoch(3);
        old.seq = 5;
        let bytes = Message::Signals(vec![old.sign(&NodeKey::from_bytes(&[1; 32]))]).encode().unwrap();
        b.handle(InEvent::Received { from: a.node_id(), bytes }, T0, &mut rng);
        assert_eq!(b.stats().unknown_epoch, 1);
        // Garbage frames: malformed, then rate limited, then cut off.
        let mut disconnected = false;
        for i in 0..40 {
            let out =
                b.handle(InEvent::Received { from: a.node_id(), bytes: vec![1, 0xff, i] }, T0, &mut rng);
            disconnected |= out.iter().any(|e| matches!(e, OutEvent::Disconnect { .. }));
        }
        assert!(b.stats().malformed >= 4, "{:?}", b.stats());
        assert!(b.stats().rate_limited > 0, "{:?}", b.stats());
        assert!(disconnected || b.banned_until(&a.node_id(), T0).is_some());
        // Forged signatures count as forged and also ban.
        let mut c = engine(3, &admin);
        let mut forged = good.clone();
        for s in &mut forged {
            s.signal.events_count += 1;
        }
        let bytes = Message::Signals(forged).encode().unwrap();
        let out = c.handle(InEvent::Received { from: a.node_id(), bytes }, T0, &mut rng);
        assert_eq!(c.stats().forged, 4);
        assert!(!out.iter().any(|e| matches!(e, OutEvent::Deliver(_))));
        assert_eq!(c.stats().signals_accepted, 0);
        // A same-id signal with other content is not accepted over the original.
        let mut twin = good[0].clone();
        twin.proof.signature[0] ^= 1;
        let bytes = Message::Signals(vec![twin]).encode().unwrap();
        b.banned.clear();
        b.peers.clear();
        b.handle(InEvent::Received { from: a.node_id(), bytes }, T0, &mut rng);
        assert_eq!(b.stats().forged, 1);
        // The banned sender is dropped at the door.
        let out = c.handle(InEvent::PeerUp(a.node_id()), T0, &mut rng);
        assert!(out.is_empty() || out.iter().any(|e| matches!(e, OutEvent::Disconnect { .. })));
    }

    #[test]
    fn deferred_verification_hands_out_and_takes_back_results() {
        let admin = NodeKey::from_bytes(&[99; 32]);
        let mut a = engine(1, &admin);
        let mut b = engine(2, &admin);
        b.defer_verification(true);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        a.handle(InEvent::PeerUp(b.node_id()), T0, &mut rng);
        let out = a.handle(InEvent::Publish((0..3).map(signal).collect()), T0, &mut rng);
        let (_, message) = sends(&out).pop().unwrap();
        let mut forged = message.clone();
        let Message::Signals(ref mut list) = forged else { panic!("expected signals") };
        list.truncate(1);
        list[0].signal.seq = 9;
        let bytes = message.encode().unwrap();
        let out = b.handle(InEvent::Received { from: a.node_id(), bytes }, T0, &mut rng);
        let [OutEvent::Verify { from, signals }] = out.as_slice() else {
            panic!("expected one Verify: {out:?}")
        };
        assert_eq!(signals.len(), 3);
        assert!(!b.holds(&signals[0].signal.id()), "nothing is kept before it is verified");
        let results = palisade_proto::signal::verify_batch(signals);
        let verified = InEvent::Verified { from: *from, signals: signals.clone(), results: results.clone() };
        let out = b.handle(verified, T0, &mut rng);
        assert!(out.iter().any(|e| matches!(e, OutEvent::Deliver(d) if d.len() == 3)));
        // The same results handed back twice deliver nothing twice.
        let out =
            b.handle(InEvent::Verified { from: *from, signals: signals.clone(), results }, T0, &mut rng);
        assert!(!out.iter().any(|e| matches!(e, OutEvent::Deliver(_))));
        // Failed (or missing) results count as forgeries.
        let bytes = forged.encode().unwrap();
        let out = b.handle(InEvent::Received { from: a.node_id(), bytes }, T0, &mut rng);
        let [OutEvent::Verify { signals, .. }] = out.as_slice() else {
            panic!("expected one Verify: {out:?}")
        };
        assert_eq!(signals.len(), 1);
        b.handle(
            InEvent::Verified { from: a.node_id(), signals: signals.clone(), results: vec![] },
            T0,
            &mut rng,
        );
        assert_eq!(b.stats().forged, 1);
    }

    #[test]
    fn penalties_survive_reconnection() {
        let admin = NodeKey::from_bytes(&[99; 32]);
        let mut a = engine(1, &admin);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let bad = NodeId([9; 32]);
        a.handle(InEvent::PeerUp(bad), T0, &mut rng);
        for i in 0..4 {
            a.handle(InEvent::Received { from: bad, bytes: vec![1, 0xff, i] }, T0, &mut rng);
        }
        a.handle(InEvent::PeerDown(bad), T0, &mut rng);
        a.handle(InEvent::PeerUp(bad), T0, &mut rng);
        // 40 points kept: two more malformed frames pass the rate limit (50), so the
        // third is dropped unread. A fresh peer would be at 30 points and not limited.
        for i in 0..3 {
            a.handle(InEvent::Received { from: bad, bytes: vec![1, 0xff, i] }, T0, &mut rng);
        }
        assert_eq!(a.stats().malformed, 6, "{:?}", a.stats());
        assert_eq!(a.stats().rate_limited, 1, "{:?}", a.stats());
    }

    #[test]
    fn wrong_fleet_digest_is_refused_and_bad_config_names_its_key() {
        let admin = NodeKey::from_bytes(&[99; 32]);
        let mut a = engine(1, &admin);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let digest = Digest { fleet: FleetId([5; 32]), marks: vec![] };
        let bytes = Message::Digest(digest).encode().unwrap();
        let out = a.handle(InEvent::Received { from: NodeId([9; 32]), bytes }, T0, &mut rng);
        assert_eq!(a.stats().wrong_fleet, 1);
        assert!(sends(&out).is_empty());
        let config = EngineConfig { fanout: 0, ..EngineConfig::default() };
        assert_eq!(config.validate().unwrap_err().to_string(), "gossip.fanout: must be at least 1");
        assert!(EngineConfig::default().validate().is_ok());
    }

    #[test]
    fn chunks_respect_the_envelope_limits() {
        let key = NodeKey::from_bytes(&[4; 32]);
        let many: Vec<_> = (1..=3000u32)
            .map(|i| {
                let mut s = signal(i);
                s.seq = u64::from(i);
                s.scenario = "x".repeat(128);
                s.hashed_ip = HashedIp([7; 32]);
                s.sign(&key)
            })
            .collect();
        let parts = chunks(many);
        assert!(parts.len() > 3);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 3000);
        for p in parts {
            Message::Signals(p).encode().unwrap();
        }
    }
}
