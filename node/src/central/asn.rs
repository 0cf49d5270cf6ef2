//! Which ASN an address belongs to: the central tier's only source for a sensor's
//! network identity (the address its connection comes from, never what it says).
//!
//! Two formats, told apart by content: a MaxMind database (`.mmdb`, GeoLite2-ASN or any
//! database with `autonomous_system_number`), and the iptoasn TSV format
//! (`range_start<TAB>range_end<TAB>AS_number<TAB>country<TAB>description`, IPv4 and IPv6
//! lines mixed, as in `ip2asn-combined.tsv`), loaded into sorted range tables searched
//! by bisection. AS 0 ("not routed") counts as unknown.

use palisade_consensus::Asn;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

/// The marker that starts a MaxMind database's metadata section.
const MMDB_METADATA_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

/// Why a database could not be loaded. Messages name the file and, for TSV, the line.
#[derive(Debug, thiserror::Error)]
pub enum AsnError {
    /// The file could not be read.
    #[error("cannot read the ASN database {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A TSV line is wrong.
    #[error("{path}:{line}: {problem}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// The MaxMind database does not open.
    #[error("{path}: not a usable MaxMind database: {reason}")]
    Mmdb {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The database maps no address at all.
    #[error("{path}: the database has no ranges")]
    Empty {
        /// The file.
        path: String,
    },
}

/// An IP-to-ASN database in memory.
pub struct AsnDb {
    inner: Inner,
    names: HashMap<u32, String>,
    origin: String,
}

enum Inner {
    Table { v4: Vec<Range<u32>>, v6: Vec<Range<u128>> },
    Mmdb(Box<maxminddb::Reader<Vec<u8>>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range<T> {
    start: T,
    end: T,
    asn: u32,
}

impl std::fmt::Debug for AsnDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            Inner::Table { v4, v6 } => format!("tsv ({} IPv4 and {} IPv6 ranges)", v4.len(), v6.len()),
            Inner::Mmdb(_) => "mmdb".to_owned(),
        };
        write!(f, "AsnDb({}, {kind})", self.origin)
    }
}

