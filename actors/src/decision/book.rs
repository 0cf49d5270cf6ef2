//! The in-memory set of decisions a node knows: active ones, indexed by key and by
//! network, and recently ended ones ("tombstones") kept so that bouncers polling the
//! stream learn about deletions.
//!
//! Ids only grow. Extending a decision replaces it with a new id (the old one vanishes
//! without a tombstone, since its value stays banned), so "what is new for this bouncer"
//! is simply "ids above its cursor".

use palisade_proto::{Decision, DecisionType, Scope, Timestamp};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::index::NetIndex;
use super::slab::IdSlab;
use ipnet::IpNet;

/// A [`DecisionBook`] shared between its one writer (the decision engine) and any
/// number of readers. Writes are short (map inserts), so readers wait little.
#[derive(Debug, Clone, Default)]
pub struct SharedBook(Arc<RwLock<DecisionBook>>);

impl SharedBook {
    /// Shares `book`.
    pub fn new(book: DecisionBook) -> Self {
        SharedBook(Arc::new(RwLock::new(book)))
    }

    /// Reads. A panic in another holder cannot corrupt the book (every write is a
    /// complete map operation), so a poisoned lock is still read.
    pub fn read(&self) -> RwLockReadGuard<'_, DecisionBook> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes (the engine only).
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, DecisionBook> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What makes two decisions "the same": one active decision per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecisionKey {
    /// The scope.
    pub scope: Scope,
    /// The canonical value.
    pub value: compact_str::CompactString,
    /// The remediation.
    pub kind: DecisionType,
}

impl DecisionKey {
    /// The key of `d`.
    pub fn of(d: &Decision) -> Self {
        DecisionKey { scope: d.scope.clone(), value: d.value.clone(), kind: d.kind.clone() }
    }
}

/// Active decisions and tombstones.
///
/// The active decision of a key is found through the network index for `Ip` and `Range`
/// decisions (nearly all of them), so no per-decision copy of the key is kept; decisions
/// of other scopes (`Country`, `AS`, ...) have a map of their own.
#[derive(Debug, Default)]
pub struct DecisionBook {
    by_id: IdSlab,
    /// Active decisions of scopes that are not networks.
    others: HashMap<DecisionKey, u64>,
    /// Active decisions by end time.
    expiring: BTreeSet<(Timestamp, u64)>,
    /// Ended decisions by end time, until they are purged.
    ended: BTreeSet<(Timestamp, u64)>,
    nets: NetIndex,
}

impl DecisionBook {
    /// Rebuilds a book from stored decisions. Those already ended become tombstones.
    pub fn from_stored(decisions: impl IntoIterator<Item = Decision>, now: Timestamp) -> Self {
        let mut book = DecisionBook::default();
        let mut all: Vec<Decision> = decisions.into_iter().collect();
        all.sort_by_key(|d| d.id);
        for d in all {
            if d.is_active(now) {
                // Two active decisions for one key can only come from a crash between
                // writes; keep the newest.
                if let Some(old) = book.active_id(&DecisionKey::of(&d)) {
                    book.remove(old);
                }
                book.insert_active(d);
            } else {
                book.ended.insert((d.until, d.id));
                book.by_id.insert(d);
            }
        }
        book
    }

    fn insert_active(&mut self, d: Decision) {
        self.expiring.insert((d.until, d.id));
        match d.target() {
            Some(net) => self.nets.insert(&net, d.id),
            None => {
                self.others.insert(DecisionKey::of(&d), d.id);
            }
        }
        self.by_id.insert(d);
    }

    /// Stops indexing `d` as active.
    fn unindex(&mut self, d: &Decision) {
        match d.target() {
            Some(net) => self.nets.remove(&net, d.id),
            None => {
                let key = DecisionKey::of(d);
                if self.others.get(&key) == Some(&d.id) {
                    self.others.remove(&key);
                }
            }
        }
    }

    /// The id of the active decision on `key`.
    fn active_id(&self, key: &DecisionKey) -> Option<u64> {
        match palisade_proto::decision::parse_target(&key.scope, &key.value) {
            Ok(net) => {
                self.nets.exact(&net).into_iter().find(|id| {
                    self.by_id.get(*id).is_some_and(|d| d.scope == key.scope && d.kind == key.kind)
                })
            }
            Err(_) => self.others.get(key).copied(),
        }
    }

    /// Adds a new active decision (its id must be unused).
    pub fn insert(&mut self, d: Decision) {
        if let Some(old) = self.active_id(&DecisionKey::of(&d)) {
            self.remove(old);
        }
        self.insert_active(d);
    }

    /// Removes a decision entirely (no tombstone). Returns it.
    pub fn remove(&mut self, id: u64) -> Option<Decision> {
        let d = self.by_id.remove(id)?;
        if self.expiring.remove(&(d.until, id)) {
            self.unindex(&d);
        }
        self.ended.remove(&(d.until, id));
        Some(d)
    }

