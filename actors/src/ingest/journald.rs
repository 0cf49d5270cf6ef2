//! The systemd journal, read through `journalctl --follow --output=json`.
//!
//! A child process rather than libsystemd bindings: no C dependency, and journalctl
//! already handles journal rotation, vacuuming and file permissions. Each JSON entry
//! becomes a syslog-looking line the syslog parser understands:
//! `<ISO 8601 of __REALTIME_TIMESTAMP> <_HOSTNAME> <SYSLOG_IDENTIFIER>[<_PID>]: <MESSAGE>`
//! (e.g. `2024-05-01T10:00:00.123456+00:00 web1 sshd[812]: Failed password for ...`).
//!
//! Checkpoint: key `journald:<name>` (or `journald:<filters joined by ,>`), value the
//! entry's `__CURSOR` as UTF-8 bytes. On start with a saved cursor journalctl runs with
//! `--after-cursor=<cursor>`; without one, `--since=<since>` if configured, else
//! `start_at` (`end`: `--lines=0`, `beginning`: `--no-tail`, i.e. the whole journal).
//!
//! If journalctl is missing or exits, the error is logged with its stderr and it is
//! restarted after a backoff (1 s doubling to 60 s) from the last cursor handed over.

use super::config::{JournaldSource, StartAt};
use super::lines::{cut_to, now, Batcher, LineSplitter, SplitLine};
use super::stats::SourceStats;
use super::{send_all, Common, CursorStore};
use crate::event::{Checkpoint, LineBatch};
use serde_json::Value;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The most bytes of one JSON entry kept (larger entries are counted as errors).
const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;
const STDERR_TAIL: usize = 2048;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The checkpoint key of a journald source.
pub fn checkpoint_key(cfg: &JournaldSource) -> String {
    match &cfg.name {
        Some(n) => format!("journald:{n}"),
        None => format!("journald:{}", cfg.filters.join(",")),
    }
}

/// The saved cursor of `cfg`, if any (errors are logged and mean "none").
pub fn load_cursor(store: &dyn CursorStore, cfg: &JournaldSource, stats: &SourceStats) -> Option<String> {
    match store.load(&checkpoint_key(cfg)) {
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(c) if !c.is_empty() => Some(c),
            _ => {
                warn!(source = %stats.name, "saved journal cursor is unreadable; ignoring it");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            warn!(source = %stats.name, error = %e, "cannot load saved journal cursor");
            None
        }
    }
}

/// journalctl's arguments for `cfg`, resuming after `cursor` when given.
pub fn journalctl_args(cfg: &JournaldSource, cursor: Option<&str>) -> Vec<String> {
    let mut args = vec!["--follow".to_owned(), "--output=json".to_owned(), "--no-pager".to_owned()];
    match (cursor, &cfg.since, cfg.start_at) {
        // --no-tail: --follow alone would start 10 lines before the end.
        (Some(c), _, _) => args.extend([format!("--after-cursor={c}"), "--no-tail".to_owned()]),
        (None, Some(since), _) => args.extend([format!("--since={since}"), "--no-tail".to_owned()]),
        (None, None, StartAt::End) => args.push("--lines=0".to_owned()),
        (None, None, StartAt::Beginning) => args.push("--no-tail".to_owned()),
    }
    args.extend(cfg.filters.iter().cloned());
    args
}

/// Why a journal entry could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    /// Not a JSON object.
    #[error("journal entry is not a JSON object: {0}")]
    Json(String),
    /// No `MESSAGE` field (nothing to parse).
    #[error("journal entry has no MESSAGE")]
    NoMessage,
}

/// A journal entry rendered as a syslog line, with its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLine {
    /// `<timestamp> <host> <ident>[<pid>]: <message>`.
    pub text: String,
    /// `__CURSOR`, when present.
    pub cursor: Option<String>,
}

