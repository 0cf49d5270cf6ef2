//! The decision engine: from overflows (and operators' and peers' requests) to
//! decisions, under the configured profiles and allowlist.
//!
//! Pure and synchronous: time is passed in (`now`), randomness (decision UUIDs) comes
//! from a seeded generator, and every change is recorded in [`Changes`] for the caller
//! to persist. The [`DecisionBook`] keeps active decisions indexed by key and by network.

mod allowlist;
mod book;
mod config;
mod index;
mod slab;

pub use allowlist::Allowlist;
pub use book::{DecisionBook, DecisionKey, SharedBook};
pub use config::{AllowlistConfig, ConfigError, DecisionConfig, Policy, Profile, ProfileConfig};
pub use index::NetIndex;

use ipnet::IpNet;
use palisade_proto::decision::{parse_target, TargetError};
use palisade_proto::{Decision, DecisionType, Origin, Scope, Timestamp, Uuid};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::event::Overflow;

/// A request for a decision that did not come from a local scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDecision {
    /// Who asks.
    pub origin: Origin,
    /// The remediation.
    pub kind: DecisionType,
    /// What `value` is.
    pub scope: Scope,
    /// The address or range (any spelling; it is canonicalised).
    pub value: String,
    /// How long.
    pub duration: Duration,
    /// Why (scenario name or operator's reason).
    pub scenario: String,
    /// Record but never enforce.
    pub simulated: bool,
}

/// What happened to an overflow or a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A new decision.
    Created(Decision),
    /// An active decision on the same key was lengthened: it was replaced by this one.
    Extended {
        /// The id it replaced.
        replaced: u64,
        /// The new decision.
        decision: Decision,
    },
    /// An active decision on the same key already lasts at least as long.
    AlreadyCovered(Decision),
    /// The target is allowlisted.
    Allowlisted(IpNet),
    /// The scenario asks for no remediation, or a profile says `no_decision`.
    NoDecision,
    /// The overflow carried no usable address.
    NoTarget,
}

impl Verdict {
    /// The decision now in force because of this verdict, if any.
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            Verdict::Created(d) | Verdict::AlreadyCovered(d) => Some(d),
            Verdict::Extended { decision, .. } => Some(decision),
            _ => None,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// The value is not an address or range.
    #[error(transparent)]
    BadTarget(#[from] TargetError),
    /// The value is allowlisted.
    #[error("{value} is allowlisted (by {net}): it is never banned")]
    Allowlisted {
        /// The value asked for.
        value: String,
        /// The allowlist entry.
        net: IpNet,
    },
    /// A zero duration.
    #[error("a decision needs a positive duration")]
    ZeroDuration,
}

/// Everything that changed since the last [`DecisionEngine::take_changes`], to persist.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Decisions to write (new, or ended: their `until` changed).
    pub upserts: Vec<Decision>,
    /// Decision ids to delete from storage.
    pub removed: Vec<u64>,
    /// Repeat-offence history to write, per value (empty list: delete).
    pub offences: Vec<(String, Vec<Timestamp>)>,
}

impl Changes {
    /// Whether there is nothing to persist.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty() && self.offences.is_empty()
    }
}

/// What `tick` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Decisions that ran out.
    pub expired: Vec<Decision>,
    /// Tombstones forgotten.
    pub purged: usize,
}

/// Selects decisions for listing and deletion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionFilter {
    /// Decisions covering this address.
    pub ip: Option<IpAddr>,
    /// Decisions covering all of this range.
    pub range: Option<IpNet>,
    /// Exact value.
    pub value: Option<String>,
    /// Scope.
    pub scope: Option<Scope>,
    /// Remediation.
    pub kind: Option<DecisionType>,
    /// Origin.
    pub origin: Option<Origin>,
    /// Scenario contains this text (case-insensitive).
    pub scenario: Option<String>,
    /// One id.
    pub id: Option<u64>,
}

