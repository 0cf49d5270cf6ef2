//! The scenario engine: leaky buckets fed by events, with CEL filters.
//!
//! [`Scenarios`] is the compiled, immutable detection content (`hub/scenarios/*.yaml` and
//! the `hub/data/` lists they use), shared behind an `Arc`. [`Buckets`] is the mutable
//! state of one engine: events are poured in, [`Overflow`]s come out. It does no I/O and
//! reads no clock: time comes only from the events and from [`Buckets::advance`], so a
//! replay of a file and live tailing of the same lines give the same overflows.
//!
//! Semantics are CrowdSec's (`pkg/leakybucket`): a leaky bucket starts with `capacity`
//! tokens and gets one back every `leakspeed`; the event that finds no token (the
//! capacity+1-th of a burst) overflows, and the bucket is then destroyed; a bucket idle
//! for (capacity+1) x leakspeed is freed (underflow). `trigger` buckets overflow on every
//! event; `counter` buckets overflow `duration` after their first event with the count.
//! `distinct` drops duplicate values before they are poured; `blackhole` drops the
//! overflows of a key for a while after one.
//!
//! Speed: at load time every filter is analysed for a field equality it requires
//! (`evt.meta.log_type == "ssh_failed-auth"`), and scenarios are indexed by it, so an
//! event only reaches the scenarios that can match it; expressions are lowered to a
//! native evaluator (see [`expr`] for the subset and the shared semantics), and the
//! rest run on `cel-interpreter` with one context per event.
//!
//! Memory is bounded: the number of live buckets is capped (attackers choose the keys);
//! when the cap is reached the bucket closest to expiry is evicted and counted.
//!
//! The per-event path allocates nothing once warm (new buckets aside): routing is one
//! table lookup per combination of routed field values; every field is read from the
//! event at most once ([`expr::FieldCache`]); a `groupby` shared by several scenarios
//! is evaluated into a reused buffer and hashed once, and that hash finds the bucket in
//! every scenario's table (`hashbrown::HashTable`, keyed by a randomly seeded
//! `foldhash`); expiry entries carry (scenario, generation, hash), not the key.

mod data;
mod expr;
mod spec;

pub use spec::{BucketType, ScenarioInfo};

use crate::event::{Event, Overflow};
use crate::hub::{HubError, HubFile};
use cel_interpreter::Context;
use data::DataLists;
use expr::{CelScope, FieldCache, FieldRef, FieldRefs};
use hashbrown::HashTable;
use palisade_proto::{Scope, Timestamp};
use spec::{Scenario, ScopeKind};
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

/// The hasher of every table keyed by input (bucket keys, distinct values, routed
/// values): fast, and seeded at random per engine so that an attacker who chooses keys
/// cannot aim collisions at it.
type KeyHasher = foldhash::fast::RandomState;

/// Routed-value combinations above which [`Router`] merges lists per event instead of
/// keeping one precomputed list per combination.
const MAX_ROUTE_COMBOS: usize = 4096;

/// Default cap on live buckets (all scenarios together).
pub const DEFAULT_MAX_BUCKETS: usize = 1_000_000;

/// Scenarios indexed by a field value their filter requires.
#[derive(Debug, Default)]
struct Router {
    /// Scenarios without a required equality: every event reaches them.
    always: Vec<u32>,
    /// The routed fields, in order of first use.
    by_field: Vec<RouteField>,
    /// The candidates of every combination of routed values, indexed by the mixed-radix
    /// number whose digit for field `f` is the value's id (0: no routed value), so that
    /// routing an event is a table lookup. Empty when there would be more than
    /// [`MAX_ROUTE_COMBOS`]: the lists are then merged per event.
    combos: Vec<Vec<u32>>,
}

/// One routed field: its values, each with an id (1-based) and the scenarios requiring it.
#[derive(Debug)]
struct RouteField {
    field: FieldRef,
    ids: HashMap<String, usize, KeyHasher>,
    /// Scenarios by value id - 1.
    lists: Vec<Vec<u32>>,
}

