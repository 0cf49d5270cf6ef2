//! Following log files: globs, appends, rotation, restart positions.
//!
//! One [`FileTailer`] per `[[ingest.files]]` entry runs on its own thread (blocking reads
//! never touch the node's executor) with a current-thread runtime for inotify, the poll
//! tick and shutdown. It watches the *directories* of its globs: a directory watch
//! reports appends to, creations of and renames in its files, so rotation needs no
//! per-file watch bookkeeping. Every `poll_interval` it also re-runs the globs, checks
//! every file for rotation and retries unreadable ones: the fallback when inotify is
//! unavailable, overflows, or a glob has wildcards in a directory part.
//!
//! # Live rules
//!
//! - Only complete lines are emitted; the unfinished last line waits (bounded by
//!   `max_line_bytes`) for its newline.
//! - **Rename-and-create** (logrotate's default): the open handle keeps reading the
//!   renamed file to its end; once a *different* file (device, inode) sits at the path,
//!   the old one is read to its end once more, its unfinished last line emitted as is,
//!   and the new one is followed from offset 0. Writes to the old file after that are
//!   not read (as with fail2ban and CrowdSec).
//! - **copytruncate**: same inode but size below the read offset, or (checked every
//!   poll) its first bytes changed: the file is read again from offset 0.
//! - A path that disappears keeps its handle while the file still has a name (it may
//!   have been renamed); a deleted file is read to its end and closed.
//! - A file that appears later (created, or renamed into a glob) is read from its
//!   beginning, unless it is a file this source already read under another name (a
//!   rotated file matching the glob): then it resumes where that one stopped.
//! - A file that cannot be opened or read is warned about once per change of error and
//!   retried every poll.
//!
//! # Restart rules (see [`FileCursor`])
//!
//! Each batch's checkpoint is `file:<path>` -> (device, inode, offset after the batch's
//! last line, fingerprint = length and blake3 of the first up-to-1024 bytes read).
//! When the node starts and a path has a saved cursor:
//!
//! 1. same inode and same fingerprint, size >= offset: resume at the offset;
//! 2. same inode and fingerprint, size < offset: truncated while stopped: from 0;
//! 3. otherwise the file was replaced (rotation while stopped, or the inode was reused,
//!    which the fingerprint reveals): if the old file is still in the same directory
//!    (same inode and fingerprint, e.g. `auth.log.1`), its rest is read first, then the
//!    new file from 0; else the new file from 0.
//!
//! The device is recorded but not compared: device numbers can change across reboots
//! (LVM, btrfs, overlay) and re-reading a whole log would replay old attacks.
//! Without a cursor, `start_at` applies (`end`: from the end, skipping an unfinished
//! last line; `beginning`: from 0) to files that exist at start; files that did not
//! exist at start are read from 0 when they appear.

use super::config::{FileSource, StartAt};
use super::lines::{Batcher, LineSplitter, SplitLine};
use super::stats::SourceStats;
use super::{send_all, Common, CursorStore};
use crate::event::{Checkpoint, LineBatch};
use futures_core::Stream;
use globset::{GlobSet, GlobSetBuilder};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How many leading bytes identify a file's content.
pub const FINGERPRINT_MAX: u64 = 1024;
const READ_CHUNK: usize = 64 * 1024;
const RETIRED_MAX: usize = 256;

/// A file source's saved position.
///
/// Encoding (45 bytes, little endian): version `1` (1 byte), device (8), inode (8),
/// offset (8), fingerprint length (4), first 16 bytes of the blake3 hash of the first
/// `fingerprint length` bytes of the file (16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCursor {
    /// `st_dev` of the file (informational: not compared at restart).
    pub dev: u64,
    /// `st_ino` of the file.
    pub ino: u64,
    /// Offset right after the last line handed over.
    pub offset: u64,
    /// How many leading bytes the fingerprint covers (at most [`FINGERPRINT_MAX`]).
    pub fp_len: u32,
    /// Truncated blake3 of those bytes.
    pub fp_hash: [u8; 16],
}

const CURSOR_V1: u8 = 1;
const CURSOR_LEN: usize = 45;

