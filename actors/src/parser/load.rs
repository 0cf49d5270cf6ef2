//! From hub files to the compiled engine: YAML documents, pattern expansion, regex
//! compilation, literal prefilters, and errors that say file, line and what to do.

use super::config::{FilterConfig, MethodName, NodeConfig, ParserDoc, StaticConfig};
use super::engine::{
    Cond, FieldRef, Filter, Node, NodeKind, Parser, Prefixes, RegexNode, Stage, Static, StaticSource,
};
use super::methods::{HttpNames, Method};
use super::patterns::{expand, PatternLibrary};
use super::stepper::{self, Stepper};
use crate::event::intern_field_name;
use crate::hub::{HubError, HubFile};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Class, ClassBytes, ClassBytesRange, Hir, HirKind, Look};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Where parser files live inside the hub.
const ROOT: &str = "parsers/";
/// Global pattern files: `parsers/patterns.yaml` and `parsers/patterns/*.yaml`.
const PATTERNS_DIR: &str = "patterns";
/// Beyond this many prefix literals a node simply runs its regex.
const MAX_PREFIXES: usize = 64;
/// Static-resource extensions when an `http_enrich` node lists none (CrowdSec's list,
/// plus modern formats).
const DEFAULT_STATIC_EXTENSIONS: &[&str] = &[
    ".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".bmp", ".ico", ".svg", ".css", ".js", ".mjs", ".map",
    ".woff", ".woff2", ".ttf", ".otf", ".eot",
];

/// Shares one `Arc<str>` per field name across all parsers.
#[derive(Default)]
pub(crate) struct Interner(HashMap<String, Arc<str>>);

impl Interner {
    pub(crate) fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(s.to_owned(), a.clone());
        a
    }

    /// The interned field name `s`, a `&'static str` shared by every parser (see
    /// [`intern_field_name`]): field names are copied and compared by address on the
    /// hot path, parser and stage names keep their `Arc<str>` (see [`Interner::get`]).
    pub(crate) fn field(&mut self, s: &str) -> &'static str {
        intern_field_name(s)
    }
}

/// Compiles the parser files among `files` into stages, in stage-name order.
pub(crate) fn load(files: &[HubFile]) -> Result<Vec<Stage>, HubError> {
    let mut global = PatternLibrary::builtin()
        .map_err(|e| HubError::new("<built-in patterns>", e.location().map(|l| l.line()), e.to_string()))?;
    let mut ours: Vec<&HubFile> =
        files.iter().filter(|f| f.path.starts_with(ROOT) && is_yaml(&f.path)).collect();
    ours.sort_by(|a, b| a.path.cmp(&b.path));

    // Global patterns first, so every parser file can use them whatever its name.
    let mut stage_files: BTreeMap<&str, Vec<&HubFile>> = BTreeMap::new();
    for f in &ours {
        let rest = &f.path[ROOT.len()..];
        match rest.split_once('/') {
            Some((PATTERNS_DIR, _)) => load_patterns(f, &mut global)?,
            None if rest.starts_with(PATTERNS_DIR) => load_patterns(f, &mut global)?,
            None => {
                return Err(HubError::new(
                    &f.path,
                    None,
                    "a parser file must live in a stage directory, e.g. parsers/s01-parse/<name>.yaml",
                ))
            }
            Some((stage, _)) => stage_files.entry(stage).or_default().push(f),
        }
    }

    let mut interner = Interner::default();
    let mut names: HashMap<Arc<str>, String> = HashMap::new();
    let mut stages = Vec::new();
    for (stage_name, files) in stage_files {
        let stage_name: Arc<str> = Arc::from(stage_name);
        let mut parsers = Vec::new();
        for f in files {
            for (first_line, doc) in split_documents(&f.text) {
                let parsed: ParserDoc = serde_yaml::from_str(doc).map_err(|e| {
                    let line = e.location().map(|l| first_line + l.line() - 1).or(Some(first_line));
                    HubError::new(&f.path, line, strip_location(&e.to_string()))
                })?;
                let ctx = DocCtx { file: &f.path, text: doc, first_line };
                let parser = compile_parser(parsed, &ctx, &stage_name, &global, &mut interner)?;
                if let Some(other) = names.insert(parser.name.clone(), f.path.clone()) {
                    return Err(ctx.err(
                        ctx.line_of(&format!("name: {}", parser.name)),
                        format!(
                            "parser name {:?} is already used in {other}: names must be unique",
                            &*parser.name
                        ),
                    ));
                }
                parsers.push(parser);
            }
        }
        stages.push(Stage::new(stage_name, parsers, interner.field("program")));
    }
    Ok(stages)
}

fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

fn load_patterns(f: &HubFile, global: &mut PatternLibrary) -> Result<(), HubError> {
    let map: BTreeMap<String, String> = serde_yaml::from_str(&f.text).map_err(|e| {
        HubError::new(&f.path, e.location().map(|l| l.line()), strip_location(&e.to_string()))
    })?;
    for (name, body) in map {
        if global.contains(&name) {
            let line = DocCtx { file: &f.path, text: &f.text, first_line: 1 }.line_of(&format!("{name}:"));
            return Err(HubError::new(
                &f.path,
                line,
                format!("pattern {name} is already defined (built in or in another patterns file); pick another name"),
            ));
        }
        global.insert(name, body);
    }
    Ok(())
}

/// serde_yaml appends "at line X column Y" to its messages; HubError carries the line.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Splits a multi-document YAML text at `---` lines: (1-based first line, text) of each
/// document that has content.
pub(crate) fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            docs.push((start_line, &text[start_byte..offset]));
            start_byte = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs.retain(|(_, d)| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    docs
}

/// Locates errors inside one YAML document.
struct DocCtx<'a> {
    file: &'a str,
    text: &'a str,
    first_line: usize,
}

impl DocCtx<'_> {
    fn err(&self, line: Option<usize>, message: impl Into<String>) -> HubError {
        HubError::new(self.file, line.or(Some(self.first_line)), message)
    }

    /// The file line of the first line containing `needle` (serde does not keep spans
    /// of values, so errors found after parsing are located by their text).
    fn line_of(&self, needle: &str) -> Option<usize> {
        let needle = needle.lines().next().unwrap_or("").trim();
        let needle: String = needle.chars().take(40).collect();
        if needle.is_empty() {
            return None;
        }
        self.text.lines().position(|l| l.contains(&needle)).map(|i| self.first_line + i)
    }
}

fn compile_parser(
    doc: ParserDoc,
    ctx: &DocCtx<'_>,
    stage: &Arc<str>,
    global: &PatternLibrary,
    interner: &mut Interner,
) -> Result<Parser, HubError> {
    if doc.name.trim().is_empty() {
        return Err(ctx.err(ctx.line_of("name:"), "parser name is empty"));
    }
    let mut local = PatternLibrary::default();
    for (name, body) in doc.pattern_syntax {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ctx.err(
                ctx.line_of(&name),
                format!("pattern name {name:?} may only use letters, digits and _"),
            ));
        }
        local.insert(name, body);
    }
    let filter = compile_filter(doc.filter, interner);
    let mut nodes = Vec::with_capacity(doc.nodes.len());
    for (i, node) in doc.nodes.into_iter().enumerate() {
        nodes.push(compile_node(node, format!("nodes[{i}]"), ctx, &local, global, interner)?);
    }
    let statics = compile_statics(doc.statics, ctx, interner)?;
    Ok(Parser {
        name: interner.get(doc.name.trim()),
        description: doc.description,
        file: ctx.file.to_owned(),
        stage: stage.clone(),
        filter,
        onsuccess: doc.onsuccess,
        nodes,
        statics,
    })
}

fn boxed(v: super::config::OneOrMany) -> Vec<Box<str>> {
    v.into_vec().into_iter().map(String::into_boxed_str).collect()
}

