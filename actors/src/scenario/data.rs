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
use std::hash::BuildHasher;
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

/// One compiled matcher over one data file; the scanning kinds share a memo of results.
#[derive(Debug)]
pub(crate) struct Matcher {
    kind: MatcherKind,
    /// This matcher's bit in the [`ValueMemo`] (substring and regex lists); `None` for
    /// the exact kinds, whose lookup already is a single hash probe.
    slot: Option<u32>,
    memo: Arc<ValueMemo>,
}

/// The compiled form of a list.
#[derive(Debug)]
enum MatcherKind {
    Exact(HashSet<String>),
    ExactNoCase(HashSet<String>),
    Substring(Option<AhoCorasick>),
    Regex(RegexSet),
}

/// Values the [`ValueMemo`] holds before it starts over.
const MEMO_CAPACITY: usize = 8192;
/// Longer values are scanned every time, which bounds the memo's memory (about
/// `MEMO_CAPACITY * MEMO_MAX_LEN` bytes at worst) and keeps out the long, one-off values
/// attackers write, which would only evict the recurring ones.
const MEMO_MAX_LEN: usize = 256;
/// Scanning matchers that get a bit in the memo; more are simply scanned every time.
const MEMO_SLOTS: u32 = 64;

/// Recent results of every scanning matcher, keyed by the exact value.
///
/// Real traffic repeats itself: a few dozen user agents make most of a site's
/// requests, and popular paths recur, while scanning a 110-byte user agent with an
/// Aho-Corasick automaton of a few hundred entries costs far more than hashing it.
/// Results are exact (the full value is the key), so the memo never changes an answer.
/// One table serves every list: an event's path meets four or five lists, and one probe
/// finds what each of them said (bit `slot` of `known` and `hits`), which the event
/// keeps for its other filters (see [`Matcher::lookup`]). It is bounded by simply
/// clearing it when full: no eviction bookkeeping on the hot path, and a working set
/// that fits refills within a few thousand lines. The hasher is randomly seeded, so
/// values an attacker chooses cannot be made to collide.
#[derive(Debug, Default)]
pub(crate) struct ValueMemo {
    /// Behind a mutex because scenarios (and their matchers) are shared between
    /// pipelines; each pipeline is single-threaded, so the lock is normally uncontended,
    /// and a caller that finds it taken (or poisoned) just scans.
    map: Mutex<hashbrown::HashTable<MemoEntry>>,
    hasher: foldhash::fast::RandomState,
}

#[derive(Debug)]
struct MemoEntry {
    value: Box<str>,
    /// Bit `slot` set: matcher `slot`'s result is known ...
    known: u64,
    /// ... and is this bit.
    hits: u64,
}

/// What the memo knows about one value: bit `slot` of `known` says whether matcher
/// `slot` was asked, the same bit of `hits` what it answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Known {
    pub known: u64,
    pub hits: u64,
}

impl Known {
    /// Matcher `m`'s answer, when known.
    pub(crate) fn get(&self, m: &Matcher) -> Option<bool> {
        let bit = 1u64 << m.slot?;
        (self.known & bit != 0).then_some(self.hits & bit != 0)
    }
}

impl Matcher {
    /// Whether `value` matches the list.
    pub(crate) fn is_match(&self, value: &str) -> bool {
        self.lookup(value).0
    }

    /// Whether `value` matches the list, and what the memo knows about `value` for
    /// every list (this one included) when it could ask it.
    pub(crate) fn lookup(&self, value: &str) -> (bool, Option<Known>) {
        let Some(slot) = self.slot.filter(|_| value.len() <= MEMO_MAX_LEN) else {
            return (self.scan(value), None);
        };
        let Ok(mut map) = self.memo.map.try_lock() else {
            return (self.scan(value), None);
        };
        let bit = 1u64 << slot;
        let hasher = &self.memo.hasher;
        let hash = hasher.hash_one(value);
        if let Some(e) = map.find_mut(hash, |e| *e.value == *value) {
            if e.known & bit == 0 {
                e.known |= bit;
                if self.scan(value) {
                    e.hits |= bit;
                }
            }
            return (e.hits & bit != 0, Some(Known { known: e.known, hits: e.hits }));
        }
        let result = self.scan(value);
        if map.len() >= MEMO_CAPACITY {
            map.clear();
        }
        let hits = if result { bit } else { 0 };
        map.insert_unique(hash, MemoEntry { value: value.into(), known: bit, hits }, |e| {
            hasher.hash_one(&*e.value)
        });
        (result, Some(Known { known: bit, hits }))
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
    /// The memo of every scanning matcher, and the next free slot in it.
    memo: Arc<ValueMemo>,
    slots: u32,
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
        let slot = match matcher {
            MatcherKind::Substring(_) | MatcherKind::Regex(_) if self.slots < MEMO_SLOTS => {
                self.slots += 1;
                Some(self.slots - 1)
            }
            _ => None,
        };
        let matcher = Arc::new(Matcher { kind: matcher, slot, memo: self.memo.clone() });
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
