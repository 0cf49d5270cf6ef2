//! Scenario expressions: CEL compiled once at load time, lowered to a native evaluator.
//!
//! Every `filter`, `groupby` and `distinct` is parsed with `cel-parser` when the
//! scenarios load, checked (only the variable `evt` exists, with the fields `meta`,
//! `parsed`, `time`, `log_type`; data files must exist; regex literals must compile), and
//! then lowered into a [`Node`] tree that evaluates directly against an [`Event`] without
//! building any CEL context. Expressions outside the lowered subset keep their CEL AST
//! and are evaluated by `cel-interpreter` against a context built once per event.
//!
//! # Semantics shared by both evaluators
//!
//! - `evt.meta.<name>` and `evt.parsed.<name>` are strings; **a field that is not set
//!   reads as the empty string** (as a Go map does in CrowdSec's `evt.Meta.x`), so a
//!   filter on a missing field is simply false and never an error.
//!   `has(evt.meta.<name>)` is true when the field is set to a non-empty value.
//! - `evt.time` is the event time in ms since the epoch (int); `evt.log_type` is the log
//!   type of the line's source (`syslog`, `nginx`...).
//! - Operators follow `cel-interpreter` exactly, including its quirks: `a || b` yields `a`
//!   when `a` is truthy, `!`/`&&`/`||` accept any value by truthiness, `==` between
//!   different types is false, `<` between different types is an error.
//! - Extra functions: `in_file(v, "f.txt")`, `in_file_nocase(v, "f.txt")`,
//!   `contains_any_from_file(v, "f.txt")` (ASCII case-insensitive substring, one
//!   Aho-Corasick automaton per file), `regex_from_file(v, "f.txt")` (one `RegexSet`),
//!   `url_decode(v)` (percent-decoding, `+` as space) and `lower(v)`.
//! - A runtime error (e.g. `size(1)`, comparing a string with an int) makes a filter
//!   false and is counted in the scenario's `eval_errors`; it never panics.

use super::data::{url_decode, DataLists, Known, LoadErr, MatchKindFn, Matcher};
use crate::event::Event;
use cel_interpreter::{Context, ExecutionError, Value};
use cel_parser::ast::operators as op;
use cel_parser::ast::{CallExpr, Expr as Ast, IdedExpr, SelectExpr};
use cel_parser::reference::Val as Lit;
use regex::Regex;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// A value produced by the native evaluator. Strings borrow from the event when they can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
}

impl Val<'_> {
    fn truthy(&self) -> bool {
        match self {
            Val::Str(s) => !s.is_empty(),
            Val::Int(i) => *i != 0,
            Val::Bool(b) => *b,
        }
    }

    /// The value as a bucket key, without copying a string.
    pub(crate) fn as_key(&self) -> Cow<'_, str> {
        match self {
            Val::Str(s) => Cow::Borrowed(s.as_ref()),
            Val::Int(i) => Cow::Owned(i.to_string()),
            Val::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        }
    }

    /// The value as a bucket key (`groupby`, `distinct`).
    pub(crate) fn into_key(self) -> String {
        match self {
            Val::Str(s) => s.into_owned(),
            Val::Int(i) => i.to_string(),
            Val::Bool(b) => b.to_string(),
        }
    }
}

/// An expression failed at run time (type mismatch, overflow, bad function argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EvalError;

type Res<'a> = Result<Val<'a>, EvalError>;

/// Which map of the event a field lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum FieldMap {
    Meta,
    Parsed,
}

impl FieldMap {
    fn get<'e>(self, ev: &'e Event, name: &str) -> &'e str {
        match self {
            FieldMap::Meta => ev.meta.get(name).unwrap_or(""),
            FieldMap::Parsed => ev.parsed.get(name).unwrap_or(""),
        }
    }
}

/// A field the native evaluator reads, with its slot in the per-event [`FieldCache`].
#[derive(Debug)]
pub(crate) struct FieldRef {
    map: FieldMap,
    name: Box<str>,
    slot: usize,
}

/// Slots of the [`FieldCache`]; fields beyond them are looked up every time (correct,
/// only slower). The shipped scenarios read about a dozen distinct fields.
const FIELD_CACHE_SLOTS: usize = 32;

/// The field values of one event, each looked up at most once.
///
/// [`Fields`](crate::event::Fields) is a small vector searched by name, which is the
/// right shape for the parsers but means a linear scan with string compares per read;
/// the candidate scenarios of an event read the same few fields over and over
/// (`evt.meta.service` and `evt.meta.http_path` in every HTTP filter), so every field
/// any expression reads gets a slot at load time and is searched once per event.
pub(crate) struct FieldCache<'e> {
    ev: &'e Event,
    /// `None`: not looked up yet; a missing field is cached as `""`.
    vals: [Option<&'e str>; FIELD_CACHE_SLOTS],
    /// What the data-list memo said about the last few values this event checked,
    /// by address and length: the event's own text and the expressions' literals stay
    /// put while it is evaluated, so the same address is the same value.
    known: [(usize, usize, Known); KNOWN_VALUES],
    /// Where the next value goes in `known`.
    next_known: usize,
}

