//! Data lists (`hub/data/*.txt`) and the matchers compiled from them once, at load time.
//!
//! A data file holds one entry per line; blank lines and lines starting with `#` are
//! ignored, and surrounding whitespace is trimmed. A scenario names a file by its path
//! under `data/` (e.g. `"bad_user_agents.txt"`); each file is compiled only into the
//! matchers the scenarios actually use (exact set, case-folded set, Aho-Corasick
//! automaton, regex set), and every scenario shares them.

use crate::hub::{HubError, HubFile};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::RegexSet;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// How a data list is matched against a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MatchKindFn {
    /// `in_file`: the value equals an entry.
    Exact,
    /// `in_file_nocase`: the value equals an entry, ASCII case ignored.
    ExactNoCase,
    /// `contains_any_from_file`: an entry occurs in the value, ASCII case ignored.
    Substring,
    /// `regex_from_file`: an entry, as a regex, matches somewhere in the value.
    Regex,
}

impl MatchKindFn {
    /// The CEL function name for this kind of match.
    pub(crate) fn from_function(name: &str) -> Option<Self> {
        Some(match name {
            "in_file" => MatchKindFn::Exact,
            "in_file_nocase" => MatchKindFn::ExactNoCase,
            "contains_any_from_file" => MatchKindFn::Substring,
            "regex_from_file" => MatchKindFn::Regex,
            _ => return None,
        })
    }

    /// All data-list functions, for registration in the CEL fallback context.
    pub(crate) const ALL: [(&'static str, MatchKindFn); 4] = [
        ("in_file", MatchKindFn::Exact),
        ("in_file_nocase", MatchKindFn::ExactNoCase),
        ("contains_any_from_file", MatchKindFn::Substring),
        ("regex_from_file", MatchKindFn::Regex),
    ];
}

/// One compiled matcher over one data file, with a memo of recent results.
#[derive(Debug)]
pub(crate) struct Matcher {
    kind: MatcherKind,
    /// Results of the scanning kinds (substring, regex) by exact value; `None` for the
    /// exact kinds, whose lookup already is a single hash probe.
    memo: Option<Mutex<Memo>>,
}

/// The compiled form of a list.
#[derive(Debug)]
enum MatcherKind {
    Exact(HashSet<String>),
    ExactNoCase(HashSet<String>),
    Substring(Option<AhoCorasick>),
    Regex(RegexSet),
}

/// Entries a [`Memo`] holds before it starts over.
const MEMO_CAPACITY: usize = 4096;
/// Longer values are scanned every time, which bounds the memo's memory (about
/// `MEMO_CAPACITY * MEMO_MAX_LEN` bytes per list at worst) and keeps out the long,
/// one-off values attackers write, which would only evict the recurring ones.
const MEMO_MAX_LEN: usize = 256;

/// Recent results of one matcher, keyed by the exact value.
///
/// Real traffic repeats itself: a few dozen user agents make most of a site's
/// requests, and popular paths recur, while scanning a 110-byte user agent with an
/// Aho-Corasick automaton of a few hundred entries costs far more than hashing it.
/// Results are exact (the full value is the key), so the memo never changes an answer.
/// It is bounded by simply clearing it when full: no eviction bookkeeping on the hot
/// path, and a working set that fits refills within a few thousand lines. The hasher
/// is randomly seeded, so values an attacker chooses cannot be made to collide.
///
/// Every memo hashes with one process-wide hasher ([`memo_hash`]), so a value checked
/// against several lists (an event's path meets four or five of them, often through a
/// `url_decode` that changed nothing) is hashed once, not once per list.
#[derive(Debug)]
struct Memo {
    /// (value, result), found by [`memo_hash`] of the value.
    map: hashbrown::HashTable<(Box<str>, bool)>,
}

impl Memo {
    fn new() -> Self {
        Memo { map: hashbrown::HashTable::new() }
    }
}

/// The hash of `value` for every [`Memo`], with the last value hashed on this thread
/// remembered: the filters of one event ask for the same value against list after
/// list, and comparing it with the previous one is cheaper than hashing it again. The
/// cache is keyed by the full text, so a hit is always the value's true hash. The
/// hasher is randomly seeded once per process, so attackers still cannot aim for
/// collisions.
fn memo_hash(value: &str) -> u64 {
    use std::cell::RefCell;
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    static HASHER: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    thread_local! {
        static LAST: RefCell<(String, u64)> = const { RefCell::new((String::new(), 0)) };
    }
    let hash = || HASHER.get_or_init(foldhash::fast::RandomState::default).hash_one(value);
    LAST.try_with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return hash();
        };
        if last.0 != value {
            last.1 = hash();
            last.0.clear();
            last.0.push_str(value);
        }
        last.1
    })
    .unwrap_or_else(|_| hash())
}

