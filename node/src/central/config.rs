//! `central.toml`: the central tier's configuration, one serde tree with named defaults
//! and a `validate()` whose errors quote the key. `central.example.toml` at the
//! repository root shows every key.

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use palisade_consensus::ConsensusConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::LogConfig;

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CentralConfig {
    /// The tier's own directory: its key (`node.key`), the community secret
    /// (`community.secret`), the RocksDB database (`db/`) and the admin socket.
    pub data_dir: PathBuf,
    /// UDP address of the QUIC endpoint sensors dial.
    pub listen: SocketAddr,
    /// IP-to-ASN database: a MaxMind `.mmdb` or an iptoasn TSV file. Required.
    pub asn_database: Option<PathBuf>,
    /// Unix socket of `palisade central status/explain/tenant`; default
    /// `<data_dir>/central.sock`.
    pub admin_socket: Option<PathBuf>,
    /// Length of a hashing epoch, hours. Hashes of different epochs cannot be linked
    /// by anyone without the community secret.
    pub epoch_hours: u32,
    /// fsync every write before acknowledging it (survives power loss, costs a disk
    /// flush per batch). Off: acknowledged writes survive a crash of the process, as
    /// RocksDB's write-ahead log is in the OS's hands.
    pub sync_writes: bool,
    /// Rate limits and penalties.
    pub limits: LimitsConfig,
    /// The community list's publication.
    pub publish: PublishConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Addresses never listed, or listed only on overwhelming evidence.
    pub allowlist: AllowlistConfig,
    /// The consensus (see `consensus/ALGORITHM.md`).
    pub consensus: ConsensusConfig,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Signals one sensor may send per second, sustained (token bucket). A faster
    /// sensor is slowed down: the tier stops reading from it until tokens come back.
    pub sensor_signals_per_sec: f64,
    /// Burst of the bucket above.
    pub sensor_burst: f64,
    /// Bad signals (forged, foreign origin, sealed IP, malformed) one sensor may send
    /// before it is cut off.
    pub max_strikes: u32,
    /// How long a sensor that used its strikes is refused, seconds.
    pub ban_secs: u64,
    /// Failed enrollments (unknown tokens) one source address may try per minute.
    pub enrollments_per_minute: u32,
    /// Connections open at once; more are refused.
    pub max_connections: usize,
    /// A connection silent for this long is closed, seconds (sensors send keep-alives
    /// every third of it).
    pub idle_timeout_secs: u64,
}

/// `[publish]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// How often the tier advances the consensus clock (expiry, decay, delisting) and
    /// republishes entries near their `until`, milliseconds.
    pub tick_ms: u64,
    /// How long a subscriber keeps an entry without hearing about it again, hours; the
    /// tier republishes listed entries when half of it has passed.
    pub entry_ttl_hours: u32,
    /// Deltas kept for subscribers that resume; one that is further behind gets a
    /// snapshot.
    pub delta_log_keep: u64,
    /// Deltas queued for one subscriber; a subscriber that falls this far behind is
    /// disconnected (it resumes from its version when it reconnects).
    pub subscriber_queue: usize,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// TCP address of `/metrics`; none: no endpoint.
    pub listen: Option<SocketAddr>,
}

/// `[allowlist]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AllowlistConfig {
    /// Ranges never listed (CDNs, crawlers, resolvers, tenants' own networks). IPv4
    /// ranges are expanded and hashed with each epoch's key; IPv6 entries must be
    /// single addresses (/128): IPv6 ranges cannot be enumerated.
    pub never: Vec<IpNet>,
    /// Ranges listed only on the consensus' protected thresholds.
    pub protected: Vec<IpNet>,
    /// Most addresses the two lists may expand to (32 bytes each, per epoch held).
    pub max_addresses: u64,
}

impl Default for CentralConfig {
    fn default() -> Self {
        CentralConfig {
            data_dir: PathBuf::from("/var/lib/palisade-central"),
            listen: SocketAddr::from(([0, 0, 0, 0], 7950)),
            asn_database: None,
            admin_socket: None,
            epoch_hours: 168,
            sync_writes: false,
            limits: LimitsConfig::default(),
            publish: PublishConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
            allowlist: AllowlistConfig::default(),
            consensus: ConsensusConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            sensor_signals_per_sec: 2_000.0,
            sensor_burst: 50_000.0,
            max_strikes: 50,
            ban_secs: 600,
            enrollments_per_minute: 10,
            max_connections: 20_000,
            idle_timeout_secs: 60,
        }
    }
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            tick_ms: 1_000,
            entry_ttl_hours: 48,
            delta_log_keep: 100_000,
            subscriber_queue: 4_096,
        }
    }
}

impl Default for AllowlistConfig {
    fn default() -> Self {
        AllowlistConfig { never: Vec::new(), protected: Vec::new(), max_addresses: 4 << 20 }
    }
}

