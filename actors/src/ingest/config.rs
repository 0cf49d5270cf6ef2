//! The `[ingest]` section of the node's configuration.
//!
//! ```toml
//! [ingest]
//! max_line_bytes = 65536     # longer lines are cut here, the rest up to the newline dropped
//! batch_lines = 1024         # most lines in one batch handed to the pipeline
//! channel_capacity = 64      # batches queued between the sources and the pipeline
//! poll_interval = "1s"       # fallback poll: rotation checks, glob discovery, retries
//!
//! [[ingest.files]]
//! paths = ["/var/log/auth.log", "/var/log/nginx/*.log"]   # globs
//! type = "syslog"            # log type: selects the parsers
//! start_at = "end"           # files never seen before: "end" (tail) or "beginning"
//! exclude = ["*.gz"]         # globs matched against the full path
//! # name = "auth"            # metrics label; defaults to the paths joined by ","
//!
//! [[ingest.syslog]]
//! listen = ["127.0.0.1:514"]
//! protocol = "udp"           # "udp", "tcp" or "both"
//! type = "syslog"
//! max_message_len = 8192
//! max_connections = 256      # TCP: concurrent connections
//! idle_timeout = "5m"        # TCP: close a connection silent for this long
//! message_timeout = "30s"    # TCP: a started message must be complete within this
//!
//! [[ingest.journald]]
//! filters = ["_SYSTEMD_UNIT=ssh.service"]   # journalctl matches ("+" for OR)
//! type = "syslog"
//! start_at = "end"           # without a saved cursor: "end" or "beginning"
//! # since = "-1h"            # without a saved cursor: journalctl --since (wins over start_at)
//! journalctl = "journalctl"  # the command to run
//!
//! [ingest.stdin]             # only for `palisade replay -` style runs
//! type = "syslog"
//! ```

use palisade_proto::time::parse_duration;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// A configuration value that cannot work; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("ingest config: `{key}`: {message}")]
pub struct ConfigError {
    /// The key, e.g. `ingest.files[0].paths`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

/// `[ingest]`: every log source of the node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Longer lines are cut to this many bytes; the rest, up to the newline, is dropped
    /// and the line counted as truncated. Bounds the memory one line can take.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// The most lines in one batch. A source never waits to fill a batch.
    #[serde(default = "default_batch_lines")]
    pub batch_lines: usize,
    /// Batches queued between the sources and the pipeline (the node sizes the channel
    /// with it); when full, sources wait: backpressure instead of unbounded buffering.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// How often file sources poll besides inotify: rotation checks, glob discovery,
    /// retrying unreadable files. inotify does the low-latency work.
    #[serde(default = "default_poll_interval", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// `[[ingest.files]]`.
    #[serde(default)]
    pub files: Vec<FileSource>,
    /// `[[ingest.syslog]]`.
    #[serde(default)]
    pub syslog: Vec<SyslogSource>,
    /// `[[ingest.journald]]`.
    #[serde(default)]
    pub journald: Vec<JournaldSource>,
    /// `[ingest.stdin]`: read the process's standard input until EOF.
    #[serde(default)]
    pub stdin: Option<StdinSource>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_line_bytes: default_max_line_bytes(),
            batch_lines: default_batch_lines(),
            channel_capacity: default_channel_capacity(),
            poll_interval: default_poll_interval(),
            files: Vec::new(),
            syslog: Vec::new(),
            journald: Vec::new(),
            stdin: None,
        }
    }
}

/// Where a file never seen before is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Only lines appended from now on (live logs: old attacks are old news).
    #[default]
    End,
    /// The whole file.
    Beginning,
}

/// `[[ingest.files]]`: files to follow, by glob.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// Paths or globs (`*`, `?`, `[..]`); files created later that match are picked up.
    pub paths: Vec<String>,
    /// The log type of these files (`syslog`, `nginx`...): selects the parsers.
    #[serde(rename = "type")]
    pub log_type: String,
    /// Where to start in a file that has no saved position when the node starts.
    /// Files that appear while the node runs are always read from their beginning.
    #[serde(default)]
    pub start_at: StartAt,
    /// Globs of paths to leave out (e.g. rotated `*.gz` files).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Label for metrics and logs; defaults to the paths joined by `,`.
    #[serde(default)]
    pub name: Option<String>,
}

impl FileSource {
    /// The source's name: `name`, or the paths joined by `,`.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.paths.join(","))
    }
}

/// Which transports a syslog listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogProtocol {
    /// Datagrams, one message each.
    #[default]
    Udp,
    /// Streams, octet-counted or newline-framed (RFC 6587).
    Tcp,
    /// Both, on the same addresses.
    Both,
}

/// `[[ingest.syslog]]`: a syslog server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSource {
    /// Addresses to listen on.
    #[serde(default = "default_syslog_listen")]
    pub listen: Vec<SocketAddr>,
    /// `udp`, `tcp` or `both`.
    #[serde(default)]
    pub protocol: SyslogProtocol,
    /// The log type given to the messages.
    #[serde(rename = "type", default = "default_syslog_type")]
    pub log_type: String,
    /// Longer messages are cut to this many bytes and counted as truncated.
    #[serde(default = "default_max_message_len")]
    pub max_message_len: usize,
    /// TCP: most connections open at once; more are closed on accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TCP: a connection that sends nothing for this long is closed.
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// TCP: a message whose first byte arrived must be complete within this, so a
    /// client trickling bytes (slowloris) cannot hold a connection slot forever.
    #[serde(default = "default_message_timeout", deserialize_with = "de_duration")]
    pub message_timeout: Duration,
}

impl Default for SyslogSource {
    fn default() -> Self {
        SyslogSource {
            listen: default_syslog_listen(),
            protocol: SyslogProtocol::default(),
            log_type: default_syslog_type(),
            max_message_len: default_max_message_len(),
            max_connections: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            message_timeout: default_message_timeout(),
        }
    }
}