/// Renders one line of `journalctl --output=json`.
pub fn entry_to_line(json: &str) -> Result<JournalLine, EntryError> {
    let v: Value = serde_json::from_str(json).map_err(|e| EntryError::Json(e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| EntryError::Json("not an object".into()))?;
    let field = |k: &str| obj.get(k).and_then(field_text);
    let mut message = field("MESSAGE").ok_or(EntryError::NoMessage)?;
    while message.ends_with(['\n', '\r']) {
        message.pop();
    }
    let micros = field("__REALTIME_TIMESTAMP").and_then(|t| t.parse::<i64>().ok());
    let time = micros
        .and_then(chrono::DateTime::from_timestamp_micros)
        .or_else(|| chrono::DateTime::from_timestamp_millis(now().as_millis()))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false))
        .unwrap_or_default();
    let host = field("_HOSTNAME").unwrap_or_else(|| "localhost".to_owned());
    let ident = field("SYSLOG_IDENTIFIER").or_else(|| field("_COMM")).unwrap_or_else(|| "journal".to_owned());
    let text = match field("_PID").or_else(|| field("SYSLOG_PID")) {
        Some(pid) => format!("{time} {host} {ident}[{pid}]: {message}"),
        None => format!("{time} {host} {ident}: {message}"),
    };
    Ok(JournalLine { text, cursor: field("__CURSOR") })
}

/// A journal field's text: a string, a byte array (binary or non-UTF-8 data), or for a
/// field repeated in one entry (an array of those) its first value.
fn field_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            let bytes: Vec<u8> =
                items.iter().filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Array(items) => items.first().and_then(field_text),
        _ => None,
    }
}

