//! The YAML format of a scenario file, and its validation into a compiled [`Scenario`].
//!
//! ```yaml
//! type: leaky                      # leaky | trigger | counter
//! name: palisade/ssh-bf            # unique
//! description: "Detect SSH brute force"
//! filter: "evt.meta.log_type == 'ssh_failed-auth'"   # CEL, must yield a bool
//! groupby: evt.meta.source_ip      # CEL -> bucket key (default: evt.meta.source_ip)
//! distinct: evt.meta.target_user   # optional CEL: duplicate values are not poured
//! capacity: 5                      # leaky > 0; trigger 0 (or absent); counter -1 (or absent)
//! leakspeed: 10s                   # leaky only
//! duration: 1h                     # counter only
//! blackhole: 1m                    # optional: silence the same key after an overflow
//! cache_size: 100                  # optional: how many distinct values a bucket remembers
//! scope: {type: Range, v4_prefix: 24, v6_prefix: 64}   # default {type: Ip}
//! remediation: {type: ban, duration: 4h}               # optional
//! labels: {service: ssh, remediation: true, confidence: 3, behavior: "ssh:bruteforce"}
//! ```
//! CrowdSec keys without effect here (`format`, `references`, `debug`, `reprocess`,
//! `version`) are accepted; any other key is an error. A file may hold several
//! documents separated by `---` lines.

use super::data::{DataLists, LoadErr};
use super::expr::{Expr, FieldRefs};
use crate::event::Remediation;
use crate::hub::HubError;
use palisade_proto::time::parse_duration;
use palisade_proto::DecisionType;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The kind of bucket a scenario uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketType {
    /// Token bucket: `capacity` tokens, one back every `leakspeed`.
    Leaky,
    /// Every matching event overflows.
    Trigger,
    /// Counts events for `duration` after the first one, then overflows with the count.
    Counter,
}

impl BucketType {
    /// The name used in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            BucketType::Leaky => "leaky",
            BucketType::Trigger => "trigger",
            BucketType::Counter => "counter",
        }
    }
}

/// What an overflow's `value` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeKind {
    Ip,
    Range { v4: u8, v6: u8 },
}

/// A scenario as `palisade scenarios list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioInfo {
    /// `palisade/ssh-bf`.
    pub name: String,
    /// What it detects.
    pub description: String,
    /// Leaky, trigger or counter.
    pub kind: BucketType,
    /// Tokens (leaky), 0 (trigger) or -1 (counter).
    pub capacity: i64,
    /// One token back every `leakspeed` (leaky only).
    pub leakspeed: Option<Duration>,
    /// How long a counter counts.
    pub duration: Option<Duration>,
    /// Overflows of the same key within this time after one are dropped.
    pub blackhole: Option<Duration>,
    /// The scenario's labels, as strings.
    pub labels: BTreeMap<String, String>,
    /// The hub file it comes from.
    pub file: String,
    /// The filter, as written.
    pub filter: String,
    /// Whether filter, groupby and distinct all run on the native evaluator.
    pub native: bool,
}

/// A compiled scenario.
#[derive(Debug)]
pub(crate) struct Scenario {
    pub(crate) info: ScenarioInfo,
    pub(crate) name: Arc<str>,
    pub(crate) kind: BucketType,
    /// Tokens when full (leaky).
    pub(crate) capacity: i64,
    /// ms per token (leaky).
    pub(crate) leak_ms: i64,
    /// Idle time after which a leaky bucket is freed; counting time of a counter.
    pub(crate) lifetime_ms: i64,
    pub(crate) blackhole_ms: Option<i64>,
    pub(crate) filter: Expr,
    pub(crate) groupby: Expr,
    /// Scenarios whose `groupby` is the same text share this id, so that the key is
    /// evaluated and hashed once per event (set by `Scenarios::load`).
    pub(crate) groupby_id: usize,
    pub(crate) distinct: Option<Expr>,
    /// Likewise for `distinct`.
    pub(crate) distinct_id: usize,
    pub(crate) distinct_limit: usize,
    pub(crate) scope: ScopeKind,
    pub(crate) remediation: Option<Remediation>,
    pub(crate) confidence: u8,
    pub(crate) labels: Arc<BTreeMap<String, String>>,
    /// The line of its `name:` key, for duplicate-name errors.
    pub(crate) name_line: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    description: Option<String>,
    filter: Option<String>,
    groupby: Option<String>,
    distinct: Option<String>,
    capacity: Option<i64>,
    leakspeed: Option<String>,
    duration: Option<String>,
    blackhole: Option<String>,
    cache_size: Option<usize>,
    #[serde(default)]
    labels: BTreeMap<String, serde_yaml::Value>,
    scope: Option<ScopeSpec>,
    remediation: Option<RemediationSpec>,
    // Accepted for CrowdSec compatibility, no effect.
    #[allow(dead_code)]
    format: Option<serde_yaml::Value>,
    #[allow(dead_code)]
    references: Option<serde_yaml::Value>,
    #[allow(dead_code)]
    debug: Option<bool>,
    #[allow(dead_code)]
    reprocess: Option<bool>,
    #[allow(dead_code)]
    version: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeSpec {
    #[serde(rename = "type")]
    kind: String,
    v4_prefix: Option<u8>,
    v6_prefix: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemediationSpec {
    #[serde(rename = "type")]
    kind: Option<String>,
    duration: Option<String>,
}

/// Largest accepted capacity: beyond this a scenario is a typo, not a policy.
const MAX_CAPACITY: i64 = 1_000_000;
/// Distinct values a bucket remembers when `cache_size` is not set.
const DEFAULT_DISTINCT_LIMIT: usize = 1024;

/// One YAML document of a scenario file, with the line it starts at (1-based).
struct Doc<'a> {
    text: &'a str,
    first_line: usize,
}

fn split_docs(text: &str) -> Vec<Doc<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut pos = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            docs.push(Doc { text: &text[start..pos], first_line: start_line });
            start = pos + line.len();
            start_line = i + 2;
        }
        pos += line.len();
    }
    docs.push(Doc { text: &text[start..], first_line: start_line });
    docs.retain(|d| d.text.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    docs
}

