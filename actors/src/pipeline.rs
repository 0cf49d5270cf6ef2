//! Lines in, overflows out: the parsers followed by the buckets, with the counters the
//! metrics endpoint exports. Used by the scenario actor when tailing and directly by
//! `palisade replay`, so both produce the same overflows from the same lines.

use palisade_proto::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{Fields, Overflow, RawLine};
use crate::parser::Parsers;
use crate::scenario::{Buckets, Scenarios};
use crate::watchlist::{Flag, WatchStats, Watchlist};

/// Flags the on-sight check holds at most unless told otherwise.
pub const DEFAULT_WATCH_MAX: usize = 1_000_000;

/// Counters of what the pipeline saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PipelineStats {
    /// Lines processed.
    pub lines: u64,
    /// Lines a parser recognised, by parser name.
    pub parsed: HashMap<Arc<str>, u64>,
    /// Lines no parser recognised, by log type.
    pub unparsed: HashMap<Arc<str>, u64>,
    /// Overflows, by scenario.
    pub overflows: HashMap<Arc<str>, u64>,
}

/// Parsers and buckets.
pub struct Pipeline {
    parsers: Arc<Parsers>,
    buckets: Buckets,
    stats: PipelineStats,
    /// The newest event's time and when its line was read: the logs' own clock, which
    /// can be far from the wall clock (zone-less stamps, delayed delivery).
    newest: Option<(Timestamp, Timestamp)>,
    /// The field maps of the last event, kept for their buffers: the next line is
    /// parsed into them instead of allocating new ones.
    spare: (Fields, Fields),
    /// Addresses flagged by hash by the fleet or the community.
    watch: Watchlist,
}

impl Pipeline {
    /// A pipeline with fresh buckets.
    pub fn new(parsers: Arc<Parsers>, scenarios: Arc<Scenarios>) -> Self {
        Pipeline {
            parsers,
            buckets: Buckets::new(scenarios),
            stats: PipelineStats::default(),
            newest: None,
            spare: (Fields::new(), Fields::new()),
            watch: Watchlist::new(DEFAULT_WATCH_MAX),
        }
    }

    /// Bounds the on-sight check to `max` flags.
    pub fn with_watch_max(mut self, max: usize) -> Self {
        self.watch = Watchlist::new(max);
        self
    }

    /// Flags addresses by hash: the first event from one of them overflows at once.
    pub fn watch(&mut self, flags: Vec<Flag>) {
        self.watch.add(flags);
    }

    /// Drops flags (see [`Watchlist::remove`]).
    pub fn unwatch(&mut self, hashes: &[palisade_proto::HashedIp], all_of: Option<&palisade_proto::Origin>) {
        self.watch.remove(hashes, all_of);
    }

    /// The on-sight check's counters.
    pub fn watch_stats(&self) -> WatchStats {
        self.watch.stats()
    }

    /// Parses one line and pours it; appends overflows to `out`.
    pub fn process(&mut self, line: RawLine, out: &mut Vec<Overflow>) {
        self.stats.lines += 1;
        let (meta, parsed) = std::mem::take(&mut self.spare);
        match self.parsers.parse_reusing(line, meta, parsed) {
            Ok(event) => {
                if self.newest.is_none_or(|(t, _)| event.time >= t) {
                    self.newest = Some((event.time, event.line.received_at));
                }
                // `get_mut` first: `entry` takes an owned key, a reference-count bump
                // (an atomic) on every line for a counter that almost always exists.
                match self.stats.parsed.get_mut(&event.parser) {
                    Some(n) => *n += 1,
                    None => {
                        self.stats.parsed.insert(event.parser.clone(), 1);
                    }
                }
                let before = out.len();
                if !self.watch.is_empty() {
                    if let Some(ip) = event.source_ip() {
                        if let Some(flag) = self.watch.check(ip) {
                            out.push(Watchlist::overflow(&flag, ip, event.time));
                        }
                    }
                }
                self.buckets.pour(&event, out);
                self.count_overflows(&out[before..]);
                self.spare = (event.meta, event.parsed);
            }
            Err(miss) => {
                *self.stats.unparsed.entry(miss.line.log_type.clone()).or_default() += 1;
            }
        }
    }

    /// Lets time pass without events; appends overflows (counter buckets) to `out`.
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<Overflow>) {
        let before = out.len();
        self.buckets.advance(now, out);
        self.count_overflows(&out[before..]);
    }

    /// Lets time pass in live mode, given the wall clock. Buckets run on the logs' own
    /// clock, so the wall clock is translated: the newest event's time plus the wall time
    /// elapsed since its line was read. Advancing straight to the wall clock would free
    /// every bucket of a log whose stamps lag it (a zone-less syslog on a host west of
    /// UTC, a delayed relay) before a slow attack could fill it.
    pub fn advance_wall(&mut self, wall: Timestamp, out: &mut Vec<Overflow>) {
        let now = match self.newest {
            Some((time, read_at)) => time.saturating_add(wall.since(read_at)),
            None => wall,
        };
        self.advance(now, out);
        self.watch.prune(wall);
    }

    fn count_overflows(&mut self, new: &[Overflow]) {
        for o in new.iter().filter(|o| o.origin == palisade_proto::Origin::Palisade) {
            *self.stats.overflows.entry(o.scenario.clone()).or_default() += 1;
        }
    }

    /// What the pipeline has seen.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// The buckets' counters, one entry per scenario.
    pub fn bucket_stats(&self) -> &[crate::scenario::ScenarioStats] {
        self.buckets.stats()
    }

    /// Buckets alive now.
    pub fn live_buckets(&self) -> usize {
        self.buckets.live_buckets()
    }
}
