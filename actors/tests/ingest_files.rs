//! File sources against real files in temporary directories.
//!
//! Every wait has a generous timeout and no assertion depends on timing: a test waits
//! for the lines it expects, then checks that nothing else (no duplicate, no loss) came.

use palisade_actors::event::{Checkpoint, LineBatch};
use palisade_actors::ingest::file::FileCursor;
use palisade_actors::ingest::{self, FileSource, IngestConfig, IngestHandle, MemoryCursorStore, StartAt};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

struct Run {
    rx: mpsc::Receiver<LineBatch>,
    handle: Option<IngestHandle>,
    shutdown: CancellationToken,
    store: Arc<MemoryCursorStore>,
    batches: Vec<LineBatch>,
}

fn file_config(paths: &[&Path], start_at: StartAt) -> IngestConfig {
    IngestConfig {
        poll_interval: Duration::from_millis(50),
        files: vec![FileSource {
            paths: paths.iter().map(|p| p.display().to_string()).collect(),
            log_type: "syslog".into(),
            start_at,
            exclude: vec![],
            name: None,
        }],
        ..IngestConfig::default()
    }
}

impl Run {
    fn start(config: &IngestConfig, store: Arc<MemoryCursorStore>) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let handle = ingest::spawn(config, store.clone(), tx, shutdown.clone()).expect("spawn");
        Run { rx, handle: Some(handle), shutdown, store, batches: Vec::new() }
    }

    /// Receives until `n` lines came, persisting checkpoints as the node would.
    async fn lines(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out with {} of {n} lines: {out:?}", out.len()))
                .expect("channel open");
            if let Some(c) = &batch.checkpoint {
                self.store.save(c);
            }
            out.extend(batch.lines.iter().map(|l| l.text.clone()));
            self.batches.push(batch);
        }
        assert_eq!(out.len(), n, "more lines than expected: {out:?}");
        out
    }

    /// Nothing more arrives within a short while (a check for duplicates, never a wait
    /// that a pass depends on).
    async fn no_more(&mut self) {
        if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(300), self.rx.recv()).await {
            panic!("unexpected lines: {:?}", b.lines.iter().map(|l| &l.text).collect::<Vec<_>>());
        }
    }

    async fn stop(mut self) -> Arc<MemoryCursorStore> {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(WAIT, h.join()).await.expect("sources stop promptly");
        }
        self.store
    }

    fn stats(&self) -> ingest::StatsSnapshot {
        self.handle.as_ref().expect("running").stats()[0].snapshot()
    }
}

fn append(path: &Path, text: &[u8]) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).expect("open for append");
    f.write_all(text).expect("append");
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("line {i}")).collect()
}

fn write_numbered(path: &Path, range: std::ops::Range<usize>) {
    let text: String = numbered(range).iter().map(|l| format!("{l}\n")).collect();
    append(path, text.as_bytes());
}

fn last_cursor(run: &Run) -> FileCursor {
    let c = run.batches.iter().rev().find_map(|b| b.checkpoint.clone()).expect("a checkpoint");
    FileCursor::decode(&c.value).expect("decodes")
}

#[tokio::test]
async fn appends_and_partial_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.log");
    append(&path, b"first\nsecond\npar");
    let mut run = Run::start(&file_config(&[&path], StartAt::Beginning), Arc::new(MemoryCursorStore::new()));
    assert_eq!(run.lines(2).await, ["first", "second"]);
    let c = last_cursor(&run);
    assert_eq!(c.offset, 13, "checkpoint right after the last complete line");
    assert_eq!(
        run.batches[0].checkpoint.as_ref().map(|c| c.key.as_str()),
        Some(&*format!("file:{}", path.display()))
    );
    append(&path, b"tial\nthird\n");
    assert_eq!(run.lines(2).await, ["partial", "third"]);
    assert_eq!(last_cursor(&run).offset, fs::metadata(&path).expect("meta").len());
    let line = &run.batches[0].lines[0];
    assert_eq!((&*line.source, &*line.log_type), (&*path.display().to_string(), "syslog"));
    run.no_more().await;
    let stats = run.stats();
    assert_eq!((stats.lines, stats.truncated), (4, 0));
    run.stop().await;
}

