//! The compiled form of the parser files and the code that runs a line through it.
//!
//! One generic runtime serves both the hot path ([`NoTrace`], every tracing call
//! compiled away) and `palisade explain` (a tracer that records every decision), so the
//! explanation can never disagree with what parsing actually does.

use super::config::{OnSuccess, RawField};
use super::methods::Method;
use super::stepper::{self, Slots, Stepper};
use crate::event::{Fields, RawLine};
use palisade_proto::Timestamp;
use regex::bytes::{CaptureLocations, Regex};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// A line being parsed: the raw line and what the stages have set so far.
pub(crate) struct Work {
    pub line: RawLine,
    pub meta: Fields,
    pub parsed: Fields,
    /// Set by `parse_timestamp`; `received_at` when nothing parsed.
    pub time: Option<Timestamp>,
    /// The parser that matched in `s01-parse` (or, without such a stage, the first
    /// parser that matched anywhere).
    pub parser: Option<Arc<str>>,
}

impl Work {
    pub(crate) fn new(line: RawLine) -> Self {
        Self::with_fields(line, Fields::new(), Fields::new())
    }

    /// A line to parse into `meta` and `parsed`, empty maps whose buffers a previous
    /// event no longer needs (see [`Parsers::parse_reusing`](super::Parsers::parse_reusing)).
    pub(crate) fn with_fields(line: RawLine, mut meta: Fields, mut parsed: Fields) -> Self {
        // Room for what the shipped parsers set, so the field buffers are allocated once:
        // `parsed` holds the line again (`message`) and the request target split up (its
        // captures share the message's bytes); `meta` a few short values, the path and
        // the user agent. Over-reserving a little costs nothing measurable; growing
        // would copy.
        let len = line.text.len();
        parsed.reserve(24, 2 * len + 64);
        meta.reserve(12, len + 64);
        Work { line, meta, parsed, time: None, parser: None }
    }

    /// The value of a field, if set.
    pub(crate) fn get(&self, field: &FieldRef) -> Option<&str> {
        match field {
            FieldRef::Line => Some(&self.line.text),
            FieldRef::Meta(k) => lookup(&self.meta, k),
            FieldRef::Parsed(k) => lookup(&self.parsed, k),
        }
    }

    /// Sets a field; the raw line itself is never rewritten (load refuses such targets).
    pub(crate) fn set(&mut self, field: &FieldRef, value: &str) {
        match field {
            FieldRef::Line => {}
            FieldRef::Meta(k) => self.meta.set_interned(k, value),
            FieldRef::Parsed(k) => self.parsed.set_interned(k, value),
        }
    }

    /// Sets parsed `key` to bytes `range` of `src`'s value (a capture), copying them
    /// straight from where they are: the line, a meta value, or the parsed buffer itself.
    /// Nothing is set when `src` is unset or the range is not a `str` slice of it.
    pub(crate) fn set_parsed_slice<T: Tracer>(
        &mut self,
        src: &FieldRef,
        key: &'static str,
        range: Range<usize>,
        t: &mut T,
    ) {
        let value = match src {
            FieldRef::Line => self.line.text.get(range),
            FieldRef::Meta(k) => lookup(&self.meta, k).and_then(|v| v.get(range)),
            FieldRef::Parsed(k) => {
                // Same map: the new entry shares the bytes, by offset.
                let Some(value) = lookup(&self.parsed, k).and_then(|v| v.get(range.clone())) else {
                    return;
                };
                if T::ON {
                    t.set(format!("parsed.{key}"), value);
                }
                let len = value.len();
                if let Some(base) = self.parsed.offset_of_interned(k) {
                    let start = base + range.start;
                    self.parsed.set_from_self(key, start..start + len);
                }
                return;
            }
        };
        if let Some(value) = value {
            if T::ON {
                t.set(format!("parsed.{key}"), value);
            }
            self.parsed.set_interned(key, value);
        }
    }
}

