//! A syslog server: UDP datagrams and TCP streams (RFC 6587).
//!
//! The message text is handed over unchanged (the parsers' first stage reads the RFC
//! 3164/5424 header), cut at `max_message_len`. Network sources have no checkpoint: what
//! a sender sent while the node was down is gone, as with any syslog server.
//!
//! TCP framing is detected per frame, as rsyslog does: a frame starting with digits and
//! a space is octet-counted (`LEN SP MSG`), anything else runs to the next newline.
//! A hostile client cannot hold resources forever: connections are capped
//! (`max_connections`, more are closed on accept), one message and one read buffer are
//! the most a connection holds, a silent connection is closed after `idle_timeout`, and
//! a message that has started must be complete within `message_timeout` (slowloris).
//!
//! Sockets are injected ([`run_udp`], [`run_tcp`]) so that tests bind port 0.

use super::config::SyslogSource;
use super::lines::Batcher;
use super::stats::SourceStats;
use super::{send_all, Common};
use crate::event::LineBatch;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::Sender;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

const NO_CHECKPOINT: &super::CheckpointFn<'static, ()> = &|_| None;

/// Receives datagrams on `socket` until shutdown or until `tx`'s receiver is dropped.
pub async fn run_udp(
    socket: UdpSocket,
    cfg: SyslogSource,
    common: Common,
    tx: Sender<LineBatch>,
    shutdown: CancellationToken,
    stats: Arc<SourceStats>,
) {
    let label: Arc<str> = match socket.local_addr() {
        Ok(a) => Arc::from(format!("syslog:udp:{a}")),
        Err(_) => Arc::from("syslog:udp"),
    };
    let max = cfg.max_message_len;
    // One byte more than allowed: a datagram that fills it was longer (the kernel cuts
    // datagrams to the buffer).
    let mut buf = vec![0u8; max + 1];
    let mut batcher: Batcher<()> =
        Batcher::new(label, Arc::from(cfg.log_type.as_str()), common.batch_lines, stats.clone());
    loop {
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match first {
            Ok((n, _)) => add_datagram(&mut batcher, &buf[..n], max),
            Err(e) => {
                SourceStats::bump(&stats.read_errors);
                debug!(source = %stats.name, error = %e, "udp receive failed");
            }
        }
        // Whatever else is already queued joins the batch; never wait to fill it.
        for _ in 1..common.batch_lines {
            match socket.try_recv_from(&mut buf) {
                Ok((n, _)) => add_datagram(&mut batcher, &buf[..n], max),
                Err(_) => break,
            }
        }
        batcher.close(NO_CHECKPOINT);
        if !send_all(&tx, batcher.take_ready(), &shutdown).await {
            return;
        }
    }
}

fn add_datagram(batcher: &mut Batcher<()>, data: &[u8], max: usize) {
    let truncated = data.len() > max;
    let data = &data[..data.len().min(max)];
    if let Some(text) = message_text(data) {
        batcher.add(text, (), truncated, NO_CHECKPOINT);
    }
}

/// The text of one message: trailing newline, `\r` and NUL removed, lossy UTF-8.
fn message_text(mut data: &[u8]) -> Option<String> {
    while let Some((&last, rest)) = data.split_last() {
        if matches!(last, b'\n' | b'\r' | 0) {
            data = rest;
        } else {
            break;
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(data).into_owned())
}

/// Accepts connections on `listener` until shutdown or until `tx`'s receiver is dropped,
/// then waits for its connections to end.
pub async fn run_tcp(
    listener: TcpListener,
    cfg: SyslogSource,
    common: Common,
    tx: Sender<LineBatch>,
    shutdown: CancellationToken,
    stats: Arc<SourceStats>,
) {
    let label: Arc<str> = match listener.local_addr() {
        Ok(a) => Arc::from(format!("syslog:tcp:{a}")),
        Err(_) => Arc::from("syslog:tcp"),
    };
    let log_type: Arc<str> = Arc::from(cfg.log_type.as_str());
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let cfg = Arc::new(cfg);
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tx.closed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                SourceStats::bump(&stats.read_errors);
                warn!(source = %stats.name, error = %e, "accept failed");
                // Out of file descriptors, typically: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            SourceStats::bump(&stats.connections_dropped);
            debug!(source = %stats.name, %peer, "too many syslog connections; closing this one");
            drop(stream);
            continue;
        };
        let conn = Connection {
            cfg: cfg.clone(),
            batcher: Batcher::new(label.clone(), log_type.clone(), common.batch_lines, stats.clone()),
            stats: stats.clone(),
            tx: tx.clone(),
            shutdown: shutdown.clone(),
        };
        conns.spawn(async move {
            let _permit = permit;
            conn.run(stream).await;
        });
    }
    while conns.join_next().await.is_some() {}
}