/// Runs journalctl for `cfg` until shutdown, restarting it when it fails.
pub async fn run(
    cfg: JournaldSource,
    mut cursor: Option<String>,
    common: Common,
    tx: Sender<LineBatch>,
    shutdown: CancellationToken,
    stats: Arc<SourceStats>,
) {
    let key = checkpoint_key(&cfg);
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let outcome = run_once(&cfg, &key, &mut cursor, common, &tx, &shutdown, &stats).await;
        let productive = match outcome {
            RunEnd::Stop => return,
            RunEnd::Failed { produced } => produced,
        };
        SourceStats::bump(&stats.rotations);
        if productive || started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tx.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum RunEnd {
    Stop,
    Failed { produced: bool },
}

async fn run_once(
    cfg: &JournaldSource,
    key: &str,
    cursor: &mut Option<String>,
    common: Common,
    tx: &Sender<LineBatch>,
    shutdown: &CancellationToken,
    stats: &Arc<SourceStats>,
) -> RunEnd {
    let args = journalctl_args(cfg, cursor.as_deref());
    let mut child = match Command::new(&cfg.journalctl)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            SourceStats::bump(&stats.read_errors);
            warn!(source = %stats.name, command = %cfg.journalctl.display(), error = %e,
                "cannot run journalctl (is systemd installed? set `journalctl` to its path); retrying");
            return RunEnd::Failed { produced: false };
        }
    };
    info!(source = %stats.name, ?args, "reading the journal");
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return RunEnd::Failed { produced: false };
    };
    let source: Arc<str> = Arc::from("journald");
    let mut batcher: Batcher<String> =
        Batcher::new(source, Arc::from(cfg.log_type.as_str()), common.batch_lines, stats.clone());
    let ck = |c: &String| Some(Checkpoint { key: key.to_owned(), value: c.as_bytes().to_vec() });
    let mut splitter = LineSplitter::new(MAX_ENTRY_BYTES, 0);
    let mut buf = vec![0u8; 64 * 1024];
    let mut err_buf = vec![0u8; 1024];
    let mut err_tail: Vec<u8> = Vec::new();
    let mut stderr_open = true;
    let mut lines: Vec<SplitLine> = Vec::new();
    let mut produced = false;
    loop {
        let n = tokio::select! {
            biased;
            () = shutdown.cancelled() => return RunEnd::Stop,
            r = stdout.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            r = stderr.read(&mut err_buf), if stderr_open => {
                match r {
                    Ok(0) | Err(_) => stderr_open = false,
                    Ok(n) => {
                        err_tail.extend_from_slice(&err_buf[..n]);
                        let excess = err_tail.len().saturating_sub(STDERR_TAIL);
                        err_tail.drain(..excess);
                    }
                }
                continue;
            }
        };
        splitter.push(&buf[..n], &mut lines);
        for l in lines.drain(..) {
            if l.truncated {
                SourceStats::bump(&stats.read_errors);
                debug!(source = %stats.name, "journal entry too large; skipped");
                continue;
            }
            match entry_to_line(&l.text) {
                Ok(JournalLine { mut text, cursor: c }) => {
                    let truncated = cut_to(&mut text, common.max_line_bytes);
                    let pos = c.clone().or_else(|| cursor.clone()).unwrap_or_default();
                    if let Some(c) = c {
                        *cursor = Some(c);
                    }
                    batcher.add(text, pos, truncated, &ck);
                    produced = true;
                }
                Err(EntryError::NoMessage) => {}
                Err(e) => {
                    SourceStats::bump(&stats.read_errors);
                    debug!(source = %stats.name, error = %e, "undecodable journal entry");
                }
            }
        }
        batcher.close(&ck);
        if !send_all(tx, batcher.take_ready(), shutdown).await {
            return RunEnd::Stop;
        }
    }
    // stdout closed: journalctl is exiting. Collect what it said and why it ended.
    if stderr_open {
        let rest = tokio::time::timeout(Duration::from_secs(1), async {
            let mut rest = Vec::new();
            let _ = (&mut stderr).take(STDERR_TAIL as u64).read_to_end(&mut rest).await;
            rest
        })
        .await
        .unwrap_or_default();
        err_tail.extend_from_slice(&rest);
    }
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    let status = match status {
        Ok(Ok(s)) => s.to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => {
            let _ = child.kill().await;
            "did not exit after closing its output".to_owned()
        }
    };
    SourceStats::bump(&stats.read_errors);
    warn!(source = %stats.name, %status, stderr = %String::from_utf8_lossy(&err_tail).trim(),
        "journalctl stopped; restarting it");
    RunEnd::Failed { produced }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_journal_entry_as_syslog() {
        let json = r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1714557600123456","_HOSTNAME":"web1","SYSLOG_IDENTIFIER":"sshd","_PID":"812","MESSAGE":"Failed password for root from 192.0.2.1 port 22 ssh2"}"#;
        let l = entry_to_line(json).expect("entry");
        assert_eq!(l.text, "2024-05-01T10:00:00.123456+00:00 web1 sshd[812]: Failed password for root from 192.0.2.1 port 22 ssh2");
        assert_eq!(l.cursor.as_deref(), Some("s=1;i=2"));
    }

    #[test]
    fn byte_array_messages_and_missing_fields() {
        let json = r#"{"__REALTIME_TIMESTAMP":"0","MESSAGE":[104,105,255,10],"_COMM":"app"}"#;
        let l = entry_to_line(json).expect("entry");
        assert_eq!(l.text, "1970-01-01T00:00:00.000000+00:00 localhost app: hi\u{fffd}");
        assert_eq!(entry_to_line(r#"{"A":"b"}"#), Err(EntryError::NoMessage));
        assert!(entry_to_line("[1]").is_err());
        assert!(entry_to_line("{").is_err());
    }

    #[test]
    fn args_follow_the_rules() {
        let mut cfg = JournaldSource {
            filters: vec!["_SYSTEMD_UNIT=ssh.service".into()],
            log_type: "syslog".into(),
            start_at: StartAt::End,
            since: None,
            journalctl: "journalctl".into(),
            name: None,
        };
        assert_eq!(journalctl_args(&cfg, None)[3..], ["--lines=0", "_SYSTEMD_UNIT=ssh.service"]);
        assert_eq!(
            journalctl_args(&cfg, Some("c"))[3..],
            ["--after-cursor=c", "--no-tail", "_SYSTEMD_UNIT=ssh.service"]
        );
        cfg.since = Some("-1h".into());
        assert_eq!(journalctl_args(&cfg, None)[3..5], ["--since=-1h", "--no-tail"]);
        assert_eq!(checkpoint_key(&cfg), "journald:_SYSTEMD_UNIT=ssh.service");
    }
}
