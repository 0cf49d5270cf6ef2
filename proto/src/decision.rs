//! Decisions: what a node enforces against an address or a range, and for how long.
//!
//! The fields mirror CrowdSec's decision model so that its bouncers work unchanged; the
//! Local API turns a [`Decision`] into CrowdSec's JSON (with a Go-style `duration`).

use bincode::{Decode, Encode};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::ip::canonical_ip;
use crate::time::Timestamp;

/// Who asked for a decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Origin {
    /// This node's own detection.
    Palisade,
    /// A signal from a member of this node's fleet.
    Fleet,
    /// The community blocklist of the central tier.
    Community,
    /// An operator, through the CLI or the admin API.
    Cli,
    /// Anything else, e.g. `crowdsec` for alerts pushed by a CrowdSec log processor.
    Other(Arc<str>),
}

impl Origin {
    /// The origin as CrowdSec writes it in JSON.
    pub fn as_str(&self) -> &str {
        match self {
            Origin::Palisade => "palisade",
            Origin::Fleet => "fleet",
            Origin::Community => "community",
            Origin::Cli => "cli",
            Origin::Other(s) => s,
        }
    }
}

impl From<&str> for Origin {
    fn from(s: &str) -> Self {
        match s {
            "palisade" => Origin::Palisade,
            "fleet" => Origin::Fleet,
            "community" => Origin::Community,
            "cli" => Origin::Cli,
            other => Origin::Other(other.into()),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a decision applies to. CrowdSec names scopes in title case (`Ip`, `Range`) and
/// accepts them in any case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub enum Scope {
    /// A single address.
    Ip,
    /// A CIDR range.
    Range,
    /// Any other scope (`Country`, `AS`, `username`...), kept as given.
    Other(Arc<str>),
}

impl Scope {
    /// The scope as CrowdSec writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Scope::Ip => "Ip",
            Scope::Range => "Range",
            Scope::Other(s) => s,
        }
    }

    /// Parses a scope case-insensitively, normalising the names CrowdSec normalises.
    pub fn parse(s: &str) -> Scope {
        match s.to_ascii_lowercase().as_str() {
            "ip" => Scope::Ip,
            "range" => Scope::Range,
            "country" => Scope::Other("Country".into()),
            "as" => Scope::Other("AS".into()),
            _ => Scope::Other(s.into()),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The remediation a decision asks for: `ban`, `captcha`, or any word a bouncer knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub enum DecisionType {
    /// Drop the traffic.
    Ban,
    /// Ask for a captcha (web bouncers).
    Captcha,
    /// Anything else, kept as given.
    Other(Arc<str>),
}

impl DecisionType {
    /// The type as written in JSON.
    pub fn as_str(&self) -> &str {
        match self {
            DecisionType::Ban => "ban",
            DecisionType::Captcha => "captcha",
            DecisionType::Other(s) => s,
        }
    }
}

impl From<&str> for DecisionType {
    fn from(s: &str) -> Self {
        match s {
            "ban" => DecisionType::Ban,
            "captcha" => DecisionType::Captcha,
            other => DecisionType::Other(other.into()),
        }
    }
}

impl fmt::Display for DecisionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not an IP address or CIDR range although its scope says it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {scope} value")]
pub struct TargetError {
    /// The scope.
    pub scope: String,
    /// The offending value.
    pub value: String,
}

/// Parses and canonicalises the value of an `Ip` or `Range` decision. An `Ip` becomes a
/// host network (/32 or /128); a `Range` is truncated to its network address
/// (`10.1.2.3/8` becomes `10.0.0.0/8`); IPv4-mapped IPv6 addresses become IPv4.
pub fn parse_target(scope: &Scope, value: &str) -> Result<IpNet, TargetError> {
    let err = || TargetError { scope: scope.to_string(), value: value.to_owned() };
    match scope {
        Scope::Ip => {
            let ip = IpAddr::from_str(value.trim()).map_err(|_| err())?;
            Ok(IpNet::from(canonical_ip(ip)))
        }
        Scope::Range => {
            let net = IpNet::from_str(value.trim()).map_err(|_| err())?;
            let net = match (net, canonical_ip(net.addr())) {
                (IpNet::V6(v6), IpAddr::V4(v4)) if v6.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_err(|_| err())?
                }
                (net, _) => net,
            };
            Ok(net.trunc())
        }
        Scope::Other(_) => Err(err()),
    }
}

/// A random (version 4) UUID, kept as its 16 bytes and written as RFC 4122 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Encode, Decode)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// A version 4 UUID from 16 random bytes.
    pub fn from_random(mut b: [u8; 16]) -> Self {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Uuid(b)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for Uuid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        let mut out = [0u8; 16];
        if hex.len() != 32 || s.len() != 36 {
            return Err(format!("{s:?} is not a UUID"));
        }
        for (i, byte) in out.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| format!("{s:?} is not a UUID"))?;
        }
        Ok(Uuid(out))
    }
}

