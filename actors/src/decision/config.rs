//! The `[decisions]` and `[allowlist]` sections of the node's configuration.

use globset::{Glob, GlobMatcher};
use ipnet::IpNet;
use palisade_proto::time::parse_duration;
use palisade_proto::DecisionType;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

/// How overflows become decisions.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    /// Ban length when no profile or scenario says otherwise (CrowdSec's default: 4h).
    pub default_duration: String,
    /// Remediation when no profile or scenario says otherwise.
    #[serde(rename = "type")]
    pub default_type: String,
    /// No decision lasts longer than this, whatever the repeat multiplier gives.
    pub max_duration: String,
    /// Repeat offenders: the n-th decision against the same value within
    /// `repeat_window` lasts `duration x repeat_factor^(n-1)`. 1.0 turns this off.
    pub repeat_factor: f64,
    /// How far back earlier decisions count for `repeat_factor`.
    pub repeat_window: String,
    /// How long an expired or deleted decision is remembered, so bouncers polling the
    /// stream learn that it is gone.
    pub tombstone_retention: String,
    /// Record decisions without enforcing them (bouncers never see them).
    pub simulation: bool,
    /// Rules tried in order; the first whose `scenarios` match decides.
    pub profiles: Vec<ProfileConfig>,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            default_duration: "4h".into(),
            default_type: "ban".into(),
            max_duration: "7d".into(),
            repeat_factor: 2.0,
            repeat_window: "7d".into(),
            tombstone_retention: "6h".into(),
            simulation: false,
            profiles: Vec::new(),
        }
    }
}

/// One rule: which scenarios it applies to and what decision they get.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// A name for logs and `palisade config check`.
    pub name: String,
    /// Scenario name globs (`palisade/ssh-*`); empty matches every scenario.
    #[serde(default)]
    pub scenarios: Vec<String>,
    /// Ban length for these scenarios.
    #[serde(default)]
    pub duration: Option<String>,
    /// Remediation for these scenarios (`ban`, `captcha`...).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Record but never enforce.
    #[serde(default)]
    pub simulated: bool,
    /// Make no decision at all (alert only).
    #[serde(default)]
    pub no_decision: bool,
}

/// Addresses never banned.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AllowlistConfig {
    /// Addresses and CIDR ranges, IPv4 or IPv6.
    pub cidrs: Vec<String>,
    /// Also never ban loopback (127.0.0.0/8, ::1).
    pub loopback: bool,
    /// Also never ban this host's own interface addresses.
    pub host_addresses: bool,
}

impl Default for AllowlistConfig {
    fn default() -> Self {
        AllowlistConfig { cidrs: Vec::new(), loopback: true, host_addresses: true }
    }
}

/// A configuration value that does not make sense, with its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `decisions.profiles[1].duration`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
}

fn duration_at(key: &str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).map_err(|e| ConfigError::new(key, e))
}

/// A profile ready to match.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Its name.
    pub name: String,
    matchers: Vec<GlobMatcher>,
    /// Ban length, if the profile sets one.
    pub duration: Option<Duration>,
    /// Remediation, if the profile sets one.
    pub kind: Option<DecisionType>,
    /// Record but never enforce.
    pub simulated: bool,
    /// Alert only.
    pub no_decision: bool,
}

impl Profile {
    /// Whether this profile applies to `scenario`.
    pub fn matches(&self, scenario: &str) -> bool {
        self.matchers.is_empty() || self.matchers.iter().any(|m| m.is_match(scenario))
    }
}

/// The decision policy, validated.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Ban length by default.
    pub default_duration: Duration,
    /// Remediation by default.
    pub default_type: DecisionType,
    /// Upper bound on any decision made from an overflow.
    pub max_duration: Duration,
    /// Repeat multiplier.
    pub repeat_factor: f64,
    /// Window for repeat offences.
    pub repeat_window: Duration,
    /// Tombstone retention.
    pub tombstone_retention: Duration,
    /// Global simulation mode.
    pub simulation: bool,
    /// Profiles in order.
    pub profiles: Vec<Profile>,
}