/// The value of an interned field name in `fields`, found by address.
///
/// Every key the engine stores is interned at load (captures, static targets, method
/// outputs; see [`intern_field_name`](crate::event::intern_field_name)), so within one
/// parse two keys are the same name exactly when they are the same string. Comparing
/// addresses instead of text skips a `memcmp` per entry, and field lookups run a few
/// dozen times per line.
pub(crate) fn lookup<'a>(fields: &'a Fields, key: &'static str) -> Option<&'a str> {
    fields.get_interned(key)
}

/// Where a node reads its input or a static writes its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldRef {
    /// The raw line's text.
    Line,
    /// An interned meta field name.
    Meta(&'static str),
    /// An interned parsed field name.
    Parsed(&'static str),
}

impl std::fmt::Display for FieldRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldRef::Line => f.write_str("line"),
            FieldRef::Meta(k) => write!(f, "meta.{k}"),
            FieldRef::Parsed(k) => write!(f, "parsed.{k}"),
        }
    }
}

/// What a parser or node did with a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Matched,
    NoMatch,
    /// The line is recognised but unusable (e.g. its source IP is not an address): the
    /// whole parse stops with this reason.
    Reject(String),
}

/// Receives every decision the runtime takes. `ON == false` compiles tracing away.
pub(crate) trait Tracer {
    const ON: bool;
    fn stage(&mut self, _name: &str) {}
    fn stage_end(&mut self, _matched: bool) {}
    fn parser(&mut self, _parser: &Parser, _filter_rejection: Option<String>) {}
    fn parser_end(&mut self, _outcome: &Outcome) {}
    fn node_begin(&mut self, _label: &str, _depth: usize) {}
    fn node_end(&mut self, _outcome: String) {}
    fn set(&mut self, _field: String, _value: &str) {}
}

/// The hot path's tracer: does nothing.
pub(crate) struct NoTrace;

impl Tracer for NoTrace {
    const ON: bool = false;
}

/// Why a line did not make it through a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StageFailure {
    /// No parser of the stage applies to this kind of line.
    NoParser,
    /// Parsers applied, none matched.
    NoMatch,
    Rejected(String),
}

/// One stage (`s00-raw`, `s01-parse`...): its parsers in order, and an index from
/// program name to the parsers that can apply, so a line meets only its own parsers.
pub(crate) struct Stage {
    pub name: Arc<str>,
    pub parsers: Vec<Parser>,
    /// Parsers whose filter names programs, by program.
    pub by_program: HashMap<Box<str>, Vec<u32>>,
    /// Parsers whose filter does not name programs (they see every line).
    pub generic: Vec<u32>,
    /// The interned `program` field name, for [`lookup`].
    pub program: &'static str,
}

