//! `palisade explain`: what every stage, parser and node did with one line.

use super::engine::{Outcome, Parser, Tracer};
use serde::Serialize;
use std::fmt;

/// The story of one line through the parsers. `Display` is for people, `Serialize`
/// for `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The line's text.
    pub line: String,
    /// The log type its source is configured with.
    pub log_type: String,
    /// The stages the line reached, in order.
    pub stages: Vec<StageTrace>,
    /// How it ended.
    pub result: ExplainResult,
}

/// How a line ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExplainResult {
    /// Every stage passed.
    Parsed {
        /// The parser named on the event (the `s01-parse` one).
        parser: String,
        /// The event's time, RFC 3339.
        time: String,
        /// The event's meta fields, in the order they were set.
        meta: Vec<FieldValue>,
        /// The event's parsed fields.
        parsed: Vec<FieldValue>,
    },
    /// The line stopped at `stage`.
    Missed {
        /// The stage that failed.
        stage: String,
        /// Why.
        reason: String,
    },
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageTrace {
    /// `s00-raw`, `s01-parse`...
    pub stage: String,
    /// Every parser of the stage that was considered, in order.
    pub parsers: Vec<ParserTrace>,
    /// Whether a parser matched.
    pub matched: bool,
}

/// One parser in a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParserTrace {
    /// Its name.
    pub parser: String,
    /// Its file.
    pub file: String,
    /// Why its filter turned the line away; `None` when the filter accepted it.
    pub skipped: Option<String>,
    /// Its nodes that were tried, depth first.
    pub nodes: Vec<NodeTrace>,
    /// Fields its file-level statics set.
    pub set: Vec<FieldValue>,
    /// `matched`, `no match`, `rejected: ...` or `skipped`.
    pub outcome: String,
}

/// One node that was tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeTrace {
    /// Its name or position (`nodes[2]/nodes[0]`).
    pub node: String,
    /// 0 for top-level nodes.
    pub depth: usize,
    /// `matched`, or why not.
    pub outcome: String,
    /// Fields it set (captures, statics).
    pub set: Vec<FieldValue>,
}

/// A field and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldValue {
    /// `meta.log_type`, `parsed.program`, `time`...
    pub field: String,
    /// The value.
    pub value: String,
}

/// Builds the trace as the runtime reports its decisions.
#[derive(Default)]
pub(crate) struct ExplainTracer {
    pub stages: Vec<StageTrace>,
    /// Indices of the nodes of the current parser that have begun and not ended.
    open: Vec<usize>,
}

impl ExplainTracer {
    fn parser_mut(&mut self) -> Option<&mut ParserTrace> {
        self.stages.last_mut()?.parsers.last_mut()
    }
}

impl Tracer for ExplainTracer {
    const ON: bool = true;

    fn stage(&mut self, name: &str) {
        self.stages.push(StageTrace { stage: name.to_owned(), parsers: Vec::new(), matched: false });
    }

    fn stage_end(&mut self, matched: bool) {
        if let Some(s) = self.stages.last_mut() {
            s.matched = matched;
        }
    }

    fn parser(&mut self, parser: &Parser, filter_rejection: Option<String>) {
        self.open.clear();
        if let Some(s) = self.stages.last_mut() {
            s.parsers.push(ParserTrace {
                parser: parser.name.to_string(),
                file: parser.file.clone(),
                outcome: if filter_rejection.is_some() { "skipped".into() } else { String::new() },
                skipped: filter_rejection,
                nodes: Vec::new(),
                set: Vec::new(),
            });
        }
    }

    fn parser_end(&mut self, outcome: &Outcome) {
        if let Some(p) = self.parser_mut() {
            p.outcome = match outcome {
                Outcome::Matched => "matched".into(),
                Outcome::NoMatch => "no match".into(),
                Outcome::Reject(r) => format!("rejected: {r}"),
            };
        }
    }

    fn node_begin(&mut self, label: &str, depth: usize) {
        let Some(p) = self.stages.last_mut().and_then(|s| s.parsers.last_mut()) else {
            return;
        };
        p.nodes.push(NodeTrace { node: label.to_owned(), depth, outcome: String::new(), set: Vec::new() });
        let idx = p.nodes.len() - 1;
        self.open.push(idx);
    }

    fn node_end(&mut self, outcome: String) {
        let Some(idx) = self.open.pop() else { return };
        if let Some(n) = self.parser_mut().and_then(|p| p.nodes.get_mut(idx)) {
            n.outcome = outcome;
        }
    }

    fn set(&mut self, field: String, value: &str) {
        let open = self.open.last().copied();
        let Some(p) = self.parser_mut() else { return };
        let fv = FieldValue { field, value: value.to_owned() };
        match open.and_then(|i| p.nodes.get_mut(i)) {
            Some(n) => n.set.push(fv),
            None => p.set.push(fv),
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "line:     {}", self.line)?;
        writeln!(f, "log type: {}", self.log_type)?;
        for stage in &self.stages {
            writeln!(f, "stage {} ({})", stage.stage, if stage.matched { "passed" } else { "FAILED" })?;
            for p in &stage.parsers {
                let mark = match p.outcome.as_str() {
                    "matched" => '+',
                    "skipped" => '.',
                    _ => 'x',
                };
                match &p.skipped {
                    Some(why) => writeln!(f, "  {mark} {} skipped: {why}", p.parser)?,
                    None => writeln!(f, "  {mark} {} [{}]: {}", p.parser, p.file, p.outcome)?,
                }
                for n in &p.nodes {
                    let indent = "  ".repeat(n.depth + 2);
                    writeln!(f, "  {indent}node {}: {}", n.node, n.outcome)?;
                    for s in &n.set {
                        writeln!(f, "  {indent}  {} = {:?}", s.field, s.value)?;
                    }
                }
                for s in &p.set {
                    writeln!(f, "      {} = {:?}", s.field, s.value)?;
                }
            }
        }
        match &self.result {
            ExplainResult::Parsed { parser, time, meta, parsed } => {
                writeln!(f, "result: parsed by {parser}, time {time}")?;
                for m in meta {
                    writeln!(f, "  meta.{} = {:?}", m.field, m.value)?;
                }
                for p in parsed {
                    writeln!(f, "  parsed.{} = {:?}", p.field, p.value)?;
                }
            }
            ExplainResult::Missed { stage, reason } => writeln!(f, "result: MISSED at {stage}: {reason}")?,
        }
        Ok(())
    }
}