struct Connection {
    cfg: Arc<SyslogSource>,
    batcher: Batcher<()>,
    stats: Arc<SourceStats>,
    tx: Sender<LineBatch>,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(mut self, mut stream: TcpStream) {
        let mut framer = Framer::new(self.cfg.max_message_len);
        let mut buf = vec![0u8; 16 * 1024];
        let mut frames = Vec::new();
        let mut last_read = Instant::now();
        let mut message_started: Option<Instant> = None;
        loop {
            let deadline = match message_started {
                Some(t) => (t + self.cfg.message_timeout).min(last_read + self.cfg.idle_timeout),
                None => last_read + self.cfg.idle_timeout,
            };
            let read = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                r = stream.read(&mut buf) => r,
                () = tokio::time::sleep_until(deadline) => {
                    SourceStats::bump(&self.stats.connections_dropped);
                    debug!(source = %self.stats.name, "closing a slow or idle syslog connection");
                    return;
                }
            };
            let n = match read {
                Ok(0) => {
                    framer.finish(&mut frames);
                    self.add(&mut frames);
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    debug!(source = %self.stats.name, error = %e, "syslog connection read failed");
                    break;
                }
            };
            last_read = Instant::now();
            framer.push(&buf[..n], &mut frames);
            message_started = match (framer.in_progress(), message_started) {
                (false, _) => None,
                (true, Some(t)) if frames.is_empty() => Some(t),
                (true, _) => Some(last_read),
            };
            self.add(&mut frames);
            self.batcher.close(NO_CHECKPOINT);
            if !send_all(&self.tx, self.batcher.take_ready(), &self.shutdown).await {
                return;
            }
        }
        self.batcher.close(NO_CHECKPOINT);
        let _ = send_all(&self.tx, self.batcher.take_ready(), &self.shutdown).await;
    }

    fn add(&mut self, frames: &mut Vec<Frame>) {
        for f in frames.drain(..) {
            self.batcher.add(f.text, (), f.truncated, NO_CHECKPOINT);
        }
    }
}

/// One message cut from a TCP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub text: String,
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameState {
    /// Between frames.
    Start,
    /// Reading the digits of a possible octet count.
    Count,
    /// Inside an octet-counted frame: bytes still to come.
    Octets(u64),
    /// Inside a newline-terminated frame.
    Line,
}

/// Sans-I/O RFC 6587 framing, detected per frame, memory bounded by `max`.
#[derive(Debug)]
pub(crate) struct Framer {
    max: usize,
    state: FrameState,
    count: Vec<u8>,
    msg: Vec<u8>,
    truncated: bool,
}

/// An octet count has at most this many digits (rsyslog accepts up to 9).
const MAX_COUNT_DIGITS: usize = 10;

impl Framer {
    pub(crate) fn new(max: usize) -> Self {
        Framer { max, state: FrameState::Start, count: Vec::new(), msg: Vec::new(), truncated: false }
    }