impl Router {
    /// The candidates for the value ids `ids` (one per routed field), in load order.
    fn merge(&self, ids: &[usize], out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&self.always);
        for (f, &id) in self.by_field.iter().zip(ids) {
            if id > 0 {
                out.extend_from_slice(&f.lists[id - 1]);
            }
        }
        if self.by_field.len() > 1 || !self.always.is_empty() {
            out.sort_unstable();
        }
    }

    /// Precomputes [`Router::combos`] when there are few enough combinations.
    fn build_combos(&mut self) {
        let mut total = 1usize;
        for f in &self.by_field {
            total = match total.checked_mul(f.lists.len() + 1) {
                Some(t) if t <= MAX_ROUTE_COMBOS => t,
                _ => return,
            };
        }
        let mut ids = vec![0; self.by_field.len()];
        let mut combos = Vec::with_capacity(total);
        for mut n in 0..total {
            for (f, id) in self.by_field.iter().zip(ids.iter_mut()) {
                let radix = f.lists.len() + 1;
                *id = n % radix;
                n /= radix;
            }
            let mut list = Vec::new();
            self.merge(&ids, &mut list);
            combos.push(list);
        }
        self.combos = combos;
    }

    /// The scenarios an event can match, in load order, into `out`.
    fn candidates(&self, fc: &mut FieldCache<'_>, out: &mut Vec<u32>) {
        if !self.combos.is_empty() {
            let (mut index, mut radix) = (0, 1);
            for f in &self.by_field {
                index += radix * f.ids.get(fc.get(&f.field)).copied().unwrap_or(0);
                radix *= f.lists.len() + 1;
            }
            out.clear();
            out.extend_from_slice(&self.combos[index]);
        } else {
            let ids: Vec<usize> =
                self.by_field.iter().map(|f| f.ids.get(fc.get(&f.field)).copied().unwrap_or(0)).collect();
            self.merge(&ids, out);
        }
    }
}

/// Compiled, immutable scenarios; share them with an `Arc`.
pub struct Scenarios {
    list: Vec<Scenario>,
    router: Router,
    refs: FieldRefs,
    /// The CEL root context (built-in and data-list functions), for expressions outside
    /// the native subset.
    cel_root: Context<'static>,
    /// Distinct `groupby` texts (see `Scenario::groupby_id`).
    groupbys: usize,
    /// Distinct `distinct` texts.
    distincts: usize,
}

impl std::fmt::Debug for Scenarios {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenarios").field("list", &self.list).field("router", &self.router).finish()
    }
}

impl Scenarios {
    /// Compiles the files whose path starts with `scenarios/` (several YAML documents per
    /// file allowed), with the data lists of the `data/` files. Any problem (bad YAML,
    /// unknown key, bad CEL, bad duration, capacity that does not fit the type, missing
    /// data file, duplicate name) is a [`HubError`] quoting file and line.
    pub fn load(files: &[HubFile]) -> Result<Scenarios, HubError> {
        let mut data = DataLists::new(files);
        let mut refs = FieldRefs::default();
        let mut list: Vec<Scenario> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut files: Vec<&HubFile> = files.iter().filter(|f| f.path.starts_with("scenarios/")).collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for file in files {
            for sc in spec::parse_file(&file.path, &file.text, &mut data, &mut refs)? {
                if let Some(first) = seen.get(&sc.info.name) {
                    return Err(HubError::new(
                        &file.path,
                        Some(sc.name_line),
                        format!("duplicate scenario name `{}` (already defined in {first})", sc.info.name),
                    ));
                }
                seen.insert(sc.info.name.clone(), file.path.clone());
                list.push(sc);
            }
        }
        if list.len() > u32::MAX as usize {
            return Err(HubError::new("scenarios/", None, "too many scenarios"));
        }
        let mut router = Router::default();
        let mut route_fields: Vec<(expr::FieldMap, String)> = Vec::new();
        for (i, sc) in list.iter().enumerate() {
            let i = i as u32;
            match sc.filter.route() {
                None => router.always.push(i),
                Some(r) => {
                    let pos = match route_fields.iter().position(|(m, f)| *m == r.map && *f == r.field) {
                        Some(p) => p,
                        None => {
                            router.by_field.push(RouteField {
                                field: refs.field(r.map, &r.field),
                                ids: HashMap::default(),
                                lists: Vec::new(),
                            });
                            route_fields.push((r.map, r.field.clone()));
                            router.by_field.len() - 1
                        }
                    };
                    let rf = &mut router.by_field[pos];
                    let mut values = r.values;
                    values.sort();
                    values.dedup();
                    for v in values {
                        let next = rf.lists.len() + 1;
                        let id = *rf.ids.entry(v).or_insert(next);
                        if id == next {
                            rf.lists.push(Vec::new());
                        }
                        rf.lists[id - 1].push(i);
                    }
                }
            }
        }
        router.build_combos();
        // Scenarios with the same `groupby` (or `distinct`) text share one evaluation
        // per event.
        fn intern(texts: &mut Vec<String>, t: &str) -> usize {
            match texts.iter().position(|x| x == t) {
                Some(p) => p,
                None => {
                    texts.push(t.to_owned());
                    texts.len() - 1
                }
            }
        }
        let (mut groupbys, mut distincts) = (Vec::new(), Vec::new());
        for sc in &mut list {
            sc.groupby_id = intern(&mut groupbys, &sc.groupby.source);
            if let Some(d) = &sc.distinct {
                sc.distinct_id = intern(&mut distincts, &d.source);
            }
        }
        let cel_root = expr::root_context(Arc::new(data.into_matchers()));
        Ok(Scenarios { list, router, refs, cel_root, groupbys: groupbys.len(), distincts: distincts.len() })
    }

