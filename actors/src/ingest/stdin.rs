//! Lines from standard input (or any [`AsyncRead`]), until end of file.
//!
//! Used for one-shot runs (`palisade replay -`, `cat log | palisade ...`). No checkpoint:
//! a pipe cannot be re-read. The unterminated last line is emitted at EOF.

use super::lines::{Batcher, LineSplitter};
use super::stats::SourceStats;
use super::{send_all, Common};
use crate::event::LineBatch;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Reads `reader` to its end (or until shutdown), sending batches of `log_type` lines
/// labelled `stdin`.
pub async fn run_reader<R: AsyncRead + Unpin>(
    mut reader: R,
    log_type: &str,
    common: Common,
    tx: Sender<LineBatch>,
    shutdown: CancellationToken,
    stats: Arc<SourceStats>,
) {
    let ck = |_: &u64| None;
    let mut batcher =
        Batcher::new(Arc::from("stdin"), Arc::from(log_type), common.batch_lines, stats.clone());
    let mut splitter = LineSplitter::new(common.max_line_bytes, 0);
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = Vec::new();
    loop {
        let read = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = tx.closed() => break,
            r = reader.read(&mut buf) => r,
        };
        let eof = match read {
            Ok(0) => true,
            Ok(n) => {
                splitter.push(&buf[..n], &mut lines);
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                SourceStats::bump(&stats.read_errors);
                warn!(source = %stats.name, error = %e, "cannot read standard input");
                true
            }
        };
        if eof {
            splitter.flush(&mut lines);
        }
        for l in lines.drain(..) {
            batcher.add(l.text, l.end, l.truncated, &ck);
        }
        batcher.close(&ck);
        if !send_all(&tx, batcher.take_ready(), &shutdown).await || eof {
            return;
        }
    }
}
