//! Ingest: the sources that read log lines (files, syslog, journald, stdin) and hand
//! them to the pipeline in [`LineBatch`]es.
//!
//! Why it looks like this:
//!
//! - **Backpressure, not buffering.** Every source writes into one bounded
//!   `mpsc::Sender<LineBatch>`; when the pipeline is slow, `send` waits and the source
//!   stops reading. Nothing here queues lines without bound: a line is at most
//!   `max_line_bytes`, a TCP message at most `max_message_len`, a batch at most
//!   `batch_lines` lines.
//! - **Latency.** A source sends whatever complete lines it has as soon as it has them;
//!   it never waits to fill a batch. Files wake on inotify; the `poll_interval` tick is
//!   only the fallback (and rotation checks, glob discovery, retries).
//! - **Exactly once across `kill -9`.** A source never writes its own position. Each
//!   batch carries a [`Checkpoint`] describing the position right after its last line,
//!   and the node persists it in the same atomic write as the decisions that batch
//!   produced. At start a source reads its position back through [`CursorStore`]. A
//!   batch that was never persisted is simply read again. Network sources (syslog)
//!   have no position to keep.
//! - **File I/O off the executor.** Each file source runs on its own thread with a
//!   small current-thread runtime (inotify, timers, shutdown); blocking reads only ever
//!   block that thread. Syslog, journald and stdin are ordinary async tasks.
//!
//! The restart rules for files are in [`file`](mod@file); the cursor encodings in [`file::FileCursor`]
//! and [`journald`].
//!
//! This module must never decide anything about the lines it reads, nor persist anything.

pub mod config;
pub mod file;
pub mod journald;
mod lines;
pub mod stats;
pub mod stdin;
pub mod syslog;

pub use config::{
    ConfigError, FileSource, IngestConfig, JournaldSource, StartAt, StdinSource, SyslogProtocol, SyslogSource,
};
pub use lines::{LineSplitter, SplitLine};
pub use stats::{SourceKind, SourceStats, StatsSnapshot};

use crate::event::{Checkpoint, LineBatch};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::mpsc::Sender;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Builds the checkpoint for "right after the line ending at this offset".
/// (`P` is the source's position: a file offset, a journald cursor.)
pub(crate) type CheckpointFn<'a, P = u64> = dyn Fn(&P) -> Option<Checkpoint> + 'a;

