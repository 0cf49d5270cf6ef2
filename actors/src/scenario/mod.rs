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

mod data;
mod expr;
mod spec;

pub use spec::{BucketType, ScenarioInfo};

use crate::event::{Event, Overflow};
use crate::hub::{HubError, HubFile};
use cel_interpreter::Context;
use data::DataLists;
use expr::{CelScope, FieldMap, FieldRefs};
use palisade_proto::{Scope, Timestamp};
use spec::{Scenario, ScopeKind};
use std::cmp::Reverse;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

/// Default cap on live buckets (all scenarios together).
pub const DEFAULT_MAX_BUCKETS: usize = 1_000_000;

/// Scenarios indexed by a field value their filter requires.
#[derive(Debug, Default)]
struct Router {
    /// Scenarios without a required equality: every event reaches them.
    always: Vec<u32>,
    /// (map, field, value -> scenarios).
    by_field: Vec<(FieldMap, String, HashMap<String, Vec<u32>>)>,
}

/// Compiled, immutable scenarios; share them with an `Arc`.
pub struct Scenarios {
    list: Vec<Scenario>,
    router: Router,
    refs: FieldRefs,
    /// The CEL root context (built-in and data-list functions), for expressions outside
    /// the native subset.
    cel_root: Context<'static>,
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
        for (i, sc) in list.iter().enumerate() {
            let i = i as u32;
            match sc.filter.route() {
                None => router.always.push(i),
                Some(r) => {
                    let pos = match router.by_field.iter().position(|(m, f, _)| *m == r.map && *f == r.field)
                    {
                        Some(p) => p,
                        None => {
                            router.by_field.push((r.map, r.field.clone(), HashMap::new()));
                            router.by_field.len() - 1
                        }
                    };
                    let index = &mut router.by_field[pos].2;
                    let mut values = r.values;
                    values.sort();
                    values.dedup();
                    for v in values {
                        index.entry(v).or_default().push(i);
                    }
                }
            }
        }
        let cel_root = expr::root_context(Arc::new(data.into_matchers()));
        Ok(Scenarios { list, router, refs, cel_root })
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
    fn candidates(&self, ev: &Event, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&self.router.always);
        for (map, field, index) in &self.router.by_field {
            let v = match map {
                FieldMap::Meta => ev.meta.get(field),
                FieldMap::Parsed => ev.parsed.get(field),
            };
            if let Some(list) = index.get(v.unwrap_or("")) {
                out.extend_from_slice(list);
            }
        }
        if self.router.by_field.len() > 1 || !self.router.always.is_empty() {
            out.sort_unstable();
        }
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

/// Remembered `distinct` values of one bucket: hashes, oldest forgotten first.
#[derive(Debug, Default)]
struct Distinct {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

#[derive(Debug)]
struct Bucket {
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
    distinct: Option<Box<Distinct>>,
}

/// An expiry entry: (deadline, scenario, generation, key).
type Due = Reverse<(i64, u32, u64, Arc<str>)>;

/// The mutable engine: live buckets, blackholes, counters. No I/O, no clock.
#[derive(Debug)]
pub struct Buckets {
    scenarios: Arc<Scenarios>,
    /// Per scenario: group key -> bucket.
    live: Vec<HashMap<Arc<str>, Bucket>>,
    /// Per scenario: group key -> blackhole end.
    blackholes: Vec<HashMap<Arc<str>, i64>>,
    due: BinaryHeap<Due>,
    blackhole_due: BinaryHeap<Due>,
    live_count: usize,
    max_buckets: usize,
    generation: u64,
    /// Latest time seen (events and `advance`).
    watermark: i64,
    stats: Vec<ScenarioStats>,
    hasher: RandomState,
    scratch: Vec<u32>,
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
            live: (0..n).map(|_| HashMap::new()).collect(),
            blackholes: (0..n).map(|_| HashMap::new()).collect(),
            scenarios,
            due: BinaryHeap::new(),
            blackhole_due: BinaryHeap::new(),
            live_count: 0,
            max_buckets: max_buckets.max(1),
            generation: 0,
            watermark: i64::MIN,
            stats,
            hasher: RandomState::new(),
            scratch: Vec::new(),
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
        scenarios.candidates(event, &mut cands);
        let mut cel = CelScope::new(&scenarios.cel_root, &scenarios.refs);
        let mut memo: Vec<(&str, expr::Val<'_>)> = Vec::new();
        for &i in &cands {
            let sc = &scenarios.list[i as usize];
            match sc.filter.eval(event, &mut cel) {
                Ok(expr::Val::Bool(true)) => {}
                Ok(expr::Val::Bool(false)) => continue,
                Ok(_) | Err(_) => {
                    self.stats[i as usize].eval_errors += 1;
                    continue;
                }
            }
            // Scenarios of one service usually share their groupby: evaluate it once.
            let key = match memo.iter().position(|(src, _)| *src == sc.groupby.source.as_str()) {
                Some(p) => p,
                None => match sc.groupby.eval(event, &mut cel) {
                    Ok(v) => {
                        memo.push((sc.groupby.source.as_str(), v));
                        memo.len() - 1
                    }
                    Err(_) => {
                        self.stats[i as usize].eval_errors += 1;
                        continue;
                    }
                },
            };
            let distinct = match &sc.distinct {
                None => None,
                Some(d) => match d.eval(event, &mut cel) {
                    Ok(v) => Some(self.hasher.hash_one(v.as_key().as_ref())),
                    Err(_) => {
                        self.stats[i as usize].eval_errors += 1;
                        continue;
                    }
                },
            };
            self.pour_one(sc, i, &memo[key].1.as_key(), distinct, event, t, out);
        }
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
        // A leaky bucket idle for its whole lifetime is gone, even if `expire` has not
        // run yet for it (late events, equal timestamps).
        if let Some(b) = self.live[idx].get(key) {
            if sc.kind == BucketType::Leaky && t > b.deadline {
                self.live[idx].remove(key);
                self.live_count -= 1;
                self.stats[idx].underflowed += 1;
            }
        }
        if let Some(h) = distinct {
            if let Some(b) = self.live[idx].get(key) {
                if b.distinct.as_ref().is_some_and(|d| d.set.contains(&h)) {
                    self.stats[idx].distinct_dropped += 1;
                    return;
                }
            }
        }
        if !self.live[idx].contains_key(key) {
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
            let key: Arc<str> = key.into();
            self.live[idx].insert(
                key.clone(),
                Bucket {
                    generation: self.generation,
                    tokens: sc.capacity.max(0).saturating_mul(sc.leak_ms),
                    last: t,
                    first: t,
                    count: 0,
                    deadline,
                    value,
                    distinct: None,
                },
            );
            self.due.push(Reverse((deadline, i, self.generation, key)));
            self.live_count += 1;
            self.stats[idx].instantiated += 1;
        }
        let Some(b) = self.live[idx].get_mut(key) else {
            return;
        };
        self.stats[idx].poured += 1;
        if let Some(h) = distinct {
            let d = b.distinct.get_or_insert_with(Default::default);
            if d.order.len() >= sc.distinct_limit {
                if let Some(old) = d.order.pop_front() {
                    d.set.remove(&old);
                }
            }
            d.set.insert(h);
            d.order.push_back(h);
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
        let (count, first) = (b.count, b.first);
        self.live[idx].remove(key);
        self.live_count -= 1;
        let value = overflow_value(sc.scope, event.source_ip());
        self.emit(sc, i, key, value, count, first, now, out);
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
        });
    }

