//! Timestamps as logs write them, turned into [`Timestamp`]s without a date library.
//!
//! Formats, recognised by shape:
//! - syslog (RFC 3164) `Mar  7 18:53:20`, optionally with fractional seconds and a year
//!   (`Mar 7 2026 18:53:20`, `Mar 7 18:53:20 2026`);
//! - ISO 8601 / RFC 3339 / RFC 5424 `2026-11-25T06:00:00.123456+00:00` (also with a
//!   space for `T`, `Z`, `+0100`, `+01`);
//! - HTTP date (nginx and Apache access logs) `25/Nov/2026:06:00:17 +0000`;
//! - Apache error log `Sat Jun 01 02:17:42.391337 2013`;
//! - nginx error log `2026/11/25 06:00:17`.
//!
//! Stamps without a zone (syslog, Apache and nginx error logs, ISO without offset) are
//! read in the **host's time zone** (`TZ`, else /etc/localtime), daylight saving time
//! included: that is how the host's syslog, nginx and Apache write them. On a host in
//! UTC this costs nothing; elsewhere the offset is looked up once per hour of log time.
//! (Reading them as UTC on a host east or west of it would put the sshd events of
//! auth.log hours away from nginx's, whose stamps carry an offset, and the buckets,
//! which share one clock, would free the lagging source's slow attacks early.) Stamps without a year
//! take the year of the line's `received_at`, or the previous year when that would put
//! the stamp more than two days in the future (a December line read in January).

use palisade_proto::Timestamp;

const DAY_MS: i64 = 86_400_000;
/// How far into the future a year-less stamp may be before it is taken as last year's.
const FUTURE_SLACK_MS: i64 = 2 * DAY_MS;

/// How stamps without a zone are read.
#[derive(Debug)]
pub(crate) enum Zone {
    /// As UTC (the host is in UTC all year).
    Utc,
    /// In the host's zone: the UTC offset of the last hour of log time looked up,
    /// packed as `hour << 32 | offset seconds`, so each parse costs an atomic load.
    Host(std::sync::atomic::AtomicU64),
}

impl Zone {
    /// The host's zone, or `Utc` when it is UTC all year.
    pub(crate) fn host() -> Zone {
        use chrono::{Local, Offset, TimeZone};
        let probes = [1_767_225_600i64, 1_782_864_000]; // 2026-01-01 and 2026-07-01
        let utc_all_year = probes.iter().all(|t| {
            Local.timestamp_opt(*t, 0).single().is_some_and(|d| d.offset().fix().local_minus_utc() == 0)
        });
        if utc_all_year {
            Zone::Utc
        } else {
            Zone::Host(std::sync::atomic::AtomicU64::new(u64::MAX))
        }
    }

    /// The instant of a local wall-clock time given as milliseconds since the epoch.
    fn to_utc(&self, local_ms: i64) -> i64 {
        let Zone::Host(cache) = self else { return local_ms };
        use std::sync::atomic::Ordering::Relaxed;
        let hour = local_ms.div_euclid(3_600_000);
        let cached = cache.load(Relaxed);
        let offset = if cached != u64::MAX && (cached >> 32) as i64 == (hour & 0xffff_ffff) {
            i64::from(cached as u32 as i32)
        } else {
            let offset = host_offset(local_ms);
            cache.store(((hour as u64 & 0xffff_ffff) << 32) | u64::from(offset as i32 as u32), Relaxed);
            offset
        };
        local_ms - offset * 1000
    }
}

/// The host's UTC offset, in seconds, at a local wall-clock time. In the hour skipped when
/// clocks go forward, the offset before the change; in the hour repeated when they go
/// back, the first (earlier) reading.
fn host_offset(local_ms: i64) -> i64 {
    use chrono::{Local, Offset, TimeZone};
    let Some(naive) = chrono::DateTime::from_timestamp_millis(local_ms).map(|d| d.naive_utc()) else {
        return 0;
    };
    let at = |n: chrono::NaiveDateTime| {
        Local.from_local_datetime(&n).earliest().map(|d| d.offset().fix().local_minus_utc())
    };
    let offset = at(naive).or_else(|| at(naive - chrono::Duration::hours(1))).unwrap_or(0);
    i64::from(offset)
}