impl DecisionConfig {
    /// Validates and compiles; errors name the key under `decisions.`.
    pub fn compile(&self) -> Result<Policy, ConfigError> {
        let default_duration = duration_at("decisions.default_duration", &self.default_duration)?;
        let max_duration = duration_at("decisions.max_duration", &self.max_duration)?;
        if max_duration < default_duration {
            return Err(ConfigError::new(
                "decisions.max_duration",
                "is shorter than decisions.default_duration",
            ));
        }
        if !(1.0..=100.0).contains(&self.repeat_factor) {
            return Err(ConfigError::new("decisions.repeat_factor", "must be between 1.0 (off) and 100"));
        }
        if self.default_type.trim().is_empty() {
            return Err(ConfigError::new("decisions.type", "must not be empty"));
        }
        let mut profiles = Vec::new();
        for (i, p) in self.profiles.iter().enumerate() {
            let key = |k: &str| format!("decisions.profiles[{i}].{k}");
            let matchers = p
                .scenarios
                .iter()
                .map(|g| Glob::new(g).map(|g| g.compile_matcher()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::new(key("scenarios"), e.to_string()))?;
            let duration = p.duration.as_deref().map(|d| duration_at(&key("duration"), d)).transpose()?;
            profiles.push(Profile {
                name: p.name.clone(),
                matchers,
                duration,
                kind: p.kind.as_deref().map(DecisionType::from),
                simulated: p.simulated,
                no_decision: p.no_decision,
            });
        }
        Ok(Policy {
            default_duration,
            default_type: DecisionType::from(self.default_type.as_str()),
            max_duration,
            repeat_factor: self.repeat_factor,
            repeat_window: duration_at("decisions.repeat_window", &self.repeat_window)?,
            tombstone_retention: duration_at("decisions.tombstone_retention", &self.tombstone_retention)?,
            simulation: self.simulation,
            profiles,
        })
    }
}

impl AllowlistConfig {
    /// The configured networks plus loopback (when enabled) and `host_addrs` (the caller
    /// reads the interfaces; they are used when `host_addresses` is on).
    pub fn compile(&self, host_addrs: &[IpAddr]) -> Result<Vec<IpNet>, ConfigError> {
        let mut nets = Vec::new();
        for (i, text) in self.cidrs.iter().enumerate() {
            let text = text.trim();
            let net =
                text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                    ConfigError::new(
                        format!("allowlist.cidrs[{i}]"),
                        format!("{text:?} is not an IP address or CIDR range"),
                    )
                })?;
            nets.push(net);
        }
        if self.loopback {
            nets.extend(["127.0.0.0/8", "::1/128"].iter().filter_map(|s| s.parse::<IpNet>().ok()));
        }
        if self.host_addresses {
            nets.extend(host_addrs.iter().map(|ip| IpNet::from(*ip)));
        }
        Ok(nets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_compile() {
        let p = DecisionConfig::default().compile().unwrap();
        assert_eq!(p.default_duration, Duration::from_secs(4 * 3600));
        assert_eq!(p.default_type, DecisionType::Ban);
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = DecisionConfig::default();
        c.profiles.push(ProfileConfig {
            name: "x".into(),
            scenarios: vec!["palisade/*".into()],
            duration: Some("12 hours".into()),
            kind: None,
            simulated: false,
            no_decision: false,
        });
        let err = c.compile().unwrap_err();
        assert_eq!(err.key, "decisions.profiles[0].duration");
        let a = AllowlistConfig { cidrs: vec!["10.0.0.0/8".into(), "nope".into()], ..Default::default() };
        assert_eq!(a.compile(&[]).unwrap_err().key, "allowlist.cidrs[1]");
    }
}
