//! The central tier's `/metrics`, in Prometheus' text format (0.0.4), served by a tiny
//! HTTP/1.1 responder on a TCP listener: one bounded request, one response, close.
//!
//! Counters are atomics bumped where things happen; gauges come from the core's
//! [`Status`] at scrape time.

use palisade_consensus::IngestOutcome;
use palisade_proto::central::RejectReason;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tier::Status;
use crate::metrics::Exposition;

/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of the whole tier.
#[derive(Debug, Default)]
pub struct Counters {
    signals_received: AtomicU64,
    accepted_community: AtomicU64,
    accepted_private: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    outcomes: [AtomicU64; OUTCOMES.len()],
    deltas_published: AtomicU64,
    entries_listed: AtomicU64,
    entries_delisted: AtomicU64,
    deltas_sent: AtomicU64,
    entries_sent: AtomicU64,
    subscribers_dropped: AtomicU64,
    reports_expired: AtomicU64,
    enrollments: AtomicU64,
    refusals: AtomicU64,
    unknown_tokens: AtomicU64,
    malformed_frames: AtomicU64,
    throttled_ms: AtomicU64,
    strikes: AtomicU64,
    bans: AtomicU64,
    connections: AtomicU64,
    connections_refused: AtomicU64,
    retries: AtomicU64,
}

/// Consensus outcomes, as metric labels.
pub const OUTCOMES: [&str; 6] = ["recorded", "refreshed", "rate_limited", "allowlisted", "stale", "crowded"];