#[tokio::test]
async fn appends_wake_on_inotify_without_polling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.log");
    append(&path, b"old\n");
    let mut config = file_config(&[&path], StartAt::Beginning);
    // The poll tick never comes again after the start: only inotify can deliver.
    config.poll_interval = Duration::from_secs(3600);
    let mut run = Run::start(&config, Arc::new(MemoryCursorStore::new()));
    assert_eq!(run.lines(1).await, ["old"]);
    for i in 0..5 {
        append(&path, format!("new {i}\n").as_bytes());
        assert_eq!(run.lines(1).await, [format!("new {i}")]);
    }
    run.stop().await;
}

#[tokio::test]
async fn start_at_end_skips_existing_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("live.log");
    append(&path, b"history 1\nhistory 2\nunfinished");
    let mut run = Run::start(&file_config(&[&path], StartAt::End), Arc::new(MemoryCursorStore::new()));
    // The file was opened at its end when `spawn` returned: the history never comes,
    // nor the rest of the unfinished line.
    append(&path, b" line\nprobe\n");
    assert_eq!(run.lines(1).await, ["probe"]);
    run.no_more().await;
    run.stop().await;
}

#[tokio::test]
async fn long_lines_are_cut_and_counted_invalid_utf8_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.log");
    let mut data = vec![b'x'; 300];
    data.extend_from_slice(b"\nok\r\nbad\xff\xfebytes\n");
    data.extend(vec![b'y'; 250]); // an overlong unfinished line is held cut, not grown
    append(&path, &data);
    let mut config = file_config(&[&path], StartAt::Beginning);
    config.max_line_bytes = 100;
    let mut run = Run::start(&config, Arc::new(MemoryCursorStore::new()));
    let lines = run.lines(3).await;
    assert_eq!(lines[0], "x".repeat(100));
    assert_eq!(lines[1], "ok");
    assert_eq!(lines[2], "bad\u{fffd}\u{fffd}bytes");
    append(&path, b"yyyy\nnext\n");
    assert_eq!(run.lines(2).await, ["y".repeat(100), "next".to_owned()]);
    assert_eq!(run.stats().truncated, 2);
    run.stop().await;
}

#[tokio::test]
async fn rename_and_create_rotation_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.log");
    append(&path, b"");
    let mut run = Run::start(&file_config(&[&path], StartAt::Beginning), Arc::new(MemoryCursorStore::new()));
    let mut next = 0;
    for round in 0..5 {
        // Lines written before the rename, while the tailer may be in the middle of
        // reading, then logrotate's `create`: rename, a new file, more lines at once.
        // (Two rotations between two looks at the path would skip the middle file, as
        // in every tailer: hence one rotation per round.)
        write_numbered(&path, next..next + 300);
        fs::rename(&path, path.with_extension(format!("log.{round}"))).expect("rename");
        write_numbered(&path, next + 300..next + 400);
        assert_eq!(run.lines(400).await, numbered(next..next + 400), "round {round}");
        next += 400;
    }
    run.no_more().await;
    assert_eq!(run.stats().rotations, 5);
    run.stop().await;
}

#[tokio::test]
async fn rotation_finishes_the_old_file_and_ends_its_partial_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.log");
    append(&path, b"a\n");
    let mut run = Run::start(&file_config(&[&path], StartAt::Beginning), Arc::new(MemoryCursorStore::new()));
    assert_eq!(run.lines(1).await, ["a"]);
    append(&path, b"b\nunterminated");
    fs::rename(&path, dir.path().join("auth.log.1")).expect("rename");
    append(&path, b"c\n");
    assert_eq!(run.lines(3).await, ["b", "unterminated", "c"]);
    // The batch from the new file describes the new file from its start.
    let c = last_cursor(&run);
    assert_eq!(c.offset, 2);
    assert_eq!(c.ino, std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("meta")));
    run.no_more().await;
    run.stop().await;
}

