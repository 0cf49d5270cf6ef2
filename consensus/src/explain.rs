//! What the consensus publishes: listings, list changes, and explanations of a score.

use palisade_proto::{HashedIp, NodeId, Timestamp};

use crate::types::{Asn, GroupKey};

/// One IP on the published list.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// The listed IP.
    pub ip: HashedIp,
    /// Its score now.
    pub score: f64,
    /// Groups whose contribution counts towards `min_groups`.
    pub groups: u32,
    /// When it was listed.
    pub listed_since: Timestamp,
}

/// A change to the published list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListChange {
    /// The IP.
    pub ip: HashedIp,
    /// When (the tier's time).
    pub at: Timestamp,
    /// Listed or delisted.
    pub kind: ListChangeKind,
}

/// Which way the list changed.
#[derive(Debug, Clone, PartialEq)]
pub enum ListChangeKind {
    /// The IP was listed with this score and group count.
    Listed {
        /// Score at listing.
        score: f64,
        /// Groups counted at listing.
        groups: u32,
    },
    /// The IP left the list (decay, expiry, or allowlisting).
    Delisted,
}

/// Why an IP has its score: the contribution of each group and of each sensor in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The IP.
    pub ip: HashedIp,
    /// Its score: the sum of the group contributions.
    pub score: f64,
    /// Groups counted towards `min_groups`.
    pub groups_counted: u32,
    /// When it was listed, if it is.
    pub listed_since: Option<Timestamp>,
    /// Whether it needs the protected thresholds.
    pub protected: bool,
    /// Groups, largest contribution first.
    pub groups: Vec<GroupContribution>,
}

/// One group's part of a score.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupContribution {
    /// The ASN or organisation.
    pub group: GroupKey,
    /// What it adds to the score (at most `group_cap`).
    pub contribution: f64,
    /// Its reporting sensors.
    pub sensors: Vec<SensorContribution>,
}

/// One sensor's report within its group.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorContribution {
    /// The sensor.
    pub sensor: NodeId,
    /// Its verified ASN.
    pub asn: Asn,
    /// Its trust now.
    pub trust: f64,
    /// Confidence times scenario weight of its report.
    pub evidence: f64,
    /// Trust times evidence times decay: its input to the group.
    pub weight: f64,
    /// When the tier last received its report.
    pub reported_at: Timestamp,
}
