//! TLS identities bound to node keys.
//!
//! Each node presents a self-signed X.509 certificate whose key *is* its ed25519 node key
//! (rcgen signs it with that key through `ring`). There is no certificate authority: a
//! peer's certificate is accepted when it carries an ed25519 key, that key is not revoked,
//! and the peer proves in the TLS 1.3 handshake that it holds the matching private key.
//! The [`NodeId`] is that key, so the connection is authenticated as that node. Fleet
//! membership is then checked on the first frame (the `Hello` with the admin-signed
//! membership certificate), before anything else is sent or accepted.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use palisade_proto::{NodeId, NodeKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature_with_raw_key, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// ALPN protocol of fleet gossip; bumped with incompatible changes.
pub const ALPN: &[u8] = b"palisade-gossip/1";

/// Server name used when dialling (peers are identified by key, not by name).
pub const SERVER_NAME: &str = "palisade-node";

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// DER prefix of an ed25519 PKCS#8 v1 private key (RFC 8410); the 32 seed bytes follow.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// Why a TLS identity could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused the key or the certificate.
    #[error("cannot make the node certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the rustls configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// The node's certificate and private key, as rustls wants them.
pub fn node_certificate(
    key: &NodeKey,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(&key.to_bytes());
    let der = PrivatePkcs8KeyDer::from(pkcs8);
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
    params.distinguished_name.push(rcgen::DnType::CommonName, key.node_id().to_string());
    let cert = params.self_signed(&key_pair)?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(der)))
}

/// The node id a certificate claims: its ed25519 subject key. `None` for any other key.
///
/// The claim is only trusted together with the handshake signature, which
/// [`NodeVerifier`] checks against exactly these key bytes.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<NodeId> {
    let der = cert.as_ref();
    let at = der.windows(ED25519_SPKI_PREFIX.len()).position(|w| w == ED25519_SPKI_PREFIX)?;
    let key: [u8; 32] =
        der.get(at + ED25519_SPKI_PREFIX.len()..at + ED25519_SPKI_PREFIX.len() + 32)?.try_into().ok()?;
    let id = NodeId(key);
    id.verifying_key().map(|_| id)
}

fn spki_of(id: &NodeId) -> SubjectPublicKeyInfoDer<'static> {
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(&id.0);
    SubjectPublicKeyInfoDer::from(spki)
}

/// Nodes refused at the handshake; shared with the engine, which updates it.
pub type RevokedSet = Arc<RwLock<BTreeSet<NodeId>>>;

/// Accepts exactly the self-signed ed25519 node certificates of unrevoked nodes, on both
/// sides of a connection.
#[derive(Debug)]
pub struct NodeVerifier {
    revoked: RevokedSet,
    /// When set, the one node accepted (a sensor pins its central tier's key).
    only: Option<NodeId>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl NodeVerifier {
    /// A verifier that refuses the nodes in `revoked`.
    pub fn new(revoked: RevokedSet) -> Self {
        NodeVerifier { revoked, only: None, algorithms: provider().signature_verification_algorithms }
    }

    /// A verifier that accepts `node` and no one else: how a sensor pins the key of its
    /// central tier.
    pub fn pinned(node: NodeId) -> Self {
        NodeVerifier { only: Some(node), ..NodeVerifier::new(RevokedSet::default()) }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<NodeId, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General("node certificates are self-signed, without a chain".into()));
        }
        let id = node_id_of(end_entity)
            .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let revoked = self.revoked.read().map(|set| set.contains(&id)).unwrap_or(true);
        if revoked || self.only.is_some_and(|only| only != id) {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked));
        }
        Ok(id)
    }

    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::NoSignatureSchemesInCommon,
            ));
        }
        let id = node_id_of(cert)
            .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        // Checked against the key bytes the node id was taken from, whatever else the
        // certificate says.
        verify_tls13_signature_with_raw_key(message, &spki_of(&id), dss, &self.algorithms)
    }
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates).map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for NodeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates).map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The one crypto provider of this crate: `ring`.
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// quinn server and client crypto for a node key, refusing the nodes in `revoked`.
pub fn quic_crypto(
    key: &NodeKey,
    revoked: RevokedSet,
) -> Result<(quinn::crypto::rustls::QuicServerConfig, quinn::crypto::rustls::QuicClientConfig), TlsError> {
    quic_crypto_with(key, Arc::new(NodeVerifier::new(revoked)), ALPN)
}

/// quinn server and client crypto for a node key with a given peer verifier and ALPN
/// protocol (the central tier uses its own ALPN, and sensors a [`NodeVerifier::pinned`]).
pub fn quic_crypto_with(
    key: &NodeKey,
    verifier: Arc<NodeVerifier>,
    alpn: &[u8],
) -> Result<(quinn::crypto::rustls::QuicServerConfig, quinn::crypto::rustls::QuicClientConfig), TlsError> {
    let (cert, private) = node_certificate(key)?;
    let provider = Arc::new(provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(vec![cert.clone()], private.clone_key())?;
    server.alpn_protocols = vec![alpn.to_vec()];
    // No session resumption: a resumed session skips certificate verification, and with
    // it the revocation check.
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], private)?;
    client.alpn_protocols = vec![alpn.to_vec()];
    client.resumption = rustls::client::Resumption::disabled();
    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok((server, client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn certificate_carries_the_node_key() {
        let key = NodeKey::generate(&mut OsRng);
        let (cert, _) = node_certificate(&key).unwrap();
        assert_eq!(node_id_of(&cert), Some(key.node_id()));
        assert_eq!(node_id_of(&CertificateDer::from(vec![1, 2, 3])), None);
        let revoked: RevokedSet = Arc::default();
        let verifier = NodeVerifier::new(revoked.clone());
        assert_eq!(verifier.check(&cert, &[]).unwrap(), key.node_id());
        assert!(verifier.check(&cert, std::slice::from_ref(&cert)).is_err());
        revoked.write().unwrap().insert(key.node_id());
        assert!(verifier.check(&cert, &[]).is_err());
        let other = NodeKey::generate(&mut OsRng);
        assert_eq!(NodeVerifier::pinned(key.node_id()).check(&cert, &[]).unwrap(), key.node_id());
        assert!(NodeVerifier::pinned(other.node_id()).check(&cert, &[]).is_err());
        quic_crypto(&key, revoked).unwrap();
    }
}