/// Parses `text` (surrounding spaces ignored) in the host's zone when it has none;
/// `received_at` supplies a missing year.
#[cfg(test)]
pub(crate) fn parse(text: &str, received_at: Timestamp) -> Option<Timestamp> {
    parse_in(text, received_at, &Zone::Utc)
}

/// Parses `text`, reading a stamp without a zone in `zone`.
pub(crate) fn parse_in(text: &str, received_at: Timestamp, zone: &Zone) -> Option<Timestamp> {
    let local = |t: Option<Timestamp>| t.map(|t| Timestamp(zone.to_utc(t.0)));
    let b = text.trim().as_bytes();
    let first = *b.first()?;
    if first.is_ascii_digit() {
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        match (digits, b.get(digits)) {
            (4, Some(b'-')) => match iso8601(b)? {
                (t, true) => Some(t),
                (t, false) => local(Some(t)),
            },
            (4, Some(b'/')) => local(nginx_error(b)),
            (1 | 2, Some(b'/')) => httpdate(b),
            _ => None,
        }
    } else if first.is_ascii_alphabetic() {
        let mut c = Cursor(b, 0);
        let word = c.word()?;
        if let Some(month) = month(word) {
            local(syslog(&mut c, month, received_at))
        } else if is_weekday(word) {
            local(apache_error(&mut c))
        } else {
            None
        }
    } else {
        None
    }
}

