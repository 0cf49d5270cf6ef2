//! The reputation engine: what this node tells its fleet, and what it makes of what the
//! fleet tells it.
//!
//! Outgoing: this node's own overflows become signed [`Signal`]s. A signal names the
//! attacker by its [`HashedIp`], keyed with the fleet secret and the epoch of the
//! overflow, and (when sealing is on) carries the raw address sealed for fleet members.
//! Sequence numbers are gap-free per node, so peers can ask for exactly what they miss.
//!
//! Incoming ([`Reputation::on_fleet_signals`]): verified signals of other members. Once
//! `fleet_reporters` distinct members reported an address, a signal with a sealed
//! address becomes a ban (origin `fleet`) at once; one without becomes a [`Flag`] for
//! the on-sight check, so the first event from that address triggers the ban.

use palisade_proto::time::parse_duration;
use palisade_proto::{
    Epoch, HashKey, HashedIp, NodeId, NodeKey, Origin, SealKey, Signal, SignedSignal, Timestamp,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::decision::ConfigError;
use crate::event::{Overflow, Remediation};
use crate::watchlist::Flag;

/// The `[reputation]` section of the node's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReputationConfig {
    /// Length of a hashing epoch, in hours: hashes from different epochs are unlinkable.
    pub epoch_hours: u32,
    /// Attach the raw address sealed with the fleet key, so fleet peers can ban it
    /// before the attacker reaches them.
    pub seal_ips: bool,
    /// How many signals the outbox keeps for peers that catch up.
    pub outbox_keep: u64,
    /// How many distinct fleet members must report an address before this node bans
    /// it (1: members trust each other).
    pub fleet_reporters: usize,
    /// How long an address flagged by hash only waits for its first event.
    pub on_sight_for: String,
    /// Most addresses flagged by hash at once; more are refused and counted.
    pub on_sight_max: usize,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        ReputationConfig {
            epoch_hours: 24,
            seal_ips: true,
            outbox_keep: 100_000,
            fleet_reporters: 1,
            on_sight_for: "24h".into(),
            on_sight_max: 1_000_000,
        }
    }
}

impl ReputationConfig {
    /// Checks the values; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.epoch_hours == 0 || self.epoch_hours > 24 * 366 {
            return Err(ConfigError::new("reputation.epoch_hours", "must be 1 to 8784 hours"));
        }
        if self.outbox_keep == 0 {
            return Err(ConfigError::new("reputation.outbox_keep", "must be at least 1"));
        }
        if self.fleet_reporters == 0 || self.fleet_reporters > 1000 {
            return Err(ConfigError::new("reputation.fleet_reporters", "must be 1 to 1000"));
        }
        if self.on_sight_max == 0 {
            return Err(ConfigError::new("reputation.on_sight_max", "must be at least 1"));
        }
        self.on_sight_duration()?;
        Ok(())
    }

    /// `on_sight_for`, parsed.
    pub fn on_sight_duration(&self) -> Result<Duration, ConfigError> {
        match parse_duration(&self.on_sight_for) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(ConfigError::new("reputation.on_sight_for", "must be above zero")),
            Err(e) => Err(ConfigError::new("reputation.on_sight_for", e)),
        }
    }
}

/// Counters of what the fleet told this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Verified signals of other members received.
    pub signals_in: u64,
    /// Of those, signals that reached the reporter threshold with a sealed address.
    pub bans: u64,
    /// Of those, signals that reached it with a hash only (flagged for the on-sight check).
    pub flags: u64,
    /// Sealed addresses that did not open with the fleet key (counted, then treated as
    /// hash-only).
    pub unsealable: u64,
    /// Signals of this node's own origin (never acted on).
    pub own: u64,
    /// Addresses waiting for more reporters.
    pub pending: u64,
    /// Reports dropped because too many addresses were waiting for more reporters.
    pub pending_full: u64,
}

/// What a batch of fleet signals asks of the node.
#[derive(Debug, Default)]
pub struct FleetOutcome {
    /// Overflows with the raw address, origin `fleet`, for the decision actor.
    pub bans: Vec<Overflow>,
    /// Addresses known by hash only, for the scenario actor's on-sight check.
    pub flags: Vec<Flag>,
}