/// The line of top-level `key:` in a document, else the document's first line.
fn key_line(doc: &Doc<'_>, key: &str) -> usize {
    for (i, line) in doc.text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix(key) {
            if rest.trim_start().starts_with(':') {
                return doc.first_line + i;
            }
        }
    }
    doc.first_line
}

fn label_string(v: &serde_yaml::Value) -> Option<String> {
    Some(match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Sequence(items) => {
            items.iter().map(label_string).collect::<Option<Vec<_>>>()?.join(",")
        }
        _ => return None,
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Parses every scenario document of one file.
pub(crate) fn parse_file(
    path: &str,
    text: &str,
    data: &mut DataLists,
    refs: &mut FieldRefs,
) -> Result<Vec<Scenario>, HubError> {
    let mut out = Vec::new();
    for doc in split_docs(text) {
        let spec: Spec = serde_yaml::from_str(doc.text).map_err(|e| {
            let line = e.location().map(|l| doc.first_line + l.line() - 1).unwrap_or(doc.first_line);
            HubError::new(path, Some(line), format!("invalid scenario: {e}"))
        })?;
        out.push(compile(path, &doc, spec, data, refs)?);
    }
    Ok(out)
}

fn compile(
    path: &str,
    doc: &Doc<'_>,
    spec: Spec,
    data: &mut DataLists,
    refs: &mut FieldRefs,
) -> Result<Scenario, HubError> {
    let err = |key: &str, msg: String| HubError::new(path, Some(key_line(doc, key)), msg);
    let required = |key: &str, v: Option<String>| -> Result<String, HubError> {
        v.filter(|s| !s.trim().is_empty())
            .ok_or_else(|| HubError::new(path, Some(doc.first_line), format!("missing required key `{key}`")))
    };
    let name = required("name", spec.name)?;
    let description = required("description", spec.description)?;
    let filter_src = required("filter", spec.filter)?;
    let kind = match required("type", spec.kind)?.as_str() {
        "leaky" => BucketType::Leaky,
        "trigger" => BucketType::Trigger,
        "counter" => BucketType::Counter,
        other => {
            return Err(err(
                "type",
                format!("unknown bucket type `{other}`: expected leaky, trigger or counter"),
            ))
        }
    };
    let duration_of = |key: &str, v: &Option<String>| -> Result<Option<Duration>, HubError> {
        match v {
            None => Ok(None),
            Some(s) => match parse_duration(s) {
                Ok(d) if d.as_millis() >= 1 => Ok(Some(d)),
                Ok(_) => Err(err(key, format!("`{key}: {s}` must be at least 1ms"))),
                Err(e) => Err(err(key, format!("invalid duration `{key}: {s}`: {e}"))),
            },
        }
    };
    let leakspeed = duration_of("leakspeed", &spec.leakspeed)?;
    let duration = duration_of("duration", &spec.duration)?;
    let blackhole = duration_of("blackhole", &spec.blackhole)?;
    let (capacity, leak_ms, lifetime_ms) = match kind {
        BucketType::Leaky => {
            let cap =
                spec.capacity.ok_or_else(|| err("type", "a leaky bucket needs `capacity` (> 0)".into()))?;
            if !(1..=MAX_CAPACITY).contains(&cap) {
                return Err(err(
                    "capacity",
                    format!("a leaky bucket needs 0 < capacity <= {MAX_CAPACITY}, got {cap}"),
                ));
            }
            let leak = leakspeed.ok_or_else(|| err("type", "a leaky bucket needs `leakspeed`".into()))?;
            if duration.is_some() {
                return Err(err(
                    "duration",
                    "`duration` is for counter buckets; a leaky bucket uses `leakspeed`".into(),
                ));
            }
            let leak_ms = millis(leak);
            (cap, leak_ms, leak_ms.saturating_mul(cap + 1))
        }
        BucketType::Trigger => {
            if let Some(c) = spec.capacity.filter(|c| *c != 0) {
                return Err(err("capacity", format!("a trigger bucket has capacity 0, got {c}")));
            }
            if duration.is_some() || leakspeed.is_some() {
                return Err(err("type", "a trigger bucket takes neither `leakspeed` nor `duration`".into()));
            }
            (0, 0, 0)
        }
        BucketType::Counter => {
            if let Some(c) = spec.capacity.filter(|c| *c != -1) {
                return Err(err("capacity", format!("a counter bucket has capacity -1, got {c}")));
            }
            let d = duration.ok_or_else(|| err("type", "a counter bucket needs `duration`".into()))?;
            (-1, 0, millis(d))
        }
    };
    let compile_expr = |key: &str, src: &str, data: &mut DataLists, refs: &mut FieldRefs| {
        Expr::compile(src, data, refs).map_err(|e| match e {
            LoadErr::Message(m) => err(key, m),
            LoadErr::Hub(h) => h,
        })
    };
    let filter = compile_expr("filter", &filter_src, data, refs)?;
    let groupby =
        compile_expr("groupby", spec.groupby.as_deref().unwrap_or("evt.meta.source_ip"), data, refs)?;
    let distinct = match &spec.distinct {
        Some(src) => Some(compile_expr("distinct", src, data, refs)?),
        None => None,
    };
    let scope = match &spec.scope {
        None => ScopeKind::Ip,
        Some(s) => match s.kind.to_ascii_lowercase().as_str() {
            "ip" => {
                if s.v4_prefix.is_some() || s.v6_prefix.is_some() {
                    return Err(err("scope", "scope Ip takes no prefix; use type: Range".into()));
                }
                ScopeKind::Ip
            }
            "range" => {
                let (v4, v6) = (s.v4_prefix.unwrap_or(24), s.v6_prefix.unwrap_or(64));
                if v4 > 32 || v6 > 128 {
                    return Err(err(
                        "scope",
                        format!("prefix out of range: v4_prefix {v4} (<= 32), v6_prefix {v6} (<= 128)"),
                    ));
                }
                ScopeKind::Range { v4, v6 }
            }
            other => return Err(err("scope", format!("unsupported scope `{other}`: expected Ip or Range"))),
        },
    };
    let mut labels = BTreeMap::new();
    for (k, v) in &spec.labels {
        let s = label_string(v).ok_or_else(|| {
            err("labels", format!("label `{k}` must be a string, number, bool or list of them"))
        })?;
        labels.insert(k.clone(), s);
    }
    let confidence = match labels.get("confidence") {
        None => 1,
        Some(c) => match c.parse::<u8>() {
            Ok(c) if c <= 3 => c,
            _ => return Err(err("labels", format!("label `confidence` must be 0 to 3, got `{c}`"))),
        },
    };
    let remediation_label = match labels.get("remediation").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(err("labels", format!("label `remediation` must be true or false, got `{other}`")))
        }
    };
    let remediation = match (remediation_label, &spec.remediation) {
        (Some(false), _) | (None, None) => None,
        (_, r) => {
            let kind = match r.as_ref().and_then(|r| r.kind.as_deref()) {
                None | Some("ban") => DecisionType::Ban,
                Some("captcha") => DecisionType::Captcha,
                Some(other) => DecisionType::Other(other.into()),
            };
            let duration =
                match r.as_ref().and_then(|r| r.duration.as_deref()) {
                    None => None,
                    Some(s) => Some(parse_duration(s).map_err(|e| {
                        err("remediation", format!("invalid remediation duration `{s}`: {e}"))
                    })?),
                };
            Some(Remediation { kind, duration })
        }
    };
    let native = filter.is_native() && groupby.is_native() && distinct.as_ref().is_none_or(Expr::is_native);
    let info = ScenarioInfo {
        name: name.clone(),
        description,
        kind,
        capacity,
        leakspeed: if kind == BucketType::Leaky { leakspeed } else { None },
        duration,
        blackhole,
        labels: labels.clone(),
        file: path.to_owned(),
        filter: filter_src,
        native,
    };
    Ok(Scenario {
        info,
        name: name.into(),
        kind,
        capacity,
        leak_ms,
        lifetime_ms,
        blackhole_ms: blackhole.map(millis),
        filter,
        groupby,
        groupby_id: 0,
        distinct,
        distinct_id: 0,
        distinct_limit: spec.cache_size.unwrap_or(DEFAULT_DISTINCT_LIMIT).max(1),
        scope,
        remediation,
        confidence,
        labels: Arc::new(labels),
        name_line: key_line(doc, "name"),
    })
}
