//! `palisade replay` and `palisade explain`: the detection engine over files, with the
//! time taken from the log lines, so the result is what live tailing would have done.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use palisade_actors::decision::Allowlist;
use palisade_actors::decision::{DecisionEngine, StoredDecisions, Verdict};
use palisade_actors::event::{Overflow, RawLine};
use palisade_actors::ingest::{LineSplitter, SplitLine};
use palisade_actors::pipeline::Pipeline;
use palisade_proto::{Decision, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use crate::cli::{ExplainArgs, ReplayArgs};
use crate::config::NodeConfig;

/// Reads a stream in chunks and cuts it into lines with the same rules as the live
/// sources (lines cut at `max` bytes, the rest skipped; invalid UTF-8 replaced), so a
/// replay sees exactly the lines tailing would have seen.
pub struct Lines<R> {
    reader: R,
    splitter: LineSplitter,
    ready: std::collections::VecDeque<SplitLine>,
    chunk: Vec<u8>,
    done: bool,
    /// Lines that were cut.
    pub cut: u64,
    /// Bytes read so far.
    pub consumed: u64,
}

impl<R: Read> Lines<R> {
    /// Lines of `reader`, cut at `max` bytes.
    pub fn new(reader: R, max: usize) -> Self {
        Lines {
            reader,
            splitter: LineSplitter::new(max, 0),
            ready: std::collections::VecDeque::new(),
            chunk: vec![0; 1 << 16],
            done: false,
            cut: 0,
            consumed: 0,
        }
    }

    /// The next line, or `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                self.cut += u64::from(line.truncated);
                return Ok(Some(line.text));
            }
            if self.done {
                return Ok(None);
            }
            let n = match self.reader.read(&mut self.chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.consumed += n as u64;
            let mut out = Vec::new();
            if n == 0 {
                self.done = true;
                self.splitter.flush(&mut out);
            } else {
                self.splitter.push(&self.chunk[..n], &mut out);
            }
            self.ready.extend(out);
        }
    }
}

fn open(path: &Path) -> Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(file))
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ReplayRecord<'a> {
    Alert {
        scenario: &'a str,
        value: &'a str,
        events_count: u32,
        first_at: i64,
        last_at: i64,
        remediation: bool,
    },
    Decision {
        #[serde(flatten)]
        decision: &'a Decision,
        duration_secs: u64,
    },
    Summary {
        files: usize,
        lines: u64,
        parsed: u64,
        unparsed: u64,
        cut: u64,
        alerts: usize,
        decisions: usize,
        seconds: f64,
    },
}

