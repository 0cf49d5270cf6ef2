//! The values that flow between the actors: raw lines, parsed events, overflows.

use palisade_proto::{DecisionType, Origin, Scope, Timestamp};
use std::collections::BTreeMap;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One line as a source read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// Where it came from: a file path, `syslog:udp:127.0.0.1:514`, `journald`, `stdin`.
    pub source: Arc<str>,
    /// The log type the source is configured with (`syslog`, `nginx`, `apache`...): it
    /// selects the parsers that apply, like CrowdSec's `labels.type`.
    pub log_type: Arc<str>,
    /// The text, without its line terminator; invalid UTF-8 replaced, overlong lines cut.
    pub text: String,
    /// When the source read it. Parsers use the line's own timestamp when it has one.
    pub received_at: Timestamp,
}

/// A batch of lines from one source, with the position to remember once they are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineBatch {
    /// The lines, in the order the source produced them.
    pub lines: Vec<RawLine>,
    /// Where the source resumes after these lines, persisted atomically with the
    /// decisions they produce, so a crash neither loses nor repeats a line.
    pub checkpoint: Option<Checkpoint>,
}

/// A source's resume position, opaque to everyone but the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The source's stable key, e.g. `file:/var/log/auth.log`.
    pub key: String,
    /// The encoded position (offset and file identity, journald cursor...).
    pub value: Vec<u8>,
}

/// The one `&'static str` of the field name `name`, the same allocation on every call.
///
/// The parser loader interns every field name it compiles through this, so the engine
/// can store, copy and compare names as plain `&'static str`s (by address): a parsed
/// line sets some twenty-five fields, and with `Arc<str>` names each one was an atomic
/// increment on set and a decrement on drop. Each distinct name is leaked once for the
/// life of the process, on purpose: names come from the parser files, a small set fixed
/// at load time (a reload interns the same names again and gets the same strings back),
/// so the leak is bounded by the distinct names ever loaded, a few hundred bytes.
pub(crate) fn intern_field_name(name: &str) -> &'static str {
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let names = names.get_or_insert_with(HashSet::new);
    if let Some(&s) = names.get(name) {
        return s;
    }
    let s: &'static str = Box::leak(Box::from(name));
    names.insert(s);
    s
}

/// A field name as [`Fields`] stores it: interned (see [`intern_field_name`]), which
/// copies for free, or any shared name a caller of [`Fields::set`] passes.
#[derive(Clone)]
enum Key {
    Interned(&'static str),
    Shared(Arc<str>),
}

impl Key {
    fn as_str(&self) -> &str {
        match self {
            Key::Interned(s) => s,
            Key::Shared(s) => s,
        }
    }

    /// Whether this is the interned name `want`: compared by address (and length), so
    /// a `Shared` key, another allocation, never is.
    fn is(&self, want: &'static str) -> bool {
        matches!(self, Key::Interned(s) if std::ptr::eq(*s, want))
    }
}

/// A small ordered map from field names to string values.
///
/// Events carry a dozen fields at most, so a vector with linear lookup beats a hash map
/// and keeps cloning cheap; names are interned `&'static str`s from the parser
/// definitions (see [`intern_field_name`]).
///
/// All values live in one `String` buffer and each entry records its value's byte span
/// in it: a parsed line sets about twenty fields, and one buffer (sized once, see
/// [`Fields::with_capacity`]) replaces twenty allocations and frees with appends.
/// [`Fields::set`] takes anything string-like, so the parser can pass slices of the line
/// without making a `String` first. Replacing or removing a value leaves its old bytes
/// in the buffer as garbage; a `Fields` lives as long as one event, so that is cheaper
/// than compacting. Equality and `Debug` look only at the entries, never the garbage.
#[derive(Clone, Default)]
pub struct Fields {
    /// Every value, back to back (plus the garbage of replaced ones).
    buf: String,
    /// (name, start, end) of each value in `buf`, in insertion order. `u32` offsets keep
    /// an entry small; a buffer over 4 GiB is impossible (lines are cut far below).
    spans: Vec<(Key, u32, u32)>,
}

impl Fields {
    /// An empty map.
    pub fn new() -> Self {
        Fields { buf: String::new(), spans: Vec::new() }
    }