#[tokio::test]
async fn copytruncate_starts_again_from_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.log");
    write_numbered(&path, 0..20);
    let mut run = Run::start(&file_config(&[&path], StartAt::Beginning), Arc::new(MemoryCursorStore::new()));
    assert_eq!(run.lines(20).await, numbered(0..20));
    fs::copy(&path, dir.path().join("app.log.1")).expect("copy");
    OpenOptions::new().write(true).open(&path).expect("open").set_len(0).expect("truncate");
    append(&path, b"after 1\nafter 2\n");
    assert_eq!(run.lines(2).await, ["after 1", "after 2"]);
    run.no_more().await;
    assert_eq!(run.stats().rotations, 1);
    run.stop().await;
}

#[tokio::test]
async fn copytruncate_then_longer_writes_is_still_seen_as_truncation() {
    // Truncation and the next writes can land between two looks at the file, leaving it
    // longer than the old offset: the bytes already read must be checked, not the size.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.log");
    append(&path, b"first short line\n");
    let mut run = Run::start(&file_config(&[&path], StartAt::Beginning), Arc::new(MemoryCursorStore::new()));
    assert_eq!(run.lines(1).await, ["first short line"]);
    let mut f = OpenOptions::new().write(true).truncate(true).open(&path).expect("open");
    f.write_all(b"a much longer line that replaces the old content\nand a second one\n").expect("write");
    drop(f);
    assert_eq!(run.lines(2).await, ["a much longer line that replaces the old content", "and a second one"]);
    run.no_more().await;
    run.stop().await;
}

#[tokio::test]
async fn glob_picks_up_files_created_later_from_their_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let existing = dir.path().join("a.log");
    append(&existing, b"old content\n");
    let pattern = dir.path().join("*.log");
    let mut config = file_config(&[&pattern], StartAt::End);
    config.files[0].exclude = vec!["**/skip-*".into()];
    let mut run = Run::start(&config, Arc::new(MemoryCursorStore::new()));
    let later = dir.path().join("b.log");
    append(&dir.path().join("skip-me.log"), b"excluded\n");
    append(&dir.path().join("other.txt"), b"not matched\n");
    append(&later, b"b one\nb two\n");
    let lines = run.lines(2).await;
    assert_eq!(lines, ["b one", "b two"]);
    assert_eq!(&*run.batches[0].lines[0].source, later.display().to_string());
    run.no_more().await;
    run.stop().await;
}

#[tokio::test]
async fn a_rotated_file_matching_the_glob_is_not_read_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.log");
    write_numbered(&path, 0..3);
    let pattern = dir.path().join("*.log");
    let mut run =
        Run::start(&file_config(&[&pattern], StartAt::Beginning), Arc::new(MemoryCursorStore::new()));
    assert_eq!(run.lines(3).await, numbered(0..3));
    // dateext-style rotation: the old file keeps matching the glob.
    fs::rename(&path, dir.path().join("app-2024.log")).expect("rename");
    write_numbered(&path, 3..5);
    assert_eq!(run.lines(2).await, numbered(3..5));
    run.no_more().await;
    run.stop().await;
}

#[tokio::test]
async fn restart_resumes_exactly_after_the_persisted_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.log");
    write_numbered(&path, 0..10);
    let mut config = file_config(&[&path], StartAt::Beginning);
    config.batch_lines = 3;
    let mut run = Run::start(&config, Arc::new(MemoryCursorStore::new()));
    assert_eq!(run.lines(10).await, numbered(0..10));
    // The node crashed after persisting only the second batch (lines 0..6).
    let second: Checkpoint = run.batches[1].checkpoint.clone().expect("checkpoint");
    assert_eq!(run.batches[1].lines.last().map(|l| l.text.as_str()), Some("line 5"));
    run.stop().await;
    let store = Arc::new(MemoryCursorStore::new());
    store.save(&second);
    write_numbered(&path, 10..12);
    // start_at = end must not matter: a saved cursor wins.
    let mut run = Run::start(&file_config(&[&path], StartAt::End), store);
    assert_eq!(run.lines(6).await, numbered(6..12));
    run.no_more().await;
    // And a clean stop/start carries on exactly.
    let store = run.stop().await;
    write_numbered(&path, 12..13);
    let mut run = Run::start(&config, store);
    assert_eq!(run.lines(1).await, numbered(12..13));
    run.no_more().await;
    run.stop().await;
}

