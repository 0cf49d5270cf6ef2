//! Per-source counters, shared with the node's metrics exporter.
//!
//! Plain atomics behind an `Arc`: sources bump them on their hot path without locks,
//! and the node reads a [`StatsSnapshot`] when Prometheus scrapes. Counters only grow.

use std::sync::atomic::{AtomicU64, Ordering};

/// What kind of source a [`SourceStats`] belongs to (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// `[[ingest.files]]`.
    File,
    /// `[[ingest.syslog]]`, UDP listener.
    SyslogUdp,
    /// `[[ingest.syslog]]`, TCP listener.
    SyslogTcp,
    /// `[[ingest.journald]]`.
    Journald,
    /// `[ingest.stdin]`.
    Stdin,
}

impl SourceKind {
    /// The label value (`file`, `syslog_udp`, `syslog_tcp`, `journald`, `stdin`).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::SyslogUdp => "syslog_udp",
            SourceKind::SyslogTcp => "syslog_tcp",
            SourceKind::Journald => "journald",
            SourceKind::Stdin => "stdin",
        }
    }
}

/// Counters of one source.
#[derive(Debug)]
pub struct SourceStats {
    /// The source's name (its `name` in the config, or one derived from it): a label.
    pub name: String,
    /// The source's kind: a label.
    pub kind: SourceKind,
    /// Lines handed to the pipeline.
    pub lines: AtomicU64,
    /// Bytes of those lines (after cutting, without terminators).
    pub bytes: AtomicU64,
    /// Lines cut at `max_line_bytes` / `max_message_len`.
    pub truncated: AtomicU64,
    /// Failed opens, reads, accepts, child spawns, undecodable journal entries.
    pub read_errors: AtomicU64,
    /// File rotations and truncations seen; journalctl restarts.
    pub rotations: AtomicU64,
    /// TCP connections refused because `max_connections` were open, or closed for
    /// idleness or slowness.
    pub connections_dropped: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// See [`SourceStats::lines`].
    pub lines: u64,
    /// See [`SourceStats::bytes`].
    pub bytes: u64,
    /// See [`SourceStats::truncated`].
    pub truncated: u64,
    /// See [`SourceStats::read_errors`].
    pub read_errors: u64,
    /// See [`SourceStats::rotations`].
    pub rotations: u64,
    /// See [`SourceStats::connections_dropped`].
    pub connections_dropped: u64,
}

impl SourceStats {
    /// Zeroed counters for a source.
    pub fn new(name: impl Into<String>, kind: SourceKind) -> Self {
        SourceStats {
            name: name.into(),
            kind,
            lines: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
            connections_dropped: AtomicU64::new(0),
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            lines: self.lines.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            read_errors: self.read_errors.load(Ordering::Relaxed),
            rotations: self.rotations.load(Ordering::Relaxed),
            connections_dropped: self.connections_dropped.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