impl DecisionFilter {
    /// Whether `d` passes the non-network criteria.
    fn admits(&self, d: &Decision) -> bool {
        self.value.as_ref().is_none_or(|v| d.value == *v)
            && self.scope.as_ref().is_none_or(|s| &d.scope == s)
            && self.kind.as_ref().is_none_or(|k| &d.kind == k)
            && self.origin.as_ref().is_none_or(|o| &d.origin == o)
            && self.id.is_none_or(|id| d.id == id)
            && self.scenario.as_ref().is_none_or(|s| d.scenario.to_lowercase().contains(&s.to_lowercase()))
    }
}

/// State that outlives a restart, as loaded from storage.
#[derive(Debug, Default, Clone)]
pub struct StoredDecisions {
    /// Every stored decision, active or tombstone.
    pub decisions: Vec<Decision>,
    /// Repeat-offence history per value.
    pub offences: Vec<(String, Vec<Timestamp>)>,
    /// The highest decision id ever issued (ids are never reused).
    pub last_id: u64,
}

/// Profiles + allowlist + the book of decisions.
///
/// The book is shared ([`SharedBook`]) so that readers such as the Local API look
/// decisions up without queueing behind the engine; only the engine writes to it.
#[derive(Debug)]
pub struct DecisionEngine {
    book: SharedBook,
    policy: Policy,
    allowlist: Allowlist,
    offences: HashMap<String, VecDeque<Timestamp>>,
    last_id: u64,
    rng: StdRng,
    changes: Changes,
    /// Scenario names, shared by the decisions that carry them.
    scenarios: HashSet<Arc<str>>,
}

/// Scenario names interned at most.
const MAX_INTERNED: usize = 10_000;

impl DecisionEngine {
    /// An engine holding `stored` state. `seed` drives decision UUIDs.
    pub fn new(
        policy: Policy,
        allowlist: Allowlist,
        stored: StoredDecisions,
        now: Timestamp,
        seed: u64,
    ) -> Self {
        let mut scenarios = HashSet::new();
        let decisions = stored.decisions.into_iter().map(|mut d| {
            d.scenario = intern(&mut scenarios, &d.scenario);
            d
        });
        let book = DecisionBook::from_stored(decisions, now);
        let last_id = stored.last_id.max(book.max_id());
        let book = SharedBook::new(book);
        DecisionEngine {
            book,
            policy,
            allowlist,
            offences: stored.offences.into_iter().map(|(v, t)| (v, t.into())).collect(),
            last_id,
            rng: StdRng::seed_from_u64(seed),
            changes: Changes::default(),
            scenarios,
        }
    }