impl AsnDb {
    /// Loads `path`, a MaxMind database or an iptoasn TSV file (told apart by content).
    pub fn open(path: &Path) -> Result<AsnDb, AsnError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| AsnError::Read { path: origin.clone(), source })?;
        let tail = &bytes[bytes.len().saturating_sub(128 * 1024)..];
        if tail.windows(MMDB_METADATA_MARKER.len()).any(|w| w == MMDB_METADATA_MARKER) {
            let reader = maxminddb::Reader::from_source(bytes)
                .map_err(|e| AsnError::Mmdb { path: origin.clone(), reason: e.to_string() })?;
            return Ok(AsnDb { inner: Inner::Mmdb(Box::new(reader)), names: HashMap::new(), origin });
        }
        let text = String::from_utf8_lossy(&bytes);
        AsnDb::parse_tsv(&text, &origin)
    }

    /// Parses iptoasn TSV text; `origin` names it in errors.
    pub fn parse_tsv(text: &str, origin: &str) -> Result<AsnDb, AsnError> {
        let bad = |line: usize, problem: String| AsnError::Line { path: origin.to_owned(), line, problem };
        let mut v4: Vec<(Range<u32>, usize)> = Vec::new();
        let mut v6: Vec<(Range<u128>, usize)> = Vec::new();
        let mut names = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let raw = raw.trim_end_matches('\r');
            if raw.trim().is_empty() || raw.starts_with('#') {
                continue;
            }
            let mut fields = raw.split('\t');
            let (Some(start), Some(end), Some(asn)) = (fields.next(), fields.next(), fields.next()) else {
                return Err(bad(
                    line,
                    "expected range_start<TAB>range_end<TAB>AS_number[<TAB>country<TAB>description]".into(),
                ));
            };
            let _country = fields.next();
            let description = fields.next().unwrap_or("").trim();
            let start: IpAddr = start
                .trim()
                .parse()
                .map_err(|_| bad(line, format!("range_start {start:?} is not an IP address")))?;
            let end: IpAddr = end
                .trim()
                .parse()
                .map_err(|_| bad(line, format!("range_end {end:?} is not an IP address")))?;
            let asn_text = asn.trim();
            let asn: u32 = asn_text
                .strip_prefix("AS")
                .unwrap_or(asn_text)
                .parse()
                .map_err(|_| bad(line, format!("AS_number {asn:?} is not a number")))?;
            match (palisade_proto::ip::canonical_ip(start), palisade_proto::ip::canonical_ip(end)) {
                (IpAddr::V4(s), IpAddr::V4(e)) => {
                    let (s, e) = (u32::from(s), u32::from(e));
                    if s > e {
                        return Err(bad(line, "range_start is after range_end".into()));
                    }
                    v4.push((Range { start: s, end: e, asn }, line));
                }
                (IpAddr::V6(s), IpAddr::V6(e)) => {
                    let (s, e) = (u128::from(s), u128::from(e));
                    if s > e {
                        return Err(bad(line, "range_start is after range_end".into()));
                    }
                    v6.push((Range { start: s, end: e, asn }, line));
                }
                _ => return Err(bad(line, "range_start and range_end are of different IP versions".into())),
            }
            if asn != 0 && !description.is_empty() {
                names.entry(asn).or_insert_with(|| description.chars().take(100).collect());
            }
        }
        if v4.is_empty() && v6.is_empty() {
            return Err(AsnError::Empty { path: origin.to_owned() });
        }
        let v4 =
            sorted_disjoint(v4).map_err(|(a, b)| bad(b, format!("range overlaps the range on line {a}")))?;
        let v6 =
            sorted_disjoint(v6).map_err(|(a, b)| bad(b, format!("range overlaps the range on line {a}")))?;
        Ok(AsnDb { inner: Inner::Table { v4, v6 }, names, origin: origin.to_owned() })
    }

    /// The ASN `ip` belongs to; `None` when the database does not know it (or says AS 0).
    pub fn lookup(&self, ip: IpAddr) -> Option<Asn> {
        let ip = palisade_proto::ip::canonical_ip(ip);
        let asn = match (&self.inner, ip) {
            (Inner::Table { v4, .. }, IpAddr::V4(a)) => find(v4, u32::from(a)),
            (Inner::Table { v6, .. }, IpAddr::V6(a)) => find(v6, u128::from(a)),
            (Inner::Mmdb(reader), ip) => reader
                .lookup(ip)
                .ok()
                .and_then(|r| r.decode::<maxminddb::geoip2::Asn<'_>>().ok().flatten())
                .and_then(|a| a.autonomous_system_number),
        }?;
        (asn != 0).then_some(Asn(asn))
    }

    /// The name of an ASN, when the database gives one.
    pub fn name(&self, asn: Asn, ip: Option<IpAddr>) -> Option<String> {
        match &self.inner {
            Inner::Table { .. } => self.names.get(&asn.0).cloned(),
            Inner::Mmdb(reader) => reader
                .lookup(ip?)
                .ok()
                .and_then(|r| r.decode::<maxminddb::geoip2::Asn<'_>>().ok().flatten())
                .and_then(|a| a.autonomous_system_organization.map(str::to_owned)),
        }
    }

    /// Where it was loaded from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Sorts ranges by start and checks that none overlaps the next; on overlap returns the
/// two line numbers.
fn sorted_disjoint<T: Ord + Copy>(
    mut ranges: Vec<(Range<T>, usize)>,
) -> Result<Vec<Range<T>>, (usize, usize)> {
    ranges.sort_by_key(|(r, _)| r.start);
    for pair in ranges.windows(2) {
        if let [(a, la), (b, lb)] = pair {
            if b.start <= a.end {
                return Err((*la.min(lb), *la.max(lb)));
            }
        }
    }
    Ok(ranges.into_iter().map(|(r, _)| r).collect())
}

/// The ASN of the range holding `ip` (bisection on the sorted, disjoint table).
fn find<T: Ord + Copy>(table: &[Range<T>], ip: T) -> Option<u32> {
    let after = table.partition_point(|r| r.start <= ip);
    let range = table.get(after.checked_sub(1)?)?;
    (ip <= range.end).then_some(range.asn)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/asn").join(name)
    }

    fn asn(db: &AsnDb, ip: &str) -> Option<u32> {
        db.lookup(ip.parse().unwrap()).map(|a| a.0)
    }

    #[test]
    fn tsv_ranges_are_found_by_bisection() {
        let text = "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n\
                    # a comment\n\n\
                    1.0.4.0\t1.0.7.255\t38803\tAU\tWPL-AS-AP\n\
                    1.0.8.0\t1.0.8.255\t0\tNone\tNot routed\n\
                    2001:db8::\t2001:db8:ffff:ffff:ffff:ffff:ffff:ffff\tAS64500\tZZ\tDOC\n";
        let db = AsnDb::parse_tsv(text, "t.tsv").unwrap();
        assert_eq!(asn(&db, "1.0.0.0"), Some(13335));
        assert_eq!(asn(&db, "1.0.0.255"), Some(13335));
        assert_eq!(asn(&db, "1.0.1.0"), None);
        assert_eq!(asn(&db, "1.0.5.9"), Some(38803));
        assert_eq!(asn(&db, "1.0.8.1"), None, "AS 0 is unknown");
        assert_eq!(asn(&db, "0.255.255.255"), None);
        assert_eq!(asn(&db, "::ffff:1.0.4.1"), Some(38803), "mapped IPv6 is looked up as IPv4");
        assert_eq!(asn(&db, "2001:db8::42"), Some(64500));
        assert_eq!(asn(&db, "2001:db9::"), None);
        assert_eq!(db.name(Asn(13335), None).as_deref(), Some("CLOUDFLARENET"));
    }

    #[test]
    fn tsv_errors_name_file_and_line() {
        let cases = [
            ("1.0.0.0\t1.0.0.255\n", "t.tsv:1: expected"),
            ("\n1.0.0.0\tx\t5\n", "t.tsv:2: range_end \"x\""),
            ("1.0.0.9\t1.0.0.1\t5\n", "t.tsv:1: range_start is after"),
            ("1.0.0.0\t::1\t5\n", "different IP versions"),
            ("1.0.0.0\t1.0.0.9\tAS5x\n", "AS_number \"AS5x\""),
            ("1.0.0.0\t1.0.0.9\t5\n1.0.0.9\t1.0.0.20\t6\n", "t.tsv:2: range overlaps the range on line 1"),
            ("# only a comment\n", "has no ranges"),
        ];
        for (text, expected) in cases {
            let e = AsnDb::parse_tsv(text, "t.tsv").err().unwrap().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }

    #[test]
    fn fixtures_map_loopback_sources_to_different_asns() {
        for name in ["loopback.tsv", "loopback.mmdb"] {
            let db = AsnDb::open(&fixture(name)).unwrap();
            assert_eq!(asn(&db, "127.0.0.1"), Some(64501), "{name}");
            assert_eq!(asn(&db, "127.0.0.2"), Some(64502), "{name}");
            assert_eq!(asn(&db, "127.0.0.12"), Some(64512), "{name}");
            assert_eq!(asn(&db, "127.0.0.20"), Some(64520), "{name}");
            assert_eq!(asn(&db, "127.0.0.21"), Some(64520), "{name}: one ASN for .20-.29");
            assert_eq!(asn(&db, "127.0.0.29"), Some(64520), "{name}");
            assert_eq!(asn(&db, "127.0.0.30"), None, "{name}");
            assert_eq!(asn(&db, "::1"), Some(64599), "{name}");
        }
        let mmdb = AsnDb::open(&fixture("loopback.mmdb")).unwrap();
        assert_eq!(
            mmdb.name(Asn(64502), Some("127.0.0.2".parse().unwrap())).as_deref(),
            Some("Loopback net 2")
        );
    }

    #[test]
    fn unreadable_and_damaged_databases_are_clear_errors() {
        let e = AsnDb::open(Path::new("/nonexistent/asn.tsv")).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/asn.tsv"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.mmdb");
        let bytes = std::fs::read(fixture("loopback.mmdb")).unwrap();
        // Keep the metadata (so it is recognised) but cut the search tree.
        let marker =
            bytes.windows(MMDB_METADATA_MARKER.len()).position(|w| w == MMDB_METADATA_MARKER).unwrap();
        std::fs::write(&path, &bytes[marker..]).unwrap();
        match AsnDb::open(&path) {
            Err(e) => assert!(e.to_string().contains("cut.mmdb"), "{e}"),
            Ok(db) => assert_eq!(db.lookup("127.0.0.1".parse().unwrap()), None),
        }
    }
}
