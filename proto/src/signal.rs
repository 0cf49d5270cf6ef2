//! Signals: what one node tells others about an attacker, signed at the origin.
//!
//! A [`Signal`] names the attacker by [`HashedIp`] only; inside a fleet it may also carry
//! the raw address as a [`SealedIp`]. Every relay and every user of a signal verifies
//! its signature first.
//!
//! ed25519 costs about 20 µs to sign and 45 µs to verify on one core, which would cap a
//! node at a few tens of thousands of signals per second. So an origin signs its signals
//! in batches ([`sign_batch`]): the signals of a batch are the leaves of a Merkle tree
//! (blake3, leaves and inner nodes domain-separated), the origin signs the root once, and
//! each [`SignedSignal`] carries that signature with its leaf's position and the sibling
//! hashes up to the root (a [`BatchProof`]: 32 bytes per level, five levels for a full
//! batch of [`SIGNING_BATCH`]). A signal stays self-contained: it can be relayed, stored
//! or resent alone and still verifies. A [`Verifier`] checks each batch signature once
//! and remembers it, so the other signals of the batch cost one blake3 hash per level.

use std::collections::{HashMap, HashSet, VecDeque};

use bincode::{Decode, Encode};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

use crate::envelope::{bincode_config, WireError};
use crate::ip::{Epoch, HashedIp, SealedIp};
use crate::node::{NodeId, NodeKey};
use crate::time::Timestamp;

/// Domain-separation prefix of a signal's leaf bytes.
const SIGNAL_CONTEXT: &[u8] = b"palisade signal v2\0";

/// Domain-separation prefix of a signed batch root.
const BATCH_CONTEXT: &[u8] = b"palisade signal batch v2\0";

/// First byte hashed for a leaf (a signal), so that no leaf can pass for an inner node.
const LEAF: u8 = 0;

/// First byte hashed for an inner node.
const NODE: u8 = 1;

/// Longest scenario name a signal may carry, in bytes.
pub const MAX_SCENARIO_LEN: usize = 128;

/// Most signals [`sign_batch`] puts under one signature. Each doubling of the batch adds
/// a 32-byte level to every proof and halves the signing cost per signal: at 32, a
/// proof's path is 160 bytes and the signature costs under a microsecond per signal.
pub const SIGNING_BATCH: usize = 32;

/// Largest batch a received proof may claim (eight levels).
pub const MAX_BATCH: u16 = 256;

/// Longest proof path a received signal may carry.
const MAX_PATH: usize = 8;

/// Most encoded bytes of a signed signal beside its scenario name and proof path: every
/// fixed field at its longest varint, the signature and a sealed address.
pub const SIGNED_SIGNAL_FIXED_BYTES: usize = 240;

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

    /// The bytes of this signal's leaf in its batch's Merkle tree.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = SIGNAL_CONTEXT.to_vec();
        // Encoding into a Vec cannot fail for these plain types.
        if let Ok(body) = bincode::encode_to_vec(self, bincode_config()) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Signs this signal alone, as a batch of one (its `origin` is set to `key`'s id so
    /// a caller cannot get it wrong). To sign many, use [`sign_batch`].
    pub fn sign(mut self, key: &NodeKey) -> SignedSignal {
        self.origin = key.node_id();
        let root = leaf_hash(&self);
        let signature = key.sign(&root_message(1, &root));
        SignedSignal { signal: self, proof: BatchProof { size: 1, index: 0, path: Vec::new(), signature } }
    }
}

/// A signal with its origin's batch signature.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedSignal {
    /// The signed content.
    pub signal: Signal,
    /// The batch signature and this signal's place in the batch.
    pub proof: BatchProof,
}

/// How one signal proves that it belongs to a batch its origin signed.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BatchProof {
    /// How many signals the batch has (1 to [`MAX_BATCH`]).
    pub size: u16,
    /// This signal's position in the batch.
    pub index: u16,
    /// Sibling hashes from the leaf up to the root. The last node of an odd level has no
    /// sibling: it moves up unchanged and has no entry.
    pub path: Vec<[u8; 32]>,
    /// ed25519 signature by `signal.origin` over [`root_message`] of the batch.
    pub signature: [u8; 64],
}

/// Why a signed signal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The origin is not a valid ed25519 public key.
    #[error("origin is not a valid ed25519 key")]
    BadOrigin,
    /// The batch proof does not fit its batch (size, position or path length).
    #[error("batch proof does not fit its batch")]
    BadProof,
    /// The signature does not match the content and origin.
    #[error("signature does not verify")]
    BadSignature,
    /// The content breaks a bound (see [`Signal::validate`]).
    #[error("invalid signal: {0}")]
    Invalid(#[from] WireError),
}

