//! Palisade's domain and wire types.
//!
//! Everything that crosses a process boundary is defined here: [`Decision`]s served to
//! bouncers, [`Signal`]s gossiped between nodes, the [`HashedIp`] that lets nodes talk
//! about an address without revealing it, the [`NodeId`] that names a node, and the
//! versioned [`envelope`] every message travels in.
//!
//! This crate is pure data: it must never do I/O, spawn tasks or read the clock. Time
//! and randomness are passed in by the caller, so that every rule built on these types
//! can be tested deterministically.

#![deny(missing_docs)]

pub mod central;
pub mod decision;
pub mod envelope;
pub mod fleet;
pub mod gossip;
pub mod ip;
pub mod node;
pub mod signal;
pub mod time;

pub use decision::{Decision, DecisionType, Origin, Scope, Uuid};
pub use envelope::{Message, WireError};
pub use fleet::{AdmissionError, FleetId, JoinToken, MembershipCert, RevocationList};
pub use gossip::{Digest, Hello, JoinReply, JoinRequest, OriginMark, RangeRequest};
pub use ip::{Epoch, HashKey, HashedIp, SealKey, SealedIp};
pub use node::{NodeId, NodeKey};
pub use signal::{Signal, SignalId, SignedSignal};
pub use time::Timestamp;
