//! Durable state behind a narrow trait: decisions, repeat-offence history, source
//! checkpoints and the signal outbox.
//!
//! Everything one batch of lines produces (its decisions, its signals, the source
//! position after it) is written in one atomic [`Commit`], so a crash at any instant
//! leaves the store either before or after the batch, never in between: no line is lost
//! or read twice, and no decision is half-written. The node's implementation is RocksDB;
//! [`MemStore`] is the in-memory one for tests, with a fault switch, and both pass
//! [`conformance`].

use palisade_proto::{SignedSignal, Timestamp};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::decision::{Changes, StoredDecisions};
use crate::event::Checkpoint;

/// A storage failure, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// One atomic write.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Decision changes from the engine.
    pub decisions: Changes,
    /// The highest decision id issued, so ids are never reused after a purge.
    pub last_decision_id: Option<u64>,
    /// Source positions reached.
    pub checkpoints: Vec<Checkpoint>,
    /// Signals to append to the outbox (their sequence numbers are their keys).
    pub signals: Vec<SignedSignal>,
    /// Drop outbox signals with a sequence number below this.
    pub prune_outbox_below: Option<u64>,
}

impl Commit {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
            && self.last_decision_id.is_none()
            && self.checkpoints.is_empty()
            && self.signals.is_empty()
            && self.prune_outbox_below.is_none()
    }
}

/// Durable node state.
pub trait Store: Send + Sync + 'static {
    /// Everything the decision engine needs at start.
    fn load_decisions(&self) -> Result<StoredDecisions, StoreError>;
    /// A source's saved position.
    fn load_cursor(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `commit` atomically.
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;
    /// Outbox signals with sequence numbers `>= from`, at most `limit`, in order.
    fn outbox(&self, from: u64, limit: usize) -> Result<Vec<SignedSignal>, StoreError>;
    /// The highest sequence number in the outbox (0 when empty and never used).
    fn last_signal_seq(&self) -> Result<u64, StoreError>;
}

/// In-memory store for tests.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<MemInner>,
    fail_commits: AtomicBool,
}

#[derive(Debug, Default, Clone)]
struct MemInner {
    decisions: BTreeMap<u64, palisade_proto::Decision>,
    offences: BTreeMap<String, Vec<Timestamp>>,
    last_id: u64,
    cursors: BTreeMap<String, Vec<u8>>,
    outbox: BTreeMap<u64, SignedSignal>,
    last_seq: u64,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        MemStore::default()
    }

    /// Makes every following commit fail (true) or succeed again (false).
    pub fn fail_commits(&self, fail: bool) {
        self.fail_commits.store(fail, Ordering::SeqCst);
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemInner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError("memory store lock poisoned".into()))
    }
}

impl Store for MemStore {
    fn load_decisions(&self) -> Result<StoredDecisions, StoreError> {
        let inner = self.lock()?;
        Ok(StoredDecisions {
            decisions: inner.decisions.values().cloned().collect(),
            offences: inner.offences.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            last_id: inner.last_id,
        })
    }

    fn load_cursor(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.cursors.get(key).cloned())
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(StoreError("injected failure".into()));
        }
        let mut inner = self.lock()?;
        // Build the new state aside and swap it in: all or nothing.
        let mut next = inner.clone();
        for id in &commit.decisions.removed {
            next.decisions.remove(id);
        }
        for d in &commit.decisions.upserts {
            next.decisions.insert(d.id, d.clone());
        }
        for (value, times) in &commit.decisions.offences {
            if times.is_empty() {
                next.offences.remove(value);
            } else {
                next.offences.insert(value.clone(), times.clone());
            }
        }
        if let Some(id) = commit.last_decision_id {
            next.last_id = next.last_id.max(id);
        }
        for c in &commit.checkpoints {
            next.cursors.insert(c.key.clone(), c.value.clone());
        }
        for s in &commit.signals {
            next.last_seq = next.last_seq.max(s.signal.seq);
            next.outbox.insert(s.signal.seq, s.clone());
        }
        if let Some(below) = commit.prune_outbox_below {
            next.outbox = next.outbox.split_off(&below);
        }
        *inner = next;
        Ok(())
    }

    fn outbox(&self, from: u64, limit: usize) -> Result<Vec<SignedSignal>, StoreError> {
        Ok(self.lock()?.outbox.range(from..).take(limit).map(|(_, s)| s.clone()).collect())
    }

    fn last_signal_seq(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.last_seq)
    }
}

/// The behaviour every [`Store`] must have. Implementations call [`conformance::run`]
/// from their tests with a function that opens the store at a given state directory,
/// so that durability across reopening is checked too.
#[doc(hidden)]
pub mod conformance {
    use super::*;
    use crate::decision::Changes;
    use palisade_proto::{Decision, DecisionType, Epoch, HashedIp, NodeKey, Origin, Scope, Signal};