    /// The decisions, for reading.
    pub fn book(&self) -> std::sync::RwLockReadGuard<'_, DecisionBook> {
        self.book.read()
    }

    /// A handle on the decisions that other threads can read.
    pub fn shared_book(&self) -> SharedBook {
        self.book.clone()
    }

    /// The allowlist.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }

    /// The highest id issued so far.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Takes the changes to persist.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Gives back changes that could not be persisted, ahead of any made since, so the
    /// next [`take_changes`](Self::take_changes) returns them all in order.
    pub fn requeue(&mut self, mut older: Changes) {
        older.upserts.append(&mut self.changes.upserts);
        older.removed.append(&mut self.changes.removed);
        older.offences.append(&mut self.changes.offences);
        self.changes = older;
    }

    /// Applies the profiles to an overflow, recording its origin on the decision (this
    /// node's detection, a fleet peer's or the community's on-sight check, or an alert a
    /// CrowdSec log processor pushed).
    pub fn on_overflow(&mut self, overflow: &Overflow, now: Timestamp) -> Verdict {
        let origin = overflow.origin.clone();
        let Some(remediation) = &overflow.remediation else {
            return Verdict::NoDecision;
        };
        if overflow.value.is_empty() {
            return Verdict::NoTarget;
        }
        let profile = self.policy.profiles.iter().find(|p| p.matches(&overflow.scenario));
        if profile.is_some_and(|p| p.no_decision) {
            return Verdict::NoDecision;
        }
        let base =
            profile.and_then(|p| p.duration).or(remediation.duration).unwrap_or(self.policy.default_duration);
        let kind = profile.and_then(|p| p.kind.clone()).unwrap_or_else(|| remediation.kind.clone());
        let simulated = self.policy.simulation || profile.is_some_and(|p| p.simulated);
        let target = match parse_target(&overflow.scope, &overflow.value) {
            Ok(t) => t,
            Err(_) => return Verdict::NoTarget,
        };
        if let Some(net) = self.allowlisted(&overflow.scope, &target) {
            return Verdict::Allowlisted(net);
        }
        let value = canonical_value(&overflow.scope, &target);
        let key =
            DecisionKey { scope: overflow.scope.clone(), value: value.as_str().into(), kind: kind.clone() };
        // A repeat offender is one who comes back after a ban ended: overflows of other
        // scenarios during the same attack (while a ban is active) do not multiply.
        let duration = if self.book.read().active(&key).is_some() {
            base
        } else {
            self.repeat_duration(&value, base, now)
        };
        let request = NewDecision {
            origin,
            kind,
            scope: overflow.scope.clone(),
            value,
            duration,
            scenario: overflow.scenario.to_string(),
            simulated,
        };
        let verdict = self.apply(request, now);
        if let Verdict::Created(d) = &verdict {
            let value = d.value.clone();
            self.record_offence(value.to_string(), now);
        }
        verdict
    }

    /// Adds a decision asked for by an operator, a fleet peer or the community list.
    pub fn add(&mut self, request: NewDecision, now: Timestamp) -> Result<Verdict, DecisionError> {
        if request.duration.is_zero() {
            return Err(DecisionError::ZeroDuration);
        }
        let mut request = request;
        if matches!(request.scope, Scope::Ip | Scope::Range) {
            let target = parse_target(&request.scope, &request.value)?;
            if let Some(net) = self.allowlisted(&request.scope, &target) {
                return Err(DecisionError::Allowlisted { value: request.value, net });
            }
            request.value = canonical_value(&request.scope, &target);
        }
        Ok(self.apply(request, now))
    }

    fn allowlisted(&self, scope: &Scope, target: &IpNet) -> Option<IpNet> {
        match scope {
            Scope::Ip => self.allowlist.covering_ip(target.addr()),
            _ => self.allowlist.overlapping(target),
        }
    }

    fn apply(&mut self, request: NewDecision, now: Timestamp) -> Verdict {
        let until = now.saturating_add(request.duration);
        let key = DecisionKey {
            scope: request.scope.clone(),
            value: request.value.as_str().into(),
            kind: request.kind.clone(),
        };
        let existing = self.book.read().active(&key).cloned();
        if let Some(existing) = &existing {
            if existing.until >= until {
                return Verdict::AlreadyCovered(existing.clone());
            }
        }
        self.last_id += 1;
        let decision = Decision {
            id: self.last_id,
            uuid: existing.as_ref().map_or_else(|| self.uuid(), |e| e.uuid),
            origin: request.origin,
            kind: request.kind,
            scope: request.scope,
            value: request.value.into(),
            created_at: now,
            until,
            scenario: self.intern(&request.scenario),
            simulated: request.simulated,
        };
        self.book.write().insert(decision.clone());
        self.changes.upserts.push(decision.clone());
        match existing {
            Some(old) => {
                self.changes.removed.push(old.id);
                Verdict::Extended { replaced: old.id, decision }
            }
            None => Verdict::Created(decision),
        }
    }

    /// Ends every active decision `filter` selects. Returns them, ended.
    pub fn delete(&mut self, filter: &DecisionFilter, now: Timestamp) -> Vec<Decision> {
        let ids: Vec<u64> = self.select(filter).iter().map(|d| d.id).collect();
        let mut out = Vec::with_capacity(ids.len());
        let mut book = self.book.write();
        for id in ids {
            if let Some(d) = book.end(id, now) {
                self.changes.upserts.push(d.clone());
                out.push(d);
            }
        }
        out
    }

    /// Active decisions `filter` selects, by id.
    pub fn select(&self, filter: &DecisionFilter) -> Vec<Decision> {
        select(&self.book.read(), filter)
    }

    /// Expires decisions whose time is up and forgets old tombstones.
    pub fn tick(&mut self, now: Timestamp) -> TickReport {
        let (expired, purged) = {
            let mut book = self.book.write();
            (book.expire(now), book.purge(now, self.policy.tombstone_retention))
        };
        let purged_count = purged.len();
        self.changes.removed.extend(purged);
        let horizon = now.saturating_sub(self.policy.repeat_window);
        let mut emptied = Vec::new();
        for (value, times) in &mut self.offences {
            while times.front().is_some_and(|t| *t < horizon) {
                times.pop_front();
            }
            if times.is_empty() {
                emptied.push(value.clone());
            }
        }
        for value in emptied {
            self.offences.remove(&value);
            self.changes.offences.push((value, Vec::new()));
        }
        TickReport { expired, purged: purged_count }
    }

    fn repeat_duration(&self, value: &str, base: Duration, now: Timestamp) -> Duration {
        let horizon = now.saturating_sub(self.policy.repeat_window);
        let previous =
            self.offences.get(value).map_or(0, |times| times.iter().filter(|t| **t >= horizon).count());
        let factor = self.policy.repeat_factor.powi(i32::try_from(previous).unwrap_or(i32::MAX));
        let scaled = base.as_secs_f64() * factor;
        let capped = scaled
            .min(self.policy.max_duration.as_secs_f64())
            .max(base.as_secs_f64().min(self.policy.max_duration.as_secs_f64()));
        Duration::from_secs_f64(capped)
    }

    fn record_offence(&mut self, value: String, now: Timestamp) {
        let times = self.offences.entry(value.clone()).or_default();
        times.push_back(now);
        // An attacker gets at most a few dozen entries: the factor is capped long before.
        while times.len() > 64 {
            times.pop_front();
        }
        self.changes.offences.push((value, times.iter().copied().collect()));
    }

    fn uuid(&mut self) -> Uuid {
        let mut b = [0u8; 16];
        self.rng.fill_bytes(&mut b);
        Uuid::from_random(b)
    }

    fn intern(&mut self, scenario: &str) -> Arc<str> {
        intern(&mut self.scenarios, scenario)
    }
}

