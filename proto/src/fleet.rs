//! Fleet admission: who may join a fleet's gossip, signed by the fleet's admin key.
//!
//! A fleet is named by its admin's ed25519 public key ([`FleetId`]). The admin signs
//! [`MembershipCert`]s (`{fleet, node, issued, expires}`), short-lived [`JoinToken`]s that
//! let a new node ask a peer for its certificate, and a [`RevocationList`] of nodes that
//! must no longer be admitted. Every check here is pure: the caller passes `now` and the
//! clock skew it tolerates.

use bincode::{Decode, Encode};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use std::fmt;
use std::time::Duration;

use crate::envelope::bincode_config;
use crate::node::{NodeId, NodeKey};
use crate::time::Timestamp;

const CERT_CONTEXT: &[u8] = b"palisade membership certificate v1\0";
const TOKEN_CONTEXT: &[u8] = b"palisade join token v1\0";
const REVOCATION_CONTEXT: &[u8] = b"palisade revocation list v1\0";

/// Prefix of a join token written as text.
pub const JOIN_TOKEN_PREFIX: &str = "palisade-join-";

/// Most nodes one revocation list may name.
pub const MAX_REVOKED: usize = 4096;

/// Longest peer address a join token may carry, in bytes.
pub const MAX_PEER_ADDR_LEN: usize = 255;

/// A fleet's name: its admin's ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct FleetId(pub [u8; 32]);

impl FleetId {
    /// The admin's verifying key, or `None` when the bytes are not a curve point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }

    /// The fleet of an admin key.
    pub fn of_admin(admin: &NodeKey) -> FleetId {
        FleetId(admin.node_id().0)
    }

    /// The first 8 hex characters, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for FleetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for FleetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetId({})", self.short())
    }
}

/// Why an admission document was refused. Each message says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Issued for another fleet.
    #[error("issued for fleet {found}, but this node belongs to fleet {expected}: ask this fleet's admin for a new one")]
    WrongFleet {
        /// The fleet this node belongs to.
        expected: FleetId,
        /// The fleet named in the document.
        found: FleetId,
    },
    /// The admin's signature does not verify (tampered, or signed by another admin key).
    #[error(
        "the fleet admin's signature does not verify: the document was altered or signed by another key"
    )]
    BadSignature,
    /// Past its expiry.
    #[error("expired at {expired_at} (now {now}): ask the fleet admin for a new one")]
    Expired {
        /// When it expired.
        expired_at: Timestamp,
        /// The checking node's clock.
        now: Timestamp,
    },
    /// Issued in the future beyond the tolerated clock skew.
    #[error("issued at {issued}, later than now ({now}) plus the tolerated clock skew: check both clocks")]
    NotYetValid {
        /// Issue time.
        issued: Timestamp,
        /// The checking node's clock.
        now: Timestamp,
    },
    /// The certificate belongs to a node other than the one presenting it.
    #[error("certificate is for node {certified}, but presented by node {presented}")]
    WrongNode {
        /// The node the certificate names.
        certified: NodeId,
        /// The node that showed it.
        presented: NodeId,
    },
    /// The node is on the fleet's revocation list.
    #[error("node {0} has been revoked from this fleet")]
    Revoked(NodeId),
    /// A join token that is not text this node can read.
    #[error(
        "not a join token ({0}): copy the whole `palisade-join-...` line printed by `palisade fleet invite`"
    )]
    MalformedToken(&'static str),
    /// A field breaks a bound.
    #[error("invalid: {0}")]
    Invalid(&'static str),
}

fn encode<T: Encode>(context: &[u8], body: &T) -> Vec<u8> {
    let mut out = context.to_vec();
    // Encoding plain structs into a Vec cannot fail.
    if let Ok(bytes) = bincode::encode_to_vec(body, bincode_config()) {
        out.extend_from_slice(&bytes);
    }
    out
}

fn check_signature(fleet: &FleetId, message: &[u8], signature: &[u8; 64]) -> Result<(), AdmissionError> {
    let key = fleet.verifying_key().ok_or(AdmissionError::BadSignature)?;
    key.verify(message, &Signature::from_bytes(signature)).map_err(|_| AdmissionError::BadSignature)
}

fn check_fleet(expected: &FleetId, found: &FleetId) -> Result<(), AdmissionError> {
    if expected == found {
        Ok(())
    } else {
        Err(AdmissionError::WrongFleet { expected: *expected, found: *found })
    }
}

fn check_window(
    issued: Timestamp,
    expires: Timestamp,
    now: Timestamp,
    skew: Duration,
) -> Result<(), AdmissionError> {
    if issued > now.saturating_add(skew) {
        return Err(AdmissionError::NotYetValid { issued, now });
    }
    if now.saturating_sub(skew) >= expires {
        return Err(AdmissionError::Expired { expired_at: expires, now });
    }
    Ok(())
}

/// The admin's statement that a node belongs to a fleet until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct MembershipCert {
    /// The fleet (its admin's public key, which signed this).
    pub fleet: FleetId,
    /// The admitted node.
    pub node: NodeId,
    /// When the admin issued it.
    pub issued: Timestamp,
    /// When it stops admitting the node.
    pub expires: Timestamp,
    /// The admin's ed25519 signature over the fields above.
    pub signature: [u8; 64],
}