/// A decision: enforce `kind` against `value` (in `scope`) until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Decision {
    /// Store-assigned id, increasing; bouncers see it as `id`.
    pub id: u64,
    /// A random UUID, stable across restarts and nodes.
    pub uuid: Uuid,
    /// Who asked for it.
    pub origin: Origin,
    /// The remediation.
    pub kind: DecisionType,
    /// What `value` is.
    pub scope: Scope,
    /// The address, range or other value, canonical for `Ip` and `Range`.
    pub value: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops applying.
    pub until: Timestamp,
    /// The scenario (or the operator's reason) behind it; shared between the decisions
    /// of one scenario.
    pub scenario: Arc<str>,
    /// A simulated decision is recorded and shown but never enforced.
    pub simulated: bool,
}

impl Decision {
    /// Whether it still applies at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.until > now
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: Timestamp) -> Duration {
        self.until.since(now)
    }

    /// The network it covers, for `Ip` and `Range` decisions.
    pub fn target(&self) -> Option<IpNet> {
        parse_target(&self.scope, &self.value).ok()
    }
}

/// Serialises the decision for humans and scripts (`palisade decisions list --json`).
impl Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = serializer.serialize_struct("Decision", 10)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("uuid", &self.uuid.to_string())?;
        st.serialize_field("origin", self.origin.as_str())?;
        st.serialize_field("type", self.kind.as_str())?;
        st.serialize_field("scope", self.scope.as_str())?;
        st.serialize_field("value", &self.value)?;
        st.serialize_field("created_at", &self.created_at.as_millis())?;
        st.serialize_field("until", &self.until.as_millis())?;
        st.serialize_field("scenario", &*self.scenario)?;
        st.serialize_field("simulated", &self.simulated)?;
        st.end()
    }
}

/// The inverse of the `Serialize` impl, for tools that read `--json` output back.
impl<'de> Deserialize<'de> for Decision {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            id: u64,
            uuid: String,
            origin: String,
            #[serde(rename = "type")]
            kind: String,
            scope: String,
            value: String,
            created_at: i64,
            until: i64,
            scenario: String,
            simulated: bool,
        }
        let r = Raw::deserialize(deserializer)?;
        Ok(Decision {
            id: r.id,
            uuid: r.uuid.parse().map_err(serde::de::Error::custom)?,
            origin: Origin::from(r.origin.as_str()),
            kind: DecisionType::from(r.kind.as_str()),
            scope: Scope::parse(&r.scope),
            value: r.value,
            created_at: Timestamp(r.created_at),
            until: Timestamp(r.until),
            scenario: r.scenario.into(),
            simulated: r.simulated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_canonical() {
        assert_eq!(parse_target(&Scope::Ip, "192.0.2.1").unwrap().to_string(), "192.0.2.1/32");
        assert_eq!(parse_target(&Scope::Ip, "::ffff:192.0.2.1").unwrap().to_string(), "192.0.2.1/32");
        assert_eq!(parse_target(&Scope::Range, "10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_target(&Scope::Range, "::ffff:10.1.2.3/120").unwrap().to_string(), "10.1.2.0/24");
        assert_eq!(parse_target(&Scope::Range, "2001:db8::1/32").unwrap().to_string(), "2001:db8::/32");
        assert!(parse_target(&Scope::Ip, "10.0.0.0/8").is_err());
        assert!(parse_target(&Scope::Range, "nonsense").is_err());
        assert!(parse_target(&Scope::parse("country"), "FR").is_err());
    }

    #[test]
    fn scopes_normalise_like_crowdsec() {
        assert_eq!(Scope::parse("ip"), Scope::Ip);
        assert_eq!(Scope::parse("RANGE"), Scope::Range);
        assert_eq!(Scope::parse("as").as_str(), "AS");
        assert_eq!(Scope::parse("username").as_str(), "username");
    }

    #[test]
    fn json_round_trip() {
        let d = Decision {
            id: 7,
            uuid: "2b7f0d64-8a2c-4f5e-9b71-1d2f7a9c0e11".parse().unwrap(),
            origin: Origin::Palisade,
            kind: DecisionType::Ban,
            scope: Scope::Ip,
            value: "198.51.100.4".into(),
            created_at: Timestamp(1_000),
            until: Timestamp(14_401_000),
            scenario: "palisade/ssh-bf".into(),
            simulated: false,
        };
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.contains("\"type\":\"ban\""));
        assert!(text.contains("\"uuid\":\"2b7f0d64-8a2c-4f5e-9b71-1d2f7a9c0e11\""), "{text}");
        let back: Decision = serde_json::from_str(&text).unwrap();
        assert_eq!(back, d);
        assert!(d.is_active(Timestamp(14_400_999)));
        assert!(!d.is_active(Timestamp(14_401_000)));
    }
}