/// A copy of the counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CountersSnapshot {
    /// Signals in reports.
    pub signals_received: u64,
    /// Signals of opted-in tenants taken in.
    pub accepted_community: u64,
    /// Signals of other tenants taken in (stored, not counted).
    pub accepted_private: u64,
    /// Refused signals by reason (in [`RejectReason::ALL`] order).
    pub rejected: Vec<u64>,
    /// Consensus outcomes (in [`OUTCOMES`] order).
    pub outcomes: Vec<u64>,
    /// Deltas published.
    pub deltas_published: u64,
    /// Entries listed (republications included).
    pub entries_listed: u64,
    /// Entries delisted.
    pub entries_delisted: u64,
    /// Deltas sent to subscribers.
    pub deltas_sent: u64,
    /// List entries sent to subscribers.
    pub entries_sent: u64,
    /// Subscribers dropped for falling behind.
    pub subscribers_dropped: u64,
    /// Stored reports expired.
    pub reports_expired: u64,
    /// Sensors enrolled.
    pub enrollments: u64,
    /// Sessions refused (unknown token, not enrolled, banned...).
    pub refusals: u64,
    /// Enrollment attempts with an unknown token.
    pub unknown_tokens: u64,
    /// Frames that did not decode or broke the protocol.
    pub malformed_frames: u64,
    /// Time sensors were held back by their rate limit, ms.
    pub throttled_ms: u64,
    /// Strikes against sensors for bad input.
    pub strikes: u64,
    /// Sensors cut off.
    pub bans: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections refused (over the limit, banned, failed handshake).
    pub connections_refused: u64,
    /// QUIC Retry packets sent to validate client addresses.
    pub retries: u64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// A report's signals arrived.
    pub fn received(&self, n: usize) {
        add(&self.signals_received, n as u64);
    }
    /// A signal was taken in.
    pub fn accepted(&self, community: bool) {
        add(if community { &self.accepted_community } else { &self.accepted_private }, 1);
    }
    /// A signal was refused.
    pub fn rejected(&self, reason: RejectReason) {
        if let Some(i) = RejectReason::ALL.iter().position(|r| *r == reason) {
            add(&self.rejected[i], 1);
        }
    }
    /// The consensus' verdict on a report.
    pub fn outcome(&self, outcome: IngestOutcome) {
        let i = match outcome {
            IngestOutcome::Recorded { .. } => 0,
            IngestOutcome::Refreshed { .. } => 1,
            IngestOutcome::RateLimited => 2,
            IngestOutcome::Allowlisted => 3,
            IngestOutcome::Stale => 4,
            IngestOutcome::Crowded => 5,
        };
        add(&self.outcomes[i], 1);
    }
    /// A delta was published.
    pub fn delta_published(&self, listed: usize, delisted: usize) {
        add(&self.deltas_published, 1);
        add(&self.entries_listed, listed as u64);
        add(&self.entries_delisted, delisted as u64);
    }
    /// A delta went to a subscriber.
    pub fn delta_sent(&self, entries: usize) {
        add(&self.deltas_sent, 1);
        add(&self.entries_sent, entries as u64);
    }
    /// A slow subscriber was dropped.
    pub fn subscriber_dropped(&self) {
        add(&self.subscribers_dropped, 1);
    }
    /// Stored reports expired.
    pub fn reports_expired(&self, n: usize) {
        add(&self.reports_expired, n as u64);
    }
    /// A sensor enrolled.
    pub fn enrolled(&self) {
        add(&self.enrollments, 1);
    }
    /// A session was refused; `unknown_token` when the token named no tenant.
    pub fn refused(&self, unknown_token: bool) {
        add(&self.refusals, 1);
        if unknown_token {
            add(&self.unknown_tokens, 1);
        }
    }
    /// A frame did not decode or broke the protocol.
    pub fn malformed(&self) {
        add(&self.malformed_frames, 1);
    }
    /// A sensor was held back.
    pub fn throttled(&self, d: Duration) {
        add(&self.throttled_ms, u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }
    /// Strikes for bad input; `banned` when the sensor was cut off.
    pub fn strike(&self, n: u64, banned: bool) {
        add(&self.strikes, n);
        if banned {
            add(&self.bans, 1);
        }
    }
    /// A connection was accepted (`true`) or refused.
    pub fn connection(&self, accepted: bool) {
        add(if accepted { &self.connections } else { &self.connections_refused }, 1);
    }
    /// A Retry was sent.
    pub fn retry(&self) {
        add(&self.retries, 1);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            signals_received: get(&self.signals_received),
            accepted_community: get(&self.accepted_community),
            accepted_private: get(&self.accepted_private),
            rejected: self.rejected.iter().map(get).collect(),
            outcomes: self.outcomes.iter().map(get).collect(),
            deltas_published: get(&self.deltas_published),
            entries_listed: get(&self.entries_listed),
            entries_delisted: get(&self.entries_delisted),
            deltas_sent: get(&self.deltas_sent),
            entries_sent: get(&self.entries_sent),
            subscribers_dropped: get(&self.subscribers_dropped),
            reports_expired: get(&self.reports_expired),
            enrollments: get(&self.enrollments),
            refusals: get(&self.refusals),
            unknown_tokens: get(&self.unknown_tokens),
            malformed_frames: get(&self.malformed_frames),
            throttled_ms: get(&self.throttled_ms),
            strikes: get(&self.strikes),
            bans: get(&self.bans),
            connections: get(&self.connections),
            connections_refused: get(&self.connections_refused),
            retries: get(&self.retries),
        }
    }
}