/// Where sources find the positions the node persisted with their batches.
///
/// The node implements it over its store (the same place it writes the checkpoints of
/// [`LineBatch`]es). Sources only read; they never write.
pub trait CursorStore: Send + Sync {
    /// The last persisted value for `key` (e.g. `file:/var/log/auth.log`), if any.
    fn load(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
}

/// A [`CursorStore`] in memory, for tests and one-shot runs.
#[derive(Debug, Default)]
pub struct MemoryCursorStore {
    cursors: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryCursorStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a checkpoint, as the node does once a batch's results are stored.
    pub fn save(&self, checkpoint: &Checkpoint) {
        if let Ok(mut map) = self.cursors.lock() {
            map.insert(checkpoint.key.clone(), checkpoint.value.clone());
        }
    }
}

impl CursorStore for MemoryCursorStore {
    fn load(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let map = self.cursors.lock().map_err(|_| "cursor store lock poisoned".to_owned())?;
        Ok(map.get(key).cloned())
    }
}

/// Why the sources could not start.
#[derive(Debug, Error)]
pub enum IngestError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A syslog listener could not bind its address.
    #[error("syslog: cannot listen on {proto}://{addr}: {source} (is another syslog daemon using the port, or does binding it need root?)")]
    Bind {
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file source's thread could not start.
    #[error("file source {name:?}: cannot start its thread: {source}")]
    Thread {
        /// The source's name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `spawn` was called outside a tokio runtime.
    #[error("ingest must be started from inside a tokio runtime")]
    NoRuntime,
}

/// The running sources: their counters, and a way to wait for them to stop.
#[derive(Debug)]
pub struct IngestHandle {
    stats: Vec<Arc<SourceStats>>,
    done: Vec<oneshot::Receiver<()>>,
}

impl IngestHandle {
    /// Counters of every source, for the metrics exporter.
    pub fn stats(&self) -> &[Arc<SourceStats>] {
        &self.stats
    }

    /// How many sources run (a syslog entry counts once per address and protocol).
    pub fn source_count(&self) -> usize {
        self.stats.len()
    }

    /// Waits until every source has stopped (after the shutdown token fired, or on its
    /// own: stdin at EOF, every source when the receiver is dropped).
    pub async fn join(self) {
        for rx in self.done {
            // A dropped sender means the source ended (or panicked): either way, done.
            let _ = rx.await;
        }
    }
}

/// Signals a source's end to [`IngestHandle::join`] when dropped, even on panic.
pub(crate) struct DoneGuard(#[allow(dead_code)] oneshot::Sender<()>);

/// What tells the sources to stop: a [`CancellationToken`], or a `watch::Receiver<bool>`
/// that becomes `true` (or whose sender is dropped).
#[derive(Debug)]
pub enum Shutdown {
    /// Cancelled to stop.
    Token(CancellationToken),
    /// Set to `true` to stop.
    Watch(tokio::sync::watch::Receiver<bool>),
}

impl From<CancellationToken> for Shutdown {
    fn from(t: CancellationToken) -> Self {
        Shutdown::Token(t)
    }
}

impl From<tokio::sync::watch::Receiver<bool>> for Shutdown {
    fn from(w: tokio::sync::watch::Receiver<bool>) -> Self {
        Shutdown::Watch(w)
    }
}

impl Shutdown {
    /// A token that fires with this signal (a small task bridges a watch channel).
    fn into_token(self, rt: &tokio::runtime::Handle) -> CancellationToken {
        match self {
            Shutdown::Token(t) => t,
            Shutdown::Watch(mut rx) => {
                let token = CancellationToken::new();
                let fire = token.clone();
                rt.spawn(async move {
                    tokio::select! {
                        _ = rx.wait_for(|stop| *stop) => {}
                        () = fire.cancelled() => {}
                    }
                    fire.cancel();
                });
                token
            }
        }
    }
}

/// Starts every configured source. Must be called from inside a tokio runtime (any
/// flavour, actix's included): network sources become tasks on it, each file source
/// gets a thread. Files that exist are opened before it returns (a few blocking
/// `open`s), so every line appended after it returns is read.
///
/// Sources stop when `shutdown` fires (sending what they have already read, for at most
/// a short grace period), or when `tx`'s receiver is dropped.
pub fn spawn(
    config: &IngestConfig,
    cursors: Arc<dyn CursorStore>,
    tx: Sender<LineBatch>,
    shutdown: impl Into<Shutdown>,
) -> Result<IngestHandle, IngestError> {
    config.validate()?;
    let rt = tokio::runtime::Handle::try_current().map_err(|_| IngestError::NoRuntime)?;
    let shutdown = shutdown.into().into_token(&rt);
    let mut handle = IngestHandle { stats: Vec::new(), done: Vec::new() };
    let common = Common { max_line_bytes: config.max_line_bytes, batch_lines: config.batch_lines };

    // Bind every socket first, so a bind failure starts nothing.
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for s in &config.syslog {
        for addr in &s.listen {
            if matches!(s.protocol, SyslogProtocol::Udp | SyslogProtocol::Both) {
                let sock = std::net::UdpSocket::bind(addr)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(|source| IngestError::Bind { proto: "udp", addr: *addr, source })?;
                udp.push((s.clone(), sock));
            }
            if matches!(s.protocol, SyslogProtocol::Tcp | SyslogProtocol::Both) {
                let l = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| IngestError::Bind { proto: "tcp", addr: *addr, source })?;
                tcp.push((s.clone(), l));
            }
        }
    }
    let _enter = rt.enter();
    for (cfg, sock) in udp {
        let addr = sock.local_addr().map_err(|source| IngestError::Bind {
            proto: "udp",
            addr: cfg.listen[0],
            source,
        })?;
        let sock = tokio::net::UdpSocket::from_std(sock).map_err(|source| IngestError::Bind {
            proto: "udp",
            addr,
            source,
        })?;
        let (stats, done) = handle.add(SourceStats::new(format!("syslog:udp:{addr}"), SourceKind::SyslogUdp));
        let (tx, shutdown) = (tx.clone(), shutdown.clone());
        rt.spawn(async move {
            let _done = done;
            syslog::run_udp(sock, cfg, common, tx, shutdown, stats).await;
        });
    }
    for (cfg, l) in tcp {
        let addr = l.local_addr().map_err(|source| IngestError::Bind {
            proto: "tcp",
            addr: cfg.listen[0],
            source,
        })?;
        let l = tokio::net::TcpListener::from_std(l).map_err(|source| IngestError::Bind {
            proto: "tcp",
            addr,
            source,
        })?;
        let (stats, done) = handle.add(SourceStats::new(format!("syslog:tcp:{addr}"), SourceKind::SyslogTcp));
        let (tx, shutdown) = (tx.clone(), shutdown.clone());
        rt.spawn(async move {
            let _done = done;
            syslog::run_tcp(l, cfg, common, tx, shutdown, stats).await;
        });
    }
    for j in &config.journald {
        let (stats, done) = handle.add(SourceStats::new(j.display_name(), SourceKind::Journald));
        let cursor = journald::load_cursor(cursors.as_ref(), j, &stats);
        let (cfg, tx, shutdown) = (j.clone(), tx.clone(), shutdown.clone());
        rt.spawn(async move {
            let _done = done;
            journald::run(cfg, cursor, common, tx, shutdown, stats).await;
        });
    }
    for f in &config.files {
        let (stats, done) = handle.add(SourceStats::new(f.display_name(), SourceKind::File));
        let name = f.display_name();
        let mut source = file::FileTailer::new(
            f.clone(),
            config.poll_interval,
            common,
            cursors.clone(),
            stats,
            tx.clone(),
            shutdown.clone(),
        );
        source.prepare();
        std::thread::Builder::new()
            .name(format!("ingest-file-{}", handle.stats.len()))
            .spawn(move || {
                let _done = done;
                source.run_blocking();
            })
            .map_err(|source| IngestError::Thread { name, source })?;
    }
    if let Some(s) = &config.stdin {
        let (stats, done) = handle.add(SourceStats::new("stdin", SourceKind::Stdin));
        let (log_type, tx, shutdown) = (s.log_type.clone(), tx.clone(), shutdown.clone());
        rt.spawn(async move {
            let _done = done;
            stdin::run_reader(tokio::io::stdin(), &log_type, common, tx, shutdown, stats).await;
        });
    }
    Ok(handle)
}

impl IngestHandle {
    fn add(&mut self, stats: SourceStats) -> (Arc<SourceStats>, DoneGuard) {
        let stats = Arc::new(stats);
        let (done_tx, done_rx) = oneshot::channel();
        self.stats.push(stats.clone());
        self.done.push(done_rx);
        (stats, DoneGuard(done_tx))
    }
}

/// Limits every source shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Common {
    /// See [`IngestConfig::max_line_bytes`].
    pub max_line_bytes: usize,
    /// See [`IngestConfig::batch_lines`].
    pub batch_lines: usize,
}

impl Default for Common {
    fn default() -> Self {
        let c = IngestConfig::default();
        Common { max_line_bytes: c.max_line_bytes, batch_lines: c.batch_lines }
    }
}

impl From<&IngestConfig> for Common {
    fn from(c: &IngestConfig) -> Self {
        Common { max_line_bytes: c.max_line_bytes, batch_lines: c.batch_lines }
    }
}

/// How long a stopping source keeps trying to hand over lines it already read.
pub(crate) const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends `batches` in order; `false` when the receiver is gone.
///
/// Waits for room in the channel (backpressure) unless shutdown comes first; then the
/// remaining batches are handed over only if the channel takes them within
/// [`SHUTDOWN_GRACE`]. A file batch dropped that way is read again at next start, as its
/// checkpoint was never persisted; a network source's is lost.
pub(crate) async fn send_all(
    tx: &Sender<LineBatch>,
    batches: Vec<LineBatch>,
    shutdown: &CancellationToken,
) -> bool {
    let mut pending: std::collections::VecDeque<LineBatch> = batches.into();
    while let Some(batch) = pending.pop_front() {
        let permit = tokio::select! {
            biased;
            p = tx.reserve() => match p {
                Ok(p) => p,
                Err(_) => return false,
            },
            () = shutdown.cancelled() => {
                pending.push_front(batch);
                let grace = async {
                    for b in pending {
                        if tx.send(b).await.is_err() {
                            return false;
                        }
                    }
                    true
                };
                return tokio::time::timeout(SHUTDOWN_GRACE, grace).await.unwrap_or(true);
            }
        };
        permit.send(batch);
    }
    true
}
