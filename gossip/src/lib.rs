//! Palisade fleet gossip: how the nodes of one fleet tell each other about attackers.
//!
//! - [`engine`]: the dissemination protocol (epidemic push, deduplication by signal id,
//!   anti-entropy repair on per-origin sequence numbers, penalties for bad input) as a
//!   pure state machine: no I/O, time and randomness passed in.
//! - [`net`]: the QUIC endpoint (quinn + rustls with `ring`), mutually authenticated with
//!   certificates bound to each node's ed25519 key and admitted by the fleet's membership
//!   certificates; it drives the engine and carries chitchat membership.
//! - [`admission`]: the fleet admin's keys and what they sign.
//! - [`membership`]: chitchat carried over the authenticated QUIC endpoint.
//!
//! # Wiring it into a node
//!
//! ```no_run
//! # async fn wire(config: palisade_gossip::GossipConfig, membership: palisade_gossip::Membership)
//! # -> Result<(), palisade_gossip::NetError> {
//! use palisade_proto::RevocationList;
//! let fleet = membership.fleet();
//! // `next_seq`: persisted by the node (1 the first time); revocations: the last list kept.
//! let mut gossip = palisade_gossip::start(config, membership, RevocationList::empty(fleet), 1).await?;
//! let handle = gossip.handle.clone();
//! // ReputationActor -> gossip: the node's own signals (numbered and signed here).
//! handle.publish(vec![/* Signal { .. } */]).await?;
//! // gossip -> ReputationActor: verified signals of other nodes, each once.
//! while let Some(batch) = gossip.signals.recv().await {
//!     for signed in batch { let _ = signed.signal.hashed_ip; }
//! }
//! // Metrics and peer states; what to persist for the next start.
//! let stats = handle.stats().await?;
//! let peers = handle.peers().await?;
//! let keep = handle.persistent().await?; // next_seq and revocation list
//! # let _ = (stats, peers, keep);
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! A new node gets its [`Membership`] with [`net::join`] (a join token from
//! [`FleetKeys::invite`]); the node holding the admin keys runs [`net::start_admin`].
//!
//! This crate must never decide anything about IPs (that is the reputation actor's job),
//! and must never speak to anyone that has not proven fleet membership: no open UDP.

#![deny(missing_docs)]

pub mod admission;
pub mod config;
pub mod engine;
#[cfg(feature = "net")]
pub mod membership;
#[cfg(feature = "net")]
pub mod net;
pub mod sim;
pub mod stats;
#[cfg(feature = "net")]
pub mod tls;

pub use admission::{FleetKeys, Membership};
pub use config::GossipConfig;
pub use engine::{ConfigError, Engine, EngineConfig, InEvent, OutEvent, PeerTraffic};
#[cfg(feature = "net")]
pub use net::{
    join, join_via, start, start_admin, Gossip, GossipHandle, GossipStats, JoinError, NetError, NetStats,
    PeerState,
};
pub use stats::EngineStats;
