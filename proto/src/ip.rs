//! Talking about IP addresses without revealing them.
//!
//! A [`HashedIp`] is a keyed blake3 hash of an address's canonical bytes. The key is
//! derived from a secret shared by the fleet (or the community) and an [`Epoch`], so an
//! outsider holding signals cannot enumerate the 2^32 IPv4 addresses to reverse them, and
//! hashes from one epoch cannot be linked to hashes from the next. Members of a fleet may
//! additionally attach a [`SealedIp`]: the address encrypted under a key derived from the
//! fleet secret, so peers can put it in their firewall before the attacker reaches them.

use bincode::{Decode, Encode};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::{CryptoRng, RngCore};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::time::Timestamp;

/// Context strings for blake3's key derivation: one per purpose, never reused.
const HASH_CONTEXT: &str = "palisade 2026-11 hashed-ip key v1";
const SEAL_CONTEXT: &str = "palisade 2026-11 sealed-ip key v1";

/// Returns the address in canonical form: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
/// becomes the IPv4 address it carries, so both spellings hash, match and ban alike.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A period of key validity. Hashes made in different epochs are unlinkable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct Epoch(pub u32);

impl Epoch {
    /// The epoch that contains `at`, for epochs `period_secs` long counted from the Unix
    /// epoch. A zero period is treated as one second.
    pub fn containing(at: Timestamp, period_secs: u32) -> Epoch {
        let period = i64::from(period_secs.max(1));
        Epoch(u32::try_from(at.as_secs().div_euclid(period)).unwrap_or(0))
    }
}

/// The key that turns IPs into [`HashedIp`]s for one secret and one epoch.
#[derive(Clone)]
pub struct HashKey([u8; 32]);

impl HashKey {
    /// Derives the hashing key of `epoch` from a 32-byte `secret`.
    pub fn derive(secret: &[u8; 32], epoch: Epoch) -> Self {
        let mut material = [0u8; 36];
        material[..32].copy_from_slice(secret);
        material[32..].copy_from_slice(&epoch.0.to_be_bytes());
        HashKey(blake3::derive_key(HASH_CONTEXT, &material))
    }

    /// Hashes an address (in canonical form, see [`canonical_ip`]).
    pub fn hash(&self, ip: IpAddr) -> HashedIp {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        match canonical_ip(ip) {
            IpAddr::V4(v4) => hasher.update(&[4]).update(&v4.octets()),
            IpAddr::V6(v6) => hasher.update(&[6]).update(&v6.octets()),
        };
        HashedIp(*hasher.finalize().as_bytes())
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

/// A keyed hash of an IP address: a name for it that only key holders can compute.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct HashedIp(pub [u8; 32]);

impl HashedIp {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut out).ok()?;
        Some(HashedIp(out))
    }
}

impl fmt::Debug for HashedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashedIp({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for HashedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The key that seals raw IPs for fleet members (XChaCha20-Poly1305).
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// An IP address encrypted and authenticated under a fleet's [`SealKey`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SealedIp {
    /// Random 192-bit nonce: large enough to pick at random without collisions.
    pub nonce: [u8; 24],
    /// The 17-byte tagged address (family byte + 16 bytes) encrypted, plus a 16-byte tag.
    pub ciphertext: [u8; 33],
}

/// A sealed IP failed to open: wrong key, tampered bytes, or wrong associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed IP does not open with this fleet key")]
pub struct SealError;

impl SealKey {
    /// Derives the sealing key from the fleet's 32-byte secret.
    pub fn derive(secret: &[u8; 32]) -> Self {
        SealKey(blake3::derive_key(SEAL_CONTEXT, secret))
    }

    /// Seals `ip`, binding it to `aad` (for example the signal's id) so that a sealed IP
    /// cannot be cut from one signal and pasted into another.
    pub fn seal<R: RngCore + CryptoRng>(&self, ip: IpAddr, aad: &[u8], rng: &mut R) -> SealedIp {
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let plain = encode_ip(canonical_ip(ip));
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let sealed =
            cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: &plain, aad }).unwrap_or_default();
        let mut ciphertext = [0u8; 33];
        // Encryption of a 17-byte message always yields 33 bytes; copy defensively.
        let n = sealed.len().min(33);
        ciphertext[..n].copy_from_slice(&sealed[..n]);
        SealedIp { nonce, ciphertext }
    }

    /// Opens a sealed IP made with the same key and `aad`.
    pub fn open(&self, sealed: &SealedIp, aad: &[u8]) -> Result<IpAddr, SealError> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let plain = cipher
            .decrypt(XNonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad })
            .map_err(|_| SealError)?;
        decode_ip(&plain).ok_or(SealError)
    }
}

fn encode_ip(ip: IpAddr) -> [u8; 17] {
    let mut out = [0u8; 17];
    match ip {
        IpAddr::V4(v4) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out[0] = 6;
            out[1..].copy_from_slice(&v6.octets());
        }
    }
    out
}

fn decode_ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.first()? {
        4 => {
            let octets: [u8; 4] = bytes.get(1..5)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        6 => {
            let octets: [u8; 16] = bytes.get(1..17)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    const SECRET: [u8; 32] = [7; 32];

    #[test]
    fn mapped_v6_hashes_like_v4() {
        let key = HashKey::derive(&SECRET, Epoch(1));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(key.hash(v4), key.hash(mapped));
    }

    #[test]
    fn epochs_and_secrets_change_hashes() {
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let a = HashKey::derive(&SECRET, Epoch(1)).hash(ip);
        assert_ne!(a, HashKey::derive(&SECRET, Epoch(2)).hash(ip));
        assert_ne!(a, HashKey::derive(&[8; 32], Epoch(1)).hash(ip));
        assert_eq!(a, HashKey::derive(&SECRET, Epoch(1)).hash(ip));
        assert_eq!(HashedIp::from_hex(&a.to_hex()), Some(a));
    }

    #[test]
    fn epoch_containing() {
        assert_eq!(Epoch::containing(Timestamp::from_secs(86_399), 86_400), Epoch(0));
        assert_eq!(Epoch::containing(Timestamp::from_secs(86_400), 86_400), Epoch(1));
        assert_eq!(Epoch::containing(Timestamp::from_secs(-5), 86_400), Epoch(0));
    }

    #[test]
    fn seal_round_trips_and_binds_aad() {
        let key = SealKey::derive(&SECRET);
        for ip in ["203.0.113.9", "2001:db8::42", "::ffff:198.51.100.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let sealed = key.seal(ip, b"signal-1", &mut OsRng);
            assert_eq!(key.open(&sealed, b"signal-1"), Ok(canonical_ip(ip)));
            assert_eq!(key.open(&sealed, b"signal-2"), Err(SealError));
            assert_eq!(SealKey::derive(&[1; 32]).open(&sealed, b"signal-1"), Err(SealError));
            let mut tampered = sealed.clone();
            tampered.ciphertext[3] ^= 1;
            assert_eq!(key.open(&tampered, b"signal-1"), Err(SealError));
        }
    }
}