    /// What is loaded, in load order.
    pub fn list(&self) -> Vec<ScenarioInfo> {
        self.list.iter().map(|s| s.info.clone()).collect()
    }

    /// Number of scenarios.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no scenario is loaded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The scenarios an event can match, in load order, into `out`.
    #[cfg(test)]
    fn candidates(&self, ev: &Event, out: &mut Vec<u32>) {
        self.router.candidates(&mut FieldCache::new(ev), out);
    }
}

/// Counters of one scenario, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScenarioStats {
    /// The scenario's name.
    pub name: Arc<str>,
    /// Events poured into a bucket (filter matched, not a distinct duplicate).
    pub poured: u64,
    /// Overflows emitted.
    pub overflowed: u64,
    /// Buckets created.
    pub instantiated: u64,
    /// Buckets freed after being idle (leaky) without overflowing.
    pub underflowed: u64,
    /// Overflows dropped by the blackhole.
    pub blackholed: u64,
    /// Buckets evicted because the live-bucket cap was reached.
    pub evicted: u64,
    /// Events dropped as a duplicate `distinct` value.
    pub distinct_dropped: u64,
    /// Expression evaluation errors (filter, groupby or distinct), counted as no match.
    pub eval_errors: u64,
}

/// `distinct` values a bucket searches linearly before it indexes them in a hash set.
const DISTINCT_SCAN: usize = 16;

/// Remembered `distinct` values of one bucket: hashes, oldest forgotten first.
///
/// Most buckets overflow or leak away after a handful of values, so the values are a
/// ring searched linearly (one allocation, cache-friendly); a bucket kept alive long
/// enough to remember more than [`DISTINCT_SCAN`] values (up to `cache_size`) also
/// gets a hash set, so a slow scanner cannot make every event a long scan.
#[derive(Debug, Default)]
struct Distinct {
    order: VecDeque<u64>,
    set: Option<HashSet<u64, KeyHasher>>,
}

impl Distinct {
    fn contains(&self, h: u64) -> bool {
        match &self.set {
            Some(set) => set.contains(&h),
            None => self.order.contains(&h),
        }
    }

    /// Remembers `h` (not yet remembered), forgetting the oldest value at `limit`.
    fn insert(&mut self, h: u64, limit: usize) {
        if self.order.len() >= limit {
            if let Some(old) = self.order.pop_front() {
                if let Some(set) = &mut self.set {
                    set.remove(&old);
                }
            }
        }
        self.order.push_back(h);
        match &mut self.set {
            Some(set) => {
                set.insert(h);
            }
            None if self.order.len() > DISTINCT_SCAN => {
                self.set = Some(self.order.iter().copied().collect());
            }
            None => {}
        }
    }
}

#[derive(Debug)]
struct Bucket {
    /// The group key.
    key: Box<str>,
    /// `key` hashed with the engine's [`KeyHasher`]: the table's hash, and how expiry
    /// entries find the bucket again.
    hash: u64,
    /// Unique id, so that stale expiry entries are recognised.
    generation: u64,
    /// Tokens, in ms of leak (one token = `leak_ms`).
    tokens: i64,
    /// Time of the last event (never goes back: late events count as this time).
    last: i64,
    first: i64,
    count: u32,
    /// When the bucket is freed (leaky) or fires (counter).
    deadline: i64,
    /// Counter buckets: the overflow value, from the first event.
    value: String,
    distinct: Distinct,
}