    fn decision(id: u64, value: &str) -> Decision {
        Decision {
            id,
            uuid: palisade_proto::Uuid::from_random(u128::from(id).to_be_bytes()),
            origin: Origin::Palisade,
            kind: DecisionType::Ban,
            scope: Scope::Ip,
            value: value.into(),
            created_at: Timestamp(1_000),
            until: Timestamp(1_000 + 4 * 3_600_000),
            scenario: "palisade/ssh-bf".into(),
            simulated: false,
        }
    }

    /// A signed signal of `key` with sequence number `seq`, for store tests.
    pub fn signal(key: &NodeKey, seq: u64) -> SignedSignal {
        Signal {
            origin: key.node_id(),
            seq,
            epoch: Epoch(1),
            hashed_ip: HashedIp([seq as u8; 32]),
            scenario: "palisade/ssh-bf".into(),
            confidence: 3,
            observed_at: Timestamp(5),
            events_count: 6,
            sealed_ip: None,
        }
        .sign(key)
    }

    /// Runs every check. `open` opens (or reopens) the store kept in `dir`; the previous
    /// handle is dropped before each reopening.
    pub fn run<S: Store>(dir: &std::path::Path, open: impl Fn(&std::path::Path) -> S) {
        let key = NodeKey::from_bytes(&[9; 32]);
        let store = open(dir);
        let empty = store.load_decisions().expect("load");
        assert!(empty.decisions.is_empty() && empty.offences.is_empty() && empty.last_id == 0);
        assert_eq!(store.load_cursor("file:/x").expect("cursor"), None);
        assert_eq!(store.last_signal_seq().expect("seq"), 0);
        assert!(Commit::default().is_empty());

        let first = Commit {
            decisions: Changes {
                upserts: vec![decision(1, "198.51.100.1"), decision(2, "2001:db8::1")],
                removed: vec![],
                offences: vec![("198.51.100.1".into(), vec![Timestamp(1_000)])],
            },
            last_decision_id: Some(2),
            checkpoints: vec![Checkpoint { key: "file:/x".into(), value: b"pos-1".to_vec() }],
            signals: (1..=3).map(|s| signal(&key, s)).collect(),
            prune_outbox_below: None,
        };
        store.commit(&first).expect("commit");
        let mut second = Commit::default();
        second.decisions.removed.push(1);
        let mut ended = decision(2, "2001:db8::1");
        ended.until = Timestamp(2_000);
        second.decisions.upserts.push(ended.clone());
        second.decisions.offences.push(("198.51.100.1".into(), vec![]));
        second.checkpoints.push(Checkpoint { key: "file:/x".into(), value: b"pos-2".to_vec() });
        second.signals.push(signal(&key, 4));
        second.prune_outbox_below = Some(2);
        store.commit(&second).expect("commit");
        drop(store);

        let store = open(dir);
        let loaded = store.load_decisions().expect("load");
        assert_eq!(loaded.decisions, vec![ended]);
        assert!(loaded.offences.is_empty());
        assert_eq!(loaded.last_id, 2, "last id survives removal");
        assert_eq!(store.load_cursor("file:/x").expect("cursor"), Some(b"pos-2".to_vec()));
        let outbox = store.outbox(0, 10).expect("outbox");
        assert_eq!(outbox.iter().map(|s| s.signal.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(outbox[0], signal(&key, 2));
        assert_eq!(store.outbox(3, 1).expect("outbox").len(), 1);
        assert_eq!(store.last_signal_seq().expect("seq"), 4);
        // Pruning the whole outbox must not let sequence numbers restart.
        store.commit(&Commit { prune_outbox_below: Some(100), ..Commit::default() }).expect("prune");
        drop(store);
        let store = open(dir);
        assert!(store.outbox(0, 10).expect("outbox").is_empty());
        assert_eq!(store.last_signal_seq().expect("seq"), 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_store_conforms() {
        let shared = std::sync::Arc::new(MemStore::new());
        struct Shared(std::sync::Arc<MemStore>);
        impl Store for Shared {
            fn load_decisions(&self) -> Result<StoredDecisions, StoreError> {
                self.0.load_decisions()
            }
            fn load_cursor(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
                self.0.load_cursor(key)
            }
            fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
                self.0.commit(commit)
            }
            fn outbox(&self, from: u64, limit: usize) -> Result<Vec<SignedSignal>, StoreError> {
                self.0.outbox(from, limit)
            }
            fn last_signal_seq(&self) -> Result<u64, StoreError> {
                self.0.last_signal_seq()
            }
        }
        conformance::run(std::path::Path::new("."), |_| Shared(shared.clone()));
    }

    #[test]
    fn failed_commit_changes_nothing() {
        let store = MemStore::new();
        store.fail_commits(true);
        let mut c = Commit::default();
        c.checkpoints.push(Checkpoint { key: "k".into(), value: vec![1] });
        assert!(store.commit(&c).is_err());
        store.fail_commits(false);
        assert_eq!(store.load_cursor("k").unwrap(), None);
    }
}
