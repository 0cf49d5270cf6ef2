//! A deterministic in-memory network of [`Engine`]s, for tests and fleet-scale
//! simulations.
//!
//! Every message is encoded and decoded exactly as on the wire, frames over the size
//! limit are refused as the QUIC shell refuses them, and links can lose, duplicate,
//! delay (and so reorder) messages or be cut. One seed drives every random choice, so a
//! run is reproduced exactly by its seed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use palisade_proto::{FleetId, Message, NodeId, NodeKey, RevocationList, Signal, SignalId, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::engine::{Engine, EngineConfig, InEvent, OutEvent};

/// How links misbehave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Shortest delivery delay.
    pub min_latency: Duration,
    /// Longest delivery delay (a spread reorders messages).
    pub max_latency: Duration,
}

impl Faults {
    /// A perfect network with 1 ms latency.
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        min_latency: Duration::from_millis(1),
        max_latency: Duration::from_millis(1),
    };
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// Its engine.
    pub engine: Engine,
    /// Signals delivered to it, with how many times each was delivered.
    pub delivered: BTreeMap<SignalId, u32>,
    /// When each signal was first delivered.
    pub delivered_at: BTreeMap<SignalId, Timestamp>,
    /// Whether it is running (a stopped node neither ticks nor receives).
    pub up: bool,
    /// Peers it cut off.
    pub disconnected: BTreeSet<NodeId>,
    key: NodeKey,
}

/// The largest frame the network carries (as the QUIC shell's default).
const MAX_FRAME: usize = palisade_proto::envelope::MAX_MESSAGE_BYTES;

/// A simulated fleet.
#[derive(Debug)]
pub struct SimNetwork {
    /// The nodes, by index.
    pub nodes: Vec<SimNode>,
    /// Current simulated time.
    pub now: Timestamp,
    /// Current link behaviour.
    pub faults: Faults,
    fleet: FleetId,
    config: EngineConfig,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<(Timestamp, u64, usize, usize)>>,
    payloads: BTreeMap<u64, Vec<u8>>,
    next_id: u64,
    cut: BTreeSet<(usize, usize)>,
    index: BTreeMap<NodeId, usize>,
    /// Messages sent, lost, duplicated.
    pub sent: u64,
    /// Messages lost to faults or cuts.
    pub lost: u64,
}