/// Who reported an address that has not yet reached the threshold.
#[derive(Debug)]
struct Reporters {
    origins: Vec<NodeId>,
    first_seen: Timestamp,
    address: Option<IpAddr>,
}

/// Signs overflows into signals, and turns fleet signals into bans and flags.
#[derive(Debug)]
pub struct Reputation {
    key: NodeKey,
    secret: [u8; 32],
    epoch_secs: u32,
    seal_ips: bool,
    seal: SealKey,
    last_seq: u64,
    hash_key: Option<(Epoch, HashKey)>,
    rng: StdRng,
    reporters_needed: usize,
    on_sight_for: Duration,
    /// Addresses reported by fewer than `reporters_needed` members, by (epoch, hash).
    pending: HashMap<(Epoch, HashedIp), Reporters>,
    pending_max: usize,
    next_prune: Timestamp,
    stats: FleetStats,
}

impl Reputation {
    /// A signer for `key`, hashing with `secret`, continuing after `last_seq`.
    pub fn new(key: NodeKey, secret: [u8; 32], config: &ReputationConfig, last_seq: u64, seed: u64) -> Self {
        Reputation {
            key,
            secret,
            epoch_secs: config.epoch_hours.saturating_mul(3600),
            seal_ips: config.seal_ips,
            seal: SealKey::derive(&secret),
            last_seq,
            hash_key: None,
            rng: StdRng::seed_from_u64(seed),
            reporters_needed: config.fleet_reporters.max(1),
            on_sight_for: config.on_sight_duration().unwrap_or(Duration::from_secs(86_400)),
            pending: HashMap::new(),
            pending_max: config.on_sight_max,
            next_prune: Timestamp(0),
            stats: FleetStats::default(),
        }
    }

    /// Hashes and seals with `secret` from now on: the fleet secret once the node joined
    /// a fleet, its own secret after it left.
    pub fn set_secret(&mut self, secret: [u8; 32]) {
        self.secret = secret;
        self.seal = SealKey::derive(&secret);
        self.hash_key = None;
        self.pending.clear();
    }

    /// The counters.
    pub fn fleet_stats(&self) -> FleetStats {
        FleetStats { pending: self.pending.len() as u64, ..self.stats }
    }

