//! The values that flow between the actors: raw lines, parsed events, overflows.

use palisade_proto::{DecisionType, Scope, Timestamp};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
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

/// A small ordered map from field names to string values.
///
/// Events carry a dozen fields at most, so a vector with linear lookup beats a hash map
/// and keeps cloning cheap; names are shared `Arc<str>`s from the parser definitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(Arc<str>, String)>);

impl Fields {
    /// An empty map.
    pub fn new() -> Self {
        Fields(Vec::new())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn set(&mut self, key: Arc<str>, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let pos = self.0.iter().position(|(k, _)| &**k == key)?;
        Some(self.0.remove(pos).1)
    }

    /// All fields in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, v.as_str()))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
}
