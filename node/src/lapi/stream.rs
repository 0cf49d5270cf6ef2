//! `GET /v1/decisions/stream`: what changed for this bouncer since its last pull, or
//! everything with `startup=true`, as `{"new": [...], "deleted": [...]}`.
//!
//! The body is produced in pages: each page takes the book's read lock for a bounded
//! number of decisions and lets it go, so a million-decision startup pull neither holds
//! up detection nor builds the whole document in memory.
//!
//! Cursors: decision ids only grow (an extended decision gets a new id), so "new" is
//! every active decision with an id above the bouncer's last one. "deleted" is every
//! decision that ended after its last pull, less two seconds of overlap as CrowdSec does,
//! leaving out values that are banned again (so a bouncer that applies deletions after
//! additions never unbans an active decision).

use bytes::Bytes;
use futures_core::Stream;
use palisade_actors::decision::{DecisionKey, SharedBook};
use palisade_proto::{Decision, Timestamp};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::json;
use super::query::DecisionQuery;
use crate::bouncers::StreamCursor;

/// Decisions looked at per page (and per hold of the read lock).
const PAGE: usize = 10_000;
/// How far before its last pull a bouncer is told about deletions again.
pub const DELETED_OVERLAP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    New { after: u64 },
    Deleted { after: (Timestamp, u64) },
    Done,
}

/// The two lists of a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// Decisions to enforce.
    New,
    /// Decisions to lift.
    Deleted,
}

/// Receives a delta: every `New` item, `end(New)`, every `Deleted` item, `end(Deleted)`.
pub trait Sink {
    /// One decision of `list`.
    fn item(&mut self, list: List, d: &Decision, now: Timestamp);
    /// `list` is complete.
    fn end(&mut self, list: List);
}

/// The changes a bouncer (or the built-in nftables bouncer) has not seen, read from the
/// book in pages.
pub struct Delta {
    book: SharedBook,
    query: DecisionQuery,
    now: Timestamp,
    /// The largest id when the pull began: later ones go to the next pull.
    upto_id: u64,
    /// Report decisions that ended after this.
    deleted_since: Timestamp,
    phase: Phase,
}

impl Delta {
    /// The changes after `since` (`None`: everything) at `now`. Returns the delta and
    /// the cursor to give the next pull.
    pub fn new(
        book: SharedBook,
        query: DecisionQuery,
        now: Timestamp,
        since: Option<StreamCursor>,
    ) -> (Self, StreamCursor) {
        let upto_id = book.read().max_id();
        let delta = Delta {
            book,
            query,
            now,
            upto_id,
            deleted_since: since.map_or(Timestamp(i64::MIN), |s| s.pulled_at.saturating_sub(DELETED_OVERLAP)),
            phase: Phase::New { after: since.map_or(0, |s| s.last_id) },
        };
        (delta, StreamCursor { last_id: upto_id, pulled_at: now })
    }

    /// Whether every page has been read.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Reads every page into `sink`.
    pub fn drain(&mut self, sink: &mut impl Sink) {
        while !self.is_done() {
            self.page(sink);
        }
    }

    /// Reads the next page into `sink`.
    pub fn page(&mut self, sink: &mut impl Sink) {
        match self.phase {
            Phase::New { after } => {
                let book = self.book.read();
                let mut last = None;
                let mut scanned = 0;
                for d in book.after_id(after) {
                    if d.id > self.upto_id || scanned == PAGE {
                        break;
                    }
                    scanned += 1;
                    last = Some(d.id);
                    if self.query.admits(d, self.now) {
                        sink.item(List::New, d, self.now);
                    }
                }
                match last {
                    Some(id) if scanned == PAGE && id < self.upto_id => self.phase = Phase::New { after: id },
                    _ => {
                        sink.end(List::New);
                        self.phase = Phase::Deleted { after: (self.deleted_since, u64::MAX) };
                    }
                }
            }
            Phase::Deleted { after } => {
                let book = self.book.read();
                let mut last = None;
                let mut scanned = 0;
                for d in book.ending_after(after, self.now) {
                    if scanned == PAGE {
                        break;
                    }
                    scanned += 1;
                    last = Some((d.until, d.id));
                    let banned_again =
                        book.active(&DecisionKey::of(d)).is_some_and(|a| a.is_active(self.now));
                    if !banned_again && self.query.admits_ended(d) {
                        sink.item(List::Deleted, d, self.now);
                    }
                }
                match last {
                    Some(pos) if scanned == PAGE => self.phase = Phase::Deleted { after: pos },
                    _ => {
                        sink.end(List::Deleted);
                        self.phase = Phase::Done;
                    }
                }
            }
            Phase::Done => {}
        }
    }
}

/// Writes a delta as CrowdSec's `{"new": [...], "deleted": [...]}`.
#[derive(Debug, Default)]
struct JsonSink {
    out: Vec<u8>,
    started: bool,
    /// The current array has no element yet.
    first: bool,
}

impl JsonSink {
    fn start(&mut self) {
        if !self.started {
            self.out.extend_from_slice(b"{\"new\":");
            self.started = true;
            self.first = true;
        }
    }
}

impl Sink for JsonSink {
    fn item(&mut self, _: List, d: &Decision, now: Timestamp) {
        self.start();
        json::push(&mut self.out, &mut self.first, d, now, true);
    }

