//! Wall-clock instants as plain numbers, so that engines can be driven by the time
//! written in a log line (replay) exactly as by the time a line arrives (live).

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Milliseconds since the Unix epoch, UTC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// From whole seconds since the epoch.
    pub fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (rounded down).
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This instant moved forward by `d`, saturating instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// This instant moved back by `d`, saturating instead of overflowing.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Formats a duration the way Go's `time.Duration.String()` does after rounding to whole
/// seconds (`"3h59m50s"`, `"59m4s"`, `"0s"`): CrowdSec bouncers parse this format.
pub fn go_duration(d: Duration) -> String {
    GoDuration(d).to_string()
}

/// [`go_duration`] as a `Display`, to write into a buffer without allocating.
#[derive(Debug, Clone, Copy)]
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let secs = d.as_secs() + u64::from(d.subsec_millis() >= 500);
        let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h{m}m{s}s")
        } else if m > 0 {
            write!(f, "{m}m{s}s")
        } else {
            write!(f, "{s}s")
        }
    }
}

/// Parses a duration written as CrowdSec and Go write them: a sequence of
/// `<number><unit>` with units `ms`, `s`, `m`, `h` and `d` (`"4h"`, `"1h30m"`, `"10s"`,
/// `"0.5s"`, `"2d"`). A bare number is refused: the unit is never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {text:?} lacks a unit (ms, s, m, h or d)"))?;
        if num_len == 0 {
            return Err(format!("duration {text:?}: expected a number at {rest:?}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("duration {text:?}: bad number {:?}", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            other => return Err(format!("duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)")),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if !total.is_finite() || total > 100.0 * 365.0 * 86400.0 {
        return Err(format!("duration {text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_match_go() {
        assert_eq!(go_duration(Duration::from_secs(0)), "0s");
        assert_eq!(go_duration(Duration::from_millis(499)), "0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "1s");
        assert_eq!(go_duration(Duration::from_secs(59 * 60 + 4)), "59m4s");
        assert_eq!(go_duration(Duration::from_secs(4 * 3600)), "4h0m0s");
        assert_eq!(go_duration(Duration::from_secs(3 * 3600 + 59 * 60 + 50)), "3h59m50s");
        assert_eq!(go_duration(Duration::from_secs(100 * 3600)), "100h0m0s");
    }

    #[test]
    fn parses_crowdsec_durations() {
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(14400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn timestamps_saturate() {
        let t = Timestamp(i64::MAX - 1);
        assert_eq!(t.saturating_add(Duration::from_secs(10)), Timestamp(i64::MAX));
        assert_eq!(Timestamp(5).since(Timestamp(10)), Duration::ZERO);
        assert_eq!(Timestamp(-1).as_secs(), -1);
    }
}