impl FileCursor {
    /// The bytes stored in a [`Checkpoint`].
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CURSOR_LEN);
        v.push(CURSOR_V1);
        v.extend_from_slice(&self.dev.to_le_bytes());
        v.extend_from_slice(&self.ino.to_le_bytes());
        v.extend_from_slice(&self.offset.to_le_bytes());
        v.extend_from_slice(&self.fp_len.to_le_bytes());
        v.extend_from_slice(&self.fp_hash);
        v
    }

    /// Decodes [`FileCursor::encode`]'s output; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != CURSOR_LEN || bytes[0] != CURSOR_V1 {
            return None;
        }
        let u64_at = |i: usize| bytes.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        Some(FileCursor {
            dev: u64_at(1)?,
            ino: u64_at(9)?,
            offset: u64_at(17)?,
            fp_len: bytes.get(25..29).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)?,
            fp_hash: bytes.get(29..45).and_then(|b| b.try_into().ok())?,
        })
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint { len: self.fp_len, hash: self.fp_hash }
    }
}

/// The checkpoint key of a file.
pub fn checkpoint_key(path: &Path) -> String {
    format!("file:{}", path.display())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> Self {
        FileId { dev: m.dev(), ino: m.ino() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Fingerprint {
    len: u32,
    hash: [u8; 16],
}

/// The fingerprint of the first `len` bytes of `file`; `None` when it has fewer.
fn fingerprint(file: &File, len: u64) -> io::Result<Option<Fingerprint>> {
    let len = len.min(FINGERPRINT_MAX);
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&blake3::hash(&buf).as_bytes()[..16]);
    Ok(Some(Fingerprint { len: len as u32, hash }))
}

fn fingerprint_matches(file: &File, fp: Fingerprint) -> io::Result<bool> {
    if fp.len == 0 {
        return Ok(true);
    }
    Ok(fingerprint(file, u64::from(fp.len))? == Some(fp))
}

/// An open file being followed.
#[derive(Debug)]
struct OpenFile {
    file: File,
    id: FileId,
    splitter: LineSplitter,
    fp: Fingerprint,
}

impl OpenFile {
    fn at(file: File, id: FileId, offset: u64, max_line: usize) -> io::Result<Self> {
        let mut file = file;
        file.seek(SeekFrom::Start(offset))?;
        let fp = fingerprint(&file, offset)?.unwrap_or_default();
        Ok(OpenFile { file, id, splitter: LineSplitter::new(max_line, offset), fp })
    }

    /// Extends the fingerprint over bytes read since, up to [`FINGERPRINT_MAX`].
    fn refresh_fingerprint(&mut self) -> io::Result<()> {
        let want = self.splitter.pos().min(FINGERPRINT_MAX);
        if u64::from(self.fp.len) < want {
            if let Some(fp) = fingerprint(&self.file, want)? {
                self.fp = fp;
            }
        }
        Ok(())
    }

    fn cursor(&self, offset: u64) -> FileCursor {
        FileCursor { dev: self.id.dev, ino: self.id.ino, offset, fp_len: self.fp.len, fp_hash: self.fp.hash }
    }
}

/// How a path's first open is decided.
#[derive(Debug, Clone, Copy)]
struct Initial {
    cursor: Option<FileCursor>,
    start_at: StartAt,
}

/// A path this source follows.
#[derive(Debug)]
struct Tracked {
    key: String,
    source: Arc<str>,
    /// Configured literally (not found by a glob): kept, and warned about, when missing.
    literal: bool,
    /// Until the first successful open.
    initial: Option<Initial>,
    open: Option<OpenFile>,
    /// The last warning given, so that each state change is reported once.
    warned: Option<String>,
}

/// What the path holds compared with the open handle.
enum PathState {
    Same,
    Replaced,
    Truncated,
    Deleted,
}

/// Files this source finished after a rotation, with where they ended: a file renamed
/// into a glob is resumed there instead of being read again.
#[derive(Debug, Default)]
struct Retired(VecDeque<(FileId, u64)>);

impl Retired {
    fn push(&mut self, id: FileId, end: u64) {
        self.0.retain(|(i, _)| *i != id);
        if self.0.len() >= RETIRED_MAX {
            self.0.pop_front();
        }
        self.0.push_back((id, end));
    }

    fn offset_of(&self, id: FileId) -> Option<u64> {
        self.0.iter().find(|(i, _)| *i == id).map(|(_, o)| *o)
    }
}

struct Ctx {
    name: String,
    log_type: Arc<str>,
    common: Common,
    stats: Arc<SourceStats>,
    tx: Sender<LineBatch>,
    shutdown: CancellationToken,
}

/// One `[[ingest.files]]` source. Build it with [`FileTailer::new`], call
/// [`FileTailer::prepare`], and run it on a thread of its own with
/// [`FileTailer::run_blocking`] ([`super::spawn`] does all three).
pub struct FileTailer {
    cfg: FileSource,
    poll: Duration,
    cursors: Arc<dyn CursorStore>,
    stats: Arc<SourceStats>,
    ctx: Ctx,
    prepared: bool,
    exclude: GlobSet,
    tracked: BTreeMap<PathBuf, Tracked>,
    retired: Retired,
}

impl std::fmt::Debug for FileTailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTailer")
            .field("name", &self.stats.name)
            .field("tracked", &self.tracked.len())
            .finish()
    }
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl FileTailer {
    /// A source for `cfg` (validated by [`super::IngestConfig::validate`]).
    pub fn new(
        cfg: FileSource,
        poll: Duration,
        common: Common,
        cursors: Arc<dyn CursorStore>,
        stats: Arc<SourceStats>,
        tx: Sender<LineBatch>,
        shutdown: CancellationToken,
    ) -> Self {
        let mut b = GlobSetBuilder::new();
        for p in &cfg.exclude {
            if let Ok(g) = globset::Glob::new(p) {
                b.add(g);
            }
        }
        let exclude = b.build().unwrap_or_else(|_| GlobSet::empty());
        let ctx = Ctx {
            name: stats.name.clone(),
            log_type: Arc::from(cfg.log_type.as_str()),
            common,
            stats: stats.clone(),
            tx,
            shutdown,
        };
        FileTailer {
            cfg,
            poll,
            cursors,
            stats,
            ctx,
            prepared: false,
            exclude,
            tracked: BTreeMap::new(),
            retired: Retired::default(),
        }
    }

    /// Finds the files that exist now and opens them at their start position (saved
    /// cursor, else `start_at`), without reading. Called before the source's thread
    /// starts, so that every line appended after [`super::spawn`] returns is read.
    /// Blocking (a few `stat`s and `open`s).
    pub fn prepare(&mut self) {
        if std::mem::replace(&mut self.prepared, true) {
            return;
        }
        let _ = self.discover(true);
        for (path, t) in &mut self.tracked {
            ensure_open(&self.ctx, path, t, &self.retired);
        }
    }

    /// Runs until `shutdown` fires or `tx`'s receiver is dropped. Blocks the calling
    /// thread (it builds its own current-thread runtime).
    pub fn run_blocking(self) {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(self.run()),
            Err(e) => {
                SourceStats::bump(&self.stats.read_errors);
                warn!(source = %self.stats.name, error = %e, "file source cannot start its runtime");
            }
        }
    }

    async fn run(mut self) {
        let mut watcher = Watcher::new(&self.ctx.name, self.watch_dirs());
        self.prepare();
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        let mut all = true;
        let mut full = true;
        let mut dirty: HashSet<PathBuf> = HashSet::new();
        loop {
            let paths: Vec<PathBuf> = if all {
                self.tracked.keys().cloned().collect()
            } else {
                dirty.drain().filter(|p| self.tracked.contains_key(p)).collect()
            };
            dirty.clear();
            for path in paths {
                if self.ctx.shutdown.is_cancelled() {
                    return;
                }
                let Some(t) = self.tracked.get_mut(&path) else { continue };
                if !service(&self.ctx, &path, t, &mut self.retired, full).await {
                    return;
                }
            }
            full = false;
            tokio::select! {
                biased;
                () = self.ctx.shutdown.cancelled() => return,
                wake = watcher.wait(&mut dirty) => {
                    if wake.discover {
                        dirty.extend(self.discover(false));
                    }
                    all = wake.all;
                }
                _ = tick.tick() => {
                    watcher.ensure_watches(&self.ctx.name);
                    let _ = self.discover(false);
                    (all, full) = (true, true);
                }
            }
            if self.ctx.tx.is_closed() {
                return;
            }
        }
    }

    /// Directories whose entries the globs can match without a wildcard in the directory.
    fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in &self.cfg.paths {
            if let Some(parent) = Path::new(p).parent() {
                let parent_str = parent.to_string_lossy();
                if !has_glob_chars(&parent_str) && !dirs.iter().any(|d| d == parent) {
                    dirs.push(parent.to_path_buf());
                }
            }
        }
        dirs
    }

    /// Runs the globs; adds new paths (returned); forgets glob-found paths that are gone.
    fn discover(&mut self, at_start: bool) -> Vec<PathBuf> {
        let mut added = Vec::new();
        let mut found: Vec<(PathBuf, bool, bool)> = Vec::new(); // (path, literal, exists)
        for pattern in &self.cfg.paths {
            if !has_glob_chars(pattern) {
                let path = PathBuf::from(pattern);
                let exists = path.exists();
                found.push((path, true, exists));
                continue;
            }
            match glob::glob(pattern) {
                Ok(paths) => {
                    for path in paths.flatten() {
                        found.push((path, false, true));
                    }
                }
                Err(e) => debug!(source = %self.stats.name, pattern, error = %e, "bad glob"),
            }
        }
        for (path, literal, exists) in found {
            if self.tracked.contains_key(&path) || self.exclude.is_match(&path) {
                continue;
            }
            if !literal {
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => {
                        // A file still open under another name (renamed, the new one not
                        // yet created): wait until that path has moved on, then resume it.
                        let id = FileId::of(&m);
                        if self.tracked.values().any(|t| t.open.as_ref().is_some_and(|o| o.id == id)) {
                            continue;
                        }
                    }
                    _ => continue,
                }
            }
            let key = checkpoint_key(&path);
            let cursor = match self.cursors.load(&key) {
                Ok(Some(bytes)) => {
                    let c = FileCursor::decode(&bytes);
                    if c.is_none() {
                        warn!(source = %self.stats.name, path = %path.display(), "saved position is unreadable; ignoring it");
                    }
                    c
                }
                Ok(None) => None,
                Err(e) => {
                    warn!(source = %self.stats.name, path = %path.display(), error = %e, "cannot load saved position");
                    None
                }
            };
            let start_at = if at_start && exists { self.cfg.start_at } else { StartAt::Beginning };
            let source: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
            added.push(path.clone());
            self.tracked.insert(
                path,
                Tracked {
                    key,
                    source,
                    literal,
                    initial: Some(Initial { cursor, start_at }),
                    open: None,
                    warned: None,
                },
            );
        }
        self.tracked.retain(|path, t| t.literal || t.open.is_some() || path.exists());
        added
    }
}