impl Matcher {
    fn new(kind: MatcherKind) -> Self {
        let memo = match kind {
            MatcherKind::Substring(_) | MatcherKind::Regex(_) => Some(Mutex::new(Memo::new())),
            MatcherKind::Exact(_) | MatcherKind::ExactNoCase(_) => None,
        };
        Matcher { kind, memo }
    }

    /// Whether `value` matches the list.
    ///
    /// The memo sits behind a mutex because scenarios (and their matchers) are shared
    /// between pipelines; each pipeline is single-threaded, so the lock is normally
    /// uncontended, and a caller that finds it taken (or poisoned) just scans.
    pub(crate) fn is_match(&self, value: &str) -> bool {
        let Some(memo) = self.memo.as_ref().filter(|_| value.len() <= MEMO_MAX_LEN) else {
            return self.scan(value);
        };
        let Ok(mut memo) = memo.try_lock() else {
            return self.scan(value);
        };
        let hash = memo_hash(value);
        if let Some(&(_, hit)) = memo.map.find(hash, |(k, _)| **k == *value) {
            return hit;
        }
        let result = self.scan(value);
        if memo.map.len() >= MEMO_CAPACITY {
            memo.map.clear();
        }
        memo.map.insert_unique(hash, (value.into(), result), |(k, _)| memo_hash(k));
        result
    }

    /// Matches without the memo.
    fn scan(&self, value: &str) -> bool {
        match &self.kind {
            MatcherKind::Exact(set) => set.contains(value),
            MatcherKind::ExactNoCase(set) => {
                if value.bytes().any(|b| b.is_ascii_uppercase()) {
                    set.contains(&value.to_ascii_lowercase())
                } else {
                    set.contains(value)
                }
            }
            MatcherKind::Substring(ac) => ac.as_ref().is_some_and(|ac| ac.is_match(value)),
            MatcherKind::Regex(set) => set.is_match(value),
        }
    }
}

/// The data files available to scenarios, and the matchers built from them so far.
#[derive(Debug, Default)]
pub(crate) struct DataLists {
    /// File name under `data/` -> (path as given, entries with their 1-based lines).
    files: HashMap<String, (String, Vec<(usize, String)>)>,
    /// Matchers already built, shared by every scenario that uses them.
    matchers: HashMap<(String, MatchKindFn), Arc<Matcher>>,
}

impl DataLists {
    /// Reads every `data/...` file (others are ignored).
    pub(crate) fn new(files: &[HubFile]) -> Self {
        let mut lists = DataLists::default();
        for file in files {
            let Some(name) = file.path.strip_prefix("data/") else {
                continue;
            };
            let entries = file
                .text
                .lines()
                .enumerate()
                .map(|(i, l)| (i + 1, l.trim()))
                .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
                .map(|(i, l)| (i, l.to_owned()))
                .collect();
            lists.files.insert(name.to_owned(), (file.path.clone(), entries));
        }
        lists
    }