/// The exposition of a status.
pub fn render(s: &Status) -> String {
    let c = &s.counters;
    let mut e = Exposition::default();
    let counter = |e: &mut Exposition, name: &str, help: &str, rows: &[(&[(&str, &str)], u64)]| {
        e.family(name, "counter", help);
        for (labels, v) in rows {
            e.sample(name, labels, *v as f64);
        }
    };
    counter(
        &mut e,
        "palisade_central_signals_received_total",
        "Signals received in reports.",
        &[(&[], c.signals_received)],
    );
    counter(
        &mut e,
        "palisade_central_signals_accepted_total",
        "Signals taken in, by whether their tenant opted in to the community.",
        &[(&[("tenant", "community")], c.accepted_community), (&[("tenant", "private")], c.accepted_private)],
    );
    let rejected: Vec<(Vec<(&str, &str)>, u64)> = RejectReason::ALL
        .iter()
        .zip(c.rejected.iter().copied().chain(std::iter::repeat(0)))
        .map(|(r, v)| (vec![("reason", r.as_str())], v))
        .collect();
    let rows: Vec<(&[(&str, &str)], u64)> = rejected.iter().map(|(l, v)| (l.as_slice(), *v)).collect();
    counter(&mut e, "palisade_central_signals_rejected_total", "Signals refused, by reason.", &rows);
    let outcomes: Vec<(Vec<(&str, &str)>, u64)> = OUTCOMES
        .iter()
        .zip(c.outcomes.iter().copied().chain(std::iter::repeat(0)))
        .map(|(o, v)| (vec![("outcome", *o)], v))
        .collect();
    let rows: Vec<(&[(&str, &str)], u64)> = outcomes.iter().map(|(l, v)| (l.as_slice(), *v)).collect();
    counter(
        &mut e,
        "palisade_central_consensus_reports_total",
        "Community reports by consensus outcome.",
        &rows,
    );
    counter(
        &mut e,
        "palisade_central_deltas_published_total",
        "List deltas published.",
        &[(&[], c.deltas_published)],
    );
    counter(
        &mut e,
        "palisade_central_list_changes_total",
        "List entries published, by change.",
        &[(&[("change", "listed")], c.entries_listed), (&[("change", "delisted")], c.entries_delisted)],
    );
    counter(
        &mut e,
        "palisade_central_deltas_sent_total",
        "Deltas sent to subscribers (signals out).",
        &[(&[], c.deltas_sent)],
    );
    counter(
        &mut e,
        "palisade_central_entries_sent_total",
        "List entries sent to subscribers.",
        &[(&[], c.entries_sent)],
    );
    counter(
        &mut e,
        "palisade_central_subscribers_dropped_total",
        "Subscribers disconnected for falling behind.",
        &[(&[], c.subscribers_dropped)],
    );
    counter(
        &mut e,
        "palisade_central_reports_expired_total",
        "Stored reports expired.",
        &[(&[], c.reports_expired)],
    );
    counter(&mut e, "palisade_central_enrollments_total", "Sensors enrolled.", &[(&[], c.enrollments)]);
    counter(
        &mut e,
        "palisade_central_sessions_refused_total",
        "Sessions refused, by reason.",
        &[
            (&[("reason", "unknown_token")], c.unknown_tokens),
            (&[("reason", "other")], c.refusals.saturating_sub(c.unknown_tokens)),
        ],
    );
    counter(
        &mut e,
        "palisade_central_malformed_frames_total",
        "Frames that did not decode or broke the protocol.",
        &[(&[], c.malformed_frames)],
    );
    counter(
        &mut e,
        "palisade_central_throttled_seconds_total",
        "Time sensors were held back by their rate limit.",
        &[],
    );
    e.sample("palisade_central_throttled_seconds_total", &[], c.throttled_ms as f64 / 1000.0);
    counter(
        &mut e,
        "palisade_central_strikes_total",
        "Strikes against sensors for bad input.",
        &[(&[], c.strikes)],
    );
    counter(&mut e, "palisade_central_bans_total", "Sensors cut off for bad input.", &[(&[], c.bans)]);
    counter(
        &mut e,
        "palisade_central_connections_total",
        "QUIC connections, by result.",
        &[(&[("result", "accepted")], c.connections), (&[("result", "refused")], c.connections_refused)],
    );
    counter(&mut e, "palisade_central_retries_total", "QUIC Retry packets sent.", &[(&[], c.retries)]);

    let gauge = |e: &mut Exposition, name: &str, help: &str, rows: &[(&[(&str, &str)], f64)]| {
        e.family(name, "gauge", help);
        for (labels, v) in rows {
            e.sample(name, labels, *v);
        }
    };
    gauge(
        &mut e,
        "palisade_central_sensors",
        "Enrolled sensors, and those connected now.",
        &[
            (&[("state", "enrolled")], s.sensors as f64),
            (&[("state", "connected")], s.sensors_connected as f64),
        ],
    );
    gauge(
        &mut e,
        "palisade_central_tenants",
        "Tenants, by community opt-in.",
        &[
            (&[("community", "true")], s.tenants_community as f64),
            (&[("community", "false")], s.tenants.saturating_sub(s.tenants_community) as f64),
        ],
    );
    gauge(&mut e, "palisade_central_subscribers", "Live list subscriptions.", &[(&[], s.subscribers as f64)]);
    gauge(
        &mut e,
        "palisade_central_listed_entries",
        "Entries on the community list.",
        &[(&[], s.listed as f64)],
    );
    gauge(
        &mut e,
        "palisade_central_list_version",
        "The community list's version.",
        &[(&[], s.version as f64)],
    );
    gauge(
        &mut e,
        "palisade_central_tracked_ips",
        "Hashed IPs with live reports.",
        &[(&[], s.tracked_ips as f64)],
    );
    gauge(
        &mut e,
        "palisade_central_live_reports",
        "Live reports in the consensus.",
        &[(&[], s.reports as f64)],
    );
    gauge(&mut e, "palisade_central_epoch", "The current hashing epoch.", &[(&[], f64::from(s.epoch))]);
    e.family("palisade_central_listed_score", "histogram", "Consensus scores of the listed entries.");
    let mut cumulative = 0;
    for (i, bound) in s.score_buckets.iter().enumerate() {
        cumulative += s.score_counts.get(i).copied().unwrap_or(0);
        let le = bound.to_string();
        e.sample("palisade_central_listed_score_bucket", &[("le", &le)], cumulative as f64);
    }
    cumulative += s.score_counts.last().copied().unwrap_or(0);
    e.sample("palisade_central_listed_score_bucket", &[("le", "+Inf")], cumulative as f64);
    e.sample("palisade_central_listed_score_count", &[], cumulative as f64);
    e.finish()
}

