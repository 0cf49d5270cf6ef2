//! The YAML schema of a parser file, as written by people. Unknown keys are errors (a
//! typo such as `aply_on` must not silently change what a parser matches).

use serde::Deserialize;
use std::collections::BTreeMap;

/// One parser: one YAML document of a file under `parsers/<stage>/`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParserDoc {
    /// Unique name, e.g. `palisade/sshd-logs`; metrics and `explain` use it.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Which lines this parser looks at at all.
    #[serde(default)]
    pub filter: FilterConfig,
    /// `next_stage` stops the stage at this parser when it matches; `continue` (the
    /// default, as in CrowdSec) lets later parsers of the stage run too.
    #[serde(default)]
    pub onsuccess: OnSuccess,
    /// Named sub-patterns local to this parser.
    #[serde(default)]
    pub pattern_syntax: BTreeMap<String, String>,
    /// Tried in order; the first that matches wins.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    /// Applied when the parser matches, after the matching node's.
    #[serde(default)]
    pub statics: Vec<StaticConfig>,
    /// Documentation only, accepted for CrowdSec familiarity.
    #[serde(default)]
    #[allow(dead_code)]
    pub author: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pub references: Vec<String>,
}

/// What to do after a parser matched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnSuccess {
    #[default]
    Continue,
    NextStage,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A small declarative matcher: every condition given must hold. Deliberately not an
/// expression language: it is evaluated for every line, and the `program` condition
/// lets the engine dispatch a line to its parsers with one hash lookup.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterConfig {
    /// The source's log type (`RawLine::log_type`) is one of these.
    pub log_type: Option<OneOrMany>,
    /// The source's log type is none of these.
    pub not_log_type: Option<OneOrMany>,
    /// `parsed.program` is one of these.
    pub program: Option<OneOrMany>,
    /// `parsed.program` starts with one of these.
    pub program_prefix: Option<OneOrMany>,
    /// `meta.<key>` is one of the values.
    #[serde(default)]
    pub meta: BTreeMap<String, OneOrMany>,
    /// `parsed.<key>` is one of the values.
    #[serde(default)]
    pub parsed: BTreeMap<String, OneOrMany>,
    /// These meta fields are set.
    #[serde(default)]
    pub has_meta: Vec<String>,
    /// These parsed fields are set.
    #[serde(default)]
    pub has_parsed: Vec<String>,
}

/// One node: a regex applied to a field (or a built-in method), the values it sets, and
/// optional child nodes that refine it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeConfig {
    /// For `explain` and error messages.
    pub name: Option<String>,
    /// A regex with `%{NAME}` references. Named groups become parsed fields.
    pub pattern: Option<String>,
    /// `line` (the raw text), `meta.<key>`, `parsed.<key>` or a bare `<key>` (parsed).
    /// Defaults to `message` for patterns; methods have their own default.
    pub apply_on: Option<String>,
    /// A built-in enrichment instead of a pattern.
    pub method: Option<MethodName>,
    /// For `method: http_enrich`: extensions (with the dot) whose requests are static
    /// resources.
    pub static_extensions: Option<Vec<String>>,
    #[serde(default)]
    pub statics: Vec<StaticConfig>,
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
}

/// The built-in enrichment methods (stage s02).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MethodName {
    /// Parses a timestamp field into `Event::time`.
    ParseTimestamp,
    /// Validates and canonicalises an IP address field in place.
    NormalizeIp,
    /// Splits a request target into `http_args`, `file_name`, `file_ext`, `file_dir`,
    /// `static_ressource`.
    HttpEnrich,
}

/// Sets one field: `meta: <key>` or `parsed: <key>`, from `value: <literal>`,
/// `capture: <parsed field>` or `raw: text|log_type|source`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StaticConfig {
    pub meta: Option<String>,
    pub parsed: Option<String>,
    pub value: Option<String>,
    pub capture: Option<String>,
    pub raw: Option<RawField>,
    /// Used when `capture` is absent or empty; without it the field is left unset.
    pub default: Option<String>,
}

/// A property of the raw line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawField {
    Text,
    LogType,
    Source,
}