impl Stage {
    pub(crate) fn new(name: Arc<str>, parsers: Vec<Parser>, program: &'static str) -> Self {
        let mut by_program: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut generic = Vec::new();
        for (i, p) in parsers.iter().enumerate() {
            let i = i as u32;
            match &p.filter.programs {
                Some(progs) => {
                    for prog in progs {
                        let list = by_program.entry(prog.clone()).or_default();
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                }
                None => generic.push(i),
            }
        }
        Stage { name, parsers, by_program, generic, program }
    }

    /// Runs the stage. `Ok(())` when a parser matched.
    pub(crate) fn run<T: Tracer>(
        &self,
        w: &mut Work,
        t: &mut T,
        record_parser: bool,
    ) -> Result<(), StageFailure> {
        if T::ON {
            t.stage(&self.name);
        }
        let mut matched = false;
        let mut applicable = false;
        // The explain path looks at every parser so it can say why each was skipped;
        // the hot path only at those the program index selects, in file order.
        let by_prog: &[u32] = if T::ON {
            &[]
        } else {
            lookup(&w.parsed, self.program)
                .and_then(|p| self.by_program.get(p))
                .map(Vec::as_slice)
                .unwrap_or(&[])
        };
        let candidates =
            Merge { a: by_prog, b: &self.generic, all: T::ON, next_all: 0, len: self.parsers.len() };
        for i in candidates {
            let Some(p) = self.parsers.get(i as usize) else {
                break;
            };
            if !p.filter.accepts(w) {
                if T::ON {
                    t.parser(p, Some(p.filter.rejection(w)));
                }
                continue;
            }
            if T::ON {
                t.parser(p, None);
            }
            applicable = true;
            let outcome = p.run(w, t);
            if T::ON {
                t.parser_end(&outcome);
            }
            match outcome {
                Outcome::Matched => {
                    // The program parser names the event; other stages only fill in
                    // a name when there is none yet (e.g. a hub without s01).
                    if (record_parser && !matched) || w.parser.is_none() {
                        w.parser = Some(p.name.clone());
                    }
                    matched = true;
                    if p.onsuccess == OnSuccess::NextStage {
                        break;
                    }
                }
                Outcome::NoMatch => {}
                Outcome::Reject(reason) => {
                    if T::ON {
                        t.stage_end(false);
                    }
                    return Err(StageFailure::Rejected(reason));
                }
            }
        }
        if T::ON {
            t.stage_end(matched);
        }
        if matched {
            Ok(())
        } else if applicable {
            Err(StageFailure::NoMatch)
        } else {
            Err(StageFailure::NoParser)
        }
    }
}

/// Merges two ascending index lists (or yields every index when `all`), without
/// allocating: the hot path calls this for every line.
struct Merge<'a> {
    a: &'a [u32],
    b: &'a [u32],
    all: bool,
    next_all: usize,
    len: usize,
}

impl Iterator for Merge<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.all {
            if self.next_all >= self.len {
                return None;
            }
            self.next_all += 1;
            return Some((self.next_all - 1) as u32);
        }
        let take_a = match (self.a.first(), self.b.first()) {
            (Some(x), Some(y)) => x < y,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let list = if take_a { &mut self.a } else { &mut self.b };
        let (first, rest) = list.split_first()?;
        *list = rest;
        Some(*first)
    }
}

/// One parser (one YAML document).
pub(crate) struct Parser {
    pub name: Arc<str>,
    pub description: String,
    pub file: String,
    pub stage: Arc<str>,
    pub filter: Filter,
    pub onsuccess: OnSuccess,
    pub nodes: Vec<Node>,
    pub statics: Vec<Static>,
}

impl Parser {
    fn run<T: Tracer>(&self, w: &mut Work, t: &mut T) -> Outcome {
        if !self.nodes.is_empty() {
            let mut matched = false;
            for node in &self.nodes {
                match node.run(w, t, 0) {
                    Outcome::Matched => {
                        matched = true;
                        break;
                    }
                    Outcome::NoMatch => {}
                    reject @ Outcome::Reject(_) => return reject,
                }
            }
            if !matched {
                return Outcome::NoMatch;
            }
        }
        for s in &self.statics {
            s.apply(w, t);
        }
        Outcome::Matched
    }
}

/// A node: what it matches, what it sets, and the children that refine it.
pub(crate) struct Node {
    /// `name` from the file, else its position (`nodes[3]`).
    pub label: String,
    pub kind: NodeKind,
    pub statics: Vec<Static>,
    pub children: Vec<Node>,
}

pub(crate) enum NodeKind {
    Regex(RegexNode),
    Method(Method),
    /// No pattern: matches when one of its children does.
    Group,
}

