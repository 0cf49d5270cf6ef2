//! The consensus's inputs: reports from sensors whose network identity the central tier
//! verified, the ASN-to-organisation map, and the allowlists.

use palisade_proto::{HashedIp, NodeId, Signal, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// An autonomous system number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Asn(pub u32);

/// An organisation that holds one or more ASNs (CAIDA AS2Org style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrgId(pub u32);

/// The unit of independence: one organisation when the ASN-to-organisation map knows the
/// ASN, otherwise the ASN itself. Each group's contribution to a score is capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GroupKey {
    /// An ASN the organisation map does not know.
    Asn(Asn),
    /// An organisation from the map.
    Org(OrgId),
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupKey::Asn(a) => write!(f, "AS{}", a.0),
            GroupKey::Org(o) => write!(f, "org{}", o.0),
        }
    }
}

/// How easily a scenario is triggered by traffic with a forged source address.
///
/// A scan of unanswered SYNs can be sent "from" any victim, so honest sensors would
/// report the victim; an SSH password failure needs a completed handshake; an HTTP
/// exploit attempt carries payload evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScenarioKind {
    /// Needs no handshake (SYN or UDP scans): a forged source triggers it.
    Spoofable,
    /// Needs a completed TCP handshake.
    Handshake,
    /// Needs application-layer payload (auth failures, exploit paths).
    Application,
}

impl ScenarioKind {
    /// Classifies a scenario name. Names containing `portscan`, `syn` or `udp` are
    /// spoofable; `-bf`, `bruteforce`, `http`, `exploit`, `cve`, `probing` and
    /// `crawl` name application-layer evidence; anything else needs a handshake.
    pub fn classify(scenario: &str) -> ScenarioKind {
        let s = scenario.to_ascii_lowercase();
        if ["portscan", "syn", "udp", "scan-tcp"].iter().any(|k| s.contains(k)) {
            ScenarioKind::Spoofable
        } else if ["-bf", "bruteforce", "http", "exploit", "cve", "probing", "crawl"]
            .iter()
            .any(|k| s.contains(k))
        {
            ScenarioKind::Application
        } else {
            ScenarioKind::Handshake
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            ScenarioKind::Spoofable => 0,
            ScenarioKind::Handshake => 1,
            ScenarioKind::Application => 2,
        }
    }
}

/// A sensor's network identity as the central tier verified it: the ASN and /24 of the
/// address its connection arrives from. Never what the sensor says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VerifiedAddress {
    /// ASN of the connection's source address (IP-to-ASN database lookup).
    pub asn: Asn,
    /// First three octets of the connection's IPv4 source address (for IPv6, the tier
    /// folds the /48 into three bytes).
    pub net24: [u8; 3],
}

/// One sensor's report of one attacker, as the consensus consumes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The reporting sensor (its node id, from the verified signature).
    pub sensor: NodeId,
    /// Where the sensor's connection came from, verified by the tier.
    pub address: VerifiedAddress,
    /// The attacker.
    pub hashed_ip: HashedIp,
    /// How spoofable the scenario that fired is.
    pub scenario: ScenarioKind,
    /// The scenario's confidence, 0..=3 (higher values are clamped to 3).
    pub confidence: u8,
    /// When the sensor says it saw the attack. Used only to refuse stale reports:
    /// every time-based rule uses the tier's own `now`.
    pub observed_at: Timestamp,
}

impl Report {
    /// Builds a report from a verified signal and the address its sensor connected from.
    pub fn from_signal(signal: &Signal, address: VerifiedAddress) -> Report {
        Report {
            sensor: signal.origin,
            address,
            hashed_ip: signal.hashed_ip,
            scenario: ScenarioKind::classify(&signal.scenario),
            confidence: signal.confidence,
            observed_at: signal.observed_at,
        }
    }
}

/// Which organisation holds which ASN. ASNs it does not know are their own group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsnOrgs {
    map: HashMap<Asn, OrgId>,
}

impl AsnOrgs {
    /// An empty map: every ASN is its own group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `org` holds `asn`.
    pub fn insert(&mut self, asn: Asn, org: OrgId) {
        self.map.insert(asn, org);
    }

    /// The group `asn` belongs to.
    pub fn group_of(&self, asn: Asn) -> GroupKey {
        match self.map.get(&asn) {
            Some(org) => GroupKey::Org(*org),
            None => GroupKey::Asn(asn),
        }
    }
}

impl FromIterator<(Asn, OrgId)> for AsnOrgs {
    fn from_iter<T: IntoIterator<Item = (Asn, OrgId)>>(iter: T) -> Self {
        AsnOrgs { map: iter.into_iter().collect() }
    }
}

/// IPs that must never be listed, and IPs that need overwhelming evidence.
///
/// The tier sees only hashed IPs, but it holds the hashing key, so it computes these sets
/// itself: for each allowlisted IPv4 range (CDN `ips-v4` files, crawler JSON files,
/// public resolvers, tenants' own networks) it hashes every address with the current
/// epoch's key, and rebuilds the set at each epoch change. That costs 32 bytes per
/// address (Cloudflare's ~1.5M IPv4 addresses: ~50 MB). IPv6 ranges cannot be enumerated;
/// see `ALGORITHM.md` for the proto change that would cover them (a hashed prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    never: HashSet<HashedIp>,
    protected: HashSet<HashedIp>,
}

impl Allowlist {
    /// An empty allowlist.
    pub fn new() -> Self {
        Self::default()
    }

    /// `ip` is never listed, whatever is reported.
    pub fn allow(&mut self, ip: HashedIp) {
        self.never.insert(ip);
    }

    /// `ip` is listed only on `protected_threshold` and `protected_min_groups`.
    pub fn protect(&mut self, ip: HashedIp) {
        self.protected.insert(ip);
    }

    /// Whether `ip` is never listed.
    pub fn is_allowed(&self, ip: &HashedIp) -> bool {
        self.never.contains(ip)
    }

    /// Whether `ip` needs the protected thresholds.
    pub fn is_protected(&self, ip: &HashedIp) -> bool {
        self.protected.contains(ip)
    }

    /// Number of hashed IPs in both sets.
    pub fn len(&self) -> usize {
        self.never.len() + self.protected.len()
    }

    /// Whether both sets are empty.
    pub fn is_empty(&self) -> bool {
        self.never.is_empty() && self.protected.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;

    #[test]
    fn scenario_classification() {
        assert_eq!(ScenarioKind::classify("palisade/ssh-bf"), ScenarioKind::Application);
        assert_eq!(ScenarioKind::classify("crowdsecurity/http-probing"), ScenarioKind::Application);
        assert_eq!(ScenarioKind::classify("palisade/tcp-portscan"), ScenarioKind::Spoofable);
        assert_eq!(ScenarioKind::classify("palisade/smtp-conn-flood"), ScenarioKind::Handshake);
    }

    #[test]
    fn orgs_group_asns() {
        let orgs: AsnOrgs = [(Asn(16509), OrgId(1)), (Asn(14618), OrgId(1))].into_iter().collect();
        assert_eq!(orgs.group_of(Asn(16509)), orgs.group_of(Asn(14618)));
        assert_eq!(orgs.group_of(Asn(3320)), GroupKey::Asn(Asn(3320)));
    }
}
