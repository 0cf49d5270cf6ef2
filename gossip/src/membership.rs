//! chitchat membership, carried over the authenticated QUIC endpoint.
//!
//! chitchat 0.11 lets a custom [`Transport`] carry its messages, and its message codec
//! ([`Serializable`]/[`Deserializable`]) is public (0.12+ made it crate-private). So
//! chitchat runs unchanged, but its [`Socket`] is two bounded channels into the QUIC
//! shell: an outgoing message is encoded with chitchat's own codec and sent as a
//! `Message::Membership` frame on the admitted connection to that address; an incoming
//! one is only ever read from an admitted connection. chitchat never touches a UDP socket,
//! so membership is exactly as authenticated as the rest of the gossip.
//!
//! chitchat's state stays small: the QUIC address, the software version, readiness and,
//! refreshed at most once per `publish_marks_interval`, each origin's signal high-water
//! mark (`hwm:<origin>`). Signals themselves never go through chitchat.

use std::net::SocketAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use tokio::sync::mpsc;

/// Key of a node's QUIC address in chitchat state.
pub const KEY_QUIC_ADDR: &str = "quic_addr";
/// Key of a node's software version.
pub const KEY_VERSION: &str = "version";
/// Key of a node's readiness (`true` once its endpoint runs).
pub const KEY_READY: &str = "ready";
/// Prefix of per-origin high-water mark keys (`hwm:<origin hex>` = highest contiguous seq).
pub const KEY_HWM_PREFIX: &str = "hwm:";

/// Encodes a chitchat message with chitchat's own codec.
pub fn encode(message: &ChitchatMessage) -> Vec<u8> {
    message.serialize_to_vec()
}

/// Decodes a chitchat message; `None` when the bytes are not one complete message.
pub fn decode(mut bytes: &[u8]) -> Option<ChitchatMessage> {
    let message = ChitchatMessage::deserialize(&mut bytes).ok()?;
    bytes.is_empty().then_some(message)
}

/// The transport handed to `chitchat::spawn_chitchat`: it opens one [`QuicSocket`], once.
pub struct QuicTransport {
    socket: Mutex<Option<QuicSocket>>,
}

impl QuicTransport {
    /// A transport whose socket sends into `outbox` and receives from `inbox`.
    pub fn new(
        outbox: mpsc::Sender<(SocketAddr, Vec<u8>)>,
        inbox: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
    ) -> Self {
        QuicTransport { socket: Mutex::new(Some(QuicSocket { outbox, inbox })) }
    }
}

#[async_trait]
impl Transport for QuicTransport {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket =
            self.socket.lock().map_err(|_| anyhow::anyhow!("membership transport lock poisoned"))?.take();
        match socket {
            Some(socket) => Ok(Box::new(socket)),
            None => Err(anyhow::anyhow!("the QUIC membership transport can be opened only once")),
        }
    }
}

/// chitchat's socket: bounded channels to and from the QUIC shell.
pub struct QuicSocket {
    outbox: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    inbox: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
}

#[async_trait]
impl Socket for QuicSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        match self.outbox.try_send((to, encode(&message))) {
            // Like a lost datagram: chitchat gossips again next round.
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(anyhow::anyhow!("gossip endpoint stopped")),
        }
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.inbox.recv().await.ok_or_else(|| anyhow::anyhow!("gossip endpoint stopped"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_and_refuses_garbage() {
        let message = ChitchatMessage::BadCluster;
        let bytes = encode(&message);
        assert_eq!(decode(&bytes), Some(message));
        assert_eq!(decode(&[0xff, 1, 2, 3]), None);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing), None);
    }

    #[tokio::test]
    async fn socket_moves_messages_through_channels_once() {
        let (out_tx, mut out_rx) = mpsc::channel(1);
        let (in_tx, in_rx) = mpsc::channel(1);
        let transport = QuicTransport::new(out_tx, in_rx);
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut socket = transport.open(addr).await.unwrap();
        assert!(transport.open(addr).await.is_err());
        socket.send(addr, ChitchatMessage::BadCluster).await.unwrap();
        // A full outbox drops like a lossy link instead of blocking chitchat.
        socket.send(addr, ChitchatMessage::BadCluster).await.unwrap();
        let (to, bytes) = out_rx.recv().await.unwrap();
        assert_eq!((to, decode(&bytes)), (addr, Some(ChitchatMessage::BadCluster)));
        assert!(out_rx.try_recv().is_err());
        in_tx.send((addr, ChitchatMessage::BadCluster)).await.unwrap();
        assert_eq!(socket.recv().await.unwrap(), (addr, ChitchatMessage::BadCluster));
        drop(in_tx);
        assert!(socket.recv().await.is_err());
    }
}
