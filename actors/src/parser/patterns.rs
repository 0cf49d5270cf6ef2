//! Named sub-patterns (`%{IP}`, `%{USER:target}`) and their expansion into plain regexes.
//!
//! Grok-style names keep hub files readable and let one fix of, say, `IPV6` reach every
//! parser. Expansion happens once, at load: the compiled regex never sees `%{...}`.
//! `%{NAME}` becomes `(?:body)` and `%{NAME:field}` becomes `(?P<field>body)`; bodies
//! may reference other names, recursively; a reference cycle is a load error naming
//! the cycle, not a stack overflow.

use std::collections::{BTreeMap, HashMap};

/// The built-in library, compiled into the binary so that no hub directory can lose it.
pub(crate) const BUILTIN_PATTERNS: &str = include_str!("patterns.yaml");

/// Why an expansion failed. The caller adds the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PatternError {
    /// `%{NAME}` where no such pattern exists.
    #[error("unknown pattern %{{{name}}} (define it in pattern_syntax, or use one of the built-in names such as IP, USER, INT, DATA, GREEDYDATA, SYSLOGTIMESTAMP, HTTPDATE)")]
    Unknown { name: String },
    /// `A` uses `B` which uses `A`.
    #[error("pattern reference cycle: {}", .chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    /// `%{` without a well-formed `NAME}` or `NAME:field}` after it.
    #[error("malformed pattern reference {text:?}: expected %{{NAME}} or %{{NAME:field}}")]
    Malformed { text: String },
}

/// A set of named patterns, looked up innermost first: a file's `pattern_syntax`, then
/// the global library.
#[derive(Debug, Default, Clone)]
pub(crate) struct PatternLibrary {
    patterns: HashMap<String, String>,
}

impl PatternLibrary {
    /// The built-in library.
    pub(crate) fn builtin() -> Result<Self, serde_yaml::Error> {
        let patterns: BTreeMap<String, String> = serde_yaml::from_str(BUILTIN_PATTERNS)?;
        Ok(PatternLibrary { patterns: patterns.into_iter().collect() })
    }

    /// Adds (or replaces) a pattern.
    pub(crate) fn insert(&mut self, name: String, body: String) {
        self.patterns.insert(name, body);
    }

    /// Whether `name` is defined.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.patterns.contains_key(name)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.patterns.get(name).map(String::as_str)
    }
}

/// Expands every `%{...}` in `pattern`, looking names up in `local` first, then `global`.
pub(crate) fn expand(
    pattern: &str,
    local: &PatternLibrary,
    global: &PatternLibrary,
) -> Result<String, PatternError> {
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut stack = Vec::new();
    let mut memo = HashMap::new();
    expand_into(pattern, local, global, &mut stack, &mut memo, &mut out)?;
    Ok(out)
}

fn lookup<'a>(name: &str, local: &'a PatternLibrary, global: &'a PatternLibrary) -> Option<&'a str> {
    local.get(name).or_else(|| global.get(name))
}

