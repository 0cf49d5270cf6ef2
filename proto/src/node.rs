//! Node identities: an ed25519 key pair per node, whose public half is its [`NodeId`].

use bincode::{Decode, Encode};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};
use std::fmt;
use std::str::FromStr;

/// A node's name: its ed25519 public key. Printed as 64 hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The verifying key, or `None` when the bytes are not a valid curve point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }

    /// The first 8 hex characters: enough to tell nodes apart in logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// A node id could not be parsed from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a node id is 64 hex characters (an ed25519 public key)")]
pub struct NodeIdParseError;

impl FromStr for NodeId {
    type Err = NodeIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| NodeIdParseError)?;
        Ok(NodeId(out))
    }
}

/// A node's private signing key.
#[derive(Clone)]
pub struct NodeKey(SigningKey);

impl NodeKey {
    /// A fresh random key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        NodeKey(SigningKey::generate(rng))
    }

    /// Rebuilds a key from its 32 secret bytes.
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        NodeKey(SigningKey::from_bytes(secret))
    }

    /// The 32 secret bytes, for storage in a file readable only by the node.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// This key's public name.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    /// A 32-byte key for `context`, derived from this node's secret key (blake3's key
    /// derivation): stable across restarts, and revealing nothing of the secret.
    pub fn derive_key(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.to_bytes())
    }

    /// Signs `message` (callers prefix it with a domain-separation context).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.node_id().short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn key_round_trips_and_id_parses() {
        let key = NodeKey::generate(&mut OsRng);
        let again = NodeKey::from_bytes(&key.to_bytes());
        assert_eq!(key.node_id(), again.node_id());
        let text = key.node_id().to_string();
        assert_eq!(text.parse::<NodeId>(), Ok(key.node_id()));
        assert!("zz".parse::<NodeId>().is_err());
        assert!(key.node_id().verifying_key().is_some());
    }
}