    fn end(&mut self, list: List) {
        self.start();
        json::close(&mut self.out, self.first);
        self.first = true;
        self.out.extend_from_slice(match list {
            List::New => b",\"deleted\":".as_slice(),
            List::Deleted => b"}".as_slice(),
        });
    }
}

/// The body of one stream response.
pub struct StreamBody {
    delta: Delta,
    sink: JsonSink,
}

impl StreamBody {
    /// Streams `delta`.
    pub fn new(delta: Delta) -> Self {
        StreamBody { delta, sink: JsonSink::default() }
    }
}

impl Stream for StreamBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Pages that admit nothing write nothing: keep going until there is something
        // to send (an empty chunk would end a chunked body early) or the end.
        while this.sink.out.is_empty() && !this.delta.is_done() {
            this.delta.page(&mut this.sink);
        }
        let out = std::mem::take(&mut this.sink.out);
        Poll::Ready((!out.is_empty()).then(|| Ok(Bytes::from(out))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_actors::decision::{
        Allowlist, DecisionConfig, DecisionEngine, DecisionFilter, NewDecision, StoredDecisions,
    };
    use palisade_proto::{DecisionType, Origin, Scope};

    fn engine() -> DecisionEngine {
        let policy = DecisionConfig::default().compile().unwrap();
        DecisionEngine::new(policy, Allowlist::default(), StoredDecisions::default(), Timestamp(0), 1)
    }

    fn ban(e: &mut DecisionEngine, value: &str, secs: u64, now: Timestamp) {
        let request = NewDecision {
            origin: Origin::Cli,
            kind: DecisionType::Ban,
            scope: Scope::Ip,
            value: value.into(),
            duration: Duration::from_secs(secs),
            scenario: "manual".into(),
            simulated: false,
        };
        e.add(request, now).unwrap();
    }

    fn pull(
        e: &DecisionEngine,
        since: Option<StreamCursor>,
        now: Timestamp,
    ) -> (serde_json::Value, StreamCursor) {
        let query = DecisionQuery::parse(&[], super::super::query::Endpoint::Stream).unwrap();
        let (mut delta, next) = Delta::new(e.shared_book(), query, now, since);
        let mut sink = JsonSink::default();
        delta.drain(&mut sink);
        (serde_json::from_slice(&sink.out).unwrap(), next)
    }

    fn values(v: &serde_json::Value, list: &str) -> Vec<String> {
        match &v[list] {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::Array(a) => {
                a.iter().map(|d| d["value"].as_str().unwrap().to_owned()).collect()
            }
            other => panic!("{list} is {other}"),
        }
    }

    #[test]
    fn startup_then_deltas() {
        let mut e = engine();
        let t = Timestamp::from_secs;
        let (v, since) = pull(&e, None, t(1));
        assert_eq!(v, serde_json::json!({"new": null, "deleted": null}), "empty lists are null");
        ban(&mut e, "192.0.2.1", 60, t(2));
        ban(&mut e, "192.0.2.2", 3600, t(2));
        let (v, since) = pull(&e, Some(since), t(3));
        assert_eq!(values(&v, "new"), vec!["192.0.2.1", "192.0.2.2"]);
        assert!(v["new"][0]["uuid"].is_string(), "the stream carries uuids");
        assert_eq!(v["new"][0]["duration"], "59s");
        let (v, since) = pull(&e, Some(since), t(4));
        assert_eq!(v, serde_json::json!({"new": null, "deleted": null}), "nothing changed");
        // One expires (still due, no tick yet), one is deleted, one is extended.
        let filter = DecisionFilter { value: Some("192.0.2.2".into()), ..Default::default() };
        e.delete(&filter, t(70));
        ban(&mut e, "192.0.2.3", 60, t(70));
        ban(&mut e, "192.0.2.3", 600, t(70));
        let (v, since) = pull(&e, Some(since), t(80));
        assert_eq!(values(&v, "new"), vec!["192.0.2.3"], "one entry for the extended decision");
        assert_eq!(values(&v, "deleted"), vec!["192.0.2.1", "192.0.2.2"]);
        assert!(v["deleted"][0]["duration"].as_str().unwrap().starts_with('-'));
        // Deleted and banned again between two pulls: not reported deleted.
        let filter = DecisionFilter { value: Some("192.0.2.3".into()), ..Default::default() };
        assert_eq!(e.delete(&filter, t(81)).len(), 1);
        ban(&mut e, "192.0.2.3", 600, t(81));
        let (v, _) = pull(&e, Some(since), t(82));
        assert_eq!(values(&v, "new"), vec!["192.0.2.3"]);
        assert_eq!(values(&v, "deleted"), Vec::<String>::new());
        let (v, _) = pull(&e, None, t(82));
        assert_eq!(values(&v, "new"), vec!["192.0.2.3"], "startup: everything active");
        assert_eq!(values(&v, "deleted"), vec!["192.0.2.1", "192.0.2.2"], "startup: every tombstone");
    }

    #[test]
    fn pages_cover_everything_once() {
        let mut e = engine();
        let now = Timestamp::from_secs(10);
        for i in 0..(2 * PAGE as u32 + 7) {
            ban(&mut e, &std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string(), 600, now);
        }
        let (v, _) = pull(&e, None, now);
        let got = values(&v, "new");
        assert_eq!(got.len(), 2 * PAGE + 7);
        let unique: std::collections::HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len());
    }
}