/// An expiry entry: (deadline, scenario, generation, key hash). Ordered like the
/// buckets themselves would be (generation is unique), the hash only finds the bucket.
type Due = Reverse<(i64, u32, u64, u64)>;

/// A blackhole expiry entry: (end, scenario, 0, key).
type BlackholeDue = Reverse<(i64, u32, u64, Arc<str>)>;

/// The `groupby` (or `distinct`) result of the current event, shared by the scenarios
/// with the same expression.
#[derive(Debug, Default)]
struct Memo {
    /// The event it belongs to ([`Buckets::seq`]); stale when different.
    seq: u64,
    /// The value's hash; `None` when the expression failed.
    hash: Option<u64>,
    /// The key text (`groupby` only); a reused buffer.
    text: String,
}

/// The mutable engine: live buckets, blackholes, counters. No I/O, no clock.
#[derive(Debug)]
pub struct Buckets {
    scenarios: Arc<Scenarios>,
    /// Per scenario: the live buckets, found by key hash then key.
    live: Vec<HashTable<Bucket>>,
    /// Per scenario: group key -> blackhole end.
    blackholes: Vec<HashMap<Arc<str>, i64, KeyHasher>>,
    due: BinaryHeap<Due>,
    blackhole_due: BinaryHeap<BlackholeDue>,
    live_count: usize,
    max_buckets: usize,
    generation: u64,
    /// Latest time seen (events and `advance`).
    watermark: i64,
    stats: Vec<ScenarioStats>,
    hasher: KeyHasher,
    scratch: Vec<u32>,
    /// Events poured so far: tells the memos of this event from stale ones.
    seq: u64,
    /// By `groupby_id`.
    keys: Vec<Memo>,
    /// By `distinct_id`.
    distincts: Vec<Memo>,
}

impl Buckets {
    /// An empty engine with the default live-bucket cap.
    pub fn new(scenarios: Arc<Scenarios>) -> Self {
        Self::with_max_buckets(scenarios, DEFAULT_MAX_BUCKETS)
    }

    /// An empty engine holding at most `max_buckets` live buckets (at least 1).
    pub fn with_max_buckets(scenarios: Arc<Scenarios>, max_buckets: usize) -> Self {
        let n = scenarios.list.len();
        let stats = scenarios
            .list
            .iter()
            .map(|s| ScenarioStats { name: s.name.clone(), ..Default::default() })
            .collect();
        Buckets {
            live: (0..n).map(|_| HashTable::new()).collect(),
            blackholes: (0..n).map(|_| HashMap::default()).collect(),
            keys: (0..scenarios.groupbys).map(|_| Memo::default()).collect(),
            distincts: (0..scenarios.distincts).map(|_| Memo::default()).collect(),
            scenarios,
            due: BinaryHeap::new(),
            blackhole_due: BinaryHeap::new(),
            live_count: 0,
            max_buckets: max_buckets.max(1),
            generation: 0,
            watermark: i64::MIN,
            stats,
            hasher: KeyHasher::default(),
            scratch: Vec::new(),
            seq: 0,
        }
    }

    /// Live buckets, all scenarios together.
    pub fn live_buckets(&self) -> usize {
        self.live_count
    }

    /// Per-scenario counters, in load order.
    pub fn stats(&self) -> &[ScenarioStats] {
        &self.stats
    }

