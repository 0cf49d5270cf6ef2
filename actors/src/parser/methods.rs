//! The built-in enrichment methods of stage s02: things a regex cannot do (turn a date
//! into an instant, validate an address, take a URL apart).

use super::engine::{lookup, FieldRef, Outcome, Tracer, Work};
use super::timestamp;
use std::fmt::Write as _;
use std::net::IpAddr;

/// A compiled method node.
pub(crate) enum Method {
    /// Parses the field (default `parsed.timestamp`) into `Event::time`. Always
    /// matches: a line without a usable stamp keeps the time it was read at.
    ParseTimestamp { field: FieldRef, zone: timestamp::Zone },
    /// Validates the field (default `meta.source_ip`) as an IP address and rewrites it
    /// in canonical form; rejects the line when it is not an address. Does not apply
    /// when the field is unset.
    NormalizeIp { field: FieldRef },
    /// Splits the request target in the field (default `meta.http_path`) into parsed
    /// `http_args`, `file_dir`, `file_name`, `file_ext` and `static_ressource`.
    HttpEnrich { field: FieldRef, static_extensions: Vec<Box<str>>, names: HttpNames },
}

/// Interned names of the fields `http_enrich` sets.
pub(crate) struct HttpNames {
    pub args: &'static str,
    pub dir: &'static str,
    pub name: &'static str,
    pub ext: &'static str,
    pub static_ressource: &'static str,
}

impl Method {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Method::ParseTimestamp { .. } => "parse_timestamp",
            Method::NormalizeIp { .. } => "normalize_ip",
            Method::HttpEnrich { .. } => "http_enrich",
        }
    }

    pub(crate) fn run<T: Tracer>(&self, w: &mut Work, t: &mut T) -> Outcome {
        match self {
            Method::ParseTimestamp { field, zone } => {
                let parsed = w.get(field).and_then(|s| timestamp::parse_in(s, w.line.received_at, zone));
                w.time = parsed;
                if T::ON {
                    match parsed {
                        Some(ts) => t.set("time".into(), &timestamp::format_rfc3339(ts)),
                        None => t.set(
                            "time".into(),
                            &format!(
                                "{} (received_at: {} is {})",
                                timestamp::format_rfc3339(w.line.received_at),
                                field,
                                w.get(field)
                                    .map_or("unset".to_owned(), |v| format!("{v:?}, not a known format"))
                            ),
                        ),
                    }
                }
                Outcome::Matched
            }
            Method::NormalizeIp { field } => {
                let Some(value) = w.get(field) else {
                    return Outcome::NoMatch;
                };
                match canonical_ip(value) {
                    Ok(None) => Outcome::Matched,
                    Ok(Some(canonical)) => {
                        if T::ON {
                            t.set(field.to_string(), &canonical);
                        }
                        w.set(field, &canonical);
                        Outcome::Matched
                    }
                    Err(()) => Outcome::Reject(format!("{field} {value:?} is not an IP address")),
                }
            }
            Method::HttpEnrich { field, static_extensions, names } => {
                // The target is read where it lives and its parts are copied straight
                // into `parsed`; only a target that is itself a parsed field (never in
                // the shipped hub) is copied out first, as it shares `parsed`'s buffer.
                let own;
                let (target, parsed) = match field {
                    FieldRef::Line => (Some(w.line.text.as_str()), &mut w.parsed),
                    FieldRef::Meta(k) => (lookup(&w.meta, k), &mut w.parsed),
                    FieldRef::Parsed(_) => {
                        own = w.get(field).map(str::to_owned);
                        (own.as_deref(), &mut w.parsed)
                    }
                };
                let Some(target) = target else {
                    return Outcome::NoMatch;
                };
                let parts = split_target(target, static_extensions);
                let parts = [
                    (names.args, parts.args),
                    (names.dir, parts.dir),
                    (names.name, parts.name),
                    (names.ext, parts.ext.as_str()),
                    (names.static_ressource, if parts.is_static { "true" } else { "false" }),
                ];
                for (name, value) in parts {
                    if T::ON {
                        t.set(format!("parsed.{name}"), value);
                    }
                    parsed.set_interned(name, value);
                }
                Outcome::Matched
            }
        }
    }
}

/// The canonical text of an address written as a log writes it: `None` when `text`
/// already is canonical (the common case, no allocation), `Err` when it is no address.
///
/// Accepts brackets (`[2001:db8::1]`), a port after an IPv4 address or after brackets
/// (`1.2.3.4:5678`, `[::1]:80`), a zone (`fe80::1%eth0`, dropped); IPv4-mapped IPv6
/// (`::ffff:1.2.3.4`) becomes the IPv4 address, so one attacker is one key; IPv6 is
/// written compressed and lower-case (RFC 5952).
pub(crate) fn canonical_ip(text: &str) -> Result<Option<String>, ()> {
    // The common case, without formatting the address back: the standard parser takes
    // only plain dotted quads (no leading zeros, spaces or ports), which is exactly the
    // canonical text of the address it returns.
    if text.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(None);
    }
    let mut s = text.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or(())?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return Err(());
        }
        s = &rest[..end];
    } else if let Some((host, port)) = s.split_once(':') {
        // Exactly one colon: IPv4 with a port.
        if !port.contains(':') && is_port(port) {
            s = host;
        }
    }
    if let Some((addr, zone)) = s.split_once('%') {
        if !zone.is_empty() && zone.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            s = addr;
        }
    }
    let ip: IpAddr = s.parse().map_err(|_| ())?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let mut buf = StackStr::default();
    // IPv6 text is at most 45 bytes: the buffer cannot overflow.
    if write!(buf, "{ip}").is_err() {
        return Ok(Some(ip.to_string()));
    }
    if buf.as_str() == text {
        Ok(None)
    } else {
        Ok(Some(buf.as_str().to_owned()))
    }
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A small string on the stack, to format an address without allocating.
struct StackStr {
    buf: [u8; 64],
    len: usize,
}