/// One shared copy of each scenario name (a million imported decisions share one).
fn intern(set: &mut HashSet<Arc<str>>, scenario: &str) -> Arc<str> {
    if let Some(s) = set.get(scenario) {
        return s.clone();
    }
    let s: Arc<str> = scenario.into();
    // Names come from the hub, operators and machines: bounded, but not by us.
    if set.len() < MAX_INTERNED {
        set.insert(s.clone());
    }
    s
}

/// Active decisions of `book` that `filter` selects, by id.
pub fn select(book: &DecisionBook, filter: &DecisionFilter) -> Vec<Decision> {
    let mut out: Vec<Decision> = match (&filter.ip, &filter.range) {
        (Some(ip), _) => book.containing(*ip).filter(|d| filter.admits(d)).cloned().collect(),
        (None, Some(net)) => book.containing_net(net).filter(|d| filter.admits(d)).cloned().collect(),
        (None, None) => return book.iter_active().filter(|d| filter.admits(d)).cloned().collect(),
    };
    out.sort_by_key(|d| d.id);
    out
}

/// The canonical text of a target: a bare address for `Ip`, CIDR for `Range`.
fn canonical_value(scope: &Scope, target: &IpNet) -> String {
    match scope {
        Scope::Ip => target.addr().to_string(),
        _ => target.to_string(),
    }
}

#[cfg(test)]
mod tests;