impl CentralConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<CentralConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config = CentralConfig::parse(&text, &path.display().to_string())?;
        config.validate().with_context(|| format!("in {}", path.display()))?;
        Ok(config)
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<CentralConfig> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<()> {
        if self.asn_database.is_none() {
            bail!("`asn_database` is required: a MaxMind .mmdb or an iptoasn TSV file (ip2asn-combined.tsv)");
        }
        if self.epoch_hours == 0 || self.epoch_hours > 24 * 366 {
            bail!("`epoch_hours` must be 1 to 8784");
        }
        let l = &self.limits;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(l.sensor_signals_per_sec) || !positive(l.sensor_burst) {
            bail!("`limits.sensor_signals_per_sec` and `limits.sensor_burst` must be positive");
        }
        if l.sensor_burst < palisade_proto::central::MAX_REPORT_SIGNALS as f64 {
            bail!("`limits.sensor_burst` must be at least 512 (one full report)");
        }
        if l.max_strikes == 0 || l.ban_secs == 0 || l.enrollments_per_minute == 0 {
            bail!("`limits.max_strikes`, `limits.ban_secs` and `limits.enrollments_per_minute` must be at least 1");
        }
        if l.max_connections == 0 {
            bail!("`limits.max_connections` must be at least 1");
        }
        if !(3..=3600).contains(&l.idle_timeout_secs) {
            bail!("`limits.idle_timeout_secs` must be 3 to 3600");
        }
        let p = &self.publish;
        if !(10..=60_000).contains(&p.tick_ms) {
            bail!("`publish.tick_ms` must be 10 to 60000");
        }
        if p.entry_ttl_hours == 0 {
            bail!("`publish.entry_ttl_hours` must be at least 1");
        }
        if p.delta_log_keep == 0 || p.subscriber_queue < 16 {
            bail!("`publish.delta_log_keep` must be at least 1 and `publish.subscriber_queue` at least 16");
        }
        for net in self.allowlist.never.iter().chain(&self.allowlist.protected) {
            if let IpNet::V6(v6) = net {
                if v6.prefix_len() != 128 {
                    bail!("`allowlist`: {net}: IPv6 entries must be single addresses (/128); ranges cannot be enumerated");
                }
            }
        }
        let total: u64 = self.allowlist.never.iter().chain(&self.allowlist.protected).map(addresses_in).sum();
        if total > self.allowlist.max_addresses {
            bail!(
                "`allowlist` expands to {total} addresses, more than `allowlist.max_addresses` ({})",
                self.allowlist.max_addresses
            );
        }
        if self.consensus.hash_seed != ConsensusConfig::default().hash_seed {
            bail!("`consensus.hash_seed` is picked at random by the tier at each start: remove it");
        }
        self.consensus.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// The admin socket's path.
    pub fn admin_socket(&self) -> PathBuf {
        self.admin_socket.clone().unwrap_or_else(|| self.data_dir.join("central.sock"))
    }

    /// The database directory.
    pub fn db_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }

    /// Epoch length in seconds.
    pub fn epoch_secs(&self) -> u32 {
        self.epoch_hours.saturating_mul(3600)
    }
}

/// How many addresses a range holds (IPv6 entries are single addresses).
pub fn addresses_in(net: &IpNet) -> u64 {
    match net {
        IpNet::V4(v4) => 1u64 << (32 - u32::from(v4.prefix_len())),
        IpNet::V6(_) => 1,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../central.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config = CentralConfig::parse(&text, "central.example.toml").unwrap();
        config.validate().unwrap();
        assert_eq!(config.limits, LimitsConfig::default());
        assert_eq!(config.publish, PublishConfig::default());
        assert_eq!(config.consensus, ConsensusConfig::default());
    }

    #[test]
    fn errors_name_the_key() {
        let base = "asn_database = \"x.tsv\"\n";
        let check = |extra: &str, key: &str| {
            let c = CentralConfig::parse(&format!("{base}{extra}"), "c.toml")
                .and_then(|c| c.validate().map(|_| c));
            let e = format!("{:#}", c.err().unwrap());
            assert!(e.contains(key), "{extra}: {e}");
        };
        check("epoch_hours = 0", "epoch_hours");
        check("[limits]\nsensor_burst = 10", "limits.sensor_burst");
        check("[publish]\ntick_ms = 1", "publish.tick_ms");
        check("[allowlist]\nnever = [\"2001:db8::/64\"]", "/128");
        check("[allowlist]\nnever = [\"10.0.0.0/8\"]", "allowlist.max_addresses");
        check("[consensus]\nmin_groups = 0", "min_groups");
        check("[consensus]\nhash_seed = 5", "hash_seed");
        check("bogus = 1", "bogus");
        let e = CentralConfig::parse("", "c.toml").unwrap().validate().unwrap_err().to_string();
        assert!(e.contains("asn_database"), "{e}");
    }
}