/// Serves `/metrics` on `listener`; `status` asks the core for a fresh [`Status`].
pub async fn serve<F, Fut>(listener: tokio::net::TcpListener, status: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<Status>> + Send,
{
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                    let n = stream.read(&mut buf).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                Some(())
            })
            .await;
            if !matches!(read, Ok(Some(()))) {
                return;
            }
            let line = head.split(|b| *b == b'\r').next().unwrap_or(&[]);
            let (code, body) = if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET /metrics?") {
                match status().await {
                    Some(s) => ("200 OK", render(&s)),
                    None => ("503 Service Unavailable", "the central tier is stopping\n".to_owned()),
                }
            } else {
                ("404 Not Found", "only /metrics here\n".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_a_cumulative_histogram() {
        let counters = Counters::default();
        counters.received(5);
        counters.rejected(RejectReason::Forged);
        counters.rejected(RejectReason::Forged);
        counters.outcome(IngestOutcome::RateLimited);
        let status = Status {
            tier: "t".into(),
            version: 7,
            oldest_delta: 1,
            listed: 3,
            tracked_ips: 10,
            reports: 12,
            groups: 4,
            tenants: 3,
            tenants_community: 2,
            sensors: 9,
            sensors_connected: 8,
            subscribers: 5,
            epoch: 2,
            score_buckets: vec![1.0, 6.0],
            score_counts: vec![1, 1, 1],
            counters: counters.snapshot(),
        };
        let text = render(&status);
        for line in [
            "palisade_central_signals_received_total 5",
            "palisade_central_signals_rejected_total{reason=\"forged\"} 2",
            "palisade_central_signals_rejected_total{reason=\"replayed\"} 0",
            "palisade_central_consensus_reports_total{outcome=\"rate_limited\"} 1",
            "palisade_central_tenants{community=\"false\"} 1",
            "palisade_central_list_version 7",
            "palisade_central_listed_score_bucket{le=\"1\"} 1",
            "palisade_central_listed_score_bucket{le=\"6\"} 2",
            "palisade_central_listed_score_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
