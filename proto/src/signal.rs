//! Signals: what one node tells others about an attacker, signed at the origin.
//!
//! A [`Signal`] names the attacker by [`HashedIp`] only; inside a fleet it may also carry
//! the raw address as a [`SealedIp`]. Every relay and every user of a signal verifies
//! its signature first. ed25519 verification costs ~15-30k signatures/s per core, so
//! [`verify_batch`] checks many at once and falls back to one-by-one only when a batch
//! contains a bad signature.

use bincode::{Decode, Encode};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use crate::envelope::{bincode_config, WireError};
use crate::ip::{Epoch, HashedIp, SealedIp};
use crate::node::{NodeId, NodeKey};
use crate::time::Timestamp;

/// Domain-separation prefix of signed signal bytes.
const SIGNAL_CONTEXT: &[u8] = b"palisade signal v1\0";

/// Longest scenario name a signal may carry, in bytes.
pub const MAX_SCENARIO_LEN: usize = 128;

/// What a node saw: an attacker (by hashed IP) that overflowed one of its scenarios.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Signal {
    /// The node that saw the attack and signed this signal.
    pub origin: NodeId,
    /// The origin's sequence number, gap-free from 1: peers repair gaps by asking for the
    /// numbers they miss.
    pub seq: u64,
    /// The hashing epoch `hashed_ip` was made in.
    pub epoch: Epoch,
    /// The attacker's address, hashed with the fleet (or community) key of `epoch`.
    pub hashed_ip: HashedIp,
    /// The scenario that overflowed, e.g. `palisade/ssh-bf`.
    pub scenario: String,
    /// How sure the scenario is, 0 (guess) to 3 (certain); CrowdSec's `confidence` label.
    pub confidence: u8,
    /// When the overflow happened, by the time of the log line that caused it.
    pub observed_at: Timestamp,
    /// How many events were in the bucket when it overflowed.
    pub events_count: u32,
    /// The raw address sealed with the fleet key, for fleet members only; never sent to
    /// the central tier.
    pub sealed_ip: Option<SealedIp>,
}

/// A signal's identity: its origin and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct SignalId {
    /// The signing node.
    pub origin: NodeId,
    /// The origin's sequence number.
    pub seq: u64,
}

impl SignalId {
    /// Bytes that bind a [`SealedIp`] to this signal.
    pub fn aad(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..32].copy_from_slice(&self.origin.0);
        out[32..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }
}

impl Signal {
    /// This signal's identity.
    pub fn id(&self) -> SignalId {
        SignalId { origin: self.origin, seq: self.seq }
    }

    /// Checks the bounds a decoder cannot express: a valid signal has a sequence number
    /// of at least 1, a short printable scenario name and a confidence of at most 3.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.seq == 0 {
            return Err(WireError::Invalid("signal sequence numbers start at 1"));
        }
        if self.scenario.is_empty() || self.scenario.len() > MAX_SCENARIO_LEN {
            return Err(WireError::Invalid("scenario name must be 1 to 128 bytes"));
        }
        if self.scenario.chars().any(char::is_control) {
            return Err(WireError::Invalid("scenario name has control characters"));
        }
        if self.confidence > 3 {
            return Err(WireError::Invalid("confidence is 0 to 3"));
        }
        Ok(())
    }

    /// The exact bytes the origin signs.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = SIGNAL_CONTEXT.to_vec();
        // Encoding into a Vec cannot fail for these plain types.
        if let Ok(body) = bincode::encode_to_vec(self, bincode_config()) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Signs this signal with the origin's key. The signal's `origin` must be `key`'s id;
    /// it is set here so a caller cannot get it wrong.
    pub fn sign(mut self, key: &NodeKey) -> SignedSignal {
        self.origin = key.node_id();
        let signature = key.sign(&self.signing_bytes());
        SignedSignal { signal: self, signature }
    }
}

/// A signal with its origin's ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedSignal {
    /// The signed content.
    pub signal: Signal,
    /// ed25519 signature over [`Signal::signing_bytes`] by `signal.origin`.
    pub signature: [u8; 64],
}

/// Why a signed signal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The origin is not a valid ed25519 public key.
    #[error("origin is not a valid ed25519 key")]
    BadOrigin,
    /// The signature does not match the content and origin.
    #[error("signature does not verify")]
    BadSignature,
    /// The content breaks a bound (see [`Signal::validate`]).
    #[error("invalid signal: {0}")]
    Invalid(#[from] WireError),
}

impl SignedSignal {
    /// Verifies this one signal: bounds, origin key, signature.
    pub fn verify(&self) -> Result<(), VerifyError> {
        self.signal.validate()?;
        let key = self.signal.origin.verifying_key().ok_or(VerifyError::BadOrigin)?;
        key.verify(&self.signal.signing_bytes(), &Signature::from_bytes(&self.signature))
            .map_err(|_| VerifyError::BadSignature)
    }
}