    /// Pours `event` into every scenario whose filter matches; the time is the
    /// event's. Overflows are appended to `out`.
    pub fn pour(&mut self, event: &Event, out: &mut Vec<Overflow>) {
        let t = event.time.as_millis();
        if t > self.watermark {
            self.watermark = t;
            self.expire(out);
        }
        let scenarios = self.scenarios.clone();
        let mut cands = std::mem::take(&mut self.scratch);
        let mut fields = FieldCache::new(event);
        scenarios.router.candidates(&mut fields, &mut cands);
        let mut cel = CelScope::new(&scenarios.cel_root, &scenarios.refs);
        self.seq = self.seq.wrapping_add(1);
        let mut keys = std::mem::take(&mut self.keys);
        for &i in &cands {
            let sc = &scenarios.list[i as usize];
            match sc.filter.eval_in(&mut fields, &mut cel) {
                Ok(expr::Val::Bool(true)) => {}
                Ok(expr::Val::Bool(false)) => continue,
                Ok(_) | Err(_) => {
                    self.stats[i as usize].eval_errors += 1;
                    continue;
                }
            }
            let key = &mut keys[sc.groupby_id];
            if key.seq != self.seq {
                key.seq = self.seq;
                key.hash = match sc.groupby.eval_key(&mut fields, &mut cel, &mut key.text) {
                    Ok(()) => Some(self.hasher.hash_one(key.text.as_str())),
                    Err(_) => None,
                };
            }
            let Some(hash) = key.hash else {
                self.stats[i as usize].eval_errors += 1;
                continue;
            };
            let distinct = match &sc.distinct {
                None => None,
                Some(d) => {
                    let memo = &mut self.distincts[sc.distinct_id];
                    if memo.seq != self.seq {
                        memo.seq = self.seq;
                        memo.hash = match d.eval_in(&mut fields, &mut cel) {
                            Ok(v) => Some(self.hasher.hash_one(v.as_key().as_ref())),
                            Err(_) => None,
                        };
                    }
                    match memo.hash {
                        Some(h) => Some(h),
                        None => {
                            self.stats[i as usize].eval_errors += 1;
                            continue;
                        }
                    }
                }
            };
            self.pour_one(sc, i, &key.text, hash, distinct, event, t, out);
        }
        self.keys = keys;
        self.scratch = cands;
    }