    /// The matcher of `kind` over file `name`, built on first use. The error is a
    /// message for the caller to place at the scenario's file and line, or a complete
    /// [`HubError`] pointing into the data file (a bad regex).
    pub(crate) fn matcher(&mut self, name: &str, kind: MatchKindFn) -> Result<Arc<Matcher>, LoadErr> {
        if let Some(m) = self.matchers.get(&(name.to_owned(), kind)) {
            return Ok(m.clone());
        }
        let Some((path, entries)) = self.files.get(name) else {
            let mut known: Vec<&str> = self.files.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(LoadErr::Message(format!(
                "data file `data/{name}` not found (available: {})",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            )));
        };
        let matcher = match kind {
            MatchKindFn::Exact => MatcherKind::Exact(entries.iter().map(|(_, e)| e.clone()).collect()),
            MatchKindFn::ExactNoCase => {
                MatcherKind::ExactNoCase(entries.iter().map(|(_, e)| e.to_ascii_lowercase()).collect())
            }
            MatchKindFn::Substring => {
                if entries.is_empty() {
                    MatcherKind::Substring(None)
                } else {
                    let ac = AhoCorasickBuilder::new()
                        .ascii_case_insensitive(true)
                        .match_kind(MatchKind::LeftmostFirst)
                        .build(entries.iter().map(|(_, e)| e.as_str()))
                        .map_err(|e| LoadErr::Hub(HubError::new(path.clone(), None, e.to_string())))?;
                    MatcherKind::Substring(Some(ac))
                }
            }
            MatchKindFn::Regex => {
                for (line, e) in entries {
                    if let Err(err) = regex::Regex::new(e) {
                        return Err(LoadErr::Hub(HubError::new(
                            path.clone(),
                            Some(*line),
                            format!("invalid regex: {err}"),
                        )));
                    }
                }
                let set = RegexSet::new(entries.iter().map(|(_, e)| e.as_str()))
                    .map_err(|e| LoadErr::Hub(HubError::new(path.clone(), None, e.to_string())))?;
                MatcherKind::Regex(set)
            }
        };
        let matcher = Arc::new(Matcher::new(matcher));
        self.matchers.insert((name.to_owned(), kind), matcher.clone());
        Ok(matcher)
    }

    /// Every matcher built, for the CEL fallback functions.
    pub(crate) fn into_matchers(self) -> HashMap<(String, MatchKindFn), Arc<Matcher>> {
        self.matchers
    }
}

/// A load error: either a bare message (the caller knows where) or a located one.
#[derive(Debug)]
pub(crate) enum LoadErr {
    Message(String),
    Hub(HubError),
}

impl From<String> for LoadErr {
    fn from(s: String) -> Self {
        LoadErr::Message(s)
    }
}

/// Percent-decodes `s` (`%2e` -> `.`, `+` -> space), leaving malformed escapes as they
/// are; invalid UTF-8 in the result is replaced. Used by `url_decode()` in filters.
pub(crate) fn url_decode(s: &str) -> Cow<'_, str> {
    if memchr::memchr2(b'%', b'+', s.as_bytes()).is_none() {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_decode_handles_escapes_and_garbage() {
        assert_eq!(url_decode("a%2e%2E/b"), "a../b");
        assert_eq!(url_decode("%27%20OR%201%3D1"), "' OR 1=1");
        assert_eq!(url_decode("a+b"), "a b");
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz%4"), "%zz%4");
        assert_eq!(url_decode("%ff"), "\u{fffd}");
        assert_eq!(url_decode("%41"), "A");
    }

    #[test]
    fn matchers() {
        let files =
            vec![HubFile { path: "data/x.txt".into(), text: "# comment\n\nsqlmap\n  Nikto \n".into() }];
        let mut d = DataLists::new(&files);
        let sub = d.matcher("x.txt", MatchKindFn::Substring).expect("builds");
        assert!(sub.is_match("Mozilla/5.00 (nikto/2.5)"));
        assert!(!sub.is_match("curl"));
        let ex = d.matcher("x.txt", MatchKindFn::ExactNoCase).expect("builds");
        assert!(ex.is_match("NIKTO"));
        let ex = d.matcher("x.txt", MatchKindFn::Exact).expect("builds");
        assert!(!ex.is_match("NIKTO") && ex.is_match("Nikto"));
        assert!(matches!(d.matcher("nope.txt", MatchKindFn::Exact), Err(LoadErr::Message(_))));
    }
}