/// Reads what `path` has, handles rotation; `false` when the source must stop.
async fn service(ctx: &Ctx, path: &Path, t: &mut Tracked, retired: &mut Retired, full: bool) -> bool {
    // A rotation leads to at most one more file; the bound only guards against churn.
    for _ in 0..4 {
        if !ensure_open(ctx, path, t, retired) {
            return true;
        }
        let Some(o) = t.open.as_mut() else { return true };
        // A copytruncate followed by new writes can leave the file longer than the
        // offset between two looks, so the size alone does not tell: the bytes already
        // read must still be there before reading on.
        match fingerprint_matches(&o.file, o.fp) {
            Ok(true) => {}
            Ok(false) => {
                if !restart_truncated(ctx, path, t).await {
                    return false;
                }
                continue;
            }
            Err(e) => {
                warn_once(ctx, path, t, &e);
                return true;
            }
        }
        let Some(o) = t.open.as_mut() else { return true };
        match drain(ctx, &t.key, &t.source, o).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                warn_once(ctx, path, t, &e);
                return true;
            }
        }
        let state = match path_state(path, o, full) {
            Ok(s) => s,
            Err(e) => {
                warn_once(ctx, path, t, &e);
                return true;
            }
        };
        match state {
            PathState::Same => return true,
            PathState::Replaced | PathState::Deleted => {
                // Catch the last writes, then end the old file's unfinished line.
                match drain(ctx, &t.key, &t.source, o).await {
                    Ok(true) => {}
                    Ok(false) => return false,
                    Err(e) => {
                        debug!(source = %ctx.name, path = %path.display(), error = %e, "reading rotated file")
                    }
                }
                if !flush(ctx, &t.key, &t.source, o).await {
                    return false;
                }
                retired.push(o.id, o.splitter.pos());
                let replaced = matches!(state, PathState::Replaced);
                info!(source = %ctx.name, path = %path.display(), replaced, "log file rotated");
                SourceStats::bump(&ctx.stats.rotations);
                t.open = None;
                if !replaced {
                    return true;
                }
            }
            PathState::Truncated => {
                if !restart_truncated(ctx, path, t).await {
                    return false;
                }
            }
        }
    }
    true
}