    /// What verified signals of other fleet members ask of this node at `now`.
    pub fn on_fleet_signals(&mut self, signals: &[SignedSignal], now: Timestamp) -> FleetOutcome {
        let mut outcome = FleetOutcome::default();
        let me = self.key.node_id();
        for signed in signals {
            let s = &signed.signal;
            if s.origin == me {
                self.stats.own += 1;
                continue;
            }
            self.stats.signals_in += 1;
            let address = match &s.sealed_ip {
                Some(sealed) => match self.seal.open(sealed, &s.id().aad()) {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        self.stats.unsealable += 1;
                        None
                    }
                },
                None => None,
            };
            if self.reporters_needed > 1 {
                if self.pending.len() >= self.pending_max
                    && !self.pending.contains_key(&(s.epoch, s.hashed_ip))
                {
                    self.stats.pending_full += 1;
                    continue;
                }
                let entry = self.pending.entry((s.epoch, s.hashed_ip)).or_insert_with(|| Reporters {
                    origins: Vec::new(),
                    first_seen: now,
                    address: None,
                });
                if !entry.origins.contains(&s.origin) {
                    entry.origins.push(s.origin);
                }
                entry.address = entry.address.or(address);
                if entry.origins.len() < self.reporters_needed {
                    continue;
                }
                let address = entry.address;
                self.pending.remove(&(s.epoch, s.hashed_ip));
                self.act(s, address, now, &mut outcome);
            } else {
                self.act(s, address, now, &mut outcome);
            }
        }
        // Reports that never gathered enough members lapse with the on-sight period
        // (looked for once a minute: the table can be large).
        if now >= self.next_prune {
            let horizon = self.on_sight_for;
            self.pending.retain(|_, r| now.since(r.first_seen) < horizon);
            self.next_prune = now.saturating_add(Duration::from_secs(60));
        }
        outcome
    }

    fn act(&mut self, s: &Signal, address: Option<IpAddr>, now: Timestamp, outcome: &mut FleetOutcome) {
        let scenario: Arc<str> = s.scenario.as_str().into();
        match address {
            Some(ip) => {
                self.stats.bans += 1;
                let value = ip.to_string();
                outcome.bans.push(Overflow {
                    scenario,
                    scope: palisade_proto::Scope::Ip,
                    group_key: value.clone(),
                    value,
                    events_count: s.events_count,
                    first_at: s.observed_at,
                    last_at: s.observed_at,
                    remediation: Some(Remediation {
                        kind: palisade_proto::DecisionType::Ban,
                        duration: None,
                    }),
                    confidence: s.confidence,
                    labels: Arc::default(),
                    origin: Origin::Fleet,
                });
            }
            None => {
                self.stats.flags += 1;
                outcome.flags.push(Flag {
                    origin: Origin::Fleet,
                    epoch: s.epoch,
                    key: HashKey::derive(&self.secret, s.epoch),
                    hashed_ip: s.hashed_ip,
                    scenario,
                    confidence: s.confidence,
                    events_count: s.events_count,
                    until: now.saturating_add(self.on_sight_for),
                });
            }
        }
    }

    /// The last sequence number used.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The signals for these overflows, signed in Merkle batches (one signature per
    /// [`SIGNING_BATCH`](palisade_proto::signal::SIGNING_BATCH) signals). Only this
    /// node's own overflows against a single address are signalled.
    pub fn on_overflows<'a>(
        &mut self,
        overflows: impl IntoIterator<Item = &'a Overflow>,
    ) -> Vec<SignedSignal> {
        let signals: Vec<Signal> = overflows.into_iter().filter_map(|o| self.signal_for(o)).collect();
        palisade_proto::signal::sign_batch(&self.key, signals)
    }

    /// The (unsigned) signal for an overflow against a single address, numbered and
    /// sealed; `None` for overflows without one (ranges and unparsable values are not
    /// signalled).
    fn signal_for(&mut self, overflow: &Overflow) -> Option<Signal> {
        // Only this node's own detections: an on-sight ban is the fleet's news already.
        if overflow.scope != palisade_proto::Scope::Ip || overflow.origin != Origin::Palisade {
            return None;
        }
        let ip: IpAddr = overflow.value.parse().ok()?;
        let epoch = Epoch::containing(overflow.last_at, self.epoch_secs);
        let hash_key = match &self.hash_key {
            Some((e, k)) if *e == epoch => k,
            _ => &self.hash_key.insert((epoch, HashKey::derive(&self.secret, epoch))).1,
        };
        let hashed_ip = hash_key.hash(ip);
        self.last_seq += 1;
        let mut signal = Signal {
            origin: self.key.node_id(),
            seq: self.last_seq,
            epoch,
            hashed_ip,
            scenario: truncate(&overflow.scenario, palisade_proto::signal::MAX_SCENARIO_LEN),
            confidence: overflow.confidence.min(3),
            observed_at: overflow.last_at,
            events_count: overflow.events_count,
            sealed_ip: None,
        };
        if self.seal_ips {
            signal.sealed_ip = Some(self.seal.seal(ip, &signal.id().aad(), &mut self.rng));
        }
        Some(signal)
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::{Scope, Timestamp};

    fn overflow(value: &str, scope: Scope) -> Overflow {
        Overflow {
            last_at: Timestamp(86_400_000 * 3 + 5),
            ..Overflow::for_test("palisade/ssh-bf", scope, value)
        }
    }

    impl Reputation {
        fn on_overflow(&mut self, overflow: &Overflow) -> Option<SignedSignal> {
            self.on_overflows([overflow]).pop()
        }
    }

    #[test]
    fn signals_are_signed_sequenced_hashed_and_sealed() {
        let key = NodeKey::from_bytes(&[1; 32]);
        let secret = [2; 32];
        let mut rep = Reputation::new(key.clone(), secret, &ReputationConfig::default(), 41, 7);
        let s = rep.on_overflow(&overflow("198.51.100.9", Scope::Ip)).unwrap();
        assert_eq!(s.verify(), Ok(()));
        assert_eq!((s.signal.seq, s.signal.epoch, s.signal.origin), (42, Epoch(3), key.node_id()));
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        assert_eq!(s.signal.hashed_ip, HashKey::derive(&secret, Epoch(3)).hash(ip));
        let sealed = s.signal.sealed_ip.as_ref().unwrap();
        assert_eq!(SealKey::derive(&secret).open(sealed, &s.signal.id().aad()), Ok(ip));
        assert!(rep.on_overflow(&overflow("198.51.100.0/24", Scope::Range)).is_none());
        assert!(rep.on_overflow(&overflow("", Scope::Ip)).is_none());
        assert_eq!(rep.last_seq(), 42);
        let unsealed = ReputationConfig { seal_ips: false, ..Default::default() };
        let mut rep = Reputation::new(key, secret, &unsealed, 0, 7);
        assert!(rep.on_overflow(&overflow("2001:db8::5", Scope::Ip)).unwrap().signal.sealed_ip.is_none());
        let fleet = Overflow { origin: Origin::Fleet, ..overflow("198.51.100.9", Scope::Ip) };
        assert!(rep.on_overflow(&fleet).is_none(), "an on-sight ban is not signalled again");
    }

    /// A member of the fleet sharing `secret`, signalling `ip`.
    fn member(n: u8, secret: [u8; 32], seal: bool, ip: &str) -> SignedSignal {
        let config = ReputationConfig { seal_ips: seal, ..Default::default() };
        let mut rep = Reputation::new(NodeKey::from_bytes(&[n; 32]), secret, &config, 0, u64::from(n));
        rep.on_overflow(&overflow(ip, Scope::Ip)).unwrap()
    }

    #[test]
    fn fleet_signals_ban_sealed_addresses_and_flag_hashed_ones() {
        let secret = [2; 32];
        let now = Timestamp(86_400_000 * 3 + 10);
        let mut me =
            Reputation::new(NodeKey::from_bytes(&[1; 32]), secret, &ReputationConfig::default(), 0, 1);
        let out = me.on_fleet_signals(&[member(3, secret, true, "198.51.100.9")], now);
        assert_eq!(out.bans.len(), 1);
        assert_eq!((out.bans[0].value.as_str(), &out.bans[0].origin), ("198.51.100.9", &Origin::Fleet));
        assert!(out.flags.is_empty());

        let out = me.on_fleet_signals(&[member(4, secret, false, "203.0.113.7")], now);
        assert!(out.bans.is_empty());
        let mut list = crate::watchlist::Watchlist::new(10);
        list.add(out.flags);
        assert!(list.check("203.0.113.8".parse().unwrap()).is_none());
        assert!(list.check("203.0.113.7".parse().unwrap()).is_some(), "the flag recognises the address");

        // Sealed with another fleet's key: cannot open, so it is treated as hash-only.
        let out = me.on_fleet_signals(&[member(5, [9; 32], true, "203.0.113.9")], now);
        assert_eq!((out.bans.len(), out.flags.len()), (0, 1));
        // Own signals relayed back are ignored.
        let own = me.on_overflow(&overflow("198.51.100.1", Scope::Ip)).unwrap();
        assert!(me.on_fleet_signals(&[own], now).flags.is_empty());
        let stats = me.fleet_stats();
        assert_eq!((stats.signals_in, stats.bans, stats.flags, stats.unsealable, stats.own), (3, 1, 2, 1, 1));
    }

    #[test]
    fn a_threshold_of_reporters_needs_distinct_members() {
        let secret = [2; 32];
        let now = Timestamp(86_400_000 * 3 + 10);
        let config = ReputationConfig { fleet_reporters: 2, ..Default::default() };
        let mut me = Reputation::new(NodeKey::from_bytes(&[1; 32]), secret, &config, 0, 1);
        let first = member(3, secret, true, "198.51.100.9");
        assert!(me.on_fleet_signals(std::slice::from_ref(&first), now).bans.is_empty());
        assert!(me.on_fleet_signals(&[first], now).bans.is_empty(), "the same member twice is one reporter");
        assert_eq!(me.fleet_stats().pending, 1);
        let out = me.on_fleet_signals(&[member(4, secret, false, "198.51.100.9")], now);
        assert_eq!(
            out.bans.len(),
            1,
            "the second member completes it; the first one's seal gives the address"
        );
        assert_eq!(me.fleet_stats().pending, 0);
        // A lone report lapses after on_sight_for.
        me.on_fleet_signals(&[member(3, secret, true, "198.51.100.50")], now);
        let later = now.saturating_add(Duration::from_secs(2 * 86_400));
        me.on_fleet_signals(&[], later);
        assert_eq!(me.fleet_stats().pending, 0);
    }
}