    /// Whether a frame has started and not ended.
    pub(crate) fn in_progress(&self) -> bool {
        self.state != FrameState::Start
    }

    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<Frame>) {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                FrameState::Start => {
                    let b = data[i];
                    if matches!(b, b'\n' | b'\r' | b' ' | 0) {
                        i += 1;
                    } else if b.is_ascii_digit() {
                        self.state = FrameState::Count;
                    } else {
                        self.state = FrameState::Line;
                    }
                }
                FrameState::Count => {
                    let b = data[i];
                    if b.is_ascii_digit() && self.count.len() < MAX_COUNT_DIGITS {
                        self.count.push(b);
                        i += 1;
                    } else if b == b' ' && !self.count.is_empty() {
                        i += 1;
                        let len = std::str::from_utf8(&self.count).ok().and_then(|s| s.parse::<u64>().ok());
                        self.count.clear();
                        match len {
                            Some(0) | None => self.state = FrameState::Start,
                            Some(n) => self.state = FrameState::Octets(n),
                        }
                    } else {
                        // Not a count: those digits began a newline-framed message.
                        let digits = std::mem::take(&mut self.count);
                        self.append(&digits);
                        self.state = FrameState::Line;
                    }
                }
                FrameState::Octets(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len() - i);
                    self.append(&data[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    if left == 0 {
                        self.emit(out);
                    } else {
                        self.state = FrameState::Octets(left);
                    }
                }
                FrameState::Line => match memchr::memchr(b'\n', &data[i..]) {
                    Some(j) => {
                        self.append(&data[i..i + j]);
                        i += j + 1;
                        self.emit(out);
                    }
                    None => {
                        self.append(&data[i..]);
                        i = data.len();
                    }
                },
            }
        }
    }

    /// The stream ended: an unterminated newline-framed message still counts; a cut
    /// octet-counted one is dropped.
    pub(crate) fn finish(&mut self, out: &mut Vec<Frame>) {
        match self.state {
            FrameState::Line => self.emit(out),
            FrameState::Count => {
                let digits = std::mem::take(&mut self.count);
                self.append(&digits);
                self.emit(out);
            }
            FrameState::Octets(_) | FrameState::Start => {
                self.msg.clear();
                self.truncated = false;
                self.state = FrameState::Start;
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = self.max.saturating_sub(self.msg.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.msg.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self, out: &mut Vec<Frame>) {
        self.state = FrameState::Start;
        let truncated = std::mem::take(&mut self.truncated);
        if let Some(text) = message_text(&self.msg) {
            out.push(Frame { text, truncated });
        }
        self.msg.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        out.into_iter().map(|f| (f.text, f.truncated)).collect()
    }

    #[test]
    fn newline_framing() {
        assert_eq!(
            frames(100, &[b"<13>a b\n<13>c", b" d\r\n<13>e"]),
            vec![("<13>a b".into(), false), ("<13>c d".into(), false), ("<13>e".into(), false)]
        );
    }

    #[test]
    fn octet_counting_mixed_with_newlines_and_split_anywhere() {
        let stream = b"11 <13>hello\nw5 <1>x\n<13>plain\n3 abc";
        for split in 0..stream.len() {
            let got = frames(100, &[&stream[..split], &stream[split..]]);
            assert_eq!(
                got,
                vec![
                    ("<13>hello\nw".into(), false),
                    ("<1>x".into(), false),
                    ("<13>plain".into(), false),
                    ("abc".into(), false)
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn digits_without_space_are_a_plain_line() {
        assert_eq!(frames(100, &[b"2024-01-01 x\n"]), vec![("2024-01-01 x".into(), false)]);
    }

    #[test]
    fn oversized_frames_are_cut() {
        assert_eq!(
            frames(4, &[b"10 0123456789", b"abcdefgh\nok\n"]),
            vec![("0123".into(), true), ("abcd".into(), true), ("ok".into(), false)]
        );
    }

    #[test]
    fn cut_octet_frame_at_eof_is_dropped() {
        assert_eq!(frames(100, &[b"50 <13>short"]), vec![]);
    }
}