    /// Advances time to `now` without an event (live ticks, end of a replay): frees
    /// idle buckets and fires counter buckets that are due.
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<Overflow>) {
        if now.as_millis() > self.watermark {
            self.watermark = now.as_millis();
        }
        self.expire(out);
    }

    #[allow(clippy::too_many_arguments)]
    fn pour_one(
        &mut self,
        sc: &Scenario,
        i: u32,
        key: &str,
        hash: u64,
        distinct: Option<u64>,
        event: &Event,
        t: i64,
        out: &mut Vec<Overflow>,
    ) {
        let idx = i as usize;
        if sc.kind == BucketType::Trigger {
            self.stats[idx].poured += 1;
            self.stats[idx].instantiated += 1;
            let value = overflow_value(sc.scope, event.source_ip());
            self.emit(sc, i, key, value, 1, t, t, out);
            return;
        }
        let found = match self.live[idx].find_entry(hash, |b| *b.key == *key) {
            // A leaky bucket idle for its whole lifetime is gone, even if `expire` has
            // not run yet for it (late events, equal timestamps).
            Ok(e) if sc.kind == BucketType::Leaky && t > e.get().deadline => {
                e.remove();
                self.live_count -= 1;
                self.stats[idx].underflowed += 1;
                None
            }
            Ok(e) => {
                if distinct.is_some_and(|h| e.get().distinct.contains(h)) {
                    self.stats[idx].distinct_dropped += 1;
                    return;
                }
                Some(e)
            }
            Err(_) => None,
        };
        let mut bucket = match found {
            Some(e) => e,
            None => {
                if self.live_count >= self.max_buckets {
                    self.evict_one();
                }
                self.generation += 1;
                let deadline = t.saturating_add(sc.lifetime_ms);
                let value = if sc.kind == BucketType::Counter {
                    overflow_value(sc.scope, event.source_ip())
                } else {
                    String::new()
                };
                self.due.push(Reverse((deadline, i, self.generation, hash)));
                self.live_count += 1;
                self.stats[idx].instantiated += 1;
                let b = Bucket {
                    key: key.into(),
                    hash,
                    generation: self.generation,
                    tokens: sc.capacity.max(0).saturating_mul(sc.leak_ms),
                    last: t,
                    first: t,
                    count: 0,
                    deadline,
                    value,
                    distinct: Distinct::default(),
                };
                self.live[idx].insert_unique(hash, b, |b| b.hash)
            }
        };
        self.stats[idx].poured += 1;
        let b = bucket.get_mut();
        if let Some(h) = distinct {
            b.distinct.insert(h, sc.distinct_limit);
        }
        let now = t.max(b.last);
        b.count = b.count.saturating_add(1);
        if sc.kind == BucketType::Counter {
            b.last = now;
            return;
        }
        let full = sc.capacity.saturating_mul(sc.leak_ms);
        b.tokens = b.tokens.saturating_add(now - b.last).min(full);
        b.last = now;
        if b.tokens >= sc.leak_ms {
            b.tokens -= sc.leak_ms;
            b.deadline = now.saturating_add(sc.lifetime_ms);
            return;
        }
        let (b, _) = bucket.remove();
        self.live_count -= 1;
        let value = overflow_value(sc.scope, event.source_ip());
        self.emit(sc, i, &b.key, value, b.count, b.first, now, out);
    }

    /// Emits an overflow unless the key is blackholed.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        sc: &Scenario,
        i: u32,
        key: &str,
        value: String,
        count: u32,
        first: i64,
        last: i64,
        out: &mut Vec<Overflow>,
    ) {
        let idx = i as usize;
        if let Some(bh) = sc.blackhole_ms {
            match self.blackholes[idx].entry(key.into()) {
                Entry::Occupied(mut e) => {
                    if last < *e.get() {
                        self.stats[idx].blackholed += 1;
                        return;
                    }
                    let until = last.saturating_add(bh);
                    e.insert(until);
                    self.blackhole_due.push(Reverse((until, i, 0, e.key().clone())));
                }
                Entry::Vacant(e) => {
                    let until = last.saturating_add(bh);
                    self.blackhole_due.push(Reverse((until, i, 0, e.key().clone())));
                    e.insert(until);
                }
            }
        }
        self.stats[idx].overflowed += 1;
        out.push(Overflow {
            scenario: sc.name.clone(),
            scope: match sc.scope {
                ScopeKind::Ip => Scope::Ip,
                ScopeKind::Range { .. } => Scope::Range,
            },
            value,
            group_key: key.to_owned(),
            events_count: count,
            first_at: Timestamp(first),
            last_at: Timestamp(last),
            remediation: sc.remediation.clone(),
            confidence: sc.confidence,
            labels: sc.labels.clone(),
            origin: palisade_proto::Origin::Palisade,
        });
    }

    /// Frees idle buckets, fires due counters and forgets ended blackholes, up to the
    /// watermark.
    fn expire(&mut self, out: &mut Vec<Overflow>) {
        let now = self.watermark;
        while let Some((idx, b)) = self.pop_earliest(Some(now)) {
            if self.scenarios.list[idx].kind == BucketType::Counter {
                let scenarios = self.scenarios.clone();
                let sc = &scenarios.list[idx];
                self.emit(sc, idx as u32, &b.key, b.value, b.count, b.first, b.last, out);
            } else {
                self.stats[idx].underflowed += 1;
            }
        }
        while let Some(Reverse((until, _, _, _))) = self.blackhole_due.peek() {
            if *until > now {
                break;
            }
            let Some(Reverse((until, i, _, key))) = self.blackhole_due.pop() else {
                break;
            };
            let map = &mut self.blackholes[i as usize];
            if map.get(&key).is_some_and(|u| *u <= until) {
                map.remove(&key);
            }
        }
    }

    /// Drops the live bucket closest to its deadline, to make room.
    fn evict_one(&mut self) {
        if let Some((idx, _)) = self.pop_earliest(None) {
            self.stats[idx].evicted += 1;
        }
    }

    /// Removes and returns (scenario index, bucket) of the live bucket with the earliest
    /// deadline, if that deadline is before `before` (any deadline when `None`). Heap entries are not updated when a
    /// bucket's deadline moves or the bucket goes: a stale entry is skipped, and one whose
    /// bucket now ends later is pushed again with the new deadline.
    fn pop_earliest(&mut self, before: Option<i64>) -> Option<(usize, Bucket)> {
        while let Some(&Reverse((deadline, i, generation, hash))) = self.due.peek() {
            if before.is_some_and(|before| deadline >= before) {
                return None;
            }
            self.due.pop();
            let idx = i as usize;
            let Ok(e) = self.live[idx].find_entry(hash, |b| b.generation == generation) else {
                continue;
            };
            if e.get().deadline > deadline {
                self.due.push(Reverse((e.get().deadline, i, generation, hash)));
                continue;
            }
            let (b, _) = e.remove();
            self.live_count -= 1;
            return Some((idx, b));
        }
        None
    }
}

/// The overflow value for a scope: the canonical address or range, empty when the
/// event has no usable source address.
fn overflow_value(scope: ScopeKind, ip: Option<IpAddr>) -> String {
    let Some(ip) = ip.map(|ip| ip.to_canonical()) else {
        return String::new();
    };
    match scope {
        ScopeKind::Ip => ip.to_canonical().to_string(),
        ScopeKind::Range { v4, v6 } => {
            let prefix = if ip.is_ipv4() { v4 } else { v6 };
            match ipnet::IpNet::new(ip, prefix) {
                Ok(net) => net.trunc().to_string(),
                Err(_) => String::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
