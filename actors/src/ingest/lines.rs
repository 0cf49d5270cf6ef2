//! Cutting a byte stream into lines, with every limit the sources share.
//!
//! Sans-I/O on purpose: files, stdin and journalctl's output all feed bytes in whatever
//! chunks `read` returns, and the same rules apply to each: only complete lines come
//! out, a line never grows past `max_line_bytes` in memory (the excess up to the newline
//! is dropped and the line counted as truncated), a trailing `\r` is stripped, invalid
//! UTF-8 is replaced. Each line carries the stream offset right after its terminator, so
//! a file source can checkpoint exactly after the last line of a batch.

use super::stats::SourceStats;
use super::CheckpointFn;
use crate::event::{LineBatch, RawLine};
use palisade_proto::Timestamp;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// One complete line cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitLine {
    /// The text, terminator and trailing `\r` removed, lossily decoded.
    pub text: String,
    /// Stream offset right after this line's `\n` (or after its last byte when flushed).
    pub end: u64,
    /// Whether the line was cut at the limit.
    pub truncated: bool,
}

/// Cuts a stream into lines of at most `max` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    /// Bytes of the line in progress, never more than `max`.
    buf: Vec<u8>,
    /// The line in progress went past `max`: drop bytes up to its newline.
    discarding: bool,
    /// Stream offset of the next byte to be pushed.
    pos: u64,
    /// Stream offset right after the last complete line (what a checkpoint may record).
    committed: u64,
}

impl LineSplitter {
    /// A splitter for a stream whose next byte is at offset `pos`.
    pub fn new(max: usize, pos: u64) -> Self {
        LineSplitter { max: max.max(1), buf: Vec::new(), discarding: false, pos, committed: pos }
    }

    /// Stream offset right after the last complete line.
    #[cfg(test)]
    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    /// Stream offset of the next byte expected.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Bytes of an unfinished line held (at most `max`).
    #[cfg(test)]
    pub(crate) fn pending_len(&self) -> usize {
        self.buf.len()
    }

    /// Skips the rest of the current line: used when tailing starts in the middle of one.
    pub(crate) fn skip_to_next_line(&mut self) {
        self.buf.clear();
        self.discarding = true;
    }

    /// Feeds `data`; every line it completes goes to `out`. Empty lines are consumed
    /// (they advance the offset) but not emitted: no parser wants them.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<SplitLine>) {
        let mut rest = data;
        while !rest.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    let end = self.pos + i as u64 + 1;
                    let truncated = self.discarding || self.append(&rest[..i]);
                    self.discarding = false;
                    self.pos = end;
                    self.emit(end, truncated, out);
                    rest = &rest[i + 1..];
                }
                None => {
                    if !self.discarding && self.append(rest) {
                        self.discarding = true;
                    }
                    self.pos += rest.len() as u64;
                    rest = &[];
                }
            }
        }
    }

    /// Ends the line in progress as if a newline followed (end of stream, rotation).
    pub fn flush(&mut self, out: &mut Vec<SplitLine>) {
        if self.buf.is_empty() && !self.discarding {
            self.committed = self.pos;
            return;
        }
        let truncated = std::mem::take(&mut self.discarding);
        self.emit(self.pos, truncated, out);
    }

    /// Drops the line in progress and restarts at offset `pos` (truncated file).
    pub(crate) fn reset(&mut self, pos: u64) {
        self.buf.clear();
        self.discarding = false;
        self.pos = pos;
        self.committed = pos;
    }

    /// Appends to the line in progress up to the limit; true when something was cut.
    fn append(&mut self, bytes: &[u8]) -> bool {
        let room = self.max - self.buf.len();
        if bytes.len() > room {
            self.buf.extend_from_slice(&bytes[..room]);
            true
        } else {
            self.buf.extend_from_slice(bytes);
            false
        }
    }

    fn emit(&mut self, end: u64, truncated: bool, out: &mut Vec<SplitLine>) {
        self.committed = end;
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            // An empty line, or the fragment skipped when tailing began mid-line.
            self.buf = bytes;
            return;
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        out.push(SplitLine { text, end, truncated });
    }
}

