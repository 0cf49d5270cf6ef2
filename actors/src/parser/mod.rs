//! Log parsers: turn a [`RawLine`] into an [`Event`] with CrowdSec-style fields.
//!
//! Parsers are YAML files of the hub, `parsers/<stage>/<name>.yaml`. Stages run in
//! alphabetical order (`s00-raw` frames syslog, `s01-parse` recognises a program's
//! messages, `s02-enrich` parses timestamps, validates addresses, splits URLs); a line
//! that no parser of a stage matches is a [`ParseMiss`]. The format is documented with
//! the shipped files in `hub/parsers/README.md`; in short:
//!
//! ```yaml
//! name: palisade/sshd-logs          # unique; metrics and `explain` use it
//! description: OpenSSH server
//! filter: { program: [sshd, sshd-session] }   # small declarative matcher, not CEL
//! onsuccess: next_stage             # stop the stage here when matched (default: continue)
//! pattern_syntax:                   # local named sub-patterns
//!   SSHD_USER: '\S*'
//! nodes:                            # first matching node wins
//!   - name: failed-auth
//!     apply_on: message             # line | meta.x | parsed.x | x (= parsed.x); default message
//!     pattern: '^Failed \S+ for %{SSHD_USER:user} from %{IP:source_ip}'
//!     statics:
//!       - { meta: log_type, value: ssh_failed-auth }
//!       - { meta: target_user, capture: user }
//!     nodes: [...]                  # optional refinements, first match wins
//! statics:                          # applied when any node matched
//!   - { meta: service, value: ssh }
//! ```
//!
//! Everything is compiled at load: `%{NAME}` references are expanded (recursively,
//! cycles refused) from the built-in library (`patterns.yaml` beside this file) and
//! `pattern_syntax`; regexes use the `regex` crate, so matching is linear in the line
//! whatever an attacker writes in it. On the hot path a line meets only the parsers its
//! program is indexed to, and a node anchored on literals (`^Failed `) is skipped with
//! a `starts_with` before its regex runs.

mod config;
mod engine;
mod explain;
mod load;
mod methods;
mod patterns;
mod stepper;
mod timestamp;

pub use explain::{ExplainResult, Explanation, FieldValue, NodeTrace, ParserTrace, StageTrace};

use crate::event::{Event, Fields, RawLine};
use crate::hub::{HubError, HubFile};
use engine::{NoTrace, Stage, StageFailure, Work};
use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// The stage whose matching parser names the event (`Event::parser`).
const PROGRAM_STAGE: &str = "s01-parse";

/// All parser stages, compiled.
pub struct Parsers {
    stages: Vec<Stage>,
}

/// A line no parser could make an event of. It still owns the line, so the caller can
/// count it (per stage, per log type) and log or drop it without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMiss {
    /// The stage that failed, e.g. `s01-parse`.
    pub stage: Arc<str>,
    /// Why.
    pub reason: MissReason,
    /// The line.
    pub line: RawLine,
}

impl ParseMiss {
    /// The log type of the line's source (`syslog`, `nginx`...).
    pub fn log_type(&self) -> &str {
        &self.line.log_type
    }
}

/// Why a stage let a line go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissReason {
    /// No parser of the stage applies to this kind of line (e.g. a program without a
    /// parser): usually not worth an alarm.
    NoParser,
    /// Parsers applied but none of their patterns matched: a format the parsers do not
    /// know yet.
    NoMatch,
    /// The line was recognised but is unusable, e.g. its source IP is not an address.
    Rejected(String),
}

impl fmt::Display for MissReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissReason::NoParser => f.write_str("no parser applies to this line"),
            MissReason::NoMatch => f.write_str("no parser's pattern matched"),
            MissReason::Rejected(r) => f.write_str(r),
        }
    }
}

impl fmt::Display for ParseMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.reason)
    }
}

impl From<StageFailure> for MissReason {
    fn from(f: StageFailure) -> Self {
        match f {
            StageFailure::NoParser => MissReason::NoParser,
            StageFailure::NoMatch => MissReason::NoMatch,
            StageFailure::Rejected(r) => MissReason::Rejected(r),
        }
    }
}