/// `Mar  7 18:53:20[.frac][ YYYY]` or `Mar 7 YYYY 18:53:20`, cursor after the month.
fn syslog(c: &mut Cursor<'_>, month: u32, received_at: Timestamp) -> Option<Timestamp> {
    c.spaces()?;
    let day = c.num(1, 2)?;
    c.spaces()?;
    let save = c.1;
    let mut year = None;
    if let Some(y) = c.num(4, 4) {
        if c.spaces().is_some() {
            year = Some(y as i64);
        } else {
            c.1 = save;
        }
    } else {
        c.1 = save;
    }
    let (h, m, s, ms) = c.clock()?;
    if year.is_none() && c.spaces().is_some() {
        if let Some(y) = c.num(4, 4) {
            year = Some(y as i64);
        }
    }
    let ms_of_day = clock_ms(h, m, s, ms)?;
    match year {
        Some(y) => Some(Timestamp(day_ms(y, month, day)? + ms_of_day)),
        None => {
            let (ry, _, _) = civil_from_days(received_at.0.div_euclid(DAY_MS));
            let this = day_ms(ry, month, day).map(|d| d + ms_of_day);
            match this {
                Some(t) if t <= received_at.0.saturating_add(FUTURE_SLACK_MS) => Some(Timestamp(t)),
                _ => day_ms(ry - 1, month, day).map(|d| Timestamp(d + ms_of_day)),
            }
        }
    }
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.frac]][zone]`, and whether it had a zone.
fn iso8601(b: &[u8]) -> Option<(Timestamp, bool)> {
    let mut c = Cursor(b, 0);
    let y = c.num(4, 4)?;
    c.lit(b'-')?;
    let mo = c.num(1, 2)?;
    c.lit(b'-')?;
    let d = c.num(1, 2)?;
    match c.peek() {
        Some(b'T' | b't' | b' ') => c.1 += 1,
        None => return Some((Timestamp(day_ms(y as i64, mo, d)?), false)),
        _ => return None,
    }
    let h = c.num(1, 2)?;
    c.lit(b':')?;
    let mi = c.num(2, 2)?;
    let (s, ms) = if c.peek() == Some(b':') {
        c.1 += 1;
        let s = c.num(2, 2)?;
        (s, c.fraction())
    } else {
        (0, 0)
    };
    let has_zone = !matches!(c.peek(), None | Some(b' '));
    let offset = c.zone()?;
    Some((Timestamp(day_ms(y as i64, mo, d)? + clock_ms(h, mi, s, ms)? - offset), has_zone))
}

/// `DD/Mon/YYYY:HH:MM:SS +zzzz`.
fn httpdate(b: &[u8]) -> Option<Timestamp> {
    let mut c = Cursor(b, 0);
    let d = c.num(1, 2)?;
    c.lit(b'/')?;
    let mo = month(c.word()?)?;
    c.lit(b'/')?;
    let y = c.num(4, 4)?;
    c.lit(b':')?;
    let (h, mi, s, ms) = c.clock()?;
    c.spaces();
    let offset = c.zone()?;
    Some(Timestamp(day_ms(y as i64, mo, d)? + clock_ms(h, mi, s, ms)? - offset))
}

/// `YYYY/MM/DD HH:MM:SS`.
fn nginx_error(b: &[u8]) -> Option<Timestamp> {
    let mut c = Cursor(b, 0);
    let y = c.num(4, 4)?;
    c.lit(b'/')?;
    let mo = c.num(1, 2)?;
    c.lit(b'/')?;
    let d = c.num(1, 2)?;
    c.spaces()?;
    let (h, mi, s, ms) = c.clock()?;
    Some(Timestamp(day_ms(y as i64, mo, d)? + clock_ms(h, mi, s, ms)?))
}

/// `Sat Jun 01 02:17:42[.frac] 2013`, cursor after the weekday.
fn apache_error(c: &mut Cursor<'_>) -> Option<Timestamp> {
    c.spaces()?;
    let mo = month(c.word()?)?;
    c.spaces()?;
    let d = c.num(1, 2)?;
    c.spaces()?;
    let (h, mi, s, ms) = c.clock()?;
    c.spaces()?;
    let y = c.num(4, 4)?;
    Some(Timestamp(day_ms(y as i64, mo, d)? + clock_ms(h, mi, s, ms)?))
}

struct Cursor<'a>(&'a [u8], usize);

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.0.get(self.1).copied()
    }

    fn lit(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.1 += 1)
    }

    /// One or more spaces.
    fn spaces(&mut self) -> Option<()> {
        let n = self.0[self.1..].iter().take_while(|&&c| c == b' ').count();
        (n > 0).then(|| self.1 += n)
    }

    fn word(&mut self) -> Option<&[u8]> {
        let start = self.1;
        let n = self.0[start..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
        (n > 0).then(|| {
            self.1 += n;
            &self.0[start..start + n]
        })
    }

    /// A number of `min..=max` digits (at most `max` are read: `+0100` is two numbers).
    fn num(&mut self, min: usize, max: usize) -> Option<u32> {
        let digits = self.0[self.1..].iter().take(max).take_while(|c| c.is_ascii_digit()).count();
        if digits < min {
            return None;
        }
        let mut v = 0u32;
        for &d in &self.0[self.1..self.1 + digits] {
            v = v * 10 + u32::from(d - b'0');
        }
        self.1 += digits;
        Some(v)
    }

    /// `.123456` or `,123` as milliseconds (0 when absent).
    fn fraction(&mut self) -> u32 {
        if !matches!(self.peek(), Some(b'.' | b',')) {
            return 0;
        }
        let digits = self.0[self.1 + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return 0;
        }
        let mut ms = 0u32;
        for i in 0..3 {
            ms *= 10;
            if i < digits {
                ms += u32::from(self.0[self.1 + 1 + i] - b'0');
            }
        }
        self.1 += 1 + digits;
        ms
    }

    /// `HH:MM:SS[.frac]`.
    fn clock(&mut self) -> Option<(u32, u32, u32, u32)> {
        let h = self.num(1, 2)?;
        self.lit(b':')?;
        let m = self.num(2, 2)?;
        self.lit(b':')?;
        let s = self.num(2, 2)?;
        Some((h, m, s, self.fraction()))
    }

    /// An optional zone: `Z`, `+HH:MM`, `+HHMM`, `+HH`; the offset in ms (0 for none).
    fn zone(&mut self) -> Option<i64> {
        match self.peek() {
            None | Some(b' ') => Some(0),
            Some(b'Z' | b'z') => {
                self.1 += 1;
                Some(0)
            }
            Some(sign @ (b'+' | b'-')) => {
                self.1 += 1;
                let h = self.num(2, 2)?;
                let m = if self.peek() == Some(b':') {
                    self.1 += 1;
                    self.num(2, 2)?
                } else {
                    self.num(2, 2).unwrap_or(0)
                };
                if h > 23 || m > 59 {
                    return None;
                }
                let off = (i64::from(h) * 60 + i64::from(m)) * 60_000;
                Some(if sign == b'-' { -off } else { off })
            }
            _ => None,
        }
    }
}

fn month(word: &[u8]) -> Option<u32> {
    const MONTHS: [&[u8; 3]; 12] =
        [b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"];
    if word.len() < 3 {
        return None;
    }
    let key = [word[0].to_ascii_lowercase(), word[1].to_ascii_lowercase(), word[2].to_ascii_lowercase()];
    MONTHS.iter().position(|m| **m == key).map(|i| i as u32 + 1)
}

fn is_weekday(word: &[u8]) -> bool {
    const DAYS: [&[u8; 3]; 7] = [b"mon", b"tue", b"wed", b"thu", b"fri", b"sat", b"sun"];
    word.len() >= 3 && {
        let key = [word[0].to_ascii_lowercase(), word[1].to_ascii_lowercase(), word[2].to_ascii_lowercase()];
        DAYS.iter().any(|d| **d == key)
    }
}

fn clock_ms(h: u32, m: u32, s: u32, ms: u32) -> Option<i64> {
    // 60 is a leap second; it folds into the next minute's first second.
    (h < 24 && m < 60 && s <= 60)
        .then(|| ((i64::from(h) * 60 + i64::from(m)) * 60 + i64::from(s)) * 1000 + i64::from(ms))
}

/// Milliseconds at midnight UTC of a valid calendar date.
fn day_ms(y: i64, m: u32, d: u32) -> Option<i64> {
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d) * DAY_MS)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day number since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339 text of a timestamp (UTC, milliseconds), for `explain`.
pub(crate) fn format_rfc3339(t: Timestamp) -> String {
    let (y, mo, d) = civil_from_days(t.0.div_euclid(DAY_MS));
    let ms = t.0.rem_euclid(DAY_MS);
    let (h, mi, s, milli) = (ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25T06:00:00Z
    const RECV: Timestamp = Timestamp(1_795_586_400_000);

    fn iso(t: Option<Timestamp>) -> String {
        t.map(format_rfc3339).unwrap_or_else(|| "none".into())
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 59, 60, 365, 10_957, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(format_rfc3339(RECV), "2026-11-25T06:00:00.000Z");
    }

    #[test]
    fn syslog_takes_the_year_of_reception() {
        assert_eq!(iso(parse("Nov 25 05:59:58", RECV)), "2026-11-25T05:59:58.000Z");
        assert_eq!(iso(parse("Nov  5 05:59:58", RECV)), "2026-11-05T05:59:58.000Z");
        // Within the two-day slack: still this year.
        assert_eq!(iso(parse("Nov 26 23:00:00", RECV)), "2026-11-26T23:00:00.000Z");
        // Further in the future: last year.
        assert_eq!(iso(parse("Dec 31 23:59:59", RECV)), "2025-12-31T23:59:59.000Z");
        assert_eq!(iso(parse("Mar 27 2015 13:06:56", RECV)), "2015-03-27T13:06:56.000Z");
        assert_eq!(iso(parse("Mar 27 13:06:56 2015", RECV)), "2015-03-27T13:06:56.000Z");
        assert_eq!(iso(parse("Nov 25 05:59:58.250", RECV)), "2026-11-25T05:59:58.250Z");
        assert_eq!(parse("Feb 30 00:00:00", RECV), None);
        assert_eq!(parse("Foo 30 00:00:00", RECV), None);
    }

    #[test]
    fn iso_with_offsets() {
        assert_eq!(iso(parse("2026-11-25T06:00:00.123456+00:00", RECV)), "2026-11-25T06:00:00.123Z");
        assert_eq!(iso(parse("2003-10-11T22:14:15.003Z", RECV)), "2003-10-11T22:14:15.003Z");
        assert_eq!(iso(parse("2015-04-16T18:02:50.321974+02:00", RECV)), "2015-04-16T16:02:50.321Z");
        assert_eq!(iso(parse("2015-04-16 18:02:50-0130", RECV)), "2015-04-16T19:32:50.000Z");
        assert_eq!(iso(parse("2015-04-16T18:02", RECV)), "2015-04-16T18:02:00.000Z");
        assert_eq!(parse("2015-13-16T18:02:00Z", RECV), None);
        assert_eq!(parse("2015-04-16T18:02:00+99:00", RECV), None);
    }

    #[test]
    fn http_and_error_log_dates() {
        assert_eq!(iso(parse("17/May/2015:10:05:03 +0000", RECV)), "2015-05-17T10:05:03.000Z");
        assert_eq!(iso(parse("17/May/2015:10:05:03 -0700", RECV)), "2015-05-17T17:05:03.000Z");
        assert_eq!(iso(parse("Sat Jun 01 02:17:42.391337 2013", RECV)), "2013-06-01T02:17:42.391Z");
        assert_eq!(iso(parse("Sat Jun 01 11:23:08 2013", RECV)), "2013-06-01T11:23:08.000Z");
        assert_eq!(iso(parse("2026/11/25 06:00:17", RECV)), "2026-11-25T06:00:17.000Z");
    }

    #[test]
    fn zone_less_stamps_are_read_in_the_host_zone() {
        // A fixed cache entry stands for a host at UTC+2 during that hour of log time.
        let local_ms = 1_764_669_600_000i64; // 2025-12-02 10:00 on the local clock
        let hour = local_ms.div_euclid(3_600_000) as u64 & 0xffff_ffff;
        let zone = Zone::Host(std::sync::atomic::AtomicU64::new((hour << 32) | 7200));
        let received = Timestamp(local_ms);
        let at = |text: &str| parse_in(text, received, &zone).map(|t| t.0);
        let two_hours = 2 * 3_600_000;
        assert_eq!(at("Dec  2 10:00:00"), Some(local_ms - two_hours), "syslog");
        assert_eq!(at("2025-12-02T10:00:00"), Some(local_ms - two_hours), "ISO without a zone");
        assert_eq!(at("2025/12/02 10:00:00"), Some(local_ms - two_hours), "nginx error log");
        assert_eq!(at("Tue Dec 02 10:00:00 2025"), Some(local_ms - two_hours), "Apache error log");
        assert_eq!(at("2025-12-02T10:00:00Z"), Some(local_ms), "an explicit zone wins");
        assert_eq!(at("2025-12-02T10:00:00+02:00"), Some(local_ms - two_hours));
        assert_eq!(at("02/Dec/2025:10:00:00 +0000"), Some(local_ms), "access logs carry their offset");
        assert_eq!(parse_in("Dec  2 10:00:00", received, &Zone::Utc).map(|t| t.0), Some(local_ms));
    }

    #[test]
    fn garbage_is_none() {
        for s in [
            "",
            " ",
            "x",
            "99/Zzz/2015:10:05:03 +0000",
            "2026/11",
            "Mar",
            "Mar 7",
            "12345-01-01",
            "\u{1F600}",
        ] {
            assert_eq!(parse(s, RECV), None, "{s:?}");
        }
    }
}
