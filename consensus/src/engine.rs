//! The consensus state machine: [`Consensus::ingest`] a report, [`Consensus::tick`] the
//! clock, [`Consensus::drain_changes`] to publish what was listed and delisted.

use foldhash::fast::FixedState;
use palisade_proto::{HashedIp, NodeId, Timestamp};
use std::collections::HashMap;

use crate::config::{ConfigError, ConsensusConfig};
use crate::explain::{
    Explanation, GroupContribution, ListChange, ListChangeKind, Listing, SensorContribution,
};
use crate::types::{Allowlist, AsnOrgs, GroupKey, Report, VerifiedAddress};

type Map<K, V> = HashMap<K, V, FixedState>;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// What happened to one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// A new report was recorded; `listed` says whether the IP is listed now.
    Recorded {
        /// The IP is on the published list after this report.
        listed: bool,
    },
    /// The sensor had already reported this IP: its report was refreshed.
    Refreshed {
        /// The IP is on the published list after this report.
        listed: bool,
    },
    /// The sensor (or its group's unproven sensors) exceeded the new-IP budget.
    RateLimited,
    /// The IP is allowlisted: the report was dropped.
    Allowlisted,
    /// The report's `observed_at` is older than `max_report_age_secs`.
    Stale,
    /// The IP already holds as many reports from this group (or in all) as allowed, all
    /// weightier than this one.
    Crowded,
}

/// Counts that tell an operator how big the state is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Hashed IPs with at least one live report.
    pub tracked_ips: usize,
    /// Live reports over all IPs.
    pub reports: usize,
    /// Sensors ever seen.
    pub sensors: usize,
    /// Groups ever seen.
    pub groups: usize,
    /// IPs on the published list.
    pub listed: usize,
}

/// A sensor's standing, for persistence across restarts of the central tier.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorRecord {
    /// The sensor.
    pub sensor: NodeId,
    /// Its last verified address.
    pub address: VerifiedAddress,
    /// Since when it has been seen continuously at that address.
    pub verified_since: Timestamp,
    /// When it was last seen.
    pub last_seen: Timestamp,
    /// Corroborated novel reports (decayed).
    pub confirmed: f64,
    /// Novel reports nobody confirmed (decayed).
    pub unconfirmed: f64,
}

#[derive(Debug, Clone)]
struct Sensor {
    id: NodeId,
    address: VerifiedAddress,
    group: u32,
    verified_since: i64,
    last_seen: i64,
    confirmed: f64,
    unconfirmed: f64,
    record_at: i64,
    tokens: f32,
    tokens_at: i64,
}

#[derive(Debug, Clone)]
struct Group {
    key: GroupKey,
    tokens: f32,
    tokens_at: i64,
}

/// One sensor's live report on one IP: 24 bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: i64,
    sensor: u32,
    group: u32,
    evidence: f32,
    /// The IP was not listed when this sensor first reported it: it earns credit if the
    /// IP gets listed, and a mark against it if the report expires unconfirmed.
    novel: bool,
}