    /// Ends an active decision at `now` (an operator deleted it): it becomes a tombstone
    /// with `until = now`. Returns the updated decision.
    pub fn end(&mut self, id: u64, now: Timestamp) -> Option<Decision> {
        let d = self.by_id.get(id)?;
        if !self.expiring.contains(&(d.until, id)) {
            return None;
        }
        let mut d = self.remove(id)?;
        d.until = now.min(d.until);
        self.ended.insert((d.until, d.id));
        self.by_id.insert(d.clone());
        Some(d)
    }

    /// Moves decisions whose time is up to the tombstones. Returns them.
    pub fn expire(&mut self, now: Timestamp) -> Vec<Decision> {
        let due: Vec<(Timestamp, u64)> = self.expiring.range(..=(now, u64::MAX)).copied().collect();
        let mut out = Vec::with_capacity(due.len());
        for (until, id) in due {
            self.expiring.remove(&(until, id));
            if let Some(d) = self.by_id.get(id).cloned() {
                self.unindex(&d);
                self.ended.insert((until, id));
                out.push(d);
            }
        }
        out
    }

    /// Forgets tombstones that ended more than `retention` before `now`. Returns their ids.
    pub fn purge(&mut self, now: Timestamp, retention: Duration) -> Vec<u64> {
        let horizon = now.saturating_sub(retention);
        let old: Vec<(Timestamp, u64)> = self.ended.range(..(horizon, 0)).copied().collect();
        old.into_iter()
            .map(|(until, id)| {
                self.ended.remove(&(until, id));
                self.by_id.remove(id);
                id
            })
            .collect()
    }

    /// The active decision for `key`.
    pub fn active(&self, key: &DecisionKey) -> Option<&Decision> {
        self.by_id.get(self.active_id(key)?)
    }

    /// A decision by id, active or ended.
    pub fn get(&self, id: u64) -> Option<&Decision> {
        self.by_id.get(id)
    }

    /// Whether `id` is active.
    pub fn is_active(&self, id: u64) -> bool {
        self.by_id.get(id).is_some_and(|d| self.expiring.contains(&(d.until, id)))
    }

    /// Active decisions, by id.
    pub fn iter_active(&self) -> impl Iterator<Item = &Decision> {
        self.by_id.values().filter(|d| self.expiring.contains(&(d.until, d.id)))
    }

    /// Decisions (active or ended) with ids above `after`, by id.
    pub fn after_id(&self, after: u64) -> impl Iterator<Item = &Decision> {
        let from = after.checked_add(1);
        from.into_iter().flat_map(|from| self.by_id.starting_at(from))
    }

    /// Decisions that ended, or whose time is up although [`expire`](Self::expire) has
    /// not moved them yet, with `(until, id)` above `after` and `until <= upto`, ordered
    /// by `(until, id)`: what a bouncer must remove, in pages.
    pub fn ending_after(&self, after: (Timestamp, u64), upto: Timestamp) -> impl Iterator<Item = &Decision> {
        let end = (upto, u64::MAX);
        let bounds = (Bound::Excluded(after), Bound::Included(end));
        let valid = after < end;
        let mut ended = valid.then(|| self.ended.range(bounds)).into_iter().flatten().peekable();
        let mut due = valid.then(|| self.expiring.range(bounds)).into_iter().flatten().peekable();
        std::iter::from_fn(move || match (ended.peek(), due.peek()) {
            (Some(a), Some(b)) if a <= b => ended.next(),
            (Some(_), Some(_)) | (None, Some(_)) => due.next(),
            (Some(_), None) => ended.next(),
            (None, None) => None,
        })
        .filter_map(|(_, id)| self.by_id.get(*id))
    }

    /// Active decisions whose network contains `ip`.
    pub fn containing(&self, ip: IpAddr) -> impl Iterator<Item = &Decision> {
        self.nets.containing(ip).into_iter().filter_map(|id| self.by_id.get(id))
    }

    /// Active decisions whose network contains all of `net`.
    pub fn containing_net(&self, net: &IpNet) -> impl Iterator<Item = &Decision> {
        self.nets.containing_net(net).into_iter().filter_map(|id| self.by_id.get(id))
    }

    /// Active decisions whose network lies inside `net`.
    pub fn contained_in(&self, net: &IpNet) -> impl Iterator<Item = &Decision> {
        self.nets.contained_in(net).into_iter().filter_map(|id| self.by_id.get(id))
    }

    /// Number of active decisions.
    pub fn active_len(&self) -> usize {
        self.expiring.len()
    }

    /// Number of tombstones.
    pub fn ended_len(&self) -> usize {
        self.ended.len()
    }

    /// The largest id ever held (0 when empty).
    pub fn max_id(&self) -> u64 {
        self.by_id.max_id().unwrap_or(0)
    }
}