/// Values an event remembers the data-list memo's answers for (the path and the user
/// agent in the shipped scenarios).
const KNOWN_VALUES: usize = 4;

impl<'e> FieldCache<'e> {
    /// An empty cache over `ev`.
    pub(crate) fn new(ev: &'e Event) -> Self {
        FieldCache {
            ev,
            vals: [None; FIELD_CACHE_SLOTS],
            known: [(0, usize::MAX, Known::default()); KNOWN_VALUES],
            next_known: 0,
        }
    }

    /// Whether `value`, borrowed from the event or the expression, matches `m`'s list:
    /// what the memo told an earlier filter of this event about the same value, else
    /// `m` itself (which asks the memo once for every list).
    pub(crate) fn data_match(&mut self, m: &Matcher, value: &'e str) -> bool {
        let key = (value.as_ptr() as usize, value.len());
        let pos = self.known.iter().position(|(p, l, _)| (*p, *l) == key);
        if let Some(hit) = pos.and_then(|i| self.known[i].2.get(m)) {
            return hit;
        }
        let (hit, known) = m.lookup(value);
        if let Some(known) = known {
            let i = pos.unwrap_or_else(|| {
                let i = self.next_known;
                self.next_known = (i + 1) % KNOWN_VALUES;
                i
            });
            self.known[i] = (key.0, key.1, known);
        }
        hit
    }