#[derive(Debug, Clone, Default)]
struct IpState {
    /// Sorted by group, so one pass aggregates per group without allocating.
    entries: Vec<Entry>,
    listed_since: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Assessment {
    score: f64,
    groups: u32,
}

/// The ASN-diversity weighted consensus of one central tier.
///
/// Memory: a million IPs with three live reports each take ~250 MB (measured by the
/// `memory` example; 24 bytes per report); ~90 bytes per sensor. Reports expire after
/// `report_ttl_secs`, and the rate limits bound how fast anyone can add IPs.
#[derive(Debug, Clone)]
pub struct Consensus {
    config: ConsensusConfig,
    orgs: AsnOrgs,
    allowlist: Allowlist,
    sensors: Vec<Sensor>,
    sensor_index: Map<NodeId, u32>,
    groups: Vec<Group>,
    group_index: Map<GroupKey, u32>,
    ips: Map<HashedIp, IpState>,
    listed: usize,
    changes: Vec<ListChange>,
}

impl Consensus {
    /// A consensus with no history. Fails when `config` does not validate.
    pub fn new(config: ConsensusConfig, orgs: AsnOrgs, allowlist: Allowlist) -> Result<Self, ConfigError> {
        config.validate()?;
        let state = FixedState::with_seed(config.hash_seed);
        Ok(Consensus {
            orgs,
            allowlist,
            sensors: Vec::new(),
            sensor_index: HashMap::with_hasher(state.clone()),
            groups: Vec::new(),
            group_index: HashMap::with_hasher(state.clone()),
            ips: HashMap::with_hasher(state.clone()),
            listed: 0,
            changes: Vec::new(),
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ConsensusConfig {
        &self.config
    }

    /// Replaces the allowlist (at each hashing-epoch change). Listed IPs that became
    /// allowlisted are delisted at the next [`tick`](Self::tick).
    pub fn set_allowlist(&mut self, allowlist: Allowlist) {
        self.allowlist = allowlist;
    }

    /// Records that `sensor` is connected from `address` (a heartbeat the tier
    /// verified). Verified age grows only while the sensor stays at one ASN and /24 and
    /// is seen at least every `max_presence_gap_secs`.
    pub fn observe_sensor(&mut self, sensor: NodeId, address: VerifiedAddress, now: Timestamp) {
        self.sensor_slot(sensor, address, now.0);
    }

    /// Restores a sensor's standing saved by [`sensor_record`](Self::sensor_record).
    pub fn restore_sensor(&mut self, record: &SensorRecord, now: Timestamp) {
        let slot = self.sensor_slot(record.sensor, record.address, record.last_seen.0) as usize;
        if let Some(s) = self.sensors.get_mut(slot) {
            s.verified_since = record.verified_since.0.min(record.last_seen.0);
            s.confirmed = record.confirmed.max(0.0);
            s.unconfirmed = record.unconfirmed.max(0.0);
            s.record_at = now.0;
        }
    }

    /// Marks `ip` as listed since `since`, as the tier's storage says it was before a
    /// restart, without crediting anyone or emitting a change. Its reporters are treated
    /// as already credited (they were, when it was listed). Returns `false` when no live
    /// report of `ip` is held (the caller then publishes its delisting). For the tier's
    /// own storage, like [`restore_sensor`](Self::restore_sensor); never for sensor input.
    pub fn restore_listing(&mut self, ip: &HashedIp, since: Timestamp) -> bool {
        let Some(state) = self.ips.get_mut(ip) else {
            return false;
        };
        if state.listed_since.is_none() {
            self.listed += 1;
        }
        state.listed_since = Some(since.0);
        for e in &mut state.entries {
            e.novel = false;
        }
        true
    }

    /// A sensor's standing, for persistence.
    pub fn sensor_record(&self, sensor: &NodeId) -> Option<SensorRecord> {
        let s = self.sensors.get(*self.sensor_index.get(sensor)? as usize)?;
        Some(SensorRecord {
            sensor: s.id,
            address: s.address,
            verified_since: Timestamp(s.verified_since),
            last_seen: Timestamp(s.last_seen),
            confirmed: s.confirmed,
            unconfirmed: s.unconfirmed,
        })
    }

    /// A sensor's current trust, 0..=1.
    pub fn sensor_trust(&self, sensor: &NodeId, now: Timestamp) -> Option<f64> {
        let s = self.sensors.get(*self.sensor_index.get(sensor)? as usize)?;
        Some(trust(&self.config, s, now.0))
    }

    /// Takes in one report at the tier's time `now`.
    pub fn ingest(&mut self, report: &Report, now: Timestamp) -> IngestOutcome {
        let now_ms = now.0;
        let max_age = ms(self.config.max_report_age_secs);
        if now_ms.saturating_sub(report.observed_at.0) > max_age {
            return IngestOutcome::Stale;
        }
        // A report proves presence at its verified address, like a heartbeat.
        let sensor_idx = self.sensor_slot(report.sensor, report.address, now_ms);
        if self.config.defences.allowlist && self.allowlist.is_allowed(&report.hashed_ip) {
            return IngestOutcome::Allowlisted;
        }
        let protected = self.config.defences.allowlist && self.allowlist.is_protected(&report.hashed_ip);
        let confidence = usize::from(report.confidence.min(3));
        let evidence = (self.config.confidence_weights[confidence]
            * self.config.scenario_weights[report.scenario.index()]) as f32;

        let Consensus { config, sensors, groups, ips, changes, listed: listed_count, .. } = self;
        let Some(sensor) = sensors.get(sensor_idx as usize) else {
            return IngestOutcome::Crowded;
        };
        let group_idx = sensor.group;

        if let Some(state) = ips.get_mut(&report.hashed_ip) {
            if let Some(entry) = state.entries.iter_mut().find(|e| e.sensor == sensor_idx) {
                entry.at = now_ms;
                entry.evidence = entry.evidence.max(evidence);
                let listed = evaluate(
                    config,
                    sensors,
                    state,
                    &report.hashed_ip,
                    protected,
                    now_ms,
                    changes,
                    listed_count,
                );
                return IngestOutcome::Refreshed { listed };
            }
        }

        // A new (sensor, IP) pair: spend novelty budget first.
        if config.defences.rate_limit {
            let sensor_trust = trust(config, sensor, now_ms);
            let needs_group = sensor_trust < config.proven_trust;
            let Some(sensor) = sensors.get_mut(sensor_idx as usize) else {
                return IngestOutcome::Crowded;
            };
            let group = groups.get_mut(group_idx as usize);
            let sensor_ok = refill(
                &mut sensor.tokens,
                &mut sensor.tokens_at,
                now_ms,
                config.sensor_new_ips_per_hour,
                config.sensor_new_ip_burst,
            ) >= 1.0;
            let group_ok = match (needs_group, group) {
                (true, Some(g)) => {
                    refill(
                        &mut g.tokens,
                        &mut g.tokens_at,
                        now_ms,
                        config.group_unproven_new_ips_per_hour,
                        config.group_unproven_new_ip_burst,
                    ) >= 1.0
                }
                _ => true,
            };
            if !(sensor_ok && group_ok) {
                return IngestOutcome::RateLimited;
            }
            sensor.tokens -= 1.0;
            if needs_group {
                if let Some(g) = groups.get_mut(group_idx as usize) {
                    g.tokens -= 1.0;
                }
            }
        }

        let state = ips.entry(report.hashed_ip).or_default();
        let listed_now = state.listed_since.is_some();
        let entry = Entry {
            at: now_ms,
            sensor: sensor_idx,
            group: if config.defences.group_cap { group_idx } else { sensor_idx },
            evidence,
            novel: !listed_now || !config.defences.novelty_credit,
        };
        if !insert_entry(config, sensors, state, entry, now_ms) {
            if state.entries.is_empty() {
                ips.remove(&report.hashed_ip);
            }
            return IngestOutcome::Crowded;
        }
        if listed_now && !config.defences.novelty_credit {
            // Without the novelty rule, copying the list earns credit at once.
            if let Some(s) = sensors.get_mut(sensor_idx as usize) {
                credit(config, s, now_ms, true);
            }
        }
        let listed =
            evaluate(config, sensors, state, &report.hashed_ip, protected, now_ms, changes, listed_count);
        IngestOutcome::Recorded { listed }
    }

    /// Advances time: expires old reports (charging their sensors when nobody
    /// confirmed them) and re-scores listed IPs with decay, delisting those that fell
    /// below `delist_ratio * threshold`. Cost: one pass over tracked IPs.
    pub fn tick(&mut self, now: Timestamp) {
        let now_ms = now.0;
        let ttl = ms(self.config.report_ttl_secs);
        let Consensus { config, sensors, ips, allowlist, changes, listed, .. } = self;
        ips.retain(|ip, state| {
            let was_listed = state.listed_since.is_some();
            state.entries.retain(|e| {
                let alive = now_ms.saturating_sub(e.at) <= ttl;
                if !alive && e.novel && !was_listed {
                    if let Some(s) = sensors.get_mut(e.sensor as usize) {
                        credit(config, s, now_ms, false);
                    }
                }
                alive
            });
            reassess(config, sensors, allowlist, ip, state, now, changes, listed)
        });
    }

    /// Forgets these sensors (a tenant removed from the tier): their live reports stop
    /// counting at once, listed IPs are re-scored (and delisted, as a change, when they
    /// no longer hold), and the sensors' standing is dropped, so that the same key
    /// enrolled again starts as a new sensor. Returns how many reports were dropped.
    /// Cost: one pass over tracked IPs.
    pub fn forget_sensors(&mut self, gone: &[NodeId], now: Timestamp) -> usize {
        let slots: Vec<u32> = gone.iter().filter_map(|id| self.sensor_index.remove(id)).collect();
        if slots.is_empty() {
            return 0;
        }
        let mut dropped = 0;
        let Consensus { config, sensors, ips, allowlist, changes, listed, .. } = self;
        ips.retain(|ip, state| {
            let before = state.entries.len();
            state.entries.retain(|e| !slots.contains(&e.sensor));
            if state.entries.len() == before {
                return true;
            }
            dropped += before - state.entries.len();
            reassess(config, sensors, allowlist, ip, state, now, changes, listed)
        });
        dropped
    }

    /// The list changes since the last call, in time order (ties by IP), so the tier can
    /// publish deltas the way CrowdSec's stream endpoint does.
    pub fn drain_changes(&mut self) -> Vec<ListChange> {
        let mut out = std::mem::take(&mut self.changes);
        out.sort_by(|a, b| a.at.cmp(&b.at).then(a.ip.cmp(&b.ip)));
        out
    }

    /// Whether `ip` is on the published list.
    pub fn is_listed(&self, ip: &HashedIp) -> bool {
        self.ips.get(ip).is_some_and(|s| s.listed_since.is_some())
    }

    /// The current score of `ip`, if anyone reports it.
    pub fn score(&self, ip: &HashedIp, now: Timestamp) -> Option<f64> {
        let state = self.ips.get(ip)?;
        Some(assess(&self.config, &self.sensors, state, now.0).score)
    }

    /// The published list, sorted by hashed IP.
    pub fn published(&self, now: Timestamp) -> Vec<Listing> {
        let mut out: Vec<Listing> = self
            .ips
            .iter()
            .filter_map(|(ip, state)| {
                let since = state.listed_since?;
                let a = assess(&self.config, &self.sensors, state, now.0);
                Some(Listing { ip: *ip, score: a.score, groups: a.groups, listed_since: Timestamp(since) })
            })
            .collect();
        out.sort_by_key(|l| l.ip);
        out
    }

    /// Why `ip` has the score it has: each group's contribution and each sensor's.
    pub fn explain(&self, ip: &HashedIp, now: Timestamp) -> Option<Explanation> {
        let state = self.ips.get(ip)?;
        let a = assess(&self.config, &self.sensors, state, now.0);
        let mut groups: Vec<GroupContribution> = Vec::new();
        for chunk in state.entries.chunk_by(|x, y| x.group == y.group) {
            let mut sensors_out = Vec::new();
            let (mut sum, mut max) = (0.0f64, 0.0f64);
            for e in chunk {
                let Some(s) = self.sensors.get(e.sensor as usize) else {
                    continue;
                };
                let t = trust(&self.config, s, now.0);
                let w = weight(&self.config, t, e, now.0);
                sum += w;
                max = max.max(w);
                sensors_out.push(SensorContribution {
                    sensor: s.id,
                    asn: s.address.asn,
                    trust: t,
                    evidence: f64::from(e.evidence),
                    weight: w,
                    reported_at: Timestamp(e.at),
                });
            }
            let key = match (self.config.defences.group_cap, chunk.first()) {
                (true, Some(e)) => self.groups.get(e.group as usize).map(|g| g.key),
                (false, Some(e)) => {
                    self.sensors.get(e.sensor as usize).map(|s| self.orgs.group_of(s.address.asn))
                }
                _ => None,
            };
            if let Some(key) = key {
                groups.push(GroupContribution {
                    group: key,
                    contribution: group_score(&self.config, sum, max),
                    sensors: sensors_out,
                });
            }
        }
        groups.sort_by(|a, b| b.contribution.total_cmp(&a.contribution).then(a.group.cmp(&b.group)));
        Some(Explanation {
            ip: *ip,
            score: a.score,
            groups_counted: a.groups,
            listed_since: state.listed_since.map(Timestamp),
            protected: self.allowlist.is_protected(ip),
            groups,
        })
    }

    /// Sizes of the state.
    pub fn stats(&self) -> Stats {
        Stats {
            tracked_ips: self.ips.len(),
            reports: self.ips.values().map(|s| s.entries.len()).sum(),
            sensors: self.sensors.len(),
            groups: self.groups.len(),
            listed: self.listed,
        }
    }

    /// The sensor's slot, created on first sight; updates its verified presence.
    fn sensor_slot(&mut self, id: NodeId, address: VerifiedAddress, now_ms: i64) -> u32 {
        let key = self.orgs.group_of(address.asn);
        let group = match self.group_index.get(&key) {
            Some(g) => *g,
            None => {
                let g = self.groups.len() as u32;
                self.groups.push(Group {
                    key,
                    tokens: self.config.group_unproven_new_ip_burst as f32,
                    tokens_at: now_ms,
                });
                self.group_index.insert(key, g);
                g
            }
        };
        let gap = ms(self.config.max_presence_gap_secs);
        match self.sensor_index.get(&id) {
            Some(idx) => {
                if let Some(s) = self.sensors.get_mut(*idx as usize) {
                    if s.address != address || now_ms.saturating_sub(s.last_seen) > gap {
                        // A new address, or a long absence: verified age starts over.
                        s.verified_since = now_ms;
                        s.address = address;
                        s.group = group;
                    }
                    s.last_seen = s.last_seen.max(now_ms);
                }
                *idx
            }
            None => {
                let idx = self.sensors.len() as u32;
                self.sensors.push(Sensor {
                    id,
                    address,
                    group,
                    verified_since: now_ms,
                    last_seen: now_ms,
                    confirmed: 0.0,
                    unconfirmed: 0.0,
                    record_at: now_ms,
                    tokens: self.config.sensor_new_ip_burst as f32,
                    tokens_at: now_ms,
                });
                self.sensor_index.insert(id, idx);
                idx
            }
        }
    }
}

fn ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Token bucket: refills, then returns the tokens available (the caller spends them).
fn refill(tokens: &mut f32, at: &mut i64, now_ms: i64, per_hour: f64, burst: f64) -> f32 {
    let elapsed_h = now_ms.saturating_sub(*at).max(0) as f64 / MS_PER_HOUR;
    *tokens = (f64::from(*tokens) + elapsed_h * per_hour).min(burst) as f32;
    *at = now_ms.max(*at);
    *tokens
}

/// A sensor's trust: a small floor, plus the rest earned by verified age times
/// reliability. Both parts must be earned: age alone (a sleeper that only heartbeats or
/// copies the list) reaches `new + (1-new) * prior/target`, reliability alone nothing.
fn trust(config: &ConsensusConfig, s: &Sensor, now_ms: i64) -> f64 {
    if !config.defences.trust {
        return 1.0;
    }
    let seen_until = now_ms.min(s.last_seen.saturating_add(ms(config.max_presence_gap_secs)));
    let age = seen_until.saturating_sub(s.verified_since).max(0) as f64 / (ms(config.trust_ramp_secs) as f64);
    let age = age.min(1.0);
    let fade = half_life_factor(now_ms.saturating_sub(s.record_at), config.reliability_half_life_secs);
    let (c, u) = (s.confirmed * fade, s.unconfirmed * fade);
    let a = config.reliability_prior_confirmed;
    let b = config.reliability_prior_unconfirmed;
    let reliability = (c + a) / (c + u + a + b);
    let rel = (reliability / config.reliability_target).min(1.0);
    config.new_sensor_trust + (1.0 - config.new_sensor_trust) * age * rel
}

fn half_life_factor(elapsed_ms: i64, half_life_secs: u64) -> f64 {
    let elapsed = elapsed_ms.max(0) as f64 / 1000.0;
    (-(elapsed / half_life_secs as f64) * std::f64::consts::LN_2).exp()
}

/// Adds one corroborated (`confirmed`) or unconfirmed novel report to a sensor's record.
fn credit(config: &ConsensusConfig, s: &mut Sensor, now_ms: i64, confirmed: bool) {
    let fade = half_life_factor(now_ms.saturating_sub(s.record_at), config.reliability_half_life_secs);
    s.confirmed *= fade;
    s.unconfirmed *= fade;
    s.record_at = now_ms.max(s.record_at);
    if confirmed {
        s.confirmed += 1.0;
    } else {
        s.unconfirmed += 1.0;
    }
}

/// A report's weight: trust times evidence times decay.
fn weight(config: &ConsensusConfig, trust: f64, e: &Entry, now_ms: i64) -> f64 {
    let decay = if config.defences.decay {
        half_life_factor(now_ms.saturating_sub(e.at), config.report_half_life_secs)
    } else {
        1.0
    };
    trust * f64::from(e.evidence) * decay
}

/// One group's contribution from the sum and the maximum of its members' weights:
/// concave in the sum (`cap * (1 - e^(-sum/cap))`), never above the cap, and never more
/// than `1 + group_member_bonus` times its single weightiest member.
fn group_score(config: &ConsensusConfig, sum: f64, max: f64) -> f64 {
    let cap = config.group_cap;
    let concave = cap * (1.0 - (-sum / cap).exp());
    concave.min((1.0 + config.group_member_bonus) * max).min(cap).max(0.0)
}

fn assess(config: &ConsensusConfig, sensors: &[Sensor], state: &IpState, now_ms: i64) -> Assessment {
    let mut score = 0.0;
    let mut groups = 0;
    for chunk in state.entries.chunk_by(|x, y| x.group == y.group) {
        let (mut sum, mut max) = (0.0f64, 0.0f64);
        for e in chunk {
            if let Some(s) = sensors.get(e.sensor as usize) {
                let w = weight(config, trust(config, s, now_ms), e, now_ms);
                sum += w;
                max = max.max(w);
            }
        }
        let g = group_score(config, sum, max);
        score += g;
        if g >= config.min_group_contribution {
            groups += 1;
        }
    }
    Assessment { score, groups }
}

/// After an IP's reports changed (expired or forgotten): whether to keep tracking it.
/// An IP left without reports, or allowlisted since, is dropped (delisted, as a change,
/// if it was listed). Only listed IPs are re-scored: an unlisted IP's score only decays
/// between reports, so it can cross the threshold only when a report arrives.
#[allow(clippy::too_many_arguments)]
fn reassess(
    config: &ConsensusConfig,
    sensors: &mut [Sensor],
    allowlist: &Allowlist,
    ip: &HashedIp,
    state: &mut IpState,
    now: Timestamp,
    changes: &mut Vec<ListChange>,
    listed: &mut usize,
) -> bool {
    let was_listed = state.listed_since.is_some();
    if state.entries.is_empty() || (config.defences.allowlist && allowlist.is_allowed(ip)) {
        if was_listed {
            *listed -= 1;
            changes.push(ListChange { ip: *ip, at: now, kind: ListChangeKind::Delisted });
        }
        return false;
    }
    if was_listed {
        let protected = config.defences.allowlist && allowlist.is_protected(ip);
        evaluate(config, sensors, state, ip, protected, now.0, changes, listed);
    }
    true
}

/// Re-scores one IP, lists or delists it, credits novel reporters on listing. Returns
/// whether the IP is listed afterwards.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    config: &ConsensusConfig,
    sensors: &mut [Sensor],
    state: &mut IpState,
    ip: &HashedIp,
    protected: bool,
    now_ms: i64,
    changes: &mut Vec<ListChange>,
    listed: &mut usize,
) -> bool {
    let a = assess(config, sensors, state, now_ms);
    let (threshold, min_groups) = if protected {
        (config.protected_threshold, config.protected_min_groups)
    } else {
        (config.list_threshold, config.min_groups)
    };
    let min_groups = if config.defences.min_groups { min_groups } else { 1 };
    match state.listed_since {
        None if a.score >= threshold && a.groups >= min_groups => {
            state.listed_since = Some(now_ms);
            *listed += 1;
            changes.push(ListChange {
                ip: *ip,
                at: Timestamp(now_ms),
                kind: ListChangeKind::Listed { score: a.score, groups: a.groups },
            });
            // Corroboration: reporters who were early get credit, if another group agrees.
            if a.groups >= 2 {
                for e in state.entries.iter_mut().filter(|e| e.novel) {
                    e.novel = false;
                    if let Some(s) = sensors.get_mut(e.sensor as usize) {
                        credit(config, s, now_ms, true);
                    }
                }
            }
            true
        }
        Some(_) if a.score < threshold * config.delist_ratio => {
            state.listed_since = None;
            *listed -= 1;
            changes.push(ListChange { ip: *ip, at: Timestamp(now_ms), kind: ListChangeKind::Delisted });
            false
        }
        other => other.is_some(),
    }
}

/// Inserts a report keeping entries sorted by group and within the per-group and per-IP
/// caps; when full, the new report replaces the weakest one if it is weightier.
fn insert_entry(
    config: &ConsensusConfig,
    sensors: &[Sensor],
    state: &mut IpState,
    entry: Entry,
    now_ms: i64,
) -> bool {
    let w = |e: &Entry| {
        sensors.get(e.sensor as usize).map_or(0.0, |s| weight(config, trust(config, s, now_ms), e, now_ms))
    };
    let new_w = w(&entry);
    let same_group = state.entries.iter().filter(|e| e.group == entry.group).count();
    let victim = if same_group >= config.max_reports_per_group {
        weakest(state.entries.iter().enumerate().filter(|(_, e)| e.group == entry.group), &w)
    } else if state.entries.len() >= config.max_reports_per_ip {
        // Full: evict from groups that have several reports first, so that a full IP
        // still gains from a new group.
        let crowded = |e: &Entry| state.entries.iter().filter(|o| o.group == e.group).count() > 1;
        weakest(state.entries.iter().enumerate().filter(|(_, e)| crowded(e)), &w)
            .or_else(|| weakest(state.entries.iter().enumerate(), &w))
    } else {
        None
    };
    // A report from a group the IP has not heard from adds diversity: when the IP is
    // full, it displaces the weakest report of a group that keeps others, even if not
    // weightier.
    let new_group = same_group == 0;
    let displaces = |i: usize, victim_w: f64| {
        victim_w < new_w
            || (new_group
                && state
                    .entries
                    .get(i)
                    .is_some_and(|v| state.entries.iter().filter(|o| o.group == v.group).count() > 1))
    };
    match victim {
        Some((i, victim_w)) if displaces(i, victim_w) => {
            state.entries.remove(i);
        }
        Some(_) => return false,
        None => {}
    }
    let pos = state.entries.partition_point(|e| e.group <= entry.group);
    state.entries.insert(pos, entry);
    true
}

fn weakest<'a>(
    it: impl Iterator<Item = (usize, &'a Entry)>,
    w: &impl Fn(&Entry) -> f64,
) -> Option<(usize, f64)> {
    it.map(|(i, e)| (i, w(e))).min_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use crate::config::ConsensusConfig;

    /// [`super::group_score`] for the unit tests.
    pub(crate) fn group_score(config: &ConsensusConfig, sum: f64, max: f64) -> f64 {
        super::group_score(config, sum, max)
    }
}
