//! The messages fleet nodes exchange besides [`Signals`](crate::Message::Signals): the
//! handshake [`Hello`], anti-entropy [`Digest`]s and [`RangeRequest`]s, and opaque
//! membership bytes. The protocol is described in `gossip/ALGORITHM.md`.

use bincode::{Decode, Encode};

use crate::envelope::WireError;
use crate::fleet::{FleetId, JoinToken, MembershipCert, RevocationList};
use crate::node::NodeId;

/// Most origins one digest may describe.
pub const MAX_DIGEST_ORIGINS: usize = 4096;

/// Largest membership (chitchat) payload one message may carry, in bytes.
pub const MAX_MEMBERSHIP_BYTES: usize = 128 * 1024;

/// Longest advertised address, in bytes.
pub const MAX_ADDR_LEN: usize = 255;

/// Longest refusal reason, in bytes.
pub const MAX_REASON_LEN: usize = 512;

/// A new node asks a member holding the admin key for its membership certificate.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct JoinRequest {
    /// The invitation.
    pub token: JoinToken,
    /// The node to admit; must be the key of the TLS connection it arrives on.
    pub node: NodeId,
}

/// The answer to a [`JoinRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[allow(clippy::large_enum_variant)] // sent once per join: size does not matter
pub enum JoinReply {
    /// Admitted: the certificate, the fleet secret and the current revocation list.
    Accepted {
        /// The new node's membership certificate.
        membership: MembershipCert,
        /// The secret IP hashing and sealing keys derive from.
        fleet_secret: [u8; 32],
        /// The fleet's current revocation list.
        revocations: RevocationList,
    },
    /// Refused, and why (for the operator).
    Refused(String),
}

/// The first message on every connection, in each direction: who I am and why I may be
/// here. Nothing else is sent before the peer's `Hello` has been checked.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    /// The fleet the sender belongs to.
    pub fleet: FleetId,
    /// The sender's membership certificate, signed by the fleet admin.
    pub membership: MembershipCert,
    /// The QUIC address (`host:port`) the sender accepts connections on.
    pub quic_addr: String,
    /// The sender's software version, for operators.
    pub version: String,
}

/// What a node holds of one origin's signals: every sequence number in `floor..=high`
/// (numbers below `floor` were pruned or never reached it and cannot be asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct OriginMark {
    /// The origin.
    pub origin: NodeId,
    /// Lowest sequence number still held (1 when nothing was pruned).
    pub floor: u64,
    /// Highest sequence number such that all of `floor..=high` are held (0: none).
    pub high: u64,
}

/// Anti-entropy: a summary of what the sender holds, sent periodically to a random peer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Digest {
    /// The sender's fleet; a digest for another fleet is refused.
    pub fleet: FleetId,
    /// One mark per origin the sender knows.
    pub marks: Vec<OriginMark>,
}

/// Asks a peer for one origin's signals `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct RangeRequest {
    /// The origin.
    pub origin: NodeId,
    /// First sequence number wanted.
    pub from: u64,
    /// Last sequence number wanted.
    pub to: u64,
}

impl Hello {
    /// Bounds a decoder cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.quic_addr.len() > MAX_ADDR_LEN || self.version.len() > MAX_ADDR_LEN {
            return Err(WireError::Invalid("hello address or version longer than 255 bytes"));
        }
        Ok(())
    }
}

impl Digest {
    /// Bounds a decoder cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.marks.len() > MAX_DIGEST_ORIGINS {
            return Err(WireError::Invalid("digest describes more than 4096 origins"));
        }
        if self.marks.iter().any(|m| m.floor == 0 || m.high.saturating_add(1) < m.floor) {
            return Err(WireError::Invalid("digest mark with floor 0 or high below floor - 1"));
        }
        Ok(())
    }
}

impl JoinReply {
    /// Bounds a decoder cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            JoinReply::Refused(reason) if reason.len() > MAX_REASON_LEN => {
                Err(WireError::Invalid("refusal reason longer than 512 bytes"))
            }
            JoinReply::Accepted { revocations, .. }
                if revocations.revoked.len() > crate::fleet::MAX_REVOKED =>
            {
                Err(WireError::Invalid("revocation list longer than 4096 nodes"))
            }
            _ => Ok(()),
        }
    }
}

impl RangeRequest {
    /// Bounds a decoder cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.from == 0 || self.to < self.from {
            return Err(WireError::Invalid("range request must satisfy 1 <= from <= to"));
        }
        Ok(())
    }
}