    /// The value of a field, `""` when it is not set.
    pub(crate) fn get(&mut self, f: &FieldRef) -> &'e str {
        match self.vals.get_mut(f.slot) {
            Some(Some(v)) => v,
            Some(slot) => slot.insert(f.map.get(self.ev, &f.name)),
            None => f.map.get(self.ev, &f.name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrFn {
    StartsWith,
    EndsWith,
    Contains,
}

/// The lowered expression tree.
#[derive(Debug)]
enum Node {
    Lit(Val<'static>),
    Field(FieldRef),
    Has(FieldRef),
    Time,
    LogType,
    Not(Box<Node>),
    Neg(Box<Node>),
    /// `a && b && ...`, nested `&&` flattened into one list (same result: the first
    /// falsy operand makes it false, the ones after it are not evaluated).
    And(Vec<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    /// `x in ["a", "b"]` where every element is a string literal.
    InStrSet(Box<Node>, HashSet<String, foldhash::fast::RandomState>),
    /// `evt.meta.x == "v"` (or `!=` when the flag is set): the most common test, with
    /// no intermediate values.
    FieldIs(FieldRef, Box<str>, bool),
    /// `x in [literals...]` of mixed types.
    InList(Box<Node>, Vec<Val<'static>>),
    /// `x in y` where `y` is not a list literal (substring test on strings).
    InExpr(Box<Node>, Box<Node>),
    Str(StrFn, Box<Node>, Box<Node>),
    Matches(Box<Node>, Regex),
    Size(Box<Node>),
    Add(Box<Node>, Box<Node>),
    Data(Box<Node>, Arc<Matcher>),
    UrlDecode(Box<Node>),
    Lower(Box<Node>),
}

fn s_arg<'a>(r: Res<'a>) -> Result<Cow<'a, str>, EvalError> {
    match r? {
        Val::Str(s) => Ok(s),
        _ => Err(EvalError),
    }
}

impl Node {
    /// Whether the node always yields a string built only from fields, string literals
    /// and `+`: such a `groupby` is written straight into a reused buffer.
    fn is_str_concat(&self) -> bool {
        match self {
            Node::Lit(Val::Str(_)) | Node::Field(_) | Node::LogType => true,
            Node::Add(a, b) => a.is_str_concat() && b.is_str_concat(),
            _ => false,
        }
    }

    /// Appends the value of a node for which [`Node::is_str_concat`] holds.
    fn append_str(&self, fc: &mut FieldCache<'_>, buf: &mut String) {
        match self {
            Node::Lit(Val::Str(s)) => buf.push_str(s),
            Node::Field(f) => buf.push_str(fc.get(f)),
            Node::LogType => buf.push_str(&fc.ev.line.log_type),
            Node::Add(a, b) => {
                a.append_str(fc, buf);
                b.append_str(fc, buf);
            }
            // Not reached: `is_str_concat` admits only the nodes above.
            _ => {}
        }
    }

    fn eval<'e>(&'e self, fc: &mut FieldCache<'e>) -> Res<'e> {
        let ev = fc.ev;
        Ok(match self {
            Node::Lit(v) => match v {
                Val::Str(s) => Val::Str(Cow::Borrowed(s.as_ref())),
                Val::Int(i) => Val::Int(*i),
                Val::Bool(b) => Val::Bool(*b),
            },
            Node::Field(f) => Val::Str(Cow::Borrowed(fc.get(f))),
            Node::Has(f) => Val::Bool(!fc.get(f).is_empty()),
            Node::FieldIs(f, v, negate) => Val::Bool((fc.get(f) == &**v) != *negate),
            Node::Time => Val::Int(ev.time.as_millis()),
            Node::LogType => Val::Str(Cow::Borrowed(&ev.line.log_type)),
            Node::Not(a) => Val::Bool(!a.eval(fc)?.truthy()),
            Node::Neg(a) => match a.eval(fc)? {
                Val::Int(i) => Val::Int(i.wrapping_neg()),
                _ => return Err(EvalError),
            },
            Node::And(all) => {
                for n in all {
                    if !n.eval(fc)?.truthy() {
                        return Ok(Val::Bool(false));
                    }
                }
                Val::Bool(true)
            }
            Node::Or(a, b) => {
                let l = a.eval(fc)?;
                if l.truthy() {
                    l
                } else {
                    b.eval(fc)?
                }
            }
            Node::Cond(c, a, b) => {
                if c.eval(fc)?.truthy() {
                    a.eval(fc)?
                } else {
                    b.eval(fc)?
                }
            }
            Node::Cmp(cmp, a, b) => {
                let (l, r) = (a.eval(fc)?, b.eval(fc)?);
                Val::Bool(match cmp {
                    Cmp::Eq => l == r,
                    Cmp::Ne => l != r,
                    _ => {
                        let ord = match (&l, &r) {
                            (Val::Str(x), Val::Str(y)) => x.cmp(y),
                            (Val::Int(x), Val::Int(y)) => x.cmp(y),
                            (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
                            _ => return Err(EvalError),
                        };
                        match cmp {
                            Cmp::Lt => ord.is_lt(),
                            Cmp::Le => ord.is_le(),
                            Cmp::Gt => ord.is_gt(),
                            _ => ord.is_ge(),
                        }
                    }
                })
            }
            Node::InStrSet(a, set) => match a.eval(fc)? {
                Val::Str(s) => Val::Bool(set.contains(s.as_ref())),
                _ => Val::Bool(false),
            },
            Node::InList(a, list) => {
                let v = a.eval(fc)?;
                // `contains` would need `v: Val<'static>`.
                #[allow(clippy::manual_contains)]
                let found = list.iter().any(|x| *x == v);
                Val::Bool(found)
            }
            Node::InExpr(a, b) => match (a.eval(fc)?, b.eval(fc)?) {
                (Val::Str(l), Val::Str(r)) => Val::Bool(r.contains(l.as_ref())),
                _ => return Err(EvalError),
            },
            Node::Str(f, a, b) => {
                let t = a.eval(fc)?;
                match f {
                    StrFn::Contains => match (t, b.eval(fc)?) {
                        (Val::Str(t), Val::Str(x)) => Val::Bool(t.contains(x.as_ref())),
                        _ => Val::Bool(false),
                    },
                    StrFn::StartsWith | StrFn::EndsWith => {
                        let Val::Str(t) = t else {
                            return Err(EvalError);
                        };
                        let x = s_arg(b.eval(fc))?;
                        Val::Bool(if *f == StrFn::StartsWith {
                            t.starts_with(x.as_ref())
                        } else {
                            t.ends_with(x.as_ref())
                        })
                    }
                }
            }
            Node::Matches(a, re) => Val::Bool(re.is_match(&s_arg(a.eval(fc))?)),
            Node::Size(a) => match a.eval(fc)? {
                Val::Str(s) => Val::Int(i64::try_from(s.len()).map_err(|_| EvalError)?),
                _ => return Err(EvalError),
            },
            Node::Add(a, b) => match (a.eval(fc)?, b.eval(fc)?) {
                (Val::Str(x), Val::Str(y)) => {
                    let mut s = String::with_capacity(x.len() + y.len());
                    s.push_str(&x);
                    s.push_str(&y);
                    Val::Str(Cow::Owned(s))
                }
                (Val::Int(x), Val::Int(y)) => Val::Int(x.checked_add(y).ok_or(EvalError)?),
                _ => return Err(EvalError),
            },
            Node::Data(a, m) => Val::Bool(match s_arg(a.eval(fc))? {
                Cow::Borrowed(s) => fc.data_match(m, s),
                Cow::Owned(s) => m.is_match(&s),
            }),
            Node::UrlDecode(a) => match s_arg(a.eval(fc))? {
                Cow::Borrowed(s) => Val::Str(url_decode(s)),
                Cow::Owned(s) => Val::Str(Cow::Owned(url_decode(&s).into_owned())),
            },
            Node::Lower(a) => Val::Str(Cow::Owned(s_arg(a.eval(fc))?.to_lowercase())),
        })
    }
}

/// A field equality every match of a filter requires: `evt.meta.F == "v"` or
/// `evt.meta.F in ["v", "w"]` as a conjunct of the top-level `&&` chain. Scenarios are
/// indexed by it, so an event only reaches the scenarios that can match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) map: FieldMap,
    pub(crate) field: String,
    pub(crate) values: Vec<String>,
}

/// One compiled expression.
#[derive(Debug)]
pub(crate) struct Expr {
    /// The text as written, for errors and listings.
    pub(crate) source: String,
    kind: Kind,
    /// Native and [`Node::is_str_concat`]: [`Expr::eval_key`] needs no allocation.
    concat: bool,
}

#[derive(Debug)]
enum Kind {
    Native(Node),
    /// Outside the lowered subset: evaluated by `cel-interpreter`. The AST has `has()`
    /// on event fields rewritten to `!= ""`, so both evaluators agree.
    Cel(IdedExpr),
}

impl Expr {
    /// Parses, checks and lowers `source`. Errors are messages for the caller to place.
    pub(crate) fn compile(source: &str, data: &mut DataLists, refs: &mut FieldRefs) -> Result<Expr, LoadErr> {
        let parsed = catch_unwind(|| cel_parser::Parser::default().parse(source)).map_err(|_| {
            LoadErr::Message(format!("invalid CEL `{source}`: incomplete or malformed expression"))
        })?;
        let mut ast = parsed.map_err(|e| LoadErr::Message(format!("invalid CEL `{source}`: {e}")))?;
        let mut scope = Vec::new();
        check(&ast, &mut scope, data, refs)?;
        let kind = match lower(&ast, data, refs)? {
            Some(node) => Kind::Native(node),
            None => {
                rewrite_has(&mut ast);
                refs.any_cel = true;
                Kind::Cel(ast)
            }
        };
        let concat = matches!(&kind, Kind::Native(n) if n.is_str_concat());
        Ok(Expr { source: source.to_owned(), kind, concat })
    }

    /// Whether this expression needs the CEL context.
    pub(crate) fn is_native(&self) -> bool {
        matches!(self.kind, Kind::Native(_))
    }

    /// Evaluates against `ev`; `cel` builds (once per event) the CEL context when needed.
    #[cfg(test)]
    pub(crate) fn eval<'e>(&'e self, ev: &'e Event, cel: &mut CelScope<'_, '_>) -> Res<'e> {
        self.eval_in(&mut FieldCache::new(ev), cel)
    }

    /// Evaluates against the event of `fc`, reading fields through it.
    pub(crate) fn eval_in<'e>(&'e self, fc: &mut FieldCache<'e>, cel: &mut CelScope<'_, '_>) -> Res<'e> {
        match &self.kind {
            Kind::Native(n) => n.eval(fc),
            Kind::Cel(ast) => from_cel(cel.eval(fc.ev, ast)),
        }
    }

    /// Evaluates as a bucket key ([`Val::as_key`]) into `buf`, which is cleared first.
    /// A concatenation of fields (`evt.meta.source_ip + '/' + evt.meta.target_fqdn`) is
    /// written straight into `buf`, so a reused buffer makes the key without allocating.
    pub(crate) fn eval_key<'e>(
        &'e self,
        fc: &mut FieldCache<'e>,
        cel: &mut CelScope<'_, '_>,
        buf: &mut String,
    ) -> Result<(), EvalError> {
        buf.clear();
        match &self.kind {
            Kind::Native(n) if self.concat => n.append_str(fc, buf),
            _ => buf.push_str(&self.eval_in(fc, cel)?.as_key()),
        }
        Ok(())
    }

    /// Evaluates with `cel-interpreter` only (tests compare it with the native result).
    #[cfg(test)]
    pub(crate) fn eval_cel_only<'e>(&'e self, ev: &'e Event, cel: &mut CelScope<'_, '_>) -> Res<'e> {
        match &self.kind {
            Kind::Native(_) => {
                let mut ast = cel_parser::Parser::default().parse(&self.source).map_err(|_| EvalError)?;
                rewrite_has(&mut ast);
                from_cel(cel.eval(ev, &ast))
            }
            Kind::Cel(ast) => from_cel(cel.eval(ev, ast)),
        }
    }

    /// The required field equality, if the expression (a filter) has one.
    pub(crate) fn route(&self) -> Option<Route> {
        // Routing reads the lowered tree or the AST alike; the AST is kept only for CEL,
        // so re-parse the source (load time only).
        let ast = cel_parser::Parser::default().parse(&self.source).ok()?;
        let mut conj = Vec::new();
        conjuncts(&ast, &mut conj);
        let mut routes: Vec<Route> = conj.into_iter().filter_map(route_of).collect();
        // Prefer the most selective, commonly indexed fields.
        routes.sort_by_key(|r| match (r.map, r.field.as_str()) {
            (FieldMap::Meta, "log_type") => 0,
            (FieldMap::Meta, "service") => 1,
            _ => 2,
        });
        routes.into_iter().next()
    }
}

fn from_cel<'e>(r: Result<Value, ExecutionError>) -> Res<'e> {
    match r {
        Ok(Value::String(s)) => Ok(Val::Str(Cow::Owned(s.as_ref().clone()))),
        Ok(Value::Int(i)) => Ok(Val::Int(i)),
        Ok(Value::UInt(u)) => Ok(Val::Int(i64::try_from(u).map_err(|_| EvalError)?)),
        Ok(Value::Bool(b)) => Ok(Val::Bool(b)),
        // Lists, maps, floats, null: not a filter/key result this engine accepts.
        Ok(_) | Err(_) => Err(EvalError),
    }
}

/// Field names referenced by CEL-evaluated expressions, so that the per-event CEL
/// context can give missing ones the empty string (native and CEL then agree).
#[derive(Debug, Default, Clone)]
pub(crate) struct FieldRefs {
    pub(crate) names: BTreeSet<(FieldMap, String)>,
    pub(crate) any_cel: bool,
    /// Fields read by native expressions, by [`FieldCache`] slot.
    slots: Vec<(FieldMap, String)>,
}

impl FieldRefs {
    /// A native read of a field, with its [`FieldCache`] slot (assigned on first use).
    pub(crate) fn field(&mut self, map: FieldMap, name: &str) -> FieldRef {
        let slot = match self.slots.iter().position(|(m, n)| *m == map && n == name) {
            Some(p) => p,
            None => {
                self.slots.push((map, name.to_owned()));
                self.slots.len() - 1
            }
        };
        FieldRef { map, name: name.into(), slot }
    }
}

fn ident(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Ast::Ident(n) => Some(n),
        _ => None,
    }
}

/// `evt.meta` / `evt.parsed` -> the map.
fn field_map(e: &IdedExpr) -> Option<FieldMap> {
    match &e.expr {
        Ast::Select(SelectExpr { operand, field, test: false }) if ident(operand) == Some("evt") => {
            match field.as_str() {
                "meta" => Some(FieldMap::Meta),
                "parsed" => Some(FieldMap::Parsed),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `evt.meta.x` / `evt.meta["x"]` -> (map, "x").
fn field_ref(e: &IdedExpr) -> Option<(FieldMap, &str)> {
    match &e.expr {
        Ast::Select(SelectExpr { operand, field, test: false }) => Some((field_map(operand)?, field)),
        Ast::Call(CallExpr { func_name, target: None, args })
            if func_name == op::INDEX && args.len() == 2 =>
        {
            match &args[1].expr {
                Ast::Literal(Lit::String(k)) => Some((field_map(&args[0])?, k)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn str_lit(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Ast::Literal(Lit::String(s)) => Some(s),
        _ => None,
    }
}

/// Load-time checks over the whole AST (both evaluators), and data-list resolution.
fn check(
    e: &IdedExpr,
    scope: &mut Vec<String>,
    data: &mut DataLists,
    refs: &mut FieldRefs,
) -> Result<(), LoadErr> {
    if let Some((m, name)) = field_ref(e) {
        refs.names.insert((m, name.to_owned()));
        return Ok(());
    }
    match &e.expr {
        Ast::Ident(n) => {
            if n != "evt" && !scope.iter().any(|s| s == n) {
                return Err(format!("unknown variable `{n}`: expressions see the event as `evt`").into());
            }
        }
        Ast::Select(SelectExpr { operand, field, test }) => {
            if ident(operand) == Some("evt") {
                if !matches!(field.as_str(), "meta" | "parsed" | "time" | "log_type") {
                    let hint = match field.to_ascii_lowercase().as_str() {
                        "meta" => " (field names are lower case: `evt.meta`)",
                        "parsed" => " (field names are lower case: `evt.parsed`)",
                        _ => "",
                    };
                    return Err(format!(
                        "unknown event field `evt.{field}`: use evt.meta.<name>, evt.parsed.<name>, evt.time or evt.log_type{hint}"
                    )
                    .into());
                }
            } else if *test {
                if let Some(m) = field_map(operand) {
                    refs.names.insert((m, field.clone()));
                    return Ok(());
                }
            }
            check(operand, scope, data, refs)?;
        }
        Ast::Call(c) => {
            if let Some(kind) = MatchKindFn::from_function(&c.func_name) {
                let name = match (c.target.is_none(), c.args.as_slice()) {
                    (true, [_, file]) => str_lit(file),
                    _ => None,
                };
                let Some(name) = name else {
                    return Err(format!(
                        "{}(value, \"file.txt\") takes a value and a data file name as a string literal",
                        c.func_name
                    )
                    .into());
                };
                data.matcher(name, kind)?;
            }
            if c.func_name == "matches" {
                if let Some(re) = c.args.first().and_then(str_lit) {
                    Regex::new(re).map_err(|e| format!("invalid regex `{re}`: {e}"))?;
                }
            }
            if let Some(t) = &c.target {
                check(t, scope, data, refs)?;
            }
            for a in &c.args {
                check(a, scope, data, refs)?;
            }
        }
        Ast::List(l) => {
            for a in &l.elements {
                check(a, scope, data, refs)?;
            }
        }
        Ast::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    cel_parser::ast::EntryExpr::MapEntry(me) => {
                        check(&me.key, scope, data, refs)?;
                        check(&me.value, scope, data, refs)?;
                    }
                    cel_parser::ast::EntryExpr::StructField(_) => {
                        return Err("struct literals are not supported".to_owned().into())
                    }
                }
            }
        }
        Ast::Comprehension(c) => {
            check(&c.iter_range, scope, data, refs)?;
            check(&c.accu_init, scope, data, refs)?;
            let depth = scope.len();
            scope.push(c.iter_var.clone());
            scope.extend(c.iter_var2.iter().cloned());
            scope.push(c.accu_var.clone());
            for x in [&c.loop_cond, &c.loop_step, &c.result] {
                check(x, scope, data, refs)?;
            }
            scope.truncate(depth);
        }
        Ast::Literal(_) => {}
        Ast::Struct(_) | Ast::Unspecified => {
            return Err("struct literals are not supported".to_owned().into())
        }
    }
    Ok(())
}

/// Rewrites `has(evt.meta.x)` into `evt.meta.x != ""` (the CEL context sets every
/// referenced field, so a plain `has` would always be true there).
fn rewrite_has(e: &mut IdedExpr) {
    if let Ast::Select(SelectExpr { operand, field, test: true }) = &e.expr {
        if field_map(operand).is_some() {
            let id = e.id;
            let sel = IdedExpr {
                id,
                expr: Ast::Select(SelectExpr { operand: operand.clone(), field: field.clone(), test: false }),
            };
            let empty = IdedExpr { id, expr: Ast::Literal(Lit::String(String::new())) };
            e.expr = Ast::Call(CallExpr {
                func_name: op::NOT_EQUALS.to_owned(),
                target: None,
                args: vec![sel, empty],
            });
            return;
        }
    }
    match &mut e.expr {
        Ast::Select(s) => rewrite_has(&mut s.operand),
        Ast::Call(c) => {
            if let Some(t) = &mut c.target {
                rewrite_has(t);
            }
            c.args.iter_mut().for_each(rewrite_has);
        }
        Ast::List(l) => l.elements.iter_mut().for_each(rewrite_has),
        Ast::Comprehension(c) => {
            for x in [&mut c.iter_range, &mut c.accu_init, &mut c.loop_cond, &mut c.loop_step, &mut c.result]
            {
                rewrite_has(x);
            }
        }
        Ast::Map(m) => {
            for entry in &mut m.entries {
                if let cel_parser::ast::EntryExpr::MapEntry(me) = &mut entry.expr {
                    rewrite_has(&mut me.key);
                    rewrite_has(&mut me.value);
                }
            }
        }
        _ => {}
    }
}

fn lit_val(l: &Lit) -> Option<Val<'static>> {
    match l {
        Lit::String(s) => Some(Val::Str(Cow::Owned(s.clone()))),
        Lit::Int(i) => Some(Val::Int(*i)),
        Lit::Boolean(b) => Some(Val::Bool(*b)),
        _ => None,
    }
}

/// Lowers to a native tree; `None` when any part is outside the subset.
fn lower(e: &IdedExpr, data: &mut DataLists, refs: &mut FieldRefs) -> Result<Option<Node>, LoadErr> {
    let b = |n: Node| Box::new(n);
    if let Some((m, name)) = field_ref(e) {
        return Ok(Some(Node::Field(refs.field(m, name))));
    }
    Ok(Some(match &e.expr {
        Ast::Literal(l) => match lit_val(l) {
            Some(v) => Node::Lit(v),
            None => return Ok(None),
        },
        Ast::Select(SelectExpr { operand, field, test }) => {
            if *test {
                match field_map(operand) {
                    Some(m) => Node::Has(refs.field(m, field)),
                    None => return Ok(None),
                }
            } else if ident(operand) == Some("evt") && field == "time" {
                Node::Time
            } else if ident(operand) == Some("evt") && field == "log_type" {
                Node::LogType
            } else {
                return Ok(None);
            }
        }
        Ast::Call(c) => {
            let args = &c.args;
            let sub = |i: usize,
                       data: &mut DataLists,
                       refs: &mut FieldRefs|
             -> Result<Option<Box<Node>>, LoadErr> {
                Ok(match args.get(i) {
                    Some(a) => lower(a, data, refs)?.map(Box::new),
                    None => None,
                })
            };
            macro_rules! l {
                ($i:expr) => {
                    match sub($i, data, refs)? {
                        Some(n) => n,
                        None => return Ok(None),
                    }
                };
            }
            let target = match &c.target {
                Some(t) => match lower(t, data, refs)? {
                    Some(n) => Some(b(n)),
                    None => return Ok(None),
                },
                None => None,
            };
            let name = c.func_name.as_str();
            match (name, target, args.len()) {
                (op::LOGICAL_AND, None, 2) => {
                    let mut all = Vec::new();
                    for n in [*l!(0), *l!(1)] {
                        match n {
                            Node::And(inner) => all.extend(inner),
                            n => all.push(n),
                        }
                    }
                    Node::And(all)
                }
                (op::LOGICAL_OR, None, 2) => Node::Or(l!(0), l!(1)),
                (op::LOGICAL_NOT, None, 1) => Node::Not(l!(0)),
                (op::NEGATE, None, 1) => Node::Neg(l!(0)),
                (op::CONDITIONAL, None, 3) => Node::Cond(l!(0), l!(1), l!(2)),
                (op::ADD, None, 2) => Node::Add(l!(0), l!(1)),
                (op::EQUALS | op::NOT_EQUALS, None, 2) => {
                    let negate = name == op::NOT_EQUALS;
                    match (field_ref(&args[0]), str_lit(&args[1])) {
                        (Some((m, f)), Some(v)) => Node::FieldIs(refs.field(m, f), v.into(), negate),
                        _ => Node::Cmp(if negate { Cmp::Ne } else { Cmp::Eq }, l!(0), l!(1)),
                    }
                }
                (op::LESS, None, 2) => Node::Cmp(Cmp::Lt, l!(0), l!(1)),
                (op::LESS_EQUALS, None, 2) => Node::Cmp(Cmp::Le, l!(0), l!(1)),
                (op::GREATER, None, 2) => Node::Cmp(Cmp::Gt, l!(0), l!(1)),
                (op::GREATER_EQUALS, None, 2) => Node::Cmp(Cmp::Ge, l!(0), l!(1)),
                (op::IN, None, 2) => match &args[1].expr {
                    Ast::List(list) => {
                        let mut vals = Vec::with_capacity(list.elements.len());
                        for el in &list.elements {
                            match &el.expr {
                                Ast::Literal(lit) => match lit_val(lit) {
                                    Some(v) => vals.push(v),
                                    None => return Ok(None),
                                },
                                _ => return Ok(None),
                            }
                        }
                        if vals.iter().all(|v| matches!(v, Val::Str(_))) {
                            let set = vals.into_iter().map(Val::into_key).collect();
                            Node::InStrSet(l!(0), set)
                        } else {
                            Node::InList(l!(0), vals)
                        }
                    }
                    _ => Node::InExpr(l!(0), l!(1)),
                },
                ("startsWith", Some(t), 1) => Node::Str(StrFn::StartsWith, t, l!(0)),
                ("endsWith", Some(t), 1) => Node::Str(StrFn::EndsWith, t, l!(0)),
                ("contains", Some(t), 1) => Node::Str(StrFn::Contains, t, l!(0)),
                ("matches", Some(t), 1) => match str_lit(&args[0]) {
                    Some(re) => {
                        Node::Matches(t, Regex::new(re).map_err(|e| format!("invalid regex `{re}`: {e}"))?)
                    }
                    None => return Ok(None),
                },
                ("size", Some(t), 0) => Node::Size(t),
                ("size", None, 1) => Node::Size(l!(0)),
                ("url_decode", None, 1) => Node::UrlDecode(l!(0)),
                ("lower", None, 1) => Node::Lower(l!(0)),
                (f, None, 2) if MatchKindFn::from_function(f).is_some() => {
                    let (Some(kind), Some(file)) = (MatchKindFn::from_function(f), str_lit(&args[1])) else {
                        return Ok(None);
                    };
                    Node::Data(l!(0), data.matcher(file, kind)?)
                }
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    }))
}

fn conjuncts<'a>(e: &'a IdedExpr, out: &mut Vec<&'a IdedExpr>) {
    match &e.expr {
        Ast::Call(CallExpr { func_name, target: None, args })
            if func_name == op::LOGICAL_AND && args.len() == 2 =>
        {
            conjuncts(&args[0], out);
            conjuncts(&args[1], out);
        }
        _ => out.push(e),
    }
}

fn route_of(e: &IdedExpr) -> Option<Route> {
    let Ast::Call(CallExpr { func_name, target: None, args }) = &e.expr else {
        return None;
    };
    if args.len() != 2 {
        return None;
    }
    let mk =
        |(map, field): (FieldMap, &str), values: Vec<String>| Route { map, field: field.to_owned(), values };
    match func_name.as_str() {
        op::EQUALS => {
            if let (Some(f), Some(v)) = (field_ref(&args[0]), str_lit(&args[1])) {
                Some(mk(f, vec![v.to_owned()]))
            } else if let (Some(v), Some(f)) = (str_lit(&args[0]), field_ref(&args[1])) {
                Some(mk(f, vec![v.to_owned()]))
            } else {
                None
            }
        }
        op::IN => {
            let f = field_ref(&args[0])?;
            let Ast::List(list) = &args[1].expr else {
                return None;
            };
            let values: Option<Vec<String>> =
                list.elements.iter().map(|x| str_lit(x).map(str::to_owned)).collect();
            Some(mk(f, values?))
        }
        _ => None,
    }
}

/// The root CEL context (built-in functions plus ours), shared by every event.
pub(crate) fn root_context(matchers: Arc<HashMap<(String, MatchKindFn), Arc<Matcher>>>) -> Context<'static> {
    let mut ctx = Context::default();
    for (fname, kind) in MatchKindFn::ALL {
        let matchers = matchers.clone();
        ctx.add_function(fname, move |v: Arc<String>, file: Arc<String>| -> Result<Value, ExecutionError> {
            match matchers.get(&(file.as_str().to_owned(), kind)) {
                Some(m) => Ok(Value::Bool(m.is_match(&v))),
                None => Err(ExecutionError::function_error(fname, format!("unknown data file {file}"))),
            }
        });
    }
    ctx.add_function("url_decode", |v: Arc<String>| -> String { url_decode(&v).into_owned() });
    ctx.add_function("lower", |v: Arc<String>| -> String { v.to_lowercase() });
    ctx
}

/// The CEL side of one event's evaluation: the `evt` value is built at most once per
/// event, and only if some candidate scenario has an expression CEL must evaluate.
pub(crate) struct CelScope<'r, 'f> {
    root: &'r Context<'static>,
    refs: &'f FieldRefs,
    evt: Option<Value>,
}

impl<'r, 'f> CelScope<'r, 'f> {
    pub(crate) fn new(root: &'r Context<'static>, refs: &'f FieldRefs) -> Self {
        CelScope { root, refs, evt: None }
    }

    fn evt_value(&mut self, ev: &Event) -> Value {
        if let Some(v) = &self.evt {
            return v.clone();
        }
        let mut meta: HashMap<String, Value> = HashMap::with_capacity(ev.meta.len() + 4);
        let mut parsed: HashMap<String, Value> = HashMap::with_capacity(ev.parsed.len() + 4);
        for (k, v) in ev.meta.iter() {
            meta.insert(k.to_owned(), Value::from(v));
        }
        for (k, v) in ev.parsed.iter() {
            parsed.insert(k.to_owned(), Value::from(v));
        }
        for (m, name) in &self.refs.names {
            let map = match m {
                FieldMap::Meta => &mut meta,
                FieldMap::Parsed => &mut parsed,
            };
            map.entry(name.clone()).or_insert_with(|| Value::from(""));
        }
        let mut evt: HashMap<String, Value> = HashMap::with_capacity(4);
        evt.insert("meta".into(), Value::from(meta));
        evt.insert("parsed".into(), Value::from(parsed));
        evt.insert("time".into(), Value::Int(ev.time.as_millis()));
        evt.insert("log_type".into(), Value::from(ev.line.log_type.deref()));
        let v = Value::from(evt);
        self.evt = Some(v.clone());
        v
    }

    fn eval(&mut self, ev: &Event, ast: &IdedExpr) -> Result<Value, ExecutionError> {
        let evt = self.evt_value(ev);
        let mut ctx = self.root.new_inner_scope();
        ctx.add_variable_from_value("evt", evt);
        // cel-interpreter has `todo!()`/`panic!` paths (e.g. a comprehension over a
        // string); a hostile log line must never take the node down.
        catch_unwind(AssertUnwindSafe(|| Value::resolve(ast, &ctx)))
            .unwrap_or_else(|_| Err(ExecutionError::function_error("cel", "interpreter panicked")))
    }
}