fn compile_filter(f: FilterConfig, interner: &mut Interner) -> Filter {
    let mut conds = Vec::new();
    if let Some(v) = f.log_type {
        conds.push(Cond::LogType(boxed(v)));
    }
    if let Some(v) = f.not_log_type {
        conds.push(Cond::NotLogType(boxed(v)));
    }
    if let Some(v) = f.program_prefix {
        conds.push(Cond::ProgramPrefix(boxed(v)));
    }
    for (k, v) in f.meta {
        conds.push(Cond::Is(FieldRef::Meta(interner.field(&k)), boxed(v)));
    }
    for (k, v) in f.parsed {
        conds.push(Cond::Is(FieldRef::Parsed(interner.field(&k)), boxed(v)));
    }
    for k in f.has_meta {
        conds.push(Cond::Has(FieldRef::Meta(interner.field(&k))));
    }
    for k in f.has_parsed {
        conds.push(Cond::Has(FieldRef::Parsed(interner.field(&k))));
    }
    Filter { programs: f.program.map(boxed), conds, program: interner.field("program") }
}

/// `line`, `meta.x`, `parsed.x` or bare `x` (parsed).
fn field_ref(s: &str, interner: &mut Interner) -> Result<FieldRef, String> {
    let s = s.trim();
    let r = if s == "line" {
        FieldRef::Line
    } else if let Some(k) = s.strip_prefix("meta.") {
        FieldRef::Meta(interner.field(k))
    } else if let Some(k) = s.strip_prefix("parsed.") {
        FieldRef::Parsed(interner.field(k))
    } else {
        FieldRef::Parsed(interner.field(s))
    };
    match &r {
        FieldRef::Meta(k) | FieldRef::Parsed(k) if k.is_empty() => Err(format!("empty field name in {s:?}")),
        _ => Ok(r),
    }
}