/// Runs `palisade replay`.
pub fn replay(config: &NodeConfig, args: &ReplayArgs) -> Result<ExitCode> {
    let hub = crate::hub::load(config.hub_dir.as_deref())?;
    let mut pipeline = Pipeline::new(hub.parsers.clone(), hub.scenarios.clone());
    let policy = config.decisions.compile()?;
    let allowlist = Allowlist::new(config.allowlist.compile(&crate::run::host_addresses())?);
    let mut engine = DecisionEngine::new(policy, allowlist, StoredDecisions::default(), Timestamp(0), 0);
    let log_type: Arc<str> = Arc::from(args.log_type.label());
    let received_at = crate::run::wall_clock();
    let max_line = config.ingest.max_line_bytes;

    let total: u64 = args.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let progress = if !args.no_progress && !args.json && std::io::stderr().is_terminal() && total > 0 {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };

    let started = Instant::now();
    let mut alerts: Vec<Overflow> = Vec::new();
    let mut decisions: Vec<Decision> = Vec::new();
    let mut cut = 0;
    let mut next_tick = i64::MIN;
    let mut base = 0u64;
    let mut out = Vec::new();
    for path in &args.files {
        let reader = open(path)?;
        let source: Arc<str> = Arc::from(path.display().to_string());
        let mut lines = Lines::new(reader, max_line);
        let mut n = 0u64;
        while let Some(text) = lines.next_line().with_context(|| format!("reading {}", path.display()))? {
            pipeline.process(
                RawLine { source: source.clone(), log_type: log_type.clone(), text, received_at },
                &mut out,
            );
            for o in out.drain(..) {
                // Time machine: the decision is made "when" the overflow happened.
                let now = o.last_at;
                if now.0 >= next_tick {
                    engine.tick(now);
                    next_tick = now.0 + 1000;
                }
                match engine.on_overflow(&o, now) {
                    Verdict::Created(d) | Verdict::Extended { decision: d, .. } => decisions.push(d),
                    _ => {}
                }
                alerts.push(o);
            }
            n += 1;
            if n.is_multiple_of(65536) {
                if let Some(bar) = &progress {
                    bar.set_position(base + lines.consumed);
                }
            }
        }
        base += lines.consumed;
        cut += lines.cut;
        let _ = engine.take_changes();
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = pipeline.stats();
    let parsed: u64 = stats.parsed.values().sum();
    let unparsed: u64 = stats.unparsed.values().sum();

    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if args.json {
        for o in &alerts {
            let record = ReplayRecord::Alert {
                scenario: &o.scenario,
                value: &o.value,
                events_count: o.events_count,
                first_at: o.first_at.0,
                last_at: o.last_at.0,
                remediation: o.remediation.is_some(),
            };
            writeln!(w, "{}", serde_json::to_string(&record)?)?;
        }
        for d in &decisions {
            let record =
                ReplayRecord::Decision { decision: d, duration_secs: d.until.since(d.created_at).as_secs() };
            writeln!(w, "{}", serde_json::to_string(&record)?)?;
        }
        let summary = ReplayRecord::Summary {
            files: args.files.len(),
            lines: stats.lines,
            parsed,
            unparsed,
            cut,
            alerts: alerts.len(),
            decisions: decisions.len(),
            seconds,
        };
        writeln!(w, "{}", serde_json::to_string(&summary)?)?;
    } else {
        let rate = if seconds > 0.0 { stats.lines as f64 / seconds } else { 0.0 };
        writeln!(
            w,
            "Replayed {} lines from {} file(s) in {:.2} s ({:.0} lines/s): {} parsed, {} unparsed{}.\n",
            stats.lines,
            args.files.len(),
            seconds,
            rate,
            parsed,
            unparsed,
            if cut > 0 { format!(", {cut} cut at {max_line} bytes") } else { String::new() }
        )?;
        let mut by_scenario: BTreeMap<&str, (usize, BTreeSet<&str>)> = BTreeMap::new();
        for o in &alerts {
            let entry = by_scenario.entry(&o.scenario).or_default();
            entry.0 += 1;
            entry.1.insert(&o.value);
        }
        let rows: Vec<Vec<String>> = by_scenario
            .iter()
            .map(|(s, (n, ips))| vec![(*s).to_owned(), n.to_string(), ips.len().to_string()])
            .collect();
        writeln!(w, "Alerts by scenario")?;
        crate::output::table(&mut w, &["SCENARIO", "ALERTS", "SOURCES"], &rows)?;
        writeln!(w, "\nDecisions ({})", decisions.len())?;
        let rows: Vec<Vec<String>> = decisions
            .iter()
            .map(|d| {
                vec![
                    d.value.to_string(),
                    d.scenario.to_string(),
                    d.kind.to_string(),
                    palisade_proto::time::go_duration(d.until.since(d.created_at)),
                    crate::output::datetime(d.created_at),
                ]
            })
            .collect();
        crate::output::table(&mut w, &["VALUE", "SCENARIO", "TYPE", "DURATION", "AT (LOG TIME)"], &rows)?;
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `palisade explain`.
pub fn explain(config: &NodeConfig, args: &ExplainArgs) -> Result<ExitCode> {
    let hub = crate::hub::load(config.hub_dir.as_deref())?;
    let path = args.file.clone().unwrap_or_else(|| "-".into());
    let reader = open(&path)?;
    let mut lines = Lines::new(reader, config.ingest.max_line_bytes);
    let log_type: Arc<str> = Arc::from(args.log_type.label());
    let source: Arc<str> = Arc::from(path.display().to_string());
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let mut number = 0u64;
    while let Some(text) = lines.next_line()? {
        number += 1;
        let line = RawLine {
            source: source.clone(),
            log_type: log_type.clone(),
            text,
            received_at: crate::run::wall_clock(),
        };
        let explanation = hub.parsers.explain(&line);
        if args.json {
            writeln!(w, "{}", serde_json::to_string(&explanation)?)?;
        } else {
            writeln!(w, "line {number}: {}\n{explanation}\n", line.text)?;
        }
    }
    w.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], max: usize) -> (Vec<String>, u64) {
        let mut lines = Lines::new(input, max);
        let mut out = Vec::new();
        while let Some(l) = lines.next_line().unwrap() {
            out.push(l);
        }
        (out, lines.cut)
    }

    #[test]
    fn lines_are_cut_like_the_live_sources_cut_them() {
        let input = b"short\r\nthis line is far too long\nok\n\xff\xfebin\nlast-without-newline";
        let (lines, cut) = read_all(&input[..], 10);
        assert_eq!(lines, vec!["short", "this line ", "ok", "\u{fffd}\u{fffd}bin", "last-witho"]);
        assert_eq!(cut, 2);
        assert_eq!(read_all(b"", 10), (vec![], 0));
    }
}