    /// An empty map with room for `fields` entries whose values total `bytes`, so that
    /// filling it does not reallocate.
    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        Fields { buf: String::with_capacity(bytes), spans: Vec::with_capacity(fields) }
    }

    /// Room for `fields` more entries whose values total `bytes` more bytes.
    pub fn reserve(&mut self, fields: usize, bytes: usize) {
        self.spans.reserve(fields);
        self.buf.reserve(bytes);
    }

    /// Removes every field, keeping the buffers for the next values.
    pub fn clear(&mut self) {
        self.spans.clear();
        self.buf.clear();
    }

    fn value(&self, start: u32, end: u32) -> &str {
        // Spans are only ever made from `push_str` boundaries: always in range and on
        // character boundaries, so this never yields the fallback.
        self.buf.get(start as usize..end as usize).unwrap_or_default()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.spans.iter().find(|(k, _, _)| k.as_str() == key).map(|(_, s, e)| self.value(*s, *e))
    }

    /// The value of the interned name `key`, if set, found by address: within one parse
    /// two interned names are the same name exactly when they are the same string.
    pub(crate) fn get_interned(&self, key: &'static str) -> Option<&str> {
        self.spans.iter().find(|(k, _, _)| k.is(key)).map(|(_, s, e)| self.value(*s, *e))
    }

    /// Sets `key` to `value`, replacing an earlier value. Accepts `&str` as well as
    /// `String`: the bytes are copied into the shared buffer either way.
    pub fn set(&mut self, key: Arc<str>, value: impl AsRef<str>) {
        let (start, end) = self.append(value.as_ref());
        match self.spans.iter_mut().find(|(k, _, _)| k.as_str() == &*key) {
            Some(slot) => {
                slot.1 = start;
                slot.2 = end;
            }
            None => self.spans.push((Key::Shared(key), start, end)),
        }
    }

    /// Sets `key` to `self`'s bytes `range`, a slice of a value already stored (e.g. a
    /// capture taken from another field of the same map). Nothing is copied: the new
    /// entry's span points at those bytes, which stay put since the buffer is only ever
    /// appended to. Nothing is set when the range is out of bounds or not on character
    /// boundaries. `key` is compared by address, as in [`Fields::set_interned`].
    pub(crate) fn set_from_self(&mut self, key: &'static str, range: std::ops::Range<usize>) {
        if self.buf.get(range.clone()).is_none() {
            return;
        }
        self.put(key, to_u32(range.start), to_u32(range.end));
    }

    /// [`Fields::set`] for a key interned by [`intern_field_name`]: two keys are the
    /// same name exactly when they are the same string, so the search for an earlier
    /// value compares addresses only. A new key is the common case and would otherwise
    /// compare its text against every entry.
    pub(crate) fn set_interned(&mut self, key: &'static str, value: &str) {
        let (start, end) = self.append(value);
        self.put(key, start, end);
    }

    /// The byte span of `key`'s value in the buffer, for [`Fields::set_from_self`].
    /// Found by address, like the parser's interned lookups.
    pub(crate) fn span_of_interned(&self, key: &'static str) -> Option<(usize, usize)> {
        self.spans.iter().find(|(k, _, _)| k.is(key)).map(|&(_, s, e)| (s as usize, e as usize))
    }

    /// The byte offset of `key`'s value in the buffer, for [`Fields::set_from_self`].
    /// Found by address, like the parser's interned lookups.
    pub(crate) fn offset_of_interned(&self, key: &'static str) -> Option<usize> {
        self.spans.iter().find(|(k, _, _)| k.is(key)).map(|&(_, s, _)| s as usize)
    }

    fn append(&mut self, value: &str) -> (u32, u32) {
        let start = self.buf.len();
        self.buf.push_str(value);
        (to_u32(start), to_u32(self.buf.len()))
    }

