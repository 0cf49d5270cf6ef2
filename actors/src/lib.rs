//! The actors of a Palisade node, and the pure engines inside them.
//!
//! A node is four actors connected by bounded mailboxes:
//!
//! - **ingest** ([`ingest`]): sources (files, syslog, journald, stdin) read lines in
//!   batches and remember where they are;
//! - **scenario** ([`parser`], [`scenario`], [`pipeline`]): parsers turn lines into
//!   [`Event`]s, leaky buckets turn events into [`Overflow`]s;
//! - **decision** ([`decision`]): profiles turn overflows into decisions, kept in a store;
//! - **reputation** ([`reputation`]): overflows become signed signals in an outbox.
//!
//! Each actor is a thin shell around an engine that does no I/O and takes time from the
//! events it is given, so `palisade replay` over a file produces exactly what live
//! tailing of the same lines produces. This crate must never know about HTTP or the
//! network protocols between nodes; storage is behind the traits in [`store`].

pub mod event;
pub mod hub;
pub mod ingest;
pub mod parser;
pub mod scenario;

pub use event::{Event, Fields, LineBatch, Overflow, RawLine, Remediation};
pub use hub::{HubError, HubFile};
pub mod actor;
pub mod decision;
pub mod pipeline;
pub mod reputation;
pub mod store;
pub mod watchlist;