/// One parser, for `palisade hub list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParserInfo {
    /// `palisade/sshd-logs`.
    pub name: String,
    /// `s01-parse`.
    pub stage: String,
    /// What it parses.
    pub description: String,
    /// Its file, relative to the hub root.
    pub file: String,
}

impl Parsers {
    /// Compiles every file whose path starts with `parsers/` (e.g.
    /// `parsers/s01-parse/sshd.yaml`); the stage is the directory under `parsers/`, and
    /// stages run in alphabetical order; within a stage, files run in path order and
    /// documents in file order. `parsers/patterns.yaml` and `parsers/patterns/*.yaml`
    /// add global named patterns. Other files are ignored.
    ///
    /// Broken YAML, an unknown key, an unknown pattern or a bad regex is a [`HubError`]
    /// with the file, the 1-based line and the reason.
    pub fn load(files: &[HubFile]) -> Result<Parsers, HubError> {
        Ok(Parsers { stages: load::load(files)? })
    }

    /// Runs the stages over a line: the event, or the miss saying which stage failed.
    pub fn parse(&self, line: RawLine) -> Result<Event, ParseMiss> {
        self.parse_reusing(line, Fields::new(), Fields::new())
    }

    /// [`Parsers::parse`] into the buffers of `meta` and `parsed`, which are cleared
    /// first: a caller that parses line after line passes back the maps of the event it
    /// is done with, and parsing allocates nothing for them once they are large enough.
    pub fn parse_reusing(
        &self,
        line: RawLine,
        mut meta: Fields,
        mut parsed: Fields,
    ) -> Result<Event, ParseMiss> {
        meta.clear();
        parsed.clear();
        let mut w = Work::with_fields(line, meta, parsed);
        for stage in &self.stages {
            if let Err(failure) = stage.run(&mut w, &mut NoTrace, &*stage.name == PROGRAM_STAGE) {
                return Err(ParseMiss { stage: stage.name.clone(), reason: failure.into(), line: w.line });
            }
        }
        Ok(finish(w))
    }

    /// What each stage did with `line`: the parsers tried, skipped (and why), the nodes
    /// tried and matched, the fields set, and the result.
    pub fn explain(&self, line: &RawLine) -> Explanation {
        let mut w = Work::new(line.clone());
        let mut tracer = explain::ExplainTracer::default();
        let mut missed = None;
        for stage in &self.stages {
            if let Err(failure) = stage.run(&mut w, &mut tracer, &*stage.name == PROGRAM_STAGE) {
                missed = Some(ExplainResult::Missed {
                    stage: stage.name.to_string(),
                    reason: MissReason::from(failure).to_string(),
                });
                break;
            }
        }
        let result = match missed {
            Some(m) => m,
            None => {
                let event = finish(w);
                let fields = |f: &crate::event::Fields| {
                    f.iter().map(|(k, v)| FieldValue { field: k.to_owned(), value: v.to_owned() }).collect()
                };
                ExplainResult::Parsed {
                    parser: event.parser.to_string(),
                    time: timestamp::format_rfc3339(event.time),
                    meta: fields(&event.meta),
                    parsed: fields(&event.parsed),
                }
            }
        };
        Explanation {
            line: line.text.clone(),
            log_type: line.log_type.to_string(),
            stages: tracer.stages,
            result,
        }
    }

    /// Every parser, in stage and file order.
    pub fn list(&self) -> Vec<ParserInfo> {
        self.stages
            .iter()
            .flat_map(|s| s.parsers.iter())
            .map(|p| ParserInfo {
                name: p.name.to_string(),
                stage: p.stage.to_string(),
                description: p.description.clone(),
                file: p.file.clone(),
            })
            .collect()
    }

    /// The stage names, in the order they run.
    pub fn stages(&self) -> Vec<&str> {
        self.stages.iter().map(|s| &*s.name).collect()
    }
}

fn finish(w: Work) -> Event {
    Event {
        time: w.time.unwrap_or(w.line.received_at),
        meta: w.meta,
        parsed: w.parsed,
        parser: w.parser.unwrap_or_else(|| Arc::from("")),
        line: w.line,
    }
}

#[cfg(test)]
mod tests;