fn compile_node(
    node: NodeConfig,
    position: String,
    ctx: &DocCtx<'_>,
    local: &PatternLibrary,
    global: &PatternLibrary,
    interner: &mut Interner,
) -> Result<Node, HubError> {
    let label = node.name.clone().unwrap_or_else(|| position.clone());
    let hint_line = node
        .pattern
        .as_deref()
        .and_then(|p| ctx.line_of(p))
        .or_else(|| node.name.as_deref().and_then(|n| ctx.line_of(&format!("name: {n}"))));
    let err = |msg: String| ctx.err(hint_line, format!("node {label}: {msg}"));
    if node.static_extensions.is_some() && node.method != Some(MethodName::HttpEnrich) {
        return Err(err("static_extensions only applies to method: http_enrich".into()));
    }
    let kind = match (node.pattern, node.method) {
        (Some(_), Some(_)) => return Err(err("a node has either a pattern or a method, not both".into())),
        (Some(pattern), None) => {
            let apply_on =
                field_ref(node.apply_on.as_deref().unwrap_or("message"), interner).map_err(&err)?;
            let expanded = expand(&pattern, local, global).map_err(|e| err(e.to_string()))?;
            // Byte regexes without Unicode classes: `\S`, `\w`, `.` are ASCII/byte
            // classes, which keeps automata small and capture extraction fast. A
            // pattern that needs Unicode opts in with `(?u:...)`.
            let re = regex::bytes::RegexBuilder::new(&expanded)
                .unicode(false)
                .size_limit(32 << 20)
                .build()
                .map_err(|e| err(format!("bad regex: {e}")))?;
            let mut captures: Vec<(usize, &'static str)> = Vec::new();
            for (i, name) in re.capture_names().enumerate() {
                let Some(name) = name else { continue };
                if matches!(apply_on, FieldRef::Parsed(k) if k == name) {
                    return Err(err(format!(
                        "capture {name:?} would overwrite the field the pattern applies on; rename the capture"
                    )));
                }
                captures.push((i, interner.field(name)));
            }
            // `...(?P<message>.*)`: the regex stops before the rest of the line, which
            // is then cut without it (see `RegexNode::rest`).
            let (re, rest) = match split_rest_of_line(&expanded) {
                Some(head) => {
                    let head = regex::bytes::RegexBuilder::new(&head)
                        .unicode(false)
                        .size_limit(32 << 20)
                        .build()
                        .map_err(|e| err(format!("bad regex: {e}")))?;
                    (head, captures.pop().map(|(_, name)| name))
                }
                None => (re, None),
            };
            // Only where captures are extracted: a bare match runs the regex's DFA,
            // which is already fast.
            let step = if captures.is_empty() && rest.is_none() {
                None
            } else {
                Stepper::new(re.as_str()).filter(|_| re.captures_len() <= stepper::MAX_GROUPS)
            };
            NodeKind::Regex(RegexNode {
                step,
                prefixes: prefixes(&expanded).map(Prefixes::new),
                locs: std::sync::Mutex::new(re.capture_locations()),
                re,
                apply_on,
                captures,
                rest,
            })
        }
        (None, Some(method)) => {
            let default_field = match method {
                MethodName::ParseTimestamp => "parsed.timestamp",
                MethodName::NormalizeIp => "meta.source_ip",
                MethodName::HttpEnrich => "meta.http_path",
            };
            let field =
                field_ref(node.apply_on.as_deref().unwrap_or(default_field), interner).map_err(&err)?;
            NodeKind::Method(match method {
                MethodName::ParseTimestamp => {
                    Method::ParseTimestamp { field, zone: super::timestamp::Zone::host() }
                }
                MethodName::NormalizeIp => {
                    if field == FieldRef::Line {
                        return Err(err(
                            "normalize_ip rewrites its field; it cannot apply on the raw line".into()
                        ));
                    }
                    Method::NormalizeIp { field }
                }
                MethodName::HttpEnrich => {
                    let exts = match node.static_extensions {
                        Some(v) => v,
                        None => DEFAULT_STATIC_EXTENSIONS.iter().map(|s| (*s).to_owned()).collect(),
                    };
                    let mut static_extensions = Vec::with_capacity(exts.len());
                    for e in exts {
                        if !e.starts_with('.') || e.len() < 2 {
                            return Err(err(format!(
                                "static extension {e:?} must start with a dot, e.g. \".css\""
                            )));
                        }
                        static_extensions.push(e.to_ascii_lowercase().into_boxed_str());
                    }
                    Method::HttpEnrich {
                        field,
                        static_extensions,
                        names: HttpNames {
                            args: interner.field("http_args"),
                            dir: interner.field("file_dir"),
                            name: interner.field("file_name"),
                            ext: interner.field("file_ext"),
                            static_ressource: interner.field("static_ressource"),
                        },
                    }
                }
            })
        }
        (None, None) => {
            if node.apply_on.is_some() {
                return Err(err("apply_on needs a pattern or a method".into()));
            }
            if node.nodes.is_empty() {
                return Err(err("a node needs a pattern, a method or child nodes".into()));
            }
            NodeKind::Group
        }
    };
    let mut children = Vec::with_capacity(node.nodes.len());
    for (i, child) in node.nodes.into_iter().enumerate() {
        children.push(compile_node(child, format!("{position}/nodes[{i}]"), ctx, local, global, interner)?);
    }
    let statics = compile_statics(node.statics, ctx, interner)?;
    Ok(Node { label, kind, statics, children })
}

fn compile_statics(
    list: Vec<StaticConfig>,
    ctx: &DocCtx<'_>,
    interner: &mut Interner,
) -> Result<Vec<Static>, HubError> {
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        let target = match (&s.meta, &s.parsed) {
            (Some(k), None) => FieldRef::Meta(interner.field(k)),
            (None, Some(k)) => FieldRef::Parsed(interner.field(k)),
            _ => {
                let line = s.meta.as_deref().or(s.parsed.as_deref()).and_then(|k| ctx.line_of(k));
                return Err(ctx.err(line, "a static sets exactly one of meta: <key> or parsed: <key>"));
            }
        };
        let key_line = ctx.line_of(&target.to_string().replace('.', ": "));
        let source = match (s.value, s.capture, s.raw) {
            (Some(v), None, None) => StaticSource::Value(v),
            (None, Some(c), None) => StaticSource::Capture(interner.field(&c)),
            (None, None, Some(r)) => StaticSource::Raw(r),
            _ => {
                return Err(ctx.err(
                    key_line,
                    format!("static {target}: give exactly one of value: <text>, capture: <field> or raw: text|log_type|source"),
                ))
            }
        };
        if s.default.is_some() && !matches!(source, StaticSource::Capture(_)) {
            return Err(ctx.err(key_line, format!("static {target}: default only goes with capture")));
        }
        out.push(Static { target, source, default: s.default });
    }
    Ok(out)
}