    /// Points interned `key` at `start..end`, replacing its earlier value.
    fn put(&mut self, key: &'static str, start: u32, end: u32) {
        match self.spans.iter_mut().find(|(k, _, _)| k.is(key)) {
            Some(slot) => {
                slot.1 = start;
                slot.2 = end;
            }
            None => self.spans.push((Key::Interned(key), start, end)),
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let pos = self.spans.iter().position(|(k, _, _)| k.as_str() == key)?;
        let (_, s, e) = self.spans.remove(pos);
        Some(self.value(s, e).to_owned())
    }

    /// All fields in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|(k, s, e)| (k.as_str(), self.value(*s, *e)))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// A buffer offset as stored in a span. Values come from lines cut to a bounded length,
/// so a `Fields` never nears 4 GiB; saturating keeps this total anyway.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl PartialEq for Fields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Fields {}

impl std::fmt::Debug for Fields {
    /// Formats like the former `Fields(Vec<(Arc<str>, String)>)`: `Fields([("k", "v")])`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Entries<'a>(&'a Fields);
        impl std::fmt::Debug for Entries<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_list().entries(self.0.iter()).finish()
            }
        }
        f.debug_tuple("Fields").field(&Entries(self)).finish()
    }
}

/// A parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened: the line's own timestamp, else when it was read.
    pub time: Timestamp,
    /// The fields scenarios use, with CrowdSec's names: `source_ip`, `log_type`,
    /// `service`, `target_user`, `http_path`, `http_status`, `http_verb`,
    /// `http_user_agent`, `target_fqdn`...
    pub meta: Fields,
    /// Everything the parsers captured, by capture name (`program`, `message`, ...).
    pub parsed: Fields,
    /// The parser (by name) whose stage-2 node recognised the line.
    pub parser: Arc<str>,
    /// The line it came from.
    pub line: RawLine,
}

impl Event {
    /// The attacker's address, from `meta.source_ip`.
    pub fn source_ip(&self) -> Option<IpAddr> {
        self.meta.get("source_ip")?.parse().ok()
    }
}

/// The remediation a scenario asks for when it overflows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remediation {
    /// `ban` unless the scenario says otherwise.
    pub kind: DecisionType,
    /// How long, when the scenario sets it; otherwise the profiles decide.
    pub duration: Option<Duration>,
}

/// A bucket overflowed: the scenario recognised an attack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow {
    /// The scenario's name, e.g. `palisade/ssh-bf`.
    pub scenario: Arc<str>,
    /// What the decision would apply to (`Ip` unless the scenario says `Range`).
    pub scope: Scope,
    /// The attacker: an address or range, canonical text. Empty when the events carried
    /// no usable source (such an overflow is reported but never becomes a decision).
    pub value: String,
    /// The bucket's group key (usually the source IP).
    pub group_key: String,
    /// Events poured into the bucket, the overflowing one included.
    pub events_count: u32,
    /// Time of the first event in the bucket.
    pub first_at: Timestamp,
    /// Time of the overflowing event.
    pub last_at: Timestamp,
    /// What the scenario asks for; `None` when its `remediation` label is false.
    pub remediation: Option<Remediation>,
    /// The scenario's confidence label, 0 to 3.
    pub confidence: u8,
    /// The scenario's labels (`service`, `behavior`, `label`, `classification`...).
    pub labels: Arc<BTreeMap<String, String>>,
    /// Who detected it: `palisade` for this node's scenarios, `fleet` or `community`
    /// for the on-sight check of an address a peer or the central tier flagged. Only
    /// this node's own detections become signals.
    pub origin: Origin,
}

#[cfg(test)]
impl Overflow {
    /// An overflow of `scenario` against `value` asking for a ban, at time 0, for tests.
    pub(crate) fn for_test(scenario: &str, scope: Scope, value: &str) -> Overflow {
        Overflow {
            scenario: scenario.into(),
            scope,
            value: value.into(),
            group_key: value.into(),
            events_count: 6,
            first_at: Timestamp(0),
            last_at: Timestamp(0),
            remediation: Some(Remediation { kind: DecisionType::Ban, duration: None }),
            confidence: 3,
            labels: Arc::new(BTreeMap::new()),
            origin: Origin::Palisade,
        }
    }
}