    /// Frees idle buckets, fires due counters and forgets ended blackholes, up to the
    /// watermark.
    fn expire(&mut self, out: &mut Vec<Overflow>) {
        let now = self.watermark;
        while let Some(Reverse((deadline, _, _, _))) = self.due.peek() {
            if *deadline >= now {
                break;
            }
            let Some(Reverse((deadline, i, generation, key))) = self.due.pop() else {
                break;
            };
            let idx = i as usize;
            let Some(b) = self.live[idx].get(&key) else {
                continue;
            };
            if b.generation != generation {
                continue;
            }
            if b.deadline > deadline {
                self.due.push(Reverse((b.deadline, i, generation, key)));
                continue;
            }
            let Some(b) = self.live[idx].remove(&key) else {
                continue;
            };
            self.live_count -= 1;
            let scenarios = self.scenarios.clone();
            let sc = &scenarios.list[idx];
            if sc.kind == BucketType::Counter {
                self.emit(sc, i, &key, b.value, b.count, b.first, b.last, out);
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
        while let Some(Reverse((deadline, i, generation, key))) = self.due.pop() {
            let idx = i as usize;
            let Some(b) = self.live[idx].get(&key) else {
                continue;
            };
            if b.generation != generation {
                continue;
            }
            if b.deadline > deadline {
                self.due.push(Reverse((b.deadline, i, generation, key)));
                continue;
            }
            self.live[idx].remove(&key);
            self.live_count -= 1;
            self.stats[idx].evicted += 1;
            return;
        }
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