#[tokio::test]
async fn a_replaced_file_is_read_from_its_start_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.log");
    write_numbered(&path, 0..5);
    let run = {
        let mut run =
            Run::start(&file_config(&[&path], StartAt::Beginning), Arc::new(MemoryCursorStore::new()));
        run.lines(5).await;
        run
    };
    let store = run.stop().await;
    // Deleted and recreated while stopped (the inode may well be reused: the
    // fingerprint tells the files apart).
    fs::remove_file(&path).expect("rm");
    append(&path, b"new file 1\nnew file 2\n");
    let mut run = Run::start(&file_config(&[&path], StartAt::End), store);
    assert_eq!(run.lines(2).await, ["new file 1", "new file 2"]);
    run.no_more().await;
    run.stop().await;
}

#[tokio::test]
async fn rotation_while_stopped_finishes_the_old_file_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.log");
    write_numbered(&path, 0..5);
    let mut run = Run::start(&file_config(&[&path], StartAt::Beginning), Arc::new(MemoryCursorStore::new()));
    run.lines(5).await;
    let store = run.stop().await;
    write_numbered(&path, 5..7);
    fs::rename(&path, dir.path().join("auth.log.1")).expect("rename");
    write_numbered(&path, 7..9);
    let mut run = Run::start(&file_config(&[&path], StartAt::End), store);
    assert_eq!(run.lines(4).await, numbered(5..9));
    run.no_more().await;
    run.stop().await;
}

#[tokio::test]
async fn a_file_truncated_while_stopped_is_read_from_its_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.log");
    write_numbered(&path, 0..50);
    let mut run = Run::start(&file_config(&[&path], StartAt::Beginning), Arc::new(MemoryCursorStore::new()));
    run.lines(50).await;
    let store = run.stop().await;
    OpenOptions::new().write(true).open(&path).expect("open").set_len(0).expect("truncate");
    write_numbered(&path, 0..2);
    let mut run = Run::start(&file_config(&[&path], StartAt::End), store);
    assert_eq!(run.lines(2).await, numbered(0..2));
    run.no_more().await;
    run.stop().await;
}

#[tokio::test]
async fn unreadable_file_is_warned_once_retried_then_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("auth.log");
    // Tests may run as root, where permissions do not stop a read: a directory at the
    // path is an unreadable "file" for any user.
    fs::create_dir(&path).expect("mkdir");
    let mut run = Run::start(&file_config(&[&path], StartAt::Beginning), Arc::new(MemoryCursorStore::new()));
    let deadline = tokio::time::Instant::now() + WAIT;
    while run.stats().read_errors == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no warning");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Several polls later it is still one warning, not one per poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(run.stats().read_errors, 1);
    fs::remove_dir(&path).expect("rmdir");
    append(&path, b"readable now\n");
    assert_eq!(run.lines(1).await, ["readable now"]);
    run.stop().await;
}

#[tokio::test]
async fn missing_literal_path_is_read_from_its_start_when_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("later.log");
    let mut run = Run::start(&file_config(&[&path], StartAt::End), Arc::new(MemoryCursorStore::new()));
    append(&path, b"born\n");
    assert_eq!(run.lines(1).await, ["born"]);
    run.stop().await;
}

#[tokio::test]
async fn backpressure_holds_reading_and_shutdown_is_prompt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.log");
    write_numbered(&path, 0..20_000);
    let mut config = file_config(&[&path], StartAt::Beginning);
    config.batch_lines = 100;
    let (tx, mut rx) = mpsc::channel(2);
    let shutdown = CancellationToken::new();
    let handle =
        ingest::spawn(&config, Arc::new(MemoryCursorStore::new()), tx, shutdown.clone()).expect("spawn");
    let first = tokio::time::timeout(WAIT, rx.recv()).await.expect("a batch").expect("open");
    assert_eq!(first.lines.len(), 100);
    // Nobody reads: the source is blocked on the full channel, not buffering the file.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // At most one read chunk (64 KiB: at most 9362 lines of 7 bytes) is held beyond the channel.
    let read = handle.stats()[0].snapshot().lines;
    assert!(read <= 300 + 65536 / 7, "read ahead without bound: {read}");
    shutdown.cancel();
    drop(rx);
    tokio::time::timeout(WAIT, handle.join()).await.expect("stops");
}