fn leaf_hash(signal: &Signal) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[LEAF]);
    h.update(&signal.signing_bytes());
    h.finalize().into()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[NODE]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The bytes an origin signs for a batch of `size` signals whose Merkle root is `root`.
pub fn root_message(size: u16, root: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_CONTEXT.len() + 2 + 32);
    out.extend_from_slice(BATCH_CONTEXT);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(root);
    out
}

/// The root that a leaf and its proof lead to; `None` if the proof does not fit its batch.
fn root_of(leaf: [u8; 32], proof: &BatchProof) -> Option<[u8; 32]> {
    let (mut index, mut width) = (usize::from(proof.index), usize::from(proof.size));
    if width == 0 || width > usize::from(MAX_BATCH) || index >= width || proof.path.len() > MAX_PATH {
        return None;
    }
    let mut hash = leaf;
    let mut path = proof.path.iter();
    while width > 1 {
        if index % 2 == 1 {
            hash = node_hash(path.next()?, &hash);
        } else if index + 1 < width {
            hash = node_hash(&hash, path.next()?);
        }
        index /= 2;
        width = width.div_ceil(2);
    }
    path.next().is_none().then_some(hash)
}

/// Signs `signals` as `key`'s, at most [`SIGNING_BATCH`] under each signature. Every
/// signal's `origin` is set to `key`'s id so that a caller cannot get it wrong. The
/// output is in input order.
pub fn sign_batch(key: &NodeKey, signals: Vec<Signal>) -> Vec<SignedSignal> {
    let me = key.node_id();
    let mut out = Vec::with_capacity(signals.len());
    let mut signals = signals.into_iter().peekable();
    while signals.peek().is_some() {
        let mut batch: Vec<Signal> = signals.by_ref().take(SIGNING_BATCH).collect();
        for s in &mut batch {
            s.origin = me;
        }
        // Every level of the tree, leaves first; the last node of an odd level moves up.
        let mut levels = vec![batch.iter().map(leaf_hash).collect::<Vec<_>>()];
        while let Some(level) = levels.last().filter(|l| l.len() > 1) {
            let up = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    [single, ..] => *single,
                    [] => [0; 32],
                })
                .collect();
            levels.push(up);
        }
        let root = levels.last().and_then(|l| l.first()).copied().unwrap_or_default();
        // At most SIGNING_BATCH signals: the size and positions fit a u16.
        let size = batch.len() as u16;
        let signature = key.sign(&root_message(size, &root));
        for (i, signal) in batch.into_iter().enumerate() {
            let mut path = Vec::with_capacity(levels.len() - 1);
            let mut index = i;
            for level in &levels[..levels.len() - 1] {
                if let Some(sibling) = level.get(index ^ 1) {
                    path.push(*sibling);
                }
                index /= 2;
            }
            out.push(SignedSignal { signal, proof: BatchProof { size, index: i as u16, path, signature } });
        }
    }
    out
}

impl SignedSignal {
    /// Verifies this one signal: bounds, origin key, proof and signature. To check
    /// many, keep a [`Verifier`]: it checks each batch signature once.
    pub fn verify(&self) -> Result<(), VerifyError> {
        Verifier::default()
            .verify_batch(std::slice::from_ref(self))
            .pop()
            .unwrap_or(Err(VerifyError::BadProof))
    }

    /// An upper bound of this signal's encoded size.
    pub fn encoded_len_bound(&self) -> usize {
        SIGNED_SIGNAL_FIXED_BYTES + self.signal.scenario.len() + 32 * self.proof.path.len()
    }
}

/// Verifies many signals with a fresh [`Verifier`]. Returns one result per input, in
/// order. Keep a `Verifier` instead to remember batch signatures across calls.
pub fn verify_batch(signals: &[SignedSignal]) -> Vec<Result<(), VerifyError>> {
    Verifier::default().verify_batch(signals)
}

/// Batch signatures remembered as checked, at most.
const REMEMBERED_BATCHES: usize = 8192;

/// Origin keys remembered decompressed, at most (decompressing a key costs a third of a
/// verification).
const REMEMBERED_KEYS: usize = 4096;

/// Checks signed signals and remembers the batch signatures that held, so that the other
/// signals of a batch, in the same call or a later one, cost only their Merkle path.
#[derive(Default)]
pub struct Verifier {
    keys: HashMap<NodeId, Option<VerifyingKey>>,
    /// Digests of (origin, size, root, signature) that verified, oldest first in `order`.
    verified: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    signatures_checked: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("batches", &self.verified.len())
            .field("signatures_checked", &self.signatures_checked)
            .finish()
    }
}

