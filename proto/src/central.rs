//! What sensors and the central tier say to each other.
//!
//! A sensor (a node, or `palisade central sensor`) dials the tier over QUIC with its node
//! key as TLS identity and opens a *session* stream: its first frame is a
//! [`SensorHello`] (with the tenant's enrollment secret the first time), the tier answers
//! [`Welcome`] or [`Refusal`]. Then the sensor sends [`Report`]s of signed signals and the
//! tier answers each with an [`Ack`] once the reports are on disk. To follow the community
//! list the sensor opens a second stream whose first frame is [`Subscribe`]; the tier
//! sends [`SignedDelta`]s on it, each signed with the tier's ed25519 key, so a sensor that
//! pinned that key accepts nothing else.
//!
//! Signals sent to the tier name attackers by [`HashedIp`] keyed with the secret the tier
//! handed out at enrollment (the community secret for tenants that opted in), never the
//! fleet key, and never carry a sealed IP: the tier refuses such signals.
//!
//! Everything is bounded: at most [`MAX_REPORT_SIGNALS`] signals per report and
//! [`MAX_DELTA_ENTRIES`] changes per delta, so that every message fits the envelope's
//! [`MAX_MESSAGE_BYTES`](crate::envelope::MAX_MESSAGE_BYTES).

use bincode::{Decode, Encode};
use ed25519_dalek::{Signature, Verifier};
use std::fmt;

use crate::envelope::{bincode_config, WireError};
use crate::ip::{Epoch, HashedIp};
use crate::node::{NodeId, NodeKey};
use crate::signal::SignedSignal;
use crate::time::Timestamp;

/// Prefix of an enrollment token written as text.
pub const ENROLL_TOKEN_PREFIX: &str = "palisade-central-";

/// Most signals one [`Report`] may carry (512 signals with the longest scenario names
/// take ~145 KiB, well within the envelope limit).
pub const MAX_REPORT_SIGNALS: usize = 512;

/// Most entries (added plus removed) one [`ListDelta`] may carry.
pub const MAX_DELTA_ENTRIES: usize = 1024;

/// Longest tenant name, in bytes.
pub const MAX_TENANT_NAME: usize = 64;

/// Longest free text (versions, refusal reasons), in bytes.
pub const MAX_TEXT: usize = 512;

/// Domain-separation prefix of signed list deltas.
const DELTA_CONTEXT: &[u8] = b"palisade central list delta v1\0";

/// blake3 key-derivation context of enrollment token hashes (the tier stores only these).
const TOKEN_HASH_CONTEXT: &str = "palisade 2026-12 central enrollment token v1";

/// A tenant's enrollment token: the tier's public key (which sensors pin) and the
/// tenant's random secret. The tier keeps only [`EnrollToken::secret_hash`].
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct EnrollToken {
    /// The central tier's node id: sensors accept no other server key.
    pub tier: NodeId,
    /// 32 random bytes that name the tenant.
    pub secret: [u8; 32],
}

impl fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnrollToken(tier {}, secret ..)", self.tier.short())
    }
}

/// An enrollment token could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed central enrollment token: {0} (copy it again from `palisade central tenant add`)")]
pub struct TokenError(&'static str);

impl EnrollToken {
    /// The hash the tier stores instead of the secret.
    pub fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
        blake3::derive_key(TOKEN_HASH_CONTEXT, secret)
    }

    /// The token as one line of text (`palisade-central-<hex>`).
    pub fn to_text(&self) -> String {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&self.tier.0);
        bytes.extend_from_slice(&self.secret);
        format!("{ENROLL_TOKEN_PREFIX}{}", hex::encode(bytes))
    }

    /// Reads a token written by [`EnrollToken::to_text`].
    pub fn from_text(text: &str) -> Result<EnrollToken, TokenError> {
        let hex_part = text
            .trim()
            .strip_prefix(ENROLL_TOKEN_PREFIX)
            .ok_or(TokenError("it must start with `palisade-central-`"))?;
        if hex_part.len() != 128 {
            return Err(TokenError("it must have 128 hex characters after the prefix"));
        }
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| TokenError("not hex after the prefix"))?;
        let mut tier = [0u8; 32];
        let mut secret = [0u8; 32];
        tier.copy_from_slice(&bytes[..32]);
        secret.copy_from_slice(&bytes[32..]);
        let tier = NodeId(tier);
        if tier.verifying_key().is_none() {
            return Err(TokenError("the tier key in it is not an ed25519 key"));
        }
        Ok(EnrollToken { tier, secret })
    }
}

