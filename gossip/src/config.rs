//! The `[gossip]` section of the node's configuration.

use std::net::SocketAddr;
use std::time::Duration;

use crate::engine::{ConfigError, EngineConfig};

/// Everything the gossip layer can be told. One serde tree with named defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipConfig {
    /// UDP address of the QUIC endpoint, for dialling and accepting (port 0: any).
    pub listen: SocketAddr,
    /// The address peers should dial to reach this node (default: the bound address).
    pub advertise: Option<SocketAddr>,
    /// Members to contact first (`host:port`).
    pub seeds: Vec<SocketAddr>,
    /// QUIC keep-alive interval.
    #[serde(with = "duration_text")]
    pub keep_alive: Duration,
    /// QUIC idle timeout: a silent connection is closed after this long.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Largest frame accepted from a peer, in bytes (at most the envelope limit).
    pub max_frame_bytes: u32,
    /// Frames queued per peer before new ones are dropped (anti-entropy repairs them).
    pub peer_queue: usize,
    /// How often the engine ticks.
    #[serde(with = "duration_text")]
    pub tick_interval: Duration,
    /// Membership (chitchat) gossip interval.
    #[serde(with = "duration_text")]
    pub membership_interval: Duration,
    /// How often per-origin high-water marks are copied into membership state.
    #[serde(with = "duration_text")]
    pub publish_marks_interval: Duration,
    /// Sign own signals and verify received ones on two blocking threads (true), or in
    /// the driver task itself (false: fewer thread hand-offs on a starved machine, but the
    /// driver then blocks a runtime worker for milliseconds per batch).
    pub offload_crypto: bool,
    /// Validity of the membership certificates this node issues when it holds the admin
    /// key and answers join requests.
    #[serde(with = "duration_text")]
    pub membership_validity: Duration,
    /// The dissemination protocol's tunables (`[gossip.engine]`); its `max_clock_skew`
    /// also bounds the clock difference tolerated when checking membership certificates.
    pub engine: EngineConfig,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7946)),
            advertise: None,
            seeds: Vec::new(),
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_frame_bytes: palisade_proto::envelope::MAX_MESSAGE_BYTES as u32,
            peer_queue: 256,
            tick_interval: Duration::from_millis(100),
            membership_interval: Duration::from_millis(500),
            publish_marks_interval: Duration::from_secs(1),
            offload_crypto: true,
            membership_validity: Duration::from_secs(365 * 86_400),
            engine: EngineConfig::default(),
        }
    }
}

impl GossipConfig {
    /// Checks values that would break the endpoint or the protocol.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine.validate()?;
        let err = |key, problem| Err(ConfigError { key, problem });
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return err("keep_alive", "must be above zero and below idle_timeout");
        }
        if self.max_frame_bytes < 1024
            || self.max_frame_bytes as usize > palisade_proto::envelope::MAX_MESSAGE_BYTES
        {
            return err("max_frame_bytes", "must be between 1024 and 262144");
        }
        if self.peer_queue == 0 {
            return err("peer_queue", "must be at least 1");
        }
        if self.tick_interval.is_zero()
            || self.membership_interval.is_zero()
            || self.publish_marks_interval.is_zero()
        {
            return err("tick_interval", "intervals must be above zero");
        }
        Ok(())
    }
}

/// Durations written as the rest of Palisade's configuration writes them: `"250ms"`,
/// `"5s"`, `"1h30m"` (see `palisade_proto::time::parse_duration`).
pub(crate) mod duration_text {
    use palisade_proto::time::{go_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_millis() != 0 {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        } else {
            s.serialize_str(&go_duration(*d))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_as_text_and_unknown_keys_are_refused() {
        let config = GossipConfig::default();
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"tick_interval\":\"100ms\""), "{json}");
        assert!(json.contains("\"idle_timeout\":\"30s\""), "{json}");
        let back: GossipConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        let err = serde_json::from_str::<GossipConfig>(r#"{"tick_interval": "10"}"#).unwrap_err();
        assert!(err.to_string().contains("unit"), "{err}");
        assert!(serde_json::from_str::<GossipConfig>(r#"{"fanuot": 3}"#).is_err());
        let bad = GossipConfig { keep_alive: Duration::from_secs(60), ..GossipConfig::default() };
        assert_eq!(bad.validate().unwrap_err().key, "keep_alive");
    }
}
