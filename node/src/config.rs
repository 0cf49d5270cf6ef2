//! The node's configuration: one serde tree mirroring the crates, read from TOML, then
//! overridden by environment variables, then validated. Every key has a named default,
//! so an empty file (or none) is a working configuration.

use anyhow::{bail, Context, Result};
use palisade_actors::decision::{AllowlistConfig, ConfigError, DecisionConfig};
use palisade_actors::ingest::{FileSource, IngestConfig, StartAt};
use palisade_actors::reputation::ReputationConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where `palisade` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/palisade/config.toml";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where the node keeps its database and keys.
    pub data_dir: PathBuf,
    /// Detection content to use instead of the embedded copy.
    pub hub_dir: Option<PathBuf>,
    /// Logging.
    pub log: LogConfig,
    /// Log sources.
    pub ingest: IngestConfig,
    /// Decision profiles.
    pub decisions: DecisionConfig,
    /// Never-banned addresses.
    pub allowlist: AllowlistConfig,
    /// Signals.
    pub reputation: ReputationConfig,
    /// The local admin socket used by the CLI.
    pub admin: AdminConfig,
    /// The CrowdSec-compatible Local API for bouncers.
    pub api: crate::lapi::ApiConfig,
    /// The Prometheus endpoint.
    pub metrics: crate::metrics::MetricsConfig,
    /// Built-in bouncers.
    pub bouncer: crate::nft::BouncerConfig,
    /// Fleet gossip (used once the node is in a fleet).
    pub gossip: palisade_gossip::GossipConfig,
    /// The central tier (community list).
    pub central: crate::community::CentralConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("/var/lib/palisade"),
            hub_dir: None,
            log: LogConfig::default(),
            ingest: default_ingest(),
            decisions: DecisionConfig::default(),
            allowlist: AllowlistConfig::default(),
            reputation: ReputationConfig::default(),
            admin: AdminConfig::default(),
            api: crate::lapi::ApiConfig::default(),
            metrics: crate::metrics::MetricsConfig::default(),
            bouncer: crate::nft::BouncerConfig::default(),
            gossip: palisade_gossip::GossipConfig::default(),
            central: crate::community::CentralConfig::default(),
        }
    }
}