/// When `pattern` is `<head>(?P<name>.*)` (the rest of the line, as syslog framing
/// captures the message), `head` alone.
///
/// `.*` always matches, so the match of the whole pattern is the match of `head`
/// followed by everything up to the next `\n`: the regex need not step through the rest
/// of the line byte by byte (about half of a syslog line). The split is made only when
/// `head` parses to exactly the pattern's other parts and the capture is the last group,
/// so the other groups keep their numbers.
fn split_rest_of_line(pattern: &str) -> Option<String> {
    let parse = |p: &str| regex_syntax::ParserBuilder::new().unicode(false).utf8(false).build().parse(p).ok();
    let hir = parse(pattern)?;
    let HirKind::Concat(items) = hir.kind() else {
        return None;
    };
    let (last, head) = items.split_last()?;
    let HirKind::Capture(cap) = last.kind() else {
        return None;
    };
    let name = cap.name.as_deref()?;
    let HirKind::Repetition(rep) = cap.sub.kind() else {
        return None;
    };
    let HirKind::Class(Class::Bytes(class)) = rep.sub.kind() else {
        return None;
    };
    let not_newline =
        ClassBytes::new([ClassBytesRange::new(0, b'\n' - 1), ClassBytesRange::new(b'\n' + 1, 255)]);
    if rep.min != 0 || rep.max.is_some() || !rep.greedy || *class != not_newline {
        return None;
    }
    let stripped = pattern.strip_suffix(&format!("(?P<{name}>.*)"))?;
    (parse(stripped)? == Hir::concat(head.to_vec())).then(|| stripped.to_owned())
}

/// The literals every match must start with, when the regex is anchored at the start
/// and they can be known (see [`RegexNode::prefixes`]).
fn prefixes(pattern: &str) -> Option<Vec<Box<[u8]>>> {
    let hir = regex_syntax::ParserBuilder::new().build().parse(pattern).ok()?;
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return None;
    }
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.len() > MAX_PREFIXES || lits.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    let mut out: Vec<Box<[u8]>> = lits.iter().map(|l| Box::from(l.as_bytes())).collect();
    // A literal that extends another adds nothing to a starts_with test.
    out.sort();
    out.dedup();
    let all: HashSet<Box<[u8]>> = out.iter().cloned().collect();
    out.retain(|l| !(1..l.len()).any(|n| all.contains(&l[..n])));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_lines() {
        let text = "# c\nname: a\n---\n\nname: b\n---\n# only a comment\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 1);
        assert_eq!(docs[1].0, 4);
        assert!(docs[1].1.contains("name: b"));
    }

    #[test]
    fn splits_the_rest_of_the_line() {
        assert_eq!(split_rest_of_line("^(?P<a>x+): (?P<m>.*)").as_deref(), Some("^(?P<a>x+): "));
        assert_eq!(split_rest_of_line("^a|b(?P<m>.*)"), None, "alternation");
        assert_eq!(split_rest_of_line("^a(?P<m>.*)$"), None, "not last");
        assert_eq!(split_rest_of_line("^a(?P<m>.*?)"), None, "lazy");
        assert_eq!(split_rest_of_line("^a(?s:(?P<m>.*))"), None, "any byte");
        assert_eq!(split_rest_of_line("^a(?P<m>.+)"), None, "at least one");
    }

    #[test]
    fn extracts_prefixes() {
        let p = prefixes("^(?:error: )?Failed (?P<x>\\S+)").expect("prefixes");
        let p: Vec<&[u8]> = p.iter().map(|b| &**b).collect();
        assert_eq!(p, vec![&b"Failed "[..], &b"error: Failed "[..]]);
        assert_eq!(prefixes("Failed (\\S+)"), None, "unanchored");
        assert_eq!(prefixes("^(?:a)?.*x"), None, "can start with anything");
        let p = prefixes("^[iI]nvalid").expect("prefixes");
        assert_eq!(p.len(), 2);
    }
}
