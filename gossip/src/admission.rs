//! The fleet admin's keys and the documents they sign.
//!
//! `palisade fleet init` makes [`FleetKeys`]; `palisade fleet invite` calls
//! [`FleetKeys::invite`]; a node that joins receives a [`MembershipCert`] from
//! [`FleetKeys::certify`] and the fleet secret, which it keeps as its [`Membership`].
//! The documents themselves (and their checks) live in `palisade_proto::fleet`.

use std::fmt;
use std::time::Duration;

use palisade_proto::{
    Epoch, FleetId, HashKey, JoinToken, MembershipCert, NodeId, NodeKey, RevocationList, SealKey, Timestamp,
};
use rand::{CryptoRng, RngCore};

/// The admin's key pair and the fleet secret: whoever holds these runs the fleet.
#[derive(Clone)]
pub struct FleetKeys {
    admin: NodeKey,
    secret: [u8; 32],
}

impl fmt::Debug for FleetKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetKeys({})", self.fleet_id().short())
    }
}

impl FleetKeys {
    /// New random keys for a new fleet.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let admin = NodeKey::generate(rng);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        FleetKeys { admin, secret }
    }

    /// Rebuilds the keys from their stored bytes.
    pub fn from_bytes(admin_secret: &[u8; 32], fleet_secret: &[u8; 32]) -> Self {
        FleetKeys { admin: NodeKey::from_bytes(admin_secret), secret: *fleet_secret }
    }

    /// The bytes to store (admin key, fleet secret), in a file only the admin can read.
    pub fn to_bytes(&self) -> ([u8; 32], [u8; 32]) {
        (self.admin.to_bytes(), self.secret)
    }

    /// The fleet's name (the admin's public key).
    pub fn fleet_id(&self) -> FleetId {
        FleetId::of_admin(&self.admin)
    }

    /// The secret that members share (IP hashing and sealing keys derive from it).
    pub fn fleet_secret(&self) -> [u8; 32] {
        self.secret
    }

    /// A join token naming `peer` (a member's QUIC address), valid for `validity`.
    pub fn invite<R: RngCore + CryptoRng>(
        &self,
        peer: &str,
        now: Timestamp,
        validity: Duration,
        rng: &mut R,
    ) -> JoinToken {
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        JoinToken::issue(&self.admin, peer, now, validity, nonce)
    }

    /// A membership certificate for `node`, valid for `validity`.
    pub fn certify(&self, node: NodeId, now: Timestamp, validity: Duration) -> MembershipCert {
        MembershipCert::issue(&self.admin, node, now, validity)
    }

    /// A signed revocation list; `serial` must grow with every new list.
    pub fn revoke(&self, serial: u64, nodes: Vec<NodeId>) -> RevocationList {
        RevocationList::issue(&self.admin, serial, nodes)
    }
}

/// What a member node holds: its key, its certificate and the fleet secret.
#[derive(Clone)]
pub struct Membership {
    /// The node's own key (its [`NodeId`] is the public half).
    pub key: NodeKey,
    /// The admin's certificate for this node.
    pub cert: MembershipCert,
    /// The fleet secret received when joining.
    pub fleet_secret: [u8; 32],
}

impl fmt::Debug for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Membership(node {}, fleet {})", self.key.node_id().short(), self.cert.fleet.short())
    }
}

impl Membership {
    /// The fleet this node belongs to.
    pub fn fleet(&self) -> FleetId {
        self.cert.fleet
    }

    /// The key that hashes IPs in `epoch`.
    pub fn hash_key(&self, epoch: Epoch) -> HashKey {
        HashKey::derive(&self.fleet_secret, epoch)
    }

    /// The key that seals raw IPs for fleet members.
    pub fn seal_key(&self) -> SealKey {
        SealKey::derive(&self.fleet_secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::AdmissionError;
    use rand::rngs::OsRng;

    #[test]
    fn keys_round_trip_and_sign_for_their_fleet() {
        let keys = FleetKeys::generate(&mut OsRng);
        let (a, s) = keys.to_bytes();
        let again = FleetKeys::from_bytes(&a, &s);
        assert_eq!(again.fleet_id(), keys.fleet_id());
        let node = NodeKey::generate(&mut OsRng).node_id();
        let now = Timestamp::from_secs(1_800_000_000);
        let skew = Duration::from_secs(300);
        let cert = again.certify(node, now, Duration::from_secs(3600));
        assert_eq!(cert.verify(&keys.fleet_id(), &node, now, skew), Ok(()));
        let token = keys.invite("127.0.0.1:7946", now, Duration::from_secs(600), &mut OsRng);
        assert_eq!(token.verify(&keys.fleet_id(), now, skew), Ok(()));
        let err =
            token.verify(&keys.fleet_id(), now.saturating_add(Duration::from_secs(1000)), skew).unwrap_err();
        assert!(matches!(err, AdmissionError::Expired { .. }));
        let other = FleetKeys::generate(&mut OsRng);
        let err = token.verify(&other.fleet_id(), now, skew).unwrap_err();
        assert!(err.to_string().contains("fleet"), "{err}");
        let list = keys.revoke(1, vec![node]);
        assert_eq!(list.verify(&keys.fleet_id()), Ok(()));
        assert!(list.verify(&other.fleet_id()).is_err());
    }
}