/// The file was truncated (copytruncate): ends its unfinished line and reads it again
/// from the start. `false` when the source must stop.
async fn restart_truncated(ctx: &Ctx, path: &Path, t: &mut Tracked) -> bool {
    let Some(o) = t.open.as_mut() else { return true };
    if !flush(ctx, &t.key, &t.source, o).await {
        return false;
    }
    info!(source = %ctx.name, path = %path.display(), "log file truncated; reading it from the start");
    SourceStats::bump(&ctx.stats.rotations);
    if let Err(e) = o.file.seek(SeekFrom::Start(0)) {
        warn_once(ctx, path, t, &e);
        t.open = None;
        return true;
    }
    o.splitter.reset(0);
    o.fp = Fingerprint::default();
    true
}

/// Opens `path` if it is not open; `false` when it cannot be (warned once).
fn ensure_open(ctx: &Ctx, path: &Path, t: &mut Tracked, retired: &Retired) -> bool {
    if t.open.is_some() {
        return true;
    }
    match open_path(ctx, path, t, retired) {
        Ok(o) => {
            if t.warned.take().is_some() {
                info!(source = %ctx.name, path = %path.display(), "log file readable again");
            }
            debug!(source = %ctx.name, path = %path.display(), offset = o.splitter.pos(), "following");
            t.open = Some(o);
            true
        }
        Err(e) => {
            if t.literal || e.kind() != io::ErrorKind::NotFound {
                warn_once(ctx, path, t, &e);
            }
            false
        }
    }
}