impl MembershipCert {
    /// Issues a certificate for `node`, valid from `issued` for `validity`.
    pub fn issue(admin: &NodeKey, node: NodeId, issued: Timestamp, validity: Duration) -> Self {
        let fleet = FleetId::of_admin(admin);
        let expires = issued.saturating_add(validity);
        let signature = admin.sign(&encode(CERT_CONTEXT, &(fleet, node, issued, expires)));
        MembershipCert { fleet, node, issued, expires, signature }
    }

    /// Checks that this certificate admits `presenter` into `fleet` at `now`: right fleet,
    /// admin signature, right node, within its validity (give or take `skew`).
    pub fn verify(
        &self,
        fleet: &FleetId,
        presenter: &NodeId,
        now: Timestamp,
        skew: Duration,
    ) -> Result<(), AdmissionError> {
        check_fleet(fleet, &self.fleet)?;
        let message = encode(CERT_CONTEXT, &(self.fleet, self.node, self.issued, self.expires));
        check_signature(&self.fleet, &message, &self.signature)?;
        if self.node != *presenter {
            return Err(AdmissionError::WrongNode { certified: self.node, presented: *presenter });
        }
        check_window(self.issued, self.expires, now, skew)
    }
}

/// An invitation: lets its bearer ask `peer` for a membership certificate until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct JoinToken {
    /// The fleet to join.
    pub fleet: FleetId,
    /// A member's QUIC address (`host:port`) to ask.
    pub peer: String,
    /// When the admin made it.
    pub issued: Timestamp,
    /// When it stops working.
    pub expires: Timestamp,
    /// Random bytes so that two tokens never look alike (and can be told apart in logs).
    pub nonce: [u8; 16],
    /// The admin's signature over the fields above.
    pub signature: [u8; 64],
}

impl JoinToken {
    /// Makes a token for `peer`, valid from `issued` for `validity`.
    pub fn issue(
        admin: &NodeKey,
        peer: &str,
        issued: Timestamp,
        validity: Duration,
        nonce: [u8; 16],
    ) -> Self {
        let fleet = FleetId::of_admin(admin);
        let expires = issued.saturating_add(validity);
        let signature = admin.sign(&encode(TOKEN_CONTEXT, &(fleet, peer, issued, expires, nonce)));
        JoinToken { fleet, peer: peer.to_owned(), issued, expires, nonce, signature }
    }

    /// Checks the token against the fleet it claims, at `now` give or take `skew`.
    pub fn verify(&self, fleet: &FleetId, now: Timestamp, skew: Duration) -> Result<(), AdmissionError> {
        check_fleet(fleet, &self.fleet)?;
        if self.peer.len() > MAX_PEER_ADDR_LEN {
            return Err(AdmissionError::Invalid("peer address longer than 255 bytes"));
        }
        let message =
            encode(TOKEN_CONTEXT, &(self.fleet, self.peer.as_str(), self.issued, self.expires, self.nonce));
        check_signature(&self.fleet, &message, &self.signature)?;
        check_window(self.issued, self.expires, now, skew)
    }