/// The sources of a node configured with nothing else: the usual places of sshd,
/// nginx and Apache logs on Debian, Ubuntu and RHEL-like systems.
fn default_ingest() -> IngestConfig {
    let files = |name: &str, paths: &[&str], log_type: &str| FileSource {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        log_type: log_type.to_owned(),
        start_at: StartAt::End,
        exclude: vec!["*.gz".to_owned()],
        name: Some(name.to_owned()),
    };
    IngestConfig {
        files: vec![
            files("auth", &["/var/log/auth.log", "/var/log/secure"], "syslog"),
            files("nginx", &["/var/log/nginx/*.log"], "nginx"),
            files("apache", &["/var/log/apache2/*.log"], "apache"),
        ],
        ..IngestConfig::default()
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter
    /// (`info,palisade_actors=debug`).
    pub level: String,
    /// `plain` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: "plain".into() }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Unix socket of the running node; default `<data_dir>/admin.sock`.
    pub socket: Option<PathBuf>,
}

impl NodeConfig {
    /// Reads the configuration: `path` if given (it must exist), else
    /// [`DEFAULT_CONFIG_PATH`] if it exists, else the defaults. Environment variables
    /// `PALISADE_DATA_DIR`, `PALISADE_HUB_DIR`, `PALISADE_LOG_LEVEL` and
    /// `PALISADE_LOG_FORMAT` override the file. The result is validated.
    pub fn load(path: Option<&Path>) -> Result<(NodeConfig, Option<PathBuf>)> {
        let chosen = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.exists()),
        };
        let mut config = match &chosen {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                Self::parse(&text, &p.display().to_string())?
            }
            None => NodeConfig::default(),
        };
        config.apply_env(|k| std::env::var(k).ok());
        config.validate().map_err(|e| match &chosen {
            Some(p) => anyhow::anyhow!("{}: {e}", p.display()),
            None => anyhow::anyhow!("{e}"),
        })?;
        Ok((config, chosen))
    }

    /// Parses TOML text; errors say `file:line:column: what`.
    pub fn parse(text: &str, file: &str) -> Result<NodeConfig> {
        toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            anyhow::anyhow!("{file}:{line}:{col}: {}", e.message())
        })
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(v) = var("PALISADE_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("PALISADE_HUB_DIR") {
            self.hub_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = var("PALISADE_LOG_LEVEL") {
            self.log.level = v;
        }
        if let Some(v) = var("PALISADE_LOG_FORMAT") {
            self.log.format = v;
        }
    }

    /// Checks every section; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        if !matches!(self.log.format.as_str(), "plain" | "json") {
            return Err(ConfigError::new(
                "log.format",
                format!("{:?} is neither \"plain\" nor \"json\"", self.log.format),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::new(
                "log.level",
                format!("{:?} is not a log level or filter", self.log.level),
            ));
        }
        self.ingest.validate().map_err(|e| ConfigError::new(e.key, e.message))?;
        self.decisions.compile()?;
        self.allowlist.compile(&[])?;
        self.reputation.validate()?;
        self.api.validate()?;
        self.metrics.validate()?;
        self.bouncer.nftables.validate()?;
        self.gossip.validate().map_err(|e| ConfigError::new(format!("gossip.{}", e.key), e.problem))?;
        self.central.validate()?;
        Ok(())
    }

    /// The admin socket path.
    pub fn admin_socket(&self) -> PathBuf {
        self.admin.socket.clone().unwrap_or_else(|| self.data_dir.join("admin.sock"))
    }

    /// The database directory.
    pub fn db_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Fails unless `dir` can hold the node's state.
pub fn ensure_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data_dir {}", dir.display()))?;
    if !dir.is_dir() {
        bail!("data_dir {} is not a directory", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_defaults() {
        assert_eq!(NodeConfig::parse("", "x.toml").unwrap(), NodeConfig::default());
        NodeConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_give_file_line_and_key() {
        let err = NodeConfig::parse("data_dir = \"/tmp\"\n\n[decisions]\nfoo = 1\n", "c.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("c.toml:4:1: unknown field `foo`"), "{text}");
        let bad = NodeConfig::parse("[decisions]\ndefault_duration = \"4 hours\"\n", "c.toml").unwrap();
        assert_eq!(bad.validate().unwrap_err().key, "decisions.default_duration");
        let bad = NodeConfig::parse("[log]\nformat = \"xml\"\n", "c.toml").unwrap();
        assert_eq!(bad.validate().unwrap_err().key, "log.format");
    }

    #[test]
    fn environment_overrides_file() {
        let mut c = NodeConfig::default();
        c.apply_env(|k| (k == "PALISADE_DATA_DIR").then(|| "/srv/p".to_owned()));
        assert_eq!(c.data_dir, PathBuf::from("/srv/p"));
    }

    #[test]
    fn example_config_is_valid_and_shows_the_defaults() {
        let text = include_str!("../../config.example.toml");
        let config = NodeConfig::parse(text, "config.example.toml").unwrap();
        config.validate().unwrap();
        // The example shows the defaults, except for the labelled examples.
        let mut defaults = NodeConfig::default();
        defaults.ingest.files[0].name = Some("auth".into());
        defaults.ingest.files[1].name = None;
        defaults.ingest.files[2].name = None;
        assert_eq!(config, defaults);
    }

    #[test]
    fn example_config_documents_every_key() {
        // Every key the example file sets or comments out is a real key: uncomment the
        // examples and the file must still parse with `deny_unknown_fields`.
        let text = include_str!("../../config.example.toml");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") || rest.starts_with('[') => {
                    rest.split(" #").next().unwrap_or(rest)
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        NodeConfig::parse(&uncommented, "config.example.toml (examples uncommented)").unwrap();
    }
}