fn expand_into(
    pattern: &str,
    local: &PatternLibrary,
    global: &PatternLibrary,
    stack: &mut Vec<String>,
    memo: &mut HashMap<String, String>,
    out: &mut String,
) -> Result<(), PatternError> {
    let mut rest = pattern;
    while let Some(pos) = find_reference(rest) {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| PatternError::Malformed { text: rest[pos..].chars().take(40).collect() })?;
        let inner = &after[..end];
        let (name, field) = match inner.split_once(':') {
            Some((n, f)) => (n, Some(f)),
            None => (inner, None),
        };
        let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid(name) || field.is_some_and(|f| !valid(f)) {
            return Err(PatternError::Malformed { text: format!("%{{{inner}}}") });
        }
        let body = expanded(name, local, global, stack, memo)?;
        match field {
            Some(f) => {
                out.push_str("(?P<");
                out.push_str(f);
                out.push('>');
            }
            None => out.push_str("(?:"),
        }
        out.push_str(&body);
        out.push(')');
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

/// The expansion of pattern `name`, memoised within one top-level expansion.
fn expanded(
    name: &str,
    local: &PatternLibrary,
    global: &PatternLibrary,
    stack: &mut Vec<String>,
    memo: &mut HashMap<String, String>,
) -> Result<String, PatternError> {
    if let Some(done) = memo.get(name) {
        return Ok(done.clone());
    }
    if let Some(at) = stack.iter().position(|n| n == name) {
        let mut chain = stack[at..].to_vec();
        chain.push(name.to_owned());
        return Err(PatternError::Cycle { chain });
    }
    let body = lookup(name, local, global).ok_or_else(|| PatternError::Unknown { name: name.to_owned() })?;
    stack.push(name.to_owned());
    let mut out = String::with_capacity(body.len());
    let result = expand_into(body, local, global, stack, memo, &mut out);
    stack.pop();
    result?;
    memo.insert(name.to_owned(), out.clone());
    Ok(out)
}

/// Position of the next `%{` that is not escaped as `\%{`.
fn find_reference(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(off) = s[from..].find("%{") {
        let pos = from + off;
        // An odd number of backslashes before `%` escapes it.
        let slashes = bytes[..pos].iter().rev().take_while(|&&b| b == b'\\').count();
        if slashes % 2 == 0 {
            return Some(pos);
        }
        from = pos + 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(pairs: &[(&str, &str)]) -> PatternLibrary {
        let mut l = PatternLibrary::default();
        for (k, v) in pairs {
            l.insert((*k).into(), (*v).into());
        }
        l
    }

    #[test]
    fn expands_recursively_with_captures() {
        let global = lib(&[("A", "a+"), ("B", "%{A}b")]);
        let local = lib(&[("C", "%{B:bee}c")]);
        assert_eq!(expand("^%{C}$", &local, &global).as_deref(), Ok("^(?:(?P<bee>(?:a+)b)c)$"));
        assert_eq!(expand("x%{A:first}y", &local, &global).as_deref(), Ok("x(?P<first>a+)y"));
    }

    #[test]
    fn local_shadows_global() {
        let global = lib(&[("A", "global")]);
        let local = lib(&[("A", "local")]);
        assert_eq!(expand("%{A}", &local, &global).as_deref(), Ok("(?:local)"));
    }

    #[test]
    fn detects_cycles() {
        let global = lib(&[("A", "%{B}"), ("B", "x%{C}"), ("C", "%{A}")]);
        let err = expand("%{A}", &PatternLibrary::default(), &global).expect_err("a cycle");
        assert_eq!(err, PatternError::Cycle { chain: vec!["A".into(), "B".into(), "C".into(), "A".into()] });
        let selfref = lib(&[("S", "%{S}")]);
        assert!(matches!(expand("%{S}", &selfref, &global), Err(PatternError::Cycle { .. })));
    }

    #[test]
    fn reports_unknown_and_malformed() {
        let empty = PatternLibrary::default();
        assert_eq!(expand("%{NOPE}", &empty, &empty), Err(PatternError::Unknown { name: "NOPE".into() }));
        assert!(matches!(expand("%{IP", &empty, &empty), Err(PatternError::Malformed { .. })));
        assert!(matches!(expand("%{IP:a-b}", &empty, &empty), Err(PatternError::Malformed { .. })));
        assert!(matches!(expand("%{IP:x:int}", &empty, &empty), Err(PatternError::Malformed { .. })));
    }

    #[test]
    fn escaped_reference_is_literal() {
        let empty = PatternLibrary::default();
        assert_eq!(expand(r"50\%{x}", &empty, &empty).as_deref(), Ok(r"50\%{x}"));
    }

    #[test]
    fn builtin_library_expands_and_compiles() {
        let global = PatternLibrary::builtin().expect("builtin library parses");
        for name in global.patterns.keys() {
            let re = expand(&format!("%{{{name}}}"), &PatternLibrary::default(), &global)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            regex::bytes::RegexBuilder::new(&re)
                .unicode(false)
                .build()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