/// `[[ingest.journald]]`: the systemd journal, through `journalctl`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournaldSource {
    /// journalctl matches (`FIELD=value`, `+` between groups for OR).
    #[serde(default)]
    pub filters: Vec<String>,
    /// The log type given to the entries (they are rendered as syslog lines).
    #[serde(rename = "type", default = "default_syslog_type")]
    pub log_type: String,
    /// Without a saved cursor: `end` (new entries only) or `beginning`.
    #[serde(default)]
    pub start_at: StartAt,
    /// Without a saved cursor: passed as `--since` (e.g. `-1h`, `2024-01-01 00:00:00`).
    #[serde(default)]
    pub since: Option<String>,
    /// The journalctl command.
    #[serde(default = "default_journalctl")]
    pub journalctl: PathBuf,
    /// Label for metrics and the checkpoint key; defaults to the filters joined by `,`.
    #[serde(default)]
    pub name: Option<String>,
}

impl JournaldSource {
    /// The source's name: `name`, or `journald:` and the filters.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None if self.filters.is_empty() => "journald".to_owned(),
            None => format!("journald:{}", self.filters.join(",")),
        }
    }
}

/// `[ingest.stdin]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSource {
    /// The log type of the lines.
    #[serde(rename = "type", default = "default_syslog_type")]
    pub log_type: String,
}

impl IngestConfig {
    /// Checks what serde cannot: non-empty lists, sane limits, unique names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(80..=16 * 1024 * 1024).contains(&self.max_line_bytes) {
            return Err(err("ingest.max_line_bytes", "must be between 80 and 16777216"));
        }
        if !(1..=1_000_000).contains(&self.batch_lines) {
            return Err(err("ingest.batch_lines", "must be between 1 and 1000000"));
        }
        if self.channel_capacity == 0 {
            return Err(err("ingest.channel_capacity", "must be at least 1"));
        }
        if self.poll_interval < Duration::from_millis(10) {
            return Err(err("ingest.poll_interval", "must be at least 10ms"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.files.iter().enumerate() {
            let key = format!("ingest.files[{i}]");
            if f.paths.is_empty() {
                return Err(err(format!("{key}.paths"), "list at least one path or glob"));
            }
            for p in &f.paths {
                if !p.starts_with('/') {
                    return Err(err(format!("{key}.paths"), format!("{p:?} is not absolute")));
                }
                glob::Pattern::new(p).map_err(|e| err(format!("{key}.paths"), format!("{p:?}: {e}")))?;
            }
            for p in &f.exclude {
                globset::Glob::new(p).map_err(|e| err(format!("{key}.exclude"), format!("{p:?}: {e}")))?;
            }
            check_type(&format!("{key}.type"), &f.log_type)?;
            if !names.insert(format!("file:{}", f.display_name())) {
                return Err(err(format!("{key}.name"), "another file source has the same name; set `name`"));
            }
        }
        for (i, s) in self.syslog.iter().enumerate() {
            let key = format!("ingest.syslog[{i}]");
            if s.listen.is_empty() {
                return Err(err(
                    format!("{key}.listen"),
                    "list at least one address, e.g. \"127.0.0.1:514\"",
                ));
            }
            check_type(&format!("{key}.type"), &s.log_type)?;
            if !(16..=1024 * 1024).contains(&s.max_message_len) {
                return Err(err(format!("{key}.max_message_len"), "must be between 16 and 1048576"));
            }
            if s.max_connections == 0 {
                return Err(err(format!("{key}.max_connections"), "must be at least 1"));
            }
            if s.idle_timeout.is_zero() || s.message_timeout.is_zero() {
                return Err(err(format!("{key}.idle_timeout"), "timeouts must be longer than zero"));
            }
        }
        for (i, j) in self.journald.iter().enumerate() {
            let key = format!("ingest.journald[{i}]");
            for f in &j.filters {
                // A filter is handed to journalctl as an argument: refuse anything that
                // journalctl would take for an option.
                if f != "+" && (f.starts_with('-') || !f.contains('=')) {
                    return Err(err(
                        format!("{key}.filters"),
                        format!("{f:?} is not a journal match: write FIELD=value (or \"+\" for OR)"),
                    ));
                }
            }
            check_type(&format!("{key}.type"), &j.log_type)?;
            if j.journalctl.as_os_str().is_empty() {
                return Err(err(format!("{key}.journalctl"), "must name the journalctl command"));
            }
            if let Some(since) = &j.since {
                if since.is_empty() || since.starts_with("--") {
                    return Err(err(format!("{key}.since"), "must be a journalctl time, e.g. \"-1h\""));
                }
            }
            if !names.insert(format!("journald:{}", j.display_name())) {
                return Err(err(
                    format!("{key}.name"),
                    "another journald source has the same name; set `name`",
                ));
            }
        }
        if let Some(s) = &self.stdin {
            check_type("ingest.stdin.type", &s.log_type)?;
        }
        Ok(())
    }
}

fn check_type(key: &str, t: &str) -> Result<(), ConfigError> {
    if t.is_empty() {
        return Err(err(key, "must name a log type, e.g. \"syslog\" or \"nginx\""));
    }
    Ok(())
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn default_max_line_bytes() -> usize {
    65536
}
fn default_batch_lines() -> usize {
    1024
}
fn default_channel_capacity() -> usize {
    64
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_syslog_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 514))]
}
fn default_syslog_type() -> String {
    "syslog".to_owned()
}
fn default_max_message_len() -> usize {
    8192
}
fn default_max_connections() -> usize {
    256
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_message_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_journalctl() -> PathBuf {
    PathBuf::from("journalctl")
}
