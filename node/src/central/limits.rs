//! Per-sensor rate limits and penalties, shared by all connection tasks.
//!
//! - Each sensor has a token bucket of signals: a report takes one token per signal and,
//!   when the bucket is in debt, the connection task waits until it is not before it
//!   reads more, so a flooding sensor slows itself down (QUIC flow control pushes back)
//!   without costing anyone else anything.
//! - Bad input (forged signals, foreign origins, sealed IPs, undecodable frames) earns
//!   strikes; a sensor with `max_strikes` strikes within `ban_secs` is cut off and
//!   refused for `ban_secs`.
//! - Failed enrollments (unknown tokens) are limited per source address.
//!
//! Time is passed in (`now`, time since the guard started), so the rules are tested
//! without a clock.

use palisade_proto::NodeId;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::config::LimitsConfig;

/// Most source addresses whose failed enrollments are remembered; the table is cleared
/// when full (an attacker with that many addresses gets one more try each).
const MAX_ENROLL_SOURCES: usize = 65_536;

/// A token bucket: `rate` tokens a second, at most `burst`, may go into debt.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Duration,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Duration) -> Self {
        TokenBucket { tokens: burst, at: now, rate, burst }
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes `n` tokens and returns how long the taker must wait before the bucket is
    /// out of debt (zero when it had enough).
    pub fn take(&mut self, n: f64, now: Duration) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Whether one token is there (without taking it).
    pub fn has(&mut self, now: Duration) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }
}

#[derive(Debug)]
struct SensorGuard {
    bucket: TokenBucket,
    strikes: u32,
    strikes_since: Duration,
    banned_until: Option<Duration>,
}

#[derive(Debug, Default)]
struct State {
    sensors: HashMap<NodeId, SensorGuard>,
    enroll: HashMap<IpAddr, TokenBucket>,
}

/// Rate limits and penalties of every sensor.
#[derive(Debug)]
pub struct Guard {
    config: LimitsConfig,
    state: Mutex<State>,
}

impl Guard {
    /// A guard with no history.
    pub fn new(config: LimitsConfig) -> Self {
        Guard { config, state: Mutex::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn sensor<'a>(&self, state: &'a mut State, sensor: NodeId, now: Duration) -> &'a mut SensorGuard {
        state.sensors.entry(sensor).or_insert_with(|| SensorGuard {
            bucket: TokenBucket::new(self.config.sensor_signals_per_sec, self.config.sensor_burst, now),
            strikes: 0,
            strikes_since: now,
            banned_until: None,
        })
    }

    /// Takes `signals` tokens from `sensor`'s bucket; returns how long to hold it back.
    pub fn throttle(&self, sensor: NodeId, signals: usize, now: Duration) -> Duration {
        self.with(|s| self.sensor(s, sensor, now).bucket.take(signals as f64, now))
    }

    /// Adds strikes; returns `true` when the sensor is now banned.
    pub fn strike(&self, sensor: NodeId, strikes: u32, now: Duration) -> bool {
        let window = Duration::from_secs(self.config.ban_secs);
        let ban = window;
        let max = self.config.max_strikes;
        self.with(|s| {
            let g = self.sensor(s, sensor, now);
            if now.saturating_sub(g.strikes_since) > window {
                g.strikes = 0;
                g.strikes_since = now;
            }
            g.strikes = g.strikes.saturating_add(strikes);
            if g.strikes >= max {
                g.strikes = 0;
                g.strikes_since = now;
                g.banned_until = Some(now + ban);
                true
            } else {
                false
            }
        })
    }

    /// How much longer `sensor` is banned, if it is.
    pub fn banned(&self, sensor: &NodeId, now: Duration) -> Option<Duration> {
        self.with(|s| {
            let until = s.sensors.get(sensor)?.banned_until?;
            (until > now).then(|| until - now)
        })
    }

    /// Whether `source` may try to enroll now.
    pub fn may_enroll(&self, source: IpAddr, now: Duration) -> bool {
        self.with(|s| s.enroll.get_mut(&source).is_none_or(|b| b.has(now)))
    }

    /// Records a failed enrollment from `source`.
    pub fn enroll_failed(&self, source: IpAddr, now: Duration) {
        let per_minute = f64::from(self.config.enrollments_per_minute);
        self.with(|s| {
            if s.enroll.len() >= MAX_ENROLL_SOURCES && !s.enroll.contains_key(&source) {
                s.enroll.clear();
            }
            s.enroll
                .entry(source)
                .or_insert_with(|| TokenBucket::new(per_minute / 60.0, per_minute, now))
                .take(1.0, now);
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let mut b = TokenBucket::new(100.0, 1000.0, S(0));
        assert_eq!(b.take(1000.0, S(0)), Duration::ZERO);
        // 500 more: five seconds of debt at 100/s.
        assert_eq!(b.take(500.0, S(0)), S(5));
        // After 5 s the debt is paid; after 6 s, 100 tokens are back.
        assert_eq!(b.take(100.0, S(6)), Duration::ZERO);
        assert!(!b.has(S(6)));
        // Refills never exceed the burst.
        assert_eq!(b.take(1000.0, S(1000)), Duration::ZERO);
        assert!(b.take(1.0, S(1000)) > Duration::ZERO);
    }

    fn guard() -> Guard {
        Guard::new(LimitsConfig {
            sensor_signals_per_sec: 10.0,
            sensor_burst: 20.0,
            max_strikes: 3,
            ban_secs: 60,
            enrollments_per_minute: 2,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn floods_are_held_back_per_sensor() {
        let g = guard();
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        assert_eq!(g.throttle(a, 20, S(0)), Duration::ZERO);
        assert_eq!(g.throttle(a, 30, S(0)), S(3));
        assert_eq!(g.throttle(b, 20, S(0)), Duration::ZERO, "another sensor is not affected");
    }

    #[test]
    fn strikes_ban_for_a_while_and_reset_after_the_window() {
        let g = guard();
        let a = NodeId([1; 32]);
        assert!(!g.strike(a, 2, S(0)));
        // The window passed: the count starts over.
        assert!(!g.strike(a, 2, S(100)));
        assert_eq!(g.banned(&a, S(100)), None);
        assert!(g.strike(a, 1, S(101)));
        assert_eq!(g.banned(&a, S(101)), Some(S(60)));
        assert_eq!(g.banned(&a, S(161)), None);
    }

    #[test]
    fn failed_enrollments_are_limited_per_source() {
        let g = guard();
        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(g.may_enroll(x, S(0)));
        g.enroll_failed(x, S(0));
        g.enroll_failed(x, S(0));
        assert!(!g.may_enroll(x, S(0)));
        assert!(g.may_enroll(y, S(0)));
        assert!(g.may_enroll(x, S(30)), "one try comes back every 30 s");
    }
}