/// A batch signature still to check, and the signals that rest on it.
struct Pending {
    digest: [u8; 32],
    key: VerifyingKey,
    message: Vec<u8>,
    signature: Signature,
    signals: Vec<usize>,
}

impl Verifier {
    /// How many batch signatures this verifier has checked (each at most once while
    /// remembered).
    pub fn signatures_checked(&self) -> u64 {
        self.signatures_checked
    }

    fn key(&mut self, origin: NodeId) -> Option<VerifyingKey> {
        if let Some(key) = self.keys.get(&origin) {
            return *key;
        }
        if self.keys.len() >= REMEMBERED_KEYS {
            self.keys.clear();
        }
        *self.keys.entry(origin).or_insert_with(|| origin.verifying_key())
    }

    fn remember(&mut self, digest: [u8; 32]) {
        if self.verified.insert(digest) {
            self.order.push_back(digest);
            if self.order.len() > REMEMBERED_BATCHES {
                if let Some(oldest) = self.order.pop_front() {
                    self.verified.remove(&oldest);
                }
            }
        }
    }

    /// Verifies `signals`: bounds, origin key and Merkle proof of each, and each distinct
    /// batch signature once. Several signatures are checked together with ed25519 batch
    /// verification, and one by one only when that fails, so that a forged batch does not
    /// discard honest ones. Returns one result per input, in order.
    pub fn verify_batch(&mut self, signals: &[SignedSignal]) -> Vec<Result<(), VerifyError>> {
        self.verify_all(signals)
    }

