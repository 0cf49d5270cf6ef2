//! The versioned envelope every message travels in.
//!
//! Wire format: one version byte ([`WIRE_VERSION`]), then the bincode-2 encoding of a
//! [`Message`] (standard config: little-endian varints). Decoding is bounded: the input
//! may be at most [`MAX_MESSAGE_BYTES`], the decoder never allocates more than that, no
//! byte may trail the message, and every signal inside must pass its bounds checks.
//! New message kinds are added as new trailing variants; a change that old nodes cannot
//! read bumps the version byte.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bincode::{Decode, Encode};

use crate::central::CentralMessage;
use crate::fleet::RevocationList;
use crate::gossip::{Digest, Hello, JoinReply, JoinRequest, RangeRequest, MAX_MEMBERSHIP_BYTES};
use crate::signal::SignedSignal;

/// The current envelope version.
pub const WIRE_VERSION: u8 = 1;

/// Largest encoded message, version byte included.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Most signals one message may carry.
pub const MAX_SIGNALS_PER_MESSAGE: usize = 1024;

/// The bincode configuration of every Palisade encoding, with the decode limit.
pub fn bincode_config() -> Configuration<LittleEndian, Varint, Limit<MAX_MESSAGE_BYTES>> {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Every message Palisade nodes exchange.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Message {
    /// Signed signals, pushed to a peer or sent to repair its gaps.
    Signals(Vec<SignedSignal>),
    /// First message of a fleet connection: fleet, membership certificate, address.
    Hello(Hello),
    /// Anti-entropy summary of the signals the sender holds.
    Digest(Digest),
    /// Asks for a range of one origin's signals.
    Request(RangeRequest),
    /// Membership protocol bytes (chitchat's own encoding), carried over the
    /// authenticated connection.
    Membership(Vec<u8>),
    /// The fleet admin's latest revocation list, relayed by members.
    Revocations(RevocationList),
    /// A new node asks to be admitted (first and only frame of a join connection).
    Join(JoinRequest),
    /// The answer to a join request.
    JoinReply(JoinReply),
    /// Between a sensor and the central tier (see [`crate::central`]).
    Central(CentralMessage),
    /// A join request a member relays to the admin node, over its own admitted
    /// connection: the member checked that `node` is the joiner's TLS identity.
    RelayedJoin(JoinRequest),
    /// The admin node's answer to a relayed join, for the joiner `node`.
    RelayedJoinReply {
        /// The joiner.
        node: crate::NodeId,
        /// The answer.
        reply: JoinReply,
    },
}

/// Why bytes could not be turned into a message, or a message into bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Nothing to decode.
    #[error("empty message")]
    Empty,
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Size seen.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A version this node does not speak.
    #[error("unknown envelope version {0} (this node speaks {WIRE_VERSION})")]
    UnknownVersion(u8),
    /// The bytes are not a valid encoding.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Valid message followed by extra bytes.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    /// Well-formed but breaking a bound.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

impl Message {
    /// Checks the bounds of the content.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Message::Signals(signals) => {
                if signals.len() > MAX_SIGNALS_PER_MESSAGE {
                    return Err(WireError::Invalid("too many signals in one message"));
                }
                signals.iter().try_for_each(|s| s.signal.validate())
            }
            Message::Hello(hello) => hello.validate(),
            Message::Digest(digest) => digest.validate(),
            Message::Request(request) => request.validate(),
            Message::Membership(bytes) => {
                if bytes.len() > MAX_MEMBERSHIP_BYTES {
                    return Err(WireError::Invalid("membership payload over 128 KiB"));
                }
                Ok(())
            }
            Message::Revocations(list) => {
                if list.revoked.len() > crate::fleet::MAX_REVOKED {
                    return Err(WireError::Invalid("revocation list longer than 4096 nodes"));
                }
                Ok(())
            }
            Message::Join(request) | Message::RelayedJoin(request) => {
                if request.token.peer.len() > crate::fleet::MAX_PEER_ADDR_LEN {
                    return Err(WireError::Invalid("join token peer address longer than 255 bytes"));
                }
                Ok(())
            }
            Message::JoinReply(reply) | Message::RelayedJoinReply { reply, .. } => reply.validate(),
            Message::Central(message) => message.validate(),
        }
    }

    /// Encodes into an envelope.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        self.validate()?;
        let mut out = vec![WIRE_VERSION];
        bincode::encode_into_std_write(self, &mut out, bincode_config())
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        if out.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge { len: out.len(), max: MAX_MESSAGE_BYTES });
        }
        Ok(out)
    }

    /// Decodes an envelope, refusing anything oversized, truncated, trailing or invalid.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge { len: bytes.len(), max: MAX_MESSAGE_BYTES });
        }
        let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
        if version != WIRE_VERSION {
            return Err(WireError::UnknownVersion(version));
        }
        let (message, used): (Message, usize) = bincode::decode_from_slice(body, bincode_config())
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        if used != body.len() {
            return Err(WireError::TrailingBytes(body.len() - used));
        }
        message.validate()?;
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::{Epoch, HashedIp, SealedIp};
    use crate::node::{NodeId, NodeKey};
    use crate::signal::Signal;
    use crate::time::Timestamp;
    use proptest::prelude::*;

    fn arb_signal() -> impl Strategy<Value = Signal> {
        (
            any::<[u8; 32]>(),
            1..u64::MAX,
            any::<u32>(),
            any::<[u8; 32]>(),
            "[a-z0-9/_-]{1,64}",
            0u8..=3,
            any::<i64>(),
            any::<u32>(),
            proptest::option::of((any::<[u8; 24]>(), any::<[u8; 33]>())),
        )
            .prop_map(|(origin, seq, epoch, hash, scenario, confidence, at, count, sealed)| Signal {
                origin: NodeId(origin),
                seq,
                epoch: Epoch(epoch),
                hashed_ip: HashedIp(hash),
                scenario,
                confidence,
                observed_at: Timestamp(at),
                events_count: count,
                sealed_ip: sealed.map(|(nonce, ciphertext)| SealedIp { nonce, ciphertext }),
            })
    }

    fn arb_cert() -> impl Strategy<Value = crate::fleet::MembershipCert> {
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<i64>(), 1u64..1_000_000).prop_map(
            |(admin, node, at, secs)| {
                crate::fleet::MembershipCert::issue(
                    &NodeKey::from_bytes(&admin),
                    NodeId(node),
                    Timestamp(at),
                    std::time::Duration::from_secs(secs),
                )
            },
        )
    }

    fn arb_fleet_message() -> impl Strategy<Value = Message> {
        use crate::gossip::{Digest, Hello, OriginMark, RangeRequest};
        prop_oneof![
            (arb_cert(), "[0-9.:]{1,40}", "[0-9.a-z-]{0,20}").prop_map(|(membership, quic_addr, version)| {
                Message::Hello(Hello { fleet: membership.fleet, membership, quic_addr, version })
            }),
            (
                any::<[u8; 32]>(),
                proptest::collection::vec((any::<[u8; 32]>(), 1u64..1000, 0u64..1000), 0..50)
            )
                .prop_map(|(fleet, marks)| Message::Digest(Digest {
                    fleet: crate::fleet::FleetId(fleet),
                    marks: marks
                        .into_iter()
                        .map(|(o, floor, extra)| OriginMark {
                            origin: NodeId(o),
                            floor,
                            high: floor - 1 + extra
                        })
                        .collect(),
                })),
            (any::<[u8; 32]>(), 1u64..u64::MAX / 2, 0u64..1000).prop_map(|(o, from, n)| Message::Request(
                RangeRequest { origin: NodeId(o), from, to: from + n }
            )),
            proptest::collection::vec(any::<u8>(), 0..2000).prop_map(Message::Membership),
            (any::<[u8; 32]>(), "[0-9.:]{1,40}", any::<i64>(), any::<[u8; 16]>(), any::<[u8; 32]>())
                .prop_map(|(admin, peer, at, nonce, node)| Message::Join(crate::gossip::JoinRequest {
                    token: crate::fleet::JoinToken::issue(
                        &NodeKey::from_bytes(&admin),
                        &peer,
                        Timestamp(at),
                        std::time::Duration::from_secs(3600),
                        nonce,
                    ),
                    node: NodeId(node),
                })),
            (arb_cert(), any::<[u8; 32]>()).prop_map(|(membership, fleet_secret)| {
                let revocations = crate::fleet::RevocationList::empty(membership.fleet);
                Message::JoinReply(crate::gossip::JoinReply::Accepted {
                    membership,
                    fleet_secret,
                    revocations,
                })
            }),
            "[ -~]{0,100}".prop_map(|reason| Message::JoinReply(crate::gossip::JoinReply::Refused(reason))),
            (any::<[u8; 32]>(), any::<u64>(), proptest::collection::vec(any::<[u8; 32]>(), 0..20)).prop_map(
                |(admin, serial, nodes)| Message::Revocations(crate::fleet::RevocationList::issue(
                    &NodeKey::from_bytes(&admin),
                    serial,
                    nodes.into_iter().map(NodeId).collect(),
                ))
            ),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        proptest::collection::vec((arb_signal(), any::<[u8; 32]>()), 0..20).prop_map(|items| {
            Message::Signals(
                items.into_iter().map(|(signal, seed)| signal.sign(&NodeKey::from_bytes(&seed))).collect(),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trips(message in arb_message()) {
            let bytes = message.encode().unwrap();
            prop_assert_eq!(Message::decode(&bytes).unwrap(), message.clone());
            if let Message::Signals(signals) = Message::decode(&bytes).unwrap() {
                for s in signals {
                    prop_assert_eq!(s.verify(), Ok(()));
                }
            }
        }

        #[test]
        fn fleet_messages_round_trip(message in arb_fleet_message(), cut in any::<prop::sample::Index>()) {
            let bytes = message.encode().unwrap();
            prop_assert_eq!(Message::decode(&bytes).unwrap(), message.clone());
            let cut = cut.index(bytes.len());
            prop_assert!(Message::decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn truncation_is_rejected(message in arb_message(), cut in any::<prop::sample::Index>()) {
            let bytes = message.encode().unwrap();
            let cut = cut.index(bytes.len());
            prop_assert!(Message::decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn trailing_bytes_are_rejected(message in arb_message(), extra in proptest::collection::vec(any::<u8>(), 1..8)) {
            let mut bytes = message.encode().unwrap();
            bytes.extend(extra);
            prop_assert!(Message::decode(&bytes).is_err());
        }

        #[test]
        fn tampering_never_verifies(message in arb_message(), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut bytes = message.encode().unwrap();
            let pos = pos.index(bytes.len());
            bytes[pos] ^= flip;
            // Either the bytes no longer decode, or some signal fails to verify, or the
            // flip landed where the decoded message is still exactly the original
            // (impossible for a bijective encoding, so this must not happen).
            match Message::decode(&bytes) {
                Err(_) => {}
                Ok(Message::Signals(signals)) => {
                    let all_verify = signals.iter().all(|s| s.verify().is_ok());
                    prop_assert!(!all_verify || Message::Signals(signals) != message);
                    prop_assert!(!all_verify, "a tampered message verified");
                }
                Ok(other) => prop_assert_ne!(other, message),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes);
        }
    }

    #[test]
    fn version_and_size_are_checked() {
        let bytes = Message::Signals(vec![]).encode().unwrap();
        let mut wrong = bytes.clone();
        wrong[0] = 2;
        assert_eq!(Message::decode(&wrong), Err(WireError::UnknownVersion(2)));
        assert_eq!(Message::decode(&[]), Err(WireError::Empty));
        let bad_range =
            Message::Request(crate::gossip::RangeRequest { origin: NodeId([1; 32]), from: 5, to: 4 });
        assert!(bad_range.encode().is_err());
        let big = Message::Membership(vec![0; crate::gossip::MAX_MEMBERSHIP_BYTES + 1]);
        assert!(big.encode().is_err());
        let huge = vec![WIRE_VERSION; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(Message::decode(&huge), Err(WireError::TooLarge { .. })));
        // A length prefix that claims far more elements than the bytes hold must fail
        // without allocating: 0xFC = u64 varint marker.
        let mut lying = vec![WIRE_VERSION, 0, 0xFC];
        lying.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(Message::decode(&lying).is_err());
    }
}