impl SimNetwork {
    /// `n` nodes, all connected to each other, starting at `start`.
    pub fn new(seed: u64, n: usize, config: EngineConfig, faults: Faults, start: Timestamp) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let admin = NodeKey::from_bytes(&rng.gen());
        let fleet = FleetId::of_admin(&admin);
        let mut net = SimNetwork {
            nodes: Vec::new(),
            now: start,
            faults,
            fleet,
            config,
            rng,
            queue: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            next_id: 0,
            cut: BTreeSet::new(),
            index: BTreeMap::new(),
            sent: 0,
            lost: 0,
        };
        for _ in 0..n {
            net.add_node();
        }
        net
    }

    /// Adds a fresh node, connected to every running node; returns its index.
    pub fn add_node(&mut self) -> usize {
        let key = NodeKey::from_bytes(&self.rng.gen());
        let mut engine = Engine::new(
            key.clone(),
            self.fleet,
            self.config.clone(),
            1,
            RevocationList::empty(self.fleet),
            self.now,
        );
        let id = engine.node_id();
        let i = self.nodes.len();
        // Odd nodes verify the way the QUIC shell does (deferred), even ones inline.
        engine.defer_verification(i % 2 == 1);
        self.nodes.push(SimNode {
            engine,
            delivered: BTreeMap::new(),
            delivered_at: BTreeMap::new(),
            up: true,
            disconnected: BTreeSet::new(),
            key,
        });
        self.index.insert(id, i);
        for j in 0..i {
            let other = self.nodes[j].engine.node_id();
            self.apply(i, InEvent::PeerUp(other));
            self.apply(j, InEvent::PeerUp(id));
        }
        i
    }

    /// The id of node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].engine.node_id()
    }

    /// Node `i` publishes `signals`; returns their ids.
    pub fn publish(&mut self, i: usize, signals: Vec<Signal>) -> Vec<SignalId> {
        let origin = self.id(i);
        let first = self.nodes[i].engine.next_seq();
        let n = signals.len() as u64;
        self.apply(i, InEvent::Publish(signals));
        let last = self.nodes[i].engine.next_seq();
        debug_assert_eq!(last - first, n);
        (first..last).map(|seq| SignalId { origin, seq }).collect()
    }

    /// Cuts every link between nodes of different groups (nodes in no group are cut from
    /// all). Each side sees the other go down, as QUIC idle timeouts would report.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) && self.cut.insert((a, b))
                {
                    let peer = self.id(b);
                    self.apply(a, InEvent::PeerDown(peer));
                }
            }
        }
    }

    /// Restores every link; the nodes of each restored link see each other come up.
    pub fn heal(&mut self) {
        let cut = std::mem::take(&mut self.cut);
        for (a, b) in cut {
            let peer = self.id(b);
            self.apply(a, InEvent::PeerUp(peer));
        }
    }

    /// Stops or restarts node `i` (its state is kept, as after a pause or a network outage).
    pub fn set_up(&mut self, i: usize, up: bool) {
        self.nodes[i].up = up;
    }

    /// Restarts node `i` with its state lost except its persisted `next_seq`, as after a
    /// crash: its peers see it go down and come back.
    pub fn restart(&mut self, i: usize) {
        let next_seq = self.nodes[i].engine.next_seq();
        let key = self.nodes[i].key.clone();
        let mut engine = Engine::new(
            key,
            self.fleet,
            self.config.clone(),
            next_seq,
            RevocationList::empty(self.fleet),
            self.now,
        );
        engine.defer_verification(i % 2 == 1);
        self.nodes[i].engine = engine;
        self.nodes[i].delivered.clear();
        self.nodes[i].delivered_at.clear();
        let id = self.id(i);
        for j in (0..self.nodes.len()).filter(|j| *j != i) {
            let other = self.id(j);
            self.apply(j, InEvent::PeerDown(id));
            self.apply(j, InEvent::PeerUp(id));
            self.apply(i, InEvent::PeerUp(other));
        }
    }

    /// Hands an event to node `i` and routes what it asks for.
    pub fn apply(&mut self, i: usize, event: InEvent) {
        let now = self.now;
        let out = self.nodes[i].engine.handle(event, now, &mut self.rng);
        for event in out {
            match event {
                OutEvent::Send { to, message } => self.send(i, to, &message),
                OutEvent::Deliver(signals) => {
                    for s in signals {
                        *self.nodes[i].delivered.entry(s.signal.id()).or_default() += 1;
                        self.nodes[i].delivered_at.entry(s.signal.id()).or_insert(now);
                    }
                }
                OutEvent::Disconnect { peer, .. } => {
                    self.nodes[i].disconnected.insert(peer);
                }
                OutEvent::Verify { from, signals } => {
                    let results = palisade_proto::signal::verify_batch(&signals);
                    self.apply(i, InEvent::Verified { from, signals, results });
                }
                OutEvent::Membership { .. }
                | OutEvent::Revocations(_)
                | OutEvent::Misbehaved { .. }
                | OutEvent::RelayedJoin { .. }
                | OutEvent::RelayedJoinReply { .. } => {}
            }
        }
    }

    /// Injects raw bytes into node `to` as if sent by `from` (which need not be a node).
    pub fn inject(&mut self, from: NodeId, to: usize, bytes: Vec<u8>) {
        self.apply(to, InEvent::Received { from, bytes });
    }

    fn send(&mut self, from: usize, to: NodeId, message: &Message) {
        let Some(&to) = self.index.get(&to) else { return };
        let Ok(bytes) = message.encode() else { return };
        self.sent += 1;
        if self.cut.contains(&(from, to)) || self.rng.gen_bool(self.faults.loss) {
            self.lost += 1;
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let min = self.faults.min_latency.as_millis() as u64;
            let max = self.faults.max_latency.as_millis().max(min as u128) as u64;
            let delay = Duration::from_millis(self.rng.gen_range(min..=max));
            let id = self.next_id;
            self.next_id += 1;
            self.payloads.insert(id, bytes.clone());
            self.queue.push(Reverse((self.now.saturating_add(delay), id, from, to)));
        }
    }

    /// Advances time by `step`: delivers every message due by then, in order, then ticks
    /// every running node once.
    pub fn step(&mut self, step: Duration) {
        let until = self.now.saturating_add(step);
        while let Some(Reverse((at, id, from, to))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            let Some(bytes) = self.payloads.remove(&id) else { continue };
            self.now = self.now.max(at);
            if !self.nodes[to].up || !self.nodes[from].up {
                self.lost += 1;
                continue;
            }
            let sender = self.id(from);
            if bytes.len() > MAX_FRAME {
                self.apply(to, InEvent::Oversized { from: sender, len: bytes.len() as u64 });
            } else {
                self.apply(to, InEvent::Received { from: sender, bytes });
            }
        }
        self.now = until;
        for i in 0..self.nodes.len() {
            if self.nodes[i].up {
                self.apply(i, InEvent::Tick);
            }
        }
    }

    /// Whether every running node holds every signal of `ids`.
    pub fn converged(&self, ids: &BTreeSet<SignalId>) -> bool {
        self.nodes.iter().filter(|n| n.up).all(|n| ids.iter().all(|id| n.engine.holds(id)))
    }

    /// How many of `ids` node `i` is missing.
    pub fn missing(&self, i: usize, ids: &BTreeSet<SignalId>) -> usize {
        ids.iter().filter(|id| !self.nodes[i].engine.holds(id)).count()
    }

    /// Messages still in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Draws from the network's generator (so that a test's own choices follow the seed).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}