/// Every message of the sensor-to-tier protocol.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[allow(clippy::large_enum_variant)] // messages are encoded at once, not stored
pub enum CentralMessage {
    /// Sensor -> tier, first frame of a session.
    Hello(SensorHello),
    /// Tier -> sensor: the session is open.
    Welcome(Welcome),
    /// Sensor -> tier: signed signals.
    Report(Report),
    /// Tier -> sensor: a report is stored.
    Ack(Ack),
    /// Sensor -> tier, first frame of a subscription stream.
    Subscribe(Subscribe),
    /// Tier -> sensor: a change of the community list.
    Delta(SignedDelta),
    /// Tier -> sensor: the request is refused; the stream or connection ends.
    Refused(Refusal),
}

/// The first frame of a session.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct SensorHello {
    /// The tenant's enrollment secret, needed only until the sensor is enrolled.
    pub enroll: Option<[u8; 32]>,
    /// The sensor's software version, for operators.
    pub version: String,
}

impl fmt::Debug for SensorHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SensorHello")
            .field("enroll", &self.enroll.map(|_| ".."))
            .field("version", &self.version)
            .finish()
    }
}

/// The tier accepted the sensor.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct Welcome {
    /// The sensor's tenant.
    pub tenant: String,
    /// Whether the tenant opted in to the community: its signals count in the consensus
    /// and it may subscribe to the community list.
    pub community: bool,
    /// The secret the sensor keys its IP hashes with: the community secret when
    /// `community`, else a secret of the tenant's own.
    pub hash_secret: [u8; 32],
    /// Length of a hashing epoch, seconds.
    pub epoch_secs: u32,
    /// The smallest signal sequence number the tier has not seen from this sensor: the
    /// sensor numbers its next signals from here (or above).
    pub next_seq: u64,
    /// The community list's current version.
    pub list_version: u64,
}

impl fmt::Debug for Welcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Welcome")
            .field("tenant", &self.tenant)
            .field("community", &self.community)
            .field("epoch_secs", &self.epoch_secs)
            .field("next_seq", &self.next_seq)
            .field("list_version", &self.list_version)
            .finish_non_exhaustive()
    }
}

/// Signed signals, numbered by the sensor so acks can name them.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Report {
    /// The sensor's number for this batch, echoed in the [`Ack`].
    pub batch: u64,
    /// The signals, origin = the sensor, `sealed_ip` = `None`.
    pub signals: Vec<SignedSignal>,
}

/// A report is on the tier's disk: it survives a restart of the tier.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Ack {
    /// The report's batch number.
    pub batch: u64,
    /// Signals taken in.
    pub accepted: u32,
    /// Signals refused, and why; resending them would not help.
    pub rejected: Vec<Rejection>,
}

/// One refused signal of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Rejection {
    /// Its index in the report.
    pub index: u32,
    /// Why.
    pub reason: RejectReason,
}

/// Why the tier refused a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub enum RejectReason {
    /// The signature does not verify.
    Forged,
    /// The signal's origin is not the sensor whose connection carried it.
    ForeignOrigin,
    /// The signal carries a sealed IP: raw addresses never go to the central tier.
    SealedIp,
    /// The signal's epoch is neither the current one nor the previous one.
    WrongEpoch,
    /// The tier already has this sequence number from this sensor.
    Replayed,
    /// The signal breaks a bound (sequence 0, scenario name, confidence).
    Invalid,
    /// Observed more than the tolerated clock skew in the future.
    Future,
}