    /// The token as one line of text (`palisade-join-<hex>`), to paste on the new node.
    pub fn to_text(&self) -> String {
        let bytes = bincode::encode_to_vec(self, bincode_config()).unwrap_or_default();
        format!("{JOIN_TOKEN_PREFIX}{}", hex::encode(bytes))
    }

    /// Reads a token written by [`JoinToken::to_text`]. Does not verify it.
    pub fn from_text(text: &str) -> Result<JoinToken, AdmissionError> {
        let hex_part = text
            .trim()
            .strip_prefix(JOIN_TOKEN_PREFIX)
            .ok_or(AdmissionError::MalformedToken("it must start with `palisade-join-`"))?;
        if hex_part.len() > 2048 {
            return Err(AdmissionError::MalformedToken("too long"));
        }
        let bytes =
            hex::decode(hex_part).map_err(|_| AdmissionError::MalformedToken("not hex after the prefix"))?;
        let (token, used): (JoinToken, usize) = bincode::decode_from_slice(&bytes, bincode_config())
            .map_err(|_| AdmissionError::MalformedToken("truncated or damaged"))?;
        if used != bytes.len() {
            return Err(AdmissionError::MalformedToken("extra bytes at the end"));
        }
        Ok(token)
    }
}

/// The nodes a fleet's admin has cut off, signed so that any member can relay it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct RevocationList {
    /// The fleet.
    pub fleet: FleetId,
    /// Grows with every new list; a node keeps the highest it has verified.
    pub serial: u64,
    /// Revoked nodes, sorted.
    pub revoked: Vec<NodeId>,
    /// The admin's signature over the fields above.
    pub signature: [u8; 64],
}

impl RevocationList {
    /// Signs a list (the nodes are sorted and deduplicated first).
    pub fn issue(admin: &NodeKey, serial: u64, mut revoked: Vec<NodeId>) -> Self {
        revoked.sort();
        revoked.dedup();
        let fleet = FleetId::of_admin(admin);
        let signature = admin.sign(&encode(REVOCATION_CONTEXT, &(fleet, serial, &revoked)));
        RevocationList { fleet, serial, revoked, signature }
    }

    /// An empty, unsigned list: revokes nobody and never verifies.
    pub fn empty(fleet: FleetId) -> Self {
        RevocationList { fleet, serial: 0, revoked: Vec::new(), signature: [0; 64] }
    }

    /// Checks fleet, bounds and signature.
    pub fn verify(&self, fleet: &FleetId) -> Result<(), AdmissionError> {
        check_fleet(fleet, &self.fleet)?;
        if self.revoked.len() > MAX_REVOKED {
            return Err(AdmissionError::Invalid("revocation list longer than 4096 nodes"));
        }
        let message = encode(REVOCATION_CONTEXT, &(self.fleet, self.serial, &self.revoked));
        check_signature(&self.fleet, &message, &self.signature)
    }