impl Default for StackStr {
    fn default() -> Self {
        StackStr { buf: [0; 64], len: 0 }
    }
}

impl StackStr {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A request target taken apart, as CrowdSec's `http-logs` enricher does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TargetParts<'a> {
    /// The query string without `?` (empty when none).
    pub args: &'a str,
    /// The path up to its last `/` (`/` at the root), like Go's `path.Dir`.
    pub dir: &'a str,
    /// The last path segment (empty for `/a/`).
    pub name: &'a str,
    /// The extension of `name`, lower-case, with its dot (empty when none).
    pub ext: String,
    /// Whether `ext` is one of the static-resource extensions.
    pub is_static: bool,
}

pub(crate) fn split_target<'a>(target: &'a str, static_extensions: &[Box<str>]) -> TargetParts<'a> {
    // An absolute-form target (`GET http://host/path`) keeps only its path.
    let mut path_query = target;
    if let Some(scheme_end) = target.find("://") {
        if !target[..scheme_end].contains('/') {
            let after = &target[scheme_end + 3..];
            path_query = after.find('/').map_or("/", |i| &after[i..]);
        }
    }
    let (path, args) = match path_query.find('?') {
        Some(i) => (&path_query[..i], &path_query[i + 1..]),
        None => (path_query, ""),
    };
    let path = path.split('#').next().unwrap_or(path);
    let (dir, name) = match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (".", path),
    };
    let ext = match name.rfind('.') {
        Some(i) if i + 1 < name.len() => name[i..].to_ascii_lowercase(),
        _ => String::new(),
    };
    let is_static = !ext.is_empty() && static_extensions.iter().any(|e| **e == *ext);
    TargetParts { args, dir, name, ext, is_static }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_addresses() {
        assert_eq!(canonical_ip("1.2.3.4"), Ok(None));
        assert_eq!(canonical_ip("2001:db8::1"), Ok(None));
        assert_eq!(canonical_ip("::ffff:1.2.3.4"), Ok(Some("1.2.3.4".into())));
        assert_eq!(canonical_ip("2001:DB8:0:0:0:0:0:1"), Ok(Some("2001:db8::1".into())));
        assert_eq!(canonical_ip("[2001:db8::1]"), Ok(Some("2001:db8::1".into())));
        assert_eq!(canonical_ip("[2001:db8::1]:443"), Ok(Some("2001:db8::1".into())));
        assert_eq!(canonical_ip("1.2.3.4:5678"), Ok(Some("1.2.3.4".into())));
        assert_eq!(canonical_ip("fe80::1%eth0"), Ok(Some("fe80::1".into())));
        assert_eq!(canonical_ip(" 1.2.3.4 "), Ok(Some("1.2.3.4".into())));
        // Whatever the standard parser takes as IPv4 is already canonical.
        for text in ["0.0.0.0", "255.255.255.255", "10.0.0.1", "192.0.2.10"] {
            let ip: std::net::Ipv4Addr = text.parse().expect("parses");
            assert_eq!(ip.to_string(), text);
            assert_eq!(canonical_ip(text), Ok(None));
        }
        for bad in [
            "",
            "example.com",
            "1.2.3",
            "1.2.3.4.5",
            "a:b:c",
            "[::1",
            "[::1]x",
            "01.2.3.4",
            "1.2.3.4:99999999",
        ] {
            assert_eq!(canonical_ip(bad), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn splits_targets() {
        let exts: Vec<Box<str>> = vec![".css".into(), ".png".into()];
        let p = split_target("/static/Main.CSS?v=3&x=1", &exts);
        assert_eq!(
            (p.dir, p.name, p.ext.as_str(), p.args, p.is_static),
            ("/static", "Main.CSS", ".css", "v=3&x=1", true)
        );
        let p = split_target("/", &exts);
        assert_eq!((p.dir, p.name, p.ext.as_str(), p.args, p.is_static), ("/", "", "", "", false));
        let p = split_target("/wp-login.php", &exts);
        assert_eq!((p.dir, p.name, p.ext.as_str()), ("/", "wp-login.php", ".php"));
        let p = split_target("/a/b/", &exts);
        assert_eq!((p.dir, p.name), ("/a/b", ""));
        let p = split_target("http://evil.example/x/y.png?q", &exts);
        assert_eq!((p.dir, p.name, p.args, p.is_static), ("/x", "y.png", "q", true));
        let p = split_target("*", &exts);
        assert_eq!((p.dir, p.name), (".", "*"));
        let p = split_target("/file.", &exts);
        assert_eq!(p.ext, "");
    }
}