impl RejectReason {
    /// Every reason, for metrics.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Forged,
        RejectReason::ForeignOrigin,
        RejectReason::SealedIp,
        RejectReason::WrongEpoch,
        RejectReason::Replayed,
        RejectReason::Invalid,
        RejectReason::Future,
    ];

    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Forged => "forged",
            RejectReason::ForeignOrigin => "foreign_origin",
            RejectReason::SealedIp => "sealed_ip",
            RejectReason::WrongEpoch => "wrong_epoch",
            RejectReason::Replayed => "replayed",
            RejectReason::Invalid => "invalid",
            RejectReason::Future => "future",
        }
    }

    /// Whether the sensor is penalised for it: replays happen honestly when an ack was
    /// lost and the sensor resends, the rest only from broken or hostile sensors.
    pub fn is_misbehaviour(self) -> bool {
        !matches!(self, RejectReason::Replayed | RejectReason::WrongEpoch)
    }
}

/// First frame of a subscription stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Subscribe {
    /// The last version the sensor applied (0: none). The tier sends the deltas after
    /// it, or a snapshot when its log no longer reaches that far back.
    pub from_version: u64,
}

/// One IP on the community list.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct ListEntry {
    /// The attacker, hashed with the community key of `epoch`.
    pub ip: HashedIp,
    /// The epoch whose key hashed `ip`.
    pub epoch: Epoch,
    /// The scenario most reports named.
    pub scenario: String,
    /// Its consensus score when published.
    pub score: f32,
    /// Network groups that counted towards listing it.
    pub groups: u16,
    /// Until when a node should keep it without hearing from the tier again; the tier
    /// republishes entries that stay listed before this passes.
    pub until: Timestamp,
}

/// What a delta is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum DeltaKind {
    /// Changes from `version - 1` to `version`.
    Changes,
    /// Part `part` (from 0) of `parts` of the whole list at `version`. Part 0 replaces
    /// everything the subscriber held; after the last part it holds `version`.
    Snapshot {
        /// This part's index.
        part: u32,
        /// How many parts.
        parts: u32,
    },
}

/// A versioned change of the community list.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct ListDelta {
    /// The list version this delta brings the subscriber to.
    pub version: u64,
    /// Incremental or part of a snapshot.
    pub kind: DeltaKind,
    /// When the tier made it.
    pub issued_at: Timestamp,
    /// Entries listed (or republished with a later `until`).
    pub added: Vec<ListEntry>,
    /// Entries delisted.
    pub removed: Vec<HashedIp>,
}

/// A delta with the tier's signature.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct SignedDelta {
    /// The content.
    pub delta: ListDelta,
    /// ed25519 signature by the tier's key over [`ListDelta::signing_bytes`].
    pub signature: [u8; 64],
}

// `f32` has no `Eq`, but scores are never NaN in a valid delta (validate refuses it),
// so equality is an equivalence on every delta that can be sent.
impl Eq for ListEntry {}
impl Eq for ListDelta {}
impl Eq for SignedDelta {}

/// Why a delta was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// Not signed by the pinned tier key.
    #[error("list delta not signed by the central tier's key")]
    BadSignature,
    /// The pinned key is not a valid ed25519 key.
    #[error("the pinned central tier key is not a valid ed25519 key")]
    BadKey,
    /// Breaks a bound.
    #[error("invalid list delta: {0}")]
    Invalid(#[from] WireError),
}