pub(crate) struct RegexNode {
    pub re: Regex,
    pub apply_on: FieldRef,
    /// When the regex is anchored at the start and every match begins with one of these
    /// literals, a `starts_with` check rejects most lines for the price of a `memcmp`.
    pub prefixes: Option<Prefixes>,
    /// (group index, field name) of every named group.
    pub captures: Vec<(usize, &'static str)>,
    /// Capture slots kept between lines: making them allocates and bumps a reference
    /// count, a noticeable share of a short line. Parsing is single-threaded per
    /// pipeline, so the lock is uncontended; a thread that finds it taken (or poisoned)
    /// simply makes its own slots.
    pub locs: Mutex<CaptureLocations>,
    /// The field that takes the rest of the line, when the pattern ended in
    /// `(?P<rest>.*)`: `re` is the pattern without it, and the value is cut from the end
    /// of the match to the next `\n` (what `.*` would match), without the regex
    /// stepping through it.
    pub rest: Option<&'static str>,
    /// `re` compiled for single-pass capture extraction, when that gives exactly the
    /// regex's captures (see [`Stepper`]): it then replaces the regex's capture search.
    pub step: Option<Stepper>,
}

/// The literals a node's matches must start with (see [`RegexNode::prefixes`]).
pub(crate) struct Prefixes {
    /// Non-empty, none a prefix of another.
    literals: Vec<Box<[u8]>>,
    /// The first byte of every literal, as a bit set. A stage like sshd's tries dozens
    /// of nodes per line, each with several literals (`Failed `, `error: Failed `...):
    /// most are ruled out by the line's first byte without calling `memcmp`.
    first_bytes: [u64; 4],
}

impl Prefixes {
    pub(crate) fn new(literals: Vec<Box<[u8]>>) -> Self {
        let mut first_bytes = [0u64; 4];
        for b in literals.iter().filter_map(|l| l.first()) {
            first_bytes[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        Prefixes { literals, first_bytes }
    }

    /// Whether `hay` starts with one of the literals.
    fn matches(&self, hay: &[u8]) -> bool {
        let Some(&b) = hay.first() else {
            return false;
        };
        self.first_bytes[usize::from(b >> 6)] & (1 << (b & 63)) != 0
            && self.literals.iter().any(|p| hay.starts_with(p))
    }
}

impl RegexNode {
    /// Matches and stores captures into parsed fields.
    fn run<T: Tracer>(&self, w: &mut Work, t: &mut T) -> Result<(), String> {
        let Some(hay) = w.get(&self.apply_on) else {
            return Err(if T::ON { format!("{} is not set", self.apply_on) } else { String::new() });
        };
        if let Some(prefixes) = &self.prefixes {
            if !prefixes.matches(hay.as_bytes()) {
                return Err(if T::ON {
                    format!("{} does not start with a literal the pattern needs", self.apply_on)
                } else {
                    String::new()
                });
            }
        }
        if self.captures.is_empty() && self.rest.is_none() {
            return if self.re.is_match(hay.as_bytes()) {
                Ok(())
            } else {
                Err(if T::ON { "pattern does not match".to_owned() } else { String::new() })
            };
        }
        if let Some(step) = &self.step {
            let mut slots: Slots = [0; 2 * stepper::MAX_GROUPS];
            if !step.captures(hay.as_bytes(), &mut slots) {
                return Err(if T::ON { "pattern does not match".to_owned() } else { String::new() });
            }
            self.store(w, t, |g| stepper::group(&slots, g));
            return Ok(());
        }
        let mut own;
        let mut shared = self.locs.try_lock();
        let locs = match shared.as_deref_mut() {
            Ok(locs) => locs,
            Err(_) => {
                own = self.re.capture_locations();
                &mut own
            }
        };
        if self.re.captures_read(locs, hay.as_bytes()).is_none() {
            return Err(if T::ON { "pattern does not match".to_owned() } else { String::new() });
        }
        self.store(w, t, |g| locs.get(g));
        Ok(())
    }

    /// Stores the captures of a match, given the span of each group.
    fn store<T: Tracer>(&self, w: &mut Work, t: &mut T, span: impl Fn(usize) -> Option<(usize, usize)>) {
        // Load refuses captures named like the input field, so the input keeps its value
        // while the captures are stored. The regex works on bytes: a capture that would
        // cut a UTF-8 character (possible only with `(?-u)` byte classes next to
        // non-ASCII text) is not a `str` slice and is skipped.
        match &self.apply_on {
            // The hot path (captures of `message`): the captures share the input's bytes,
            // found once for all of them rather than once per capture.
            FieldRef::Parsed(k) if !T::ON => {
                if let Some((base, input_end)) = w.parsed.span_of_interned(k) {
                    for (group, name) in &self.captures {
                        let Some((start, end)) = span(*group) else {
                            continue;
                        };
                        if base + end <= input_end {
                            w.parsed.set_from_self(name, base + start..base + end);
                        }
                    }
                }
            }
            _ => {
                for (group, name) in &self.captures {
                    let Some((start, end)) = span(*group) else {
                        continue;
                    };
                    w.set_parsed_slice(&self.apply_on, name, start..end, t);
                }
            }
        }
        if let (Some(name), Some((_, start))) = (&self.rest, span(0)) {
            let end = w
                .get(&self.apply_on)
                .and_then(|h| h.as_bytes().get(start..))
                .map(|rest| start + memchr::memchr(b'\n', rest).unwrap_or(rest.len()));
            if let Some(end) = end {
                w.set_parsed_slice(&self.apply_on, name, start..end, t);
            }
        }
    }
}

impl Node {
    fn run<T: Tracer>(&self, w: &mut Work, t: &mut T, depth: usize) -> Outcome {
        if T::ON {
            t.node_begin(&self.label, depth);
        }
        let own = match &self.kind {
            NodeKind::Regex(r) => r.run(w, t),
            NodeKind::Method(m) => match m.run(w, t) {
                Outcome::Matched => Ok(()),
                Outcome::NoMatch => {
                    Err(if T::ON { format!("{} does not apply", m.name()) } else { String::new() })
                }
                Outcome::Reject(reason) => {
                    if T::ON {
                        t.node_end(format!("rejected: {reason}"));
                    }
                    return Outcome::Reject(reason);
                }
            },
            NodeKind::Group => Ok(()),
        };
        if let Err(why) = own {
            if T::ON {
                t.node_end(format!("no match: {why}"));
            }
            return Outcome::NoMatch;
        }
        let mut child_matched = false;
        for child in &self.children {
            match child.run(w, t, depth + 1) {
                Outcome::Matched => {
                    child_matched = true;
                    break;
                }
                Outcome::NoMatch => {}
                reject @ Outcome::Reject(_) => {
                    if T::ON {
                        t.node_end("rejected by a child node".to_owned());
                    }
                    return reject;
                }
            }
        }
        if matches!(self.kind, NodeKind::Group) && !child_matched {
            if T::ON {
                t.node_end("no match: no child node matched".to_owned());
            }
            return Outcome::NoMatch;
        }
        // Statics after the children, as in CrowdSec: a parent's statics win.
        for s in &self.statics {
            s.apply(w, t);
        }
        if T::ON {
            t.node_end("matched".to_owned());
        }
        Outcome::Matched
    }
}

/// A field a parser sets when it matches.
pub(crate) struct Static {
    pub target: FieldRef,
    pub source: StaticSource,
    pub default: Option<String>,
}

pub(crate) enum StaticSource {
    Value(String),
    /// A parsed field (every named capture is one).
    Capture(&'static str),
    Raw(RawField),
}

impl Static {
    fn apply<T: Tracer>(&self, w: &mut Work, t: &mut T) {
        // Values are copied straight from where they are (the static, the line, a
        // capture) into the target's buffer: no intermediate `String`.
        let Work { line, meta, parsed, .. } = w;
        let value: Option<&str> = match &self.source {
            StaticSource::Value(v) => Some(v),
            StaticSource::Capture(name) => match lookup(parsed, name).filter(|v| !v.is_empty()) {
                Some(v) => {
                    if T::ON {
                        t.set(self.target.to_string(), v);
                    }
                    match &self.target {
                        FieldRef::Line => {}
                        FieldRef::Meta(k) => meta.set_interned(k, v),
                        // From parsed into parsed: the entry shares the bytes.
                        FieldRef::Parsed(k) => {
                            let len = v.len();
                            if let Some(start) = parsed.offset_of_interned(name) {
                                parsed.set_from_self(k, start..start + len);
                            }
                        }
                    }
                    return;
                }
                None => self.default.as_deref(),
            },
            StaticSource::Raw(RawField::Text) => Some(&line.text),
            StaticSource::Raw(RawField::LogType) => Some(&line.log_type),
            StaticSource::Raw(RawField::Source) => Some(&line.source),
        };
        let Some(v) = value else {
            return;
        };
        if T::ON {
            t.set(self.target.to_string(), v);
        }
        match &self.target {
            // The raw line itself is never rewritten (load refuses such targets).
            FieldRef::Line => {}
            FieldRef::Meta(k) => meta.set_interned(k, v),
            FieldRef::Parsed(k) => parsed.set_interned(k, v),
        }
    }
}

/// A compiled filter: all conditions must hold.
pub(crate) struct Filter {
    /// `program:` values, kept apart so the stage can index parsers by program.
    pub programs: Option<Vec<Box<str>>>,
    pub conds: Vec<Cond>,
    /// The interned `program` field name, for [`lookup`].
    pub program: &'static str,
}

pub(crate) enum Cond {
    LogType(Vec<Box<str>>),
    NotLogType(Vec<Box<str>>),
    ProgramPrefix(Vec<Box<str>>),
    Is(FieldRef, Vec<Box<str>>),
    Has(FieldRef),
}

impl Filter {
    pub(crate) fn accepts(&self, w: &Work) -> bool {
        if let Some(progs) = &self.programs {
            match lookup(&w.parsed, self.program) {
                Some(p) if progs.iter().any(|x| &**x == p) => {}
                _ => return false,
            }
        }
        self.conds.iter().all(|c| c.holds(w, self.program))
    }

    /// Why `accepts` is false, for `explain`.
    pub(crate) fn rejection(&self, w: &Work) -> String {
        if let Some(progs) = &self.programs {
            let p = lookup(&w.parsed, self.program);
            if !p.is_some_and(|p| progs.iter().any(|x| &**x == p)) {
                return format!("program {} is not one of {}", quote(p), list(progs));
            }
        }
        for c in &self.conds {
            if !c.holds(w, self.program) {
                return match c {
                    Cond::LogType(v) => {
                        format!("log type {:?} is not one of {}", &*w.line.log_type, list(v))
                    }
                    Cond::NotLogType(v) => {
                        format!("log type {:?} is one of {}", &*w.line.log_type, list(v))
                    }
                    Cond::ProgramPrefix(v) => {
                        format!(
                            "program {} does not start with any of {}",
                            quote(lookup(&w.parsed, self.program)),
                            list(v)
                        )
                    }
                    Cond::Is(f, v) => {
                        format!("{f} = {} is not one of {}", quote(w.get(f)), list(v))
                    }
                    Cond::Has(f) => format!("{f} is not set"),
                };
            }
        }
        "accepted".to_owned()
    }
}

fn quote(v: Option<&str>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "(unset)".to_owned(),
    }
}

fn list(v: &[Box<str>]) -> String {
    let items: Vec<&str> = v.iter().map(|s| &**s).collect();
    format!("[{}]", items.join(", "))
}

impl Cond {
    /// Whether the condition holds; `program` is the interned `program` field name.
    fn holds(&self, w: &Work, program: &'static str) -> bool {
        match self {
            Cond::LogType(v) => v.iter().any(|x| **x == *w.line.log_type),
            Cond::NotLogType(v) => !v.iter().any(|x| **x == *w.line.log_type),
            Cond::ProgramPrefix(v) => {
                lookup(&w.parsed, program).is_some_and(|p| v.iter().any(|x| p.starts_with(&**x)))
            }
            Cond::Is(f, v) => w.get(f).is_some_and(|val| v.iter().any(|x| &**x == val)),
            Cond::Has(f) => w.get(f).is_some(),
        }
    }
}