    /// [`Verifier::verify_batch`] of signals held elsewhere (no copies needed).
    pub fn verify_all<'a>(
        &mut self,
        signals: impl IntoIterator<Item = &'a SignedSignal>,
    ) -> Vec<Result<(), VerifyError>> {
        let signals = signals.into_iter();
        let mut results: Vec<Result<(), VerifyError>> = Vec::with_capacity(signals.size_hint().0);
        let mut pending: Vec<Pending> = Vec::new();
        let mut pending_at: HashMap<[u8; 32], usize> = HashMap::new();
        for (i, s) in signals.enumerate() {
            let checked = s
                .signal
                .validate()
                .map_err(VerifyError::from)
                .and_then(|()| self.key(s.signal.origin).ok_or(VerifyError::BadOrigin))
                .and_then(|key| {
                    let root = root_of(leaf_hash(&s.signal), &s.proof).ok_or(VerifyError::BadProof)?;
                    Ok((key, root))
                });
            let (key, root) = match checked {
                Ok(found) => found,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            results.push(Ok(()));
            let message = root_message(s.proof.size, &root);
            let mut digest = blake3::Hasher::new();
            digest.update(&s.signal.origin.0);
            digest.update(&message);
            digest.update(&s.proof.signature);
            let digest: [u8; 32] = digest.finalize().into();
            if self.verified.contains(&digest) {
                continue;
            }
            match pending_at.get(&digest) {
                Some(at) => pending[*at].signals.push(i),
                None => {
                    pending_at.insert(digest, pending.len());
                    pending.push(Pending {
                        digest,
                        key,
                        message,
                        signature: Signature::from_bytes(&s.proof.signature),
                        signals: vec![i],
                    });
                }
            }
        }
        self.signatures_checked += pending.len() as u64;
        let all_hold = pending.len() > 1 && {
            let messages: Vec<&[u8]> = pending.iter().map(|p| p.message.as_slice()).collect();
            let signatures: Vec<Signature> = pending.iter().map(|p| p.signature).collect();
            let keys: Vec<VerifyingKey> = pending.iter().map(|p| p.key).collect();
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        };
        for p in pending {
            if all_hold || p.key.verify(&p.message, &p.signature).is_ok() {
                self.remember(p.digest);
            } else {
                for i in p.signals {
                    results[i] = Err(VerifyError::BadSignature);
                }
            }
        }
        results
    }
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

    #[test]
    fn batches_of_every_size_verify_and_checks_each_signature_once() {
        let key = NodeKey::generate(&mut OsRng);
        for n in [1usize, 2, 3, 5, 8, 31, 32, 33, 70] {
            let signed = sign_batch(&key, (1..=n as u64).map(signal).collect());
            assert_eq!(signed.len(), n);
            assert!(signed.iter().all(|s| s.signal.origin == key.node_id()));
            assert!(signed.iter().all(|s| s.proof.path.len() <= 5), "{n}: paths of a batch of 32 are 5 long");
            assert_eq!(
                signed.iter().map(|s| s.signal.seq).collect::<Vec<_>>(),
                (1..=n as u64).collect::<Vec<_>>()
            );
            let mut verifier = Verifier::default();
            assert!(verifier.verify_batch(&signed).iter().all(Result::is_ok), "batch of {n}");
            assert_eq!(verifier.signatures_checked() as usize, n.div_ceil(SIGNING_BATCH), "batch of {n}");
            // Alone, each still verifies: a signal is self-contained.
            assert!(signed.iter().all(|s| s.verify().is_ok()), "batch of {n}");
            // Seen again (a relay, a repair), the signatures are remembered.
            assert!(verifier.verify_batch(&signed[n / 2..]).iter().all(Result::is_ok));
            assert_eq!(verifier.signatures_checked() as usize, n.div_ceil(SIGNING_BATCH));
        }
    }

    #[test]
    fn tampering_with_a_signal_or_its_proof_is_caught_alone() {
        let key = NodeKey::generate(&mut OsRng);
        let honest = sign_batch(&key, (1..=7).map(signal).collect());
        let other = sign_batch(&key, (8..=9).map(signal).collect());
        let mut batch = honest.clone();
        batch[0].signal.events_count += 1;
        batch[1].proof.path[0][0] ^= 1;
        batch[2].proof.index = 3;
        batch[3].proof.size = 8;
        batch[4].proof.path.push([0; 32]);
        batch[5].proof.signature = other[0].proof.signature;
        let results = Verifier::default().verify_batch(&batch);
        assert_eq!(results[0], Err(VerifyError::BadSignature), "content");
        assert_eq!(results[1], Err(VerifyError::BadSignature), "path");
        assert_eq!(results[2], Err(VerifyError::BadSignature), "position");
        assert!(matches!(results[3], Err(VerifyError::BadProof | VerifyError::BadSignature)), "size");
        assert_eq!(results[4], Err(VerifyError::BadProof), "path too long");
        assert_eq!(results[5], Err(VerifyError::BadSignature), "another batch's signature");
        assert_eq!(results[6], Ok(()), "the untouched signal of the batch");
        // A proof past the bounds is refused before any hashing.
        let mut huge = honest[0].clone();
        huge.proof.size = MAX_BATCH + 1;
        huge.proof.index = 0;
        assert_eq!(huge.verify(), Err(VerifyError::BadProof));
        let mut outside = honest[0].clone();
        outside.proof.index = 7;
        assert_eq!(outside.verify(), Err(VerifyError::BadProof));
        // The same leaf under another origin's key.
        let mut stolen = honest[6].clone();
        stolen.signal.origin = NodeKey::generate(&mut OsRng).node_id();
        assert_eq!(stolen.verify(), Err(VerifyError::BadSignature));
    }

    #[test]
    fn a_forged_batch_does_not_poison_the_honest_one() {
        let key = NodeKey::generate(&mut OsRng);
        let honest = sign_batch(&key, (1..=4).map(signal).collect());
        let mut forged = honest.clone();
        for s in &mut forged {
            s.proof.signature[0] ^= 0x55;
        }
        let mut verifier = Verifier::default();
        let mixed: Vec<SignedSignal> = forged.iter().chain(&honest).cloned().collect();
        let results = verifier.verify_batch(&mixed);
        assert!(results[..4].iter().all(|r| *r == Err(VerifyError::BadSignature)));
        assert!(results[4..].iter().all(Result::is_ok));
        // The forgery is not remembered: it fails again.
        assert!(verifier.verify_batch(&forged).iter().all(|r| *r == Err(VerifyError::BadSignature)));
        assert!(verifier.verify_batch(&honest).iter().all(Result::is_ok));
    }

    #[test]
    fn a_full_report_of_the_longest_signals_fits_a_message() {
        use crate::central::{CentralMessage, Report, MAX_REPORT_SIGNALS};
        let key = NodeKey::generate(&mut OsRng);
        let longest: Vec<Signal> = (1..=MAX_REPORT_SIGNALS as u64)
            .map(|i| Signal {
                seq: u64::MAX - i,
                scenario: "x".repeat(MAX_SCENARIO_LEN),
                events_count: u32::MAX,
                observed_at: Timestamp(i64::MIN),
                ..signal(1)
            })
            .collect();
        let signals = sign_batch(&key, longest);
        for s in &signals {
            let bytes = bincode::encode_to_vec(s, bincode_config()).unwrap();
            assert!(bytes.len() <= s.encoded_len_bound(), "{} > {}", bytes.len(), s.encoded_len_bound());
        }
        // Reports to the central tier never carry a sealed address.
        let report = crate::Message::Central(CentralMessage::Report(Report { batch: u64::MAX, signals }));
        assert!(report.encode().is_ok());
    }
}