impl ListDelta {
    /// Bounds a decoder cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.added.len() + self.removed.len() > MAX_DELTA_ENTRIES {
            return Err(WireError::Invalid("list delta with more than 1024 entries"));
        }
        if let DeltaKind::Snapshot { part, parts } = self.kind {
            if part >= parts {
                return Err(WireError::Invalid("snapshot part beyond its part count"));
            }
        }
        for e in &self.added {
            if e.scenario.len() > crate::signal::MAX_SCENARIO_LEN || e.scenario.chars().any(char::is_control)
            {
                return Err(WireError::Invalid(
                    "list entry scenario longer than 128 bytes or with control characters",
                ));
            }
            if !e.score.is_finite() {
                return Err(WireError::Invalid("list entry score is not a finite number"));
            }
        }
        Ok(())
    }

    /// The exact bytes the tier signs.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = DELTA_CONTEXT.to_vec();
        if let Ok(body) = bincode::encode_to_vec(self, bincode_config()) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Signs with the tier's key.
    pub fn sign(self, tier: &NodeKey) -> SignedDelta {
        let signature = tier.sign(&self.signing_bytes());
        SignedDelta { delta: self, signature }
    }
}

impl SignedDelta {
    /// Checks bounds and the signature of the pinned `tier` key.
    pub fn verify(&self, tier: &NodeId) -> Result<(), DeltaError> {
        self.delta.validate()?;
        let key = tier.verifying_key().ok_or(DeltaError::BadKey)?;
        key.verify(&self.delta.signing_bytes(), &Signature::from_bytes(&self.signature))
            .map_err(|_| DeltaError::BadSignature)
    }
}

/// Why the tier refused a session, a subscription or a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum RefusalCode {
    /// The enrollment secret names no tenant.
    UnknownToken,
    /// The sensor is not enrolled and sent no enrollment secret.
    NotEnrolled,
    /// The sensor is enrolled with another tenant than the secret names.
    OtherTenant,
    /// The tenant did not opt in to the community list.
    NotCommunity,
    /// The sensor is cut off for a while after bad input.
    Banned,
    /// A frame the protocol does not allow here, or one that does not decode.
    Protocol,
    /// The tier is overloaded or shutting down; try again later.
    Busy,
}

/// A refusal and its reason, for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Refusal {
    /// What kind of refusal (what a program acts on).
    pub code: RefusalCode,
    /// Why, in words (at most [`MAX_TEXT`] bytes).
    pub reason: String,
}

