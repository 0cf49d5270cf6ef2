//! Palisade's community consensus: which hashed IPs the central tier publishes on the
//! community blocklist, and how much it trusts each sensor.
//!
//! Sensors of many tenants report attackers (as [`palisade_proto::HashedIp`]s). The
//! tier tags each report with the network identity it *verified* (the ASN and /24 of the
//! address the sensor's connection comes from) and feeds it to [`Consensus::ingest`].
//! An IP's score sums, over network groups (ASNs, or organisations when an
//! ASN-to-organisation map is given), a capped and concave contribution of the group's
//! sensors, each weighted by the sensor's trust. An IP is listed only when its score
//! reaches a threshold *and* enough distinct groups contribute, so a thousand fake
//! sensors in one network count barely more than one. See `ALGORITHM.md` for the rules,
//! their reasons, their limits and the simulation evidence.
//!
//! This crate must never trust what a sensor says about itself (its address, its age,
//! its history: the tier observes those), never do I/O, never read a clock (time is the
//! `now` argument) and never use unseeded randomness: the same inputs give the same
//! list, which is what lets `palisade-sim` attack it with tens of thousands of Sybils in
//! seconds.

#![deny(missing_docs)]

mod config;
mod engine;
mod explain;
mod types;

pub use config::{ConfigError, ConsensusConfig, Defences};
pub use engine::{Consensus, IngestOutcome, SensorRecord, Stats};
pub use explain::{Explanation, GroupContribution, ListChange, ListChangeKind, Listing, SensorContribution};
pub use types::{Allowlist, Asn, AsnOrgs, GroupKey, OrgId, Report, ScenarioKind, VerifiedAddress};

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests;