    /// Whether `node` is revoked.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.revoked.binary_search(node).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    const SKEW: Duration = Duration::from_secs(300);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn certificate_checks() {
        let admin = NodeKey::generate(&mut OsRng);
        let other_admin = NodeKey::generate(&mut OsRng);
        let fleet = FleetId::of_admin(&admin);
        let node = NodeKey::generate(&mut OsRng).node_id();
        let t0 = Timestamp::from_secs(1_800_000_000);
        let cert = MembershipCert::issue(&admin, node, t0, DAY);
        assert_eq!(cert.verify(&fleet, &node, t0, SKEW), Ok(()));
        // Within the skew on both ends.
        assert_eq!(cert.verify(&fleet, &node, t0.saturating_sub(Duration::from_secs(200)), SKEW), Ok(()));
        assert_eq!(
            cert.verify(&fleet, &node, t0.saturating_add(DAY + Duration::from_secs(200)), SKEW),
            Ok(())
        );
        // Expired, not yet valid.
        let late = t0.saturating_add(DAY + SKEW);
        assert!(matches!(cert.verify(&fleet, &node, late, SKEW), Err(AdmissionError::Expired { .. })));
        let early = t0.saturating_sub(SKEW + Duration::from_secs(1));
        assert!(matches!(cert.verify(&fleet, &node, early, SKEW), Err(AdmissionError::NotYetValid { .. })));
        // Someone else's certificate.
        let thief = NodeKey::generate(&mut OsRng).node_id();
        assert!(matches!(cert.verify(&fleet, &thief, t0, SKEW), Err(AdmissionError::WrongNode { .. })));
        // Tampered expiry.
        let mut tampered = cert.clone();
        tampered.expires = tampered.expires.saturating_add(DAY * 365);
        assert_eq!(tampered.verify(&fleet, &node, t0, SKEW), Err(AdmissionError::BadSignature));
        // Signed by another admin: under its own fleet id it is the wrong fleet; relabelled
        // with ours, the signature fails.
        let foreign = MembershipCert::issue(&other_admin, node, t0, DAY);
        assert!(matches!(foreign.verify(&fleet, &node, t0, SKEW), Err(AdmissionError::WrongFleet { .. })));
        let mut relabelled = foreign;
        relabelled.fleet = fleet;
        assert_eq!(relabelled.verify(&fleet, &node, t0, SKEW), Err(AdmissionError::BadSignature));
    }

    #[test]
    fn join_token_checks_and_text() {
        let admin = NodeKey::generate(&mut OsRng);
        let fleet = FleetId::of_admin(&admin);
        let t0 = Timestamp::from_secs(1_800_000_000);
        let token = JoinToken::issue(&admin, "10.0.0.1:7946", t0, Duration::from_secs(3600), [9; 16]);
        let text = token.to_text();
        assert!(text.starts_with(JOIN_TOKEN_PREFIX));
        let back = JoinToken::from_text(&format!("  {text}\n")).unwrap();
        assert_eq!(back, token);
        assert_eq!(back.verify(&fleet, t0, SKEW), Ok(()));
        let expired = back.verify(&fleet, t0.saturating_add(Duration::from_secs(3600) + SKEW), SKEW);
        let err = expired.unwrap_err();
        assert!(matches!(err, AdmissionError::Expired { .. }));
        assert!(err.to_string().contains("expired"), "{err}");
        let other = FleetId::of_admin(&NodeKey::generate(&mut OsRng));
        assert!(matches!(back.verify(&other, t0, SKEW), Err(AdmissionError::WrongFleet { .. })));
        let mut tampered = back.clone();
        tampered.peer = "203.0.113.66:7946".into();
        assert_eq!(tampered.verify(&fleet, t0, SKEW), Err(AdmissionError::BadSignature));
        // Text damage says so plainly.
        assert!(matches!(JoinToken::from_text("hello"), Err(AdmissionError::MalformedToken(_))));
        assert!(matches!(
            JoinToken::from_text(&text[..text.len() - 6]),
            Err(AdmissionError::MalformedToken(_))
        ));
        assert!(matches!(JoinToken::from_text("palisade-join-zz"), Err(AdmissionError::MalformedToken(_))));
    }

    #[test]
    fn revocation_list_checks() {
        let admin = NodeKey::generate(&mut OsRng);
        let fleet = FleetId::of_admin(&admin);
        let a = NodeKey::generate(&mut OsRng).node_id();
        let b = NodeKey::generate(&mut OsRng).node_id();
        let list = RevocationList::issue(&admin, 3, vec![b, a, b]);
        assert_eq!(list.revoked.len(), 2);
        assert_eq!(list.verify(&fleet), Ok(()));
        assert!(list.contains(&a) && list.contains(&b));
        assert!(!list.contains(&NodeId([1; 32])));
        let mut tampered = list.clone();
        tampered.revoked.pop();
        assert_eq!(tampered.verify(&fleet), Err(AdmissionError::BadSignature));
        assert_eq!(RevocationList::empty(fleet).verify(&fleet), Err(AdmissionError::BadSignature));
    }
}