fn warn_once(ctx: &Ctx, path: &Path, t: &mut Tracked, e: &io::Error) {
    let msg = match e.kind() {
        io::ErrorKind::NotFound => "does not exist (yet)".to_owned(),
        _ => e.to_string(),
    };
    if t.warned.as_deref() != Some(msg.as_str()) {
        SourceStats::bump(&ctx.stats.read_errors);
        warn!(source = %ctx.name, path = %path.display(), error = %msg, "cannot read log file; retrying every poll");
        t.warned = Some(msg);
    }
}

/// Opens `path` and decides where to start, by the rules in the module docs.
fn open_path(ctx: &Ctx, path: &Path, t: &mut Tracked, retired: &Retired) -> io::Result<OpenFile> {
    let max = ctx.common.max_line_bytes;
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let id = FileId::of(&meta);
    let len = meta.len();
    let from_start_or_retired = |file: File| {
        let offset = retired.offset_of(id).filter(|o| *o <= len).unwrap_or(0);
        OpenFile::at(file, id, offset, max)
    };
    let open = match t.initial {
        None => from_start_or_retired(file)?,
        Some(Initial { cursor: Some(c), .. }) => {
            if c.ino == id.ino && fingerprint_matches(&file, c.fingerprint())? {
                if len >= c.offset {
                    OpenFile::at(file, id, c.offset, max)?
                } else {
                    info!(source = %ctx.name, path = %path.display(), "log file shrank while stopped; reading it from the start");
                    OpenFile::at(file, id, 0, max)?
                }
            } else if let Some(old) = find_rotated(path, &c, max) {
                info!(source = %ctx.name, path = %path.display(), "log file rotated while stopped; finishing the old one first");
                old
            } else {
                info!(source = %ctx.name, path = %path.display(), "log file replaced while stopped; reading it from the start");
                OpenFile::at(file, id, 0, max)?
            }
        }
        Some(Initial { cursor: None, start_at: StartAt::Beginning }) => from_start_or_retired(file)?,
        Some(Initial { cursor: None, start_at: StartAt::End }) => {
            let mut last = [0u8; 1];
            let mid_line = len > 0 && file.read_at(&mut last, len - 1)? == 1 && last[0] != b'\n';
            let mut o = OpenFile::at(file, id, len, max)?;
            if mid_line {
                o.splitter.skip_to_next_line();
            }
            o
        }
    };
    t.initial = None;
    Ok(open)
}