impl CentralMessage {
    /// Bounds a decoder cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            CentralMessage::Hello(h) if h.version.len() > MAX_TEXT => {
                Err(WireError::Invalid("hello version longer than 512 bytes"))
            }
            CentralMessage::Welcome(w) if w.tenant.len() > MAX_TENANT_NAME => {
                Err(WireError::Invalid("tenant name longer than 64 bytes"))
            }
            CentralMessage::Report(r) => {
                if r.signals.len() > MAX_REPORT_SIGNALS {
                    return Err(WireError::Invalid("report with more than 512 signals"));
                }
                // Signals are checked one by one by the tier (a bad one is refused alone),
                // so only the count bounds the message here.
                Ok(())
            }
            CentralMessage::Ack(a) if a.rejected.len() > MAX_REPORT_SIGNALS => {
                Err(WireError::Invalid("ack with more than 512 rejections"))
            }
            CentralMessage::Delta(d) => d.delta.validate(),
            CentralMessage::Refused(r) if r.reason.len() > MAX_TEXT => {
                Err(WireError::Invalid("refusal reason longer than 512 bytes"))
            }
            _ => Ok(()),
        }
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary.
pub fn truncate_text(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Message, MAX_MESSAGE_BYTES};
    use crate::ip::HashKey;
    use crate::signal::{Signal, MAX_SCENARIO_LEN};
    use proptest::prelude::*;
    use rand::rngs::OsRng;

    fn entry(i: u8, scenario_len: usize) -> ListEntry {
        ListEntry {
            ip: HashedIp([i; 32]),
            epoch: Epoch(u32::MAX),
            scenario: "x".repeat(scenario_len),
            score: 6.5,
            groups: u16::MAX,
            until: Timestamp(i64::MAX),
        }
    }

    #[test]
    fn token_round_trips_and_refuses_garbage() {
        let tier = NodeKey::generate(&mut OsRng);
        let token = EnrollToken { tier: tier.node_id(), secret: [7; 32] };
        let text = token.to_text();
        assert!(text.starts_with(ENROLL_TOKEN_PREFIX));
        assert_eq!(EnrollToken::from_text(&format!(" {text}\n")), Ok(token.clone()));
        assert!(EnrollToken::from_text("palisade-join-00").is_err());
        assert!(EnrollToken::from_text(&text[..text.len() - 2]).is_err());
        assert!(EnrollToken::from_text(&format!("{}zz", &text[..text.len() - 2])).is_err());
        assert_ne!(EnrollToken::secret_hash(&[7; 32]), [7; 32]);
        assert_ne!(EnrollToken::secret_hash(&[7; 32]), EnrollToken::secret_hash(&[8; 32]));
        assert!(!format!("{token:?}").contains("07"), "Debug must not print the secret");
    }

    #[test]
    fn deltas_verify_only_with_the_tier_key() {
        let tier = NodeKey::generate(&mut OsRng);
        let other = NodeKey::generate(&mut OsRng);
        let delta = ListDelta {
            version: 9,
            kind: DeltaKind::Changes,
            issued_at: Timestamp(5),
            added: vec![entry(1, 10)],
            removed: vec![HashedIp([2; 32])],
        };
        let signed = delta.clone().sign(&tier);
        assert_eq!(signed.verify(&tier.node_id()), Ok(()));
        assert_eq!(signed.verify(&other.node_id()), Err(DeltaError::BadSignature));
        let mut tampered = signed.clone();
        tampered.delta.version = 10;
        assert_eq!(tampered.verify(&tier.node_id()), Err(DeltaError::BadSignature));
        let mut tampered = signed.clone();
        tampered.delta.removed.clear();
        assert_eq!(tampered.verify(&tier.node_id()), Err(DeltaError::BadSignature));
        let mut nan = delta;
        nan.added[0].score = f32::NAN;
        assert!(matches!(nan.sign(&tier).verify(&tier.node_id()), Err(DeltaError::Invalid(_))));
    }

    #[test]
    fn largest_messages_fit_the_envelope() {
        let tier = NodeKey::generate(&mut OsRng);
        let delta = ListDelta {
            version: u64::MAX,
            kind: DeltaKind::Snapshot { part: u32::MAX - 1, parts: u32::MAX },
            issued_at: Timestamp(i64::MIN),
            added: (0..MAX_DELTA_ENTRIES).map(|i| entry(i as u8, MAX_SCENARIO_LEN)).collect(),
            removed: vec![],
        };
        let bytes = Message::Central(CentralMessage::Delta(delta.sign(&tier))).encode().unwrap();
        assert!(bytes.len() <= MAX_MESSAGE_BYTES);
        let key = NodeKey::generate(&mut OsRng);
        let signals = (1..=MAX_REPORT_SIGNALS as u64)
            .map(|seq| {
                Signal {
                    origin: key.node_id(),
                    seq: u64::MAX - seq,
                    epoch: Epoch(u32::MAX),
                    hashed_ip: HashKey::derive(&[1; 32], Epoch(1)).hash("192.0.2.1".parse().unwrap()),
                    scenario: "y".repeat(MAX_SCENARIO_LEN),
                    confidence: 3,
                    observed_at: Timestamp(i64::MIN),
                    events_count: u32::MAX,
                    sealed_ip: None,
                }
                .sign(&key)
            })
            .collect();
        let report = Message::Central(CentralMessage::Report(Report { batch: u64::MAX, signals }));
        assert!(report.encode().unwrap().len() <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn bounds_are_enforced() {
        let tier = NodeKey::generate(&mut OsRng);
        let too_many = ListDelta {
            version: 1,
            kind: DeltaKind::Changes,
            issued_at: Timestamp(0),
            added: vec![entry(1, 1)],
            removed: vec![HashedIp([0; 32]); MAX_DELTA_ENTRIES],
        };
        assert!(Message::Central(CentralMessage::Delta(too_many.sign(&tier))).encode().is_err());
        let bad_part = ListDelta {
            version: 1,
            kind: DeltaKind::Snapshot { part: 2, parts: 2 },
            issued_at: Timestamp(0),
            added: vec![],
            removed: vec![],
        };
        assert!(Message::Central(CentralMessage::Delta(bad_part.sign(&tier))).encode().is_err());
        let long =
            CentralMessage::Refused(Refusal { code: RefusalCode::Busy, reason: "r".repeat(MAX_TEXT + 1) });
        assert!(Message::Central(long).encode().is_err());
        let report = Report { batch: 1, signals: vec![] };
        assert!(Message::Central(CentralMessage::Report(report)).encode().is_ok());
        assert_eq!(truncate_text("héllo", 2), "h");
    }

    fn arb_central() -> impl Strategy<Value = CentralMessage> {
        prop_oneof![
            (proptest::option::of(any::<[u8; 32]>()), "[ -~]{0,40}")
                .prop_map(|(enroll, version)| CentralMessage::Hello(SensorHello { enroll, version })),
            ("[a-z0-9-]{1,64}", any::<bool>(), any::<[u8; 32]>(), any::<u32>(), any::<u64>(), any::<u64>())
                .prop_map(|(tenant, community, hash_secret, epoch_secs, next_seq, list_version)| {
                    CentralMessage::Welcome(Welcome {
                        tenant,
                        community,
                        hash_secret,
                        epoch_secs,
                        next_seq,
                        list_version,
                    })
                }),
            (any::<u64>(), any::<u32>(), proptest::collection::vec((any::<u32>(), 0usize..7), 0..20))
                .prop_map(|(batch, accepted, rejected)| CentralMessage::Ack(Ack {
                    batch,
                    accepted,
                    rejected: rejected
                        .into_iter()
                        .map(|(index, r)| Rejection { index, reason: RejectReason::ALL[r] })
                        .collect(),
                })),
            any::<u64>().prop_map(|from_version| CentralMessage::Subscribe(Subscribe { from_version })),
            (
                any::<u64>(),
                any::<[u8; 32]>(),
                proptest::collection::vec(
                    (
                        any::<[u8; 32]>(),
                        any::<u32>(),
                        "[a-z/-]{0,30}",
                        -1e6f32..1e6,
                        any::<u16>(),
                        any::<i64>()
                    ),
                    0..20
                ),
                proptest::collection::vec(any::<[u8; 32]>(), 0..20),
            )
                .prop_map(|(version, seed, added, removed)| {
                    let delta = ListDelta {
                        version,
                        kind: if version % 2 == 0 {
                            DeltaKind::Changes
                        } else {
                            DeltaKind::Snapshot { part: 0, parts: 1 }
                        },
                        issued_at: Timestamp(version as i64),
                        added: added
                            .into_iter()
                            .map(|(ip, epoch, scenario, score, groups, until)| ListEntry {
                                ip: HashedIp(ip),
                                epoch: Epoch(epoch),
                                scenario,
                                score,
                                groups,
                                until: Timestamp(until),
                            })
                            .collect(),
                        removed: removed.into_iter().map(HashedIp).collect(),
                    };
                    CentralMessage::Delta(delta.sign(&NodeKey::from_bytes(&seed)))
                }),
            "[ -~]{0,100}".prop_map(|reason| CentralMessage::Refused(Refusal {
                code: RefusalCode::NotCommunity,
                reason
            })),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn central_messages_round_trip(message in arb_central(), cut in any::<prop::sample::Index>()) {
            let wrapped = Message::Central(message);
            let bytes = wrapped.encode().unwrap();
            prop_assert_eq!(Message::decode(&bytes).unwrap(), wrapped);
            let cut = cut.index(bytes.len());
            prop_assert!(Message::decode(&bytes[..cut]).is_err());
        }
    }
}
