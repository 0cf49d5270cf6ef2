//! The reputation engine: turns this node's overflows into signed [`Signal`]s.
//!
//! A signal names the attacker only by its [`HashedIp`](palisade_proto::HashedIp),
//! keyed with the fleet secret and the epoch of the overflow, and (when sealing is on)
//! carries the raw address sealed for fleet members. Sequence numbers are gap-free per
//! node, so peers can ask for exactly what they miss. The fleet layer ships the outbox.

use palisade_proto::{Epoch, HashKey, NodeKey, SealKey, Signal, SignedSignal};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Deserialize;
use std::net::IpAddr;

use crate::decision::ConfigError;
use crate::event::Overflow;

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
}

impl Default for ReputationConfig {
    fn default() -> Self {
        ReputationConfig { epoch_hours: 24, seal_ips: true, outbox_keep: 100_000 }
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
        Ok(())
    }
}

/// Signs overflows into signals.
#[derive(Debug)]
pub struct Reputation {
    key: NodeKey,
    secret: [u8; 32],
    epoch_secs: u32,
    seal: Option<SealKey>,
    last_seq: u64,
    hash_key: Option<(Epoch, HashKey)>,
    rng: StdRng,
}

impl Reputation {
    /// A signer for `key`, hashing with `secret`, continuing after `last_seq`.
    pub fn new(key: NodeKey, secret: [u8; 32], config: &ReputationConfig, last_seq: u64, seed: u64) -> Self {
        Reputation {
            key,
            secret,
            epoch_secs: config.epoch_hours.saturating_mul(3600),
            seal: config.seal_ips.then(|| SealKey::derive(&secret)),
            last_seq,
            hash_key: None,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The last sequence number used.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The signal for an overflow against a single address; `None` for overflows
    /// without one (ranges and unparsable values are not signalled).
    pub fn on_overflow(&mut self, overflow: &Overflow) -> Option<SignedSignal> {
        if overflow.scope != palisade_proto::Scope::Ip {
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
        if let Some(seal) = &self.seal {
            signal.sealed_ip = Some(seal.seal(ip, &signal.id().aad(), &mut self.rng));
        }
        Some(signal.sign(&self.key))
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
    }
}