/// Looks in `path`'s directory for the file a cursor describes (rotated while stopped).
fn find_rotated(path: &Path, c: &FileCursor, max: usize) -> Option<OpenFile> {
    let dir = path.parent()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(m) = entry.metadata() else { continue };
        if !m.is_file() || m.ino() != c.ino || m.len() < c.offset {
            continue;
        }
        let file = File::open(entry.path()).ok()?;
        if fingerprint_matches(&file, c.fingerprint()).ok()? {
            return OpenFile::at(file, FileId::of(&m), c.offset, max).ok();
        }
    }
    None
}

fn path_state(path: &Path, o: &OpenFile, full: bool) -> io::Result<PathState> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let nlink = o.file.metadata()?.nlink();
            Ok(if nlink == 0 { PathState::Deleted } else { PathState::Same })
        }
        Err(e) => Err(e),
        Ok(m) if FileId::of(&m) != o.id => Ok(PathState::Replaced),
        Ok(m) if m.len() < o.splitter.pos() => Ok(PathState::Truncated),
        Ok(_) if full && !fingerprint_matches(&o.file, o.fp)? => Ok(PathState::Truncated),
        Ok(_) => Ok(PathState::Same),
    }
}

/// Reads `o` to its end, sending batches as they fill and the rest at the end.
async fn drain(ctx: &Ctx, key: &str, source: &Arc<str>, o: &mut OpenFile) -> io::Result<bool> {
    let mut batcher =
        Batcher::new(source.clone(), ctx.log_type.clone(), ctx.common.batch_lines, ctx.stats.clone());
    let mut buf = vec![0u8; READ_CHUNK];
    let mut lines: Vec<SplitLine> = Vec::new();
    loop {
        let n = match o.file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        o.splitter.push(&buf[..n], &mut lines);
        o.refresh_fingerprint()?;
        add_lines(key, o, &mut batcher, &mut lines);
        if batcher.has_ready() && !send_all(&ctx.tx, batcher.take_ready(), &ctx.shutdown).await {
            return Ok(false);
        }
        if ctx.shutdown.is_cancelled() {
            break;
        }
    }
    let cursor = o.cursor(0);
    batcher.close(&|end: &u64| Some(checkpoint(key, cursor, *end)));
    Ok(send_all(&ctx.tx, batcher.take_ready(), &ctx.shutdown).await)
}

/// Emits `o`'s unfinished last line (rotation, truncation).
async fn flush(ctx: &Ctx, key: &str, source: &Arc<str>, o: &mut OpenFile) -> bool {
    let mut batcher =
        Batcher::new(source.clone(), ctx.log_type.clone(), ctx.common.batch_lines, ctx.stats.clone());
    let mut lines = Vec::new();
    o.splitter.flush(&mut lines);
    add_lines(key, o, &mut batcher, &mut lines);
    let cursor = o.cursor(0);
    batcher.close(&|end: &u64| Some(checkpoint(key, cursor, *end)));
    send_all(&ctx.tx, batcher.take_ready(), &ctx.shutdown).await
}

fn add_lines(key: &str, o: &OpenFile, batcher: &mut Batcher, lines: &mut Vec<SplitLine>) {
    let cursor = o.cursor(0);
    let ck = |end: &u64| Some(checkpoint(key, cursor, *end));
    for l in lines.drain(..) {
        batcher.add(l.text, l.end, l.truncated, &ck);
    }
}