/// The current wall-clock time as a [`Timestamp`].
pub(crate) fn now() -> Timestamp {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Cuts `text` to at most `max` bytes on a character boundary; true when it was cut.
pub(crate) fn cut_to(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    true
}

/// Groups lines into [`LineBatch`]es of at most `limit` lines, counting them in `stats`.
///
/// `P` is the source's position type (a file offset, a journald cursor): the batch's
/// checkpoint is built from the position of its last line when the batch closes.
pub(crate) struct Batcher<P = u64> {
    source: Arc<str>,
    log_type: Arc<str>,
    limit: usize,
    stats: Arc<SourceStats>,
    lines: Vec<RawLine>,
    last_pos: Option<P>,
    ready: Vec<LineBatch>,
}

impl<P> Batcher<P> {
    pub fn new(source: Arc<str>, log_type: Arc<str>, limit: usize, stats: Arc<SourceStats>) -> Self {
        Batcher {
            source,
            log_type,
            limit: limit.max(1),
            stats,
            lines: Vec::new(),
            last_pos: None,
            ready: Vec::new(),
        }
    }

    /// Adds one line; `checkpoint` builds the position after it when a batch closes.
    pub(crate) fn add(&mut self, text: String, pos: P, truncated: bool, checkpoint: &CheckpointFn<'_, P>) {
        self.stats.lines.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        if truncated {
            self.stats.truncated.fetch_add(1, Ordering::Relaxed);
        }
        self.lines.push(RawLine {
            source: self.source.clone(),
            log_type: self.log_type.clone(),
            text,
            received_at: now(),
        });
        self.last_pos = Some(pos);
        if self.lines.len() >= self.limit {
            self.close(checkpoint);
        }
    }

    /// Closes the batch in progress, if any.
    pub(crate) fn close(&mut self, checkpoint: &CheckpointFn<'_, P>) {
        if self.lines.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        let checkpoint = self.last_pos.take().and_then(|p| checkpoint(&p));
        self.ready.push(LineBatch { lines, checkpoint });
    }

    /// Takes the closed batches.
    pub(crate) fn take_ready(&mut self) -> Vec<LineBatch> {
        std::mem::take(&mut self.ready)
    }

    /// Whether closed batches wait to be sent.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<SplitLine>, LineSplitter) {
        let mut s = LineSplitter::new(max, 0);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        (out, s)
    }

    #[test]
    fn complete_lines_only_with_offsets() {
        let (out, s) = split(100, &[b"ab", b"c\nde", b"f\r\n\ng"]);
        let texts: Vec<_> = out.iter().map(|l| (l.text.as_str(), l.end)).collect();
        assert_eq!(texts, vec![("abc", 4), ("def", 9)]);
        assert_eq!(s.committed(), 10);
        assert_eq!(s.pos(), 11);
        assert_eq!(s.pending_len(), 1);
    }

    #[test]
    fn long_lines_are_cut_and_rest_dropped() {
        let (out, s) = split(4, &[b"0123456", b"789\nok\n", b"abcdefgh"]);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].text.as_str(), out[0].truncated, out[0].end), ("0123", true, 11));
        assert_eq!((out[1].text.as_str(), out[1].truncated), ("ok", false));
        assert_eq!(s.pending_len(), 4);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (out, _) = split(100, &[b"a\xffb\n"]);
        assert_eq!(out[0].text, "a\u{fffd}b");
    }

    #[test]
    fn skip_to_next_line_drops_a_fragment() {
        let mut s = LineSplitter::new(100, 50);
        s.skip_to_next_line();
        let mut out = Vec::new();
        s.push(b"tail of old\nnew\n", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "new");
        assert_eq!(out[0].end, 66);
    }

    #[test]
    fn flush_emits_the_partial_line() {
        let (mut out, mut s) = split(100, &[b"a\nbc"]);
        s.flush(&mut out);
        assert_eq!(out.last().map(|l| (l.text.as_str(), l.end)), Some(("bc", 4)));
        assert_eq!(s.committed(), 4);
    }

    #[test]
    fn cut_respects_char_boundaries() {
        let mut t = "aé".to_owned();
        assert!(cut_to(&mut t, 2));
        assert_eq!(t, "a");
    }
}