/// Verifies many signals at once. Returns one result per input, in order.
///
/// Batch verification is about twice as fast as one-by-one, but only says whether *all*
/// signatures hold; when it fails, each signal is checked alone so that one forged
/// signal does not discard its honest neighbours.
pub fn verify_batch(signals: &[SignedSignal]) -> Vec<Result<(), VerifyError>> {
    let mut results: Vec<Result<(), VerifyError>> = Vec::with_capacity(signals.len());
    let mut messages = Vec::new();
    let mut signatures = Vec::new();
    let mut keys: Vec<VerifyingKey> = Vec::new();
    // A batch comes from a handful of origins: decompress each origin's key once
    // (decompression is a field inversion, as costly as a third of a verification).
    let mut known: Vec<(NodeId, Option<VerifyingKey>)> = Vec::new();
    for s in signals {
        let origin = s.signal.origin;
        let key = match known.iter().find(|(id, _)| *id == origin) {
            Some((_, key)) => *key,
            None => {
                let key = origin.verifying_key();
                if known.len() < 16 {
                    known.push((origin, key));
                }
                key
            }
        };
        let checked =
            s.signal.validate().map_err(VerifyError::from).and_then(|()| key.ok_or(VerifyError::BadOrigin));
        match checked {
            Ok(key) => {
                messages.push(s.signal.signing_bytes());
                signatures.push(Signature::from_bytes(&s.signature));
                keys.push(key);
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if keys.is_empty() {
        return results;
    }
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    if ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_ok() {
        return results;
    }
    // `keys`, `refs` and `signatures` hold one entry per `Ok` result, in order.
    let mut checked = keys.iter().zip(&refs).zip(&signatures);
    for result in results.iter_mut().filter(|r| r.is_ok()) {
        if let Some(((key, message), signature)) = checked.next() {
            if key.verify(message, signature).is_err() {
                *result = Err(VerifyError::BadSignature);
            }
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::{HashKey, SealKey};
    use rand::rngs::OsRng;

    fn signal(seq: u64) -> Signal {
        let key = HashKey::derive(&[3; 32], Epoch(9));
        Signal {
            origin: NodeId([0; 32]),
            seq,
            epoch: Epoch(9),
            hashed_ip: key.hash("198.51.100.7".parse().unwrap()),
            scenario: "palisade/ssh-bf".into(),
            confidence: 3,
            observed_at: Timestamp(1_700_000_000_000),
            events_count: 6,
            sealed_ip: None,
        }
    }

    #[test]
    fn sign_and_verify() {
        let key = NodeKey::generate(&mut OsRng);
        let signed = signal(1).sign(&key);
        assert_eq!(signed.signal.origin, key.node_id());
        assert_eq!(signed.verify(), Ok(()));
        let mut forged = signed.clone();
        forged.signal.events_count += 1;
        assert_eq!(forged.verify(), Err(VerifyError::BadSignature));
    }

    #[test]
    fn batch_isolates_the_forgery() {
        let key = NodeKey::generate(&mut OsRng);
        let mut batch: Vec<_> = (1..=8).map(|i| signal(i).sign(&key)).collect();
        batch[3].signal.scenario = "palisade/other".into();
        batch[5].signal.seq = 0;
        let results = verify_batch(&batch);
        for (i, r) in results.iter().enumerate() {
            match i {
                3 => assert_eq!(r, &Err(VerifyError::BadSignature)),
                5 => assert!(matches!(r, Err(VerifyError::Invalid(_)))),
                _ => assert_eq!(r, &Ok(())),
            }
        }
        assert!(verify_batch(&[]).is_empty());
    }

    #[test]
    fn batch_with_mixed_origins_checks_each_against_its_own_key() {
        let (a, b) = (NodeKey::generate(&mut OsRng), NodeKey::generate(&mut OsRng));
        let mut batch: Vec<_> = (1..=6).map(|i| signal(i).sign(if i % 3 == 0 { &b } else { &a })).collect();
        // A signal of `a` claiming to be from `b` right after a real one of `b`.
        batch[3].signal.origin = b.node_id();
        batch[4].signal.origin = NodeId([0xff; 32]);
        let results = verify_batch(&batch);
        assert_eq!(results[3], Err(VerifyError::BadSignature));
        assert!(matches!(results[4], Err(VerifyError::BadOrigin | VerifyError::BadSignature)));
        for i in [0, 1, 2, 5] {
            assert_eq!(results[i], Ok(()), "signal {i}");
        }
    }

    #[test]
    fn sealed_ip_is_bound_to_its_signal() {
        let node = NodeKey::generate(&mut OsRng);
        let seal = SealKey::derive(&[5; 32]);
        let mut s = signal(4);
        s.origin = node.node_id();
        let ip = "203.0.113.50".parse().unwrap();
        s.sealed_ip = Some(seal.seal(ip, &s.id().aad(), &mut OsRng));
        let signed = s.sign(&node);
        let sealed = signed.signal.sealed_ip.as_ref().unwrap();
        assert_eq!(seal.open(sealed, &signed.signal.id().aad()), Ok(ip));
        let other = SignalId { origin: node.node_id(), seq: 5 };
        assert!(seal.open(sealed, &other.aad()).is_err());
    }
}