fn checkpoint(key: &str, cursor: FileCursor, end: u64) -> Checkpoint {
    Checkpoint { key: key.to_owned(), value: FileCursor { offset: end, ..cursor }.encode() }
}

/// What woke the source.
#[derive(Debug, Default)]
struct Wake {
    /// Service every tracked file (inotify queue overflow).
    all: bool,
    /// Re-run the globs (a file was created or renamed into a watched directory).
    discover: bool,
}

/// inotify on the globs' directories; absent (poll only) when inotify is unavailable.
struct Watcher {
    stream: Option<inotify::EventStream<Vec<u8>>>,
    dirs: Vec<PathBuf>,
    watched: HashMap<WatchDescriptor, PathBuf>,
    failed: HashMap<PathBuf, String>,
}

fn watch_mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::DELETE
        | WatchMask::ATTRIB
}

impl Watcher {
    fn new(name: &str, dirs: Vec<PathBuf>) -> Self {
        let stream = match Inotify::init().and_then(|i| i.into_event_stream(vec![0u8; 16 * 1024])) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(source = %name, error = %e, "inotify unavailable; polling only");
                None
            }
        };
        let mut w = Watcher { stream, dirs, watched: HashMap::new(), failed: HashMap::new() };
        w.ensure_watches(name);
        w
    }

    /// Adds watches missing (directories created since, or removed and recreated).
    fn ensure_watches(&mut self, name: &str) {
        let Some(stream) = &self.stream else { return };
        for dir in &self.dirs {
            if self.watched.values().any(|d| d == dir) {
                continue;
            }
            match stream.watches().add(dir, watch_mask()) {
                Ok(wd) => {
                    self.failed.remove(dir);
                    self.watched.insert(wd, dir.clone());
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.failed.get(dir) != Some(&msg) {
                        debug!(source = %name, dir = %dir.display(), error = %msg, "cannot watch directory; polling it");
                        self.failed.insert(dir.clone(), msg);
                    }
                }
            }
        }
    }

    /// Waits for inotify events, marks the files they name in `dirty`.
    async fn wait(&mut self, dirty: &mut HashSet<PathBuf>) -> Wake {
        let mut wake = Wake::default();
        let Some(stream) = self.stream.as_mut() else {
            std::future::pending::<()>().await;
            return wake;
        };
        let mut next = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await;
        loop {
            match next {
                Some(Ok(ev)) => {
                    if ev.mask.contains(EventMask::Q_OVERFLOW) {
                        wake.all = true;
                        wake.discover = true;
                    }
                    if ev.mask.contains(EventMask::IGNORED) {
                        self.watched.remove(&ev.wd);
                    }
                    if let (Some(dir), Some(name)) = (self.watched.get(&ev.wd), ev.name) {
                        let path = dir.join(name);
                        if ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                            wake.discover = true;
                        }
                        dirty.insert(path);
                    }
                }
                Some(Err(e)) => {
                    warn!(error = %e, "inotify failed; polling only");
                    self.stream = None;
                    wake.all = true;
                    return wake;
                }
                None => {
                    self.stream = None;
                    wake.all = true;
                    return wake;
                }
            }
            // Take every event already queued before waking the reader.
            let ready = tokio::time::timeout(
                Duration::ZERO,
                std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)),
            )
            .await;
            match ready {
                Ok(ev) => next = ev,
                Err(_) => return wake,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let c = FileCursor { dev: 1, ino: u64::MAX, offset: 12345, fp_len: 1024, fp_hash: [7; 16] };
        let bytes = c.encode();
        assert_eq!(bytes.len(), CURSOR_LEN);
        assert_eq!(FileCursor::decode(&bytes), Some(c));
        assert_eq!(FileCursor::decode(&bytes[..44]), None);
        let mut wrong = bytes.clone();
        wrong[0] = 2;
        assert_eq!(FileCursor::decode(&wrong), None);
    }

    #[test]
    fn glob_chars() {
        assert!(has_glob_chars("/var/log/*.log"));
        assert!(!has_glob_chars("/var/log/auth.log"));
    }
}
