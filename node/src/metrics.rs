//! `/metrics`: the node in Prometheus' text format (version 0.0.4), for Prometheus and
//! Grafana.
//!
//! Two kinds of numbers: counters the HTTP handlers and the nftables bouncer bump as
//! they work ([`Metrics`], atomics and short mutexes), and the engines' own counters,
//! read when Prometheus scrapes (sources, parsers, buckets, decisions, the process).
//! The exposition is written by hand: it is a few lines of text, and writing it here
//! keeps names, labels and types exactly as documented and as `promtool` expects.

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{Context, Result};
use palisade_actors::decision::SharedBook;
use palisade_actors::ingest::SourceStats;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Latency buckets, in seconds.
const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A histogram of durations with fixed buckets, safe to observe from many threads.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when written).
    counts: [AtomicU64; BUCKETS.len()],
    /// Observations above the last bound.
    over: AtomicU64,
    /// Sum of observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn write(&self, out: &mut Exposition, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let le = bound.to_string();
            let mut l = labels.to_vec();
            l.push(("le", &le));
            out.sample(&format!("{name}_bucket"), &l, cumulative as f64);
        }
        cumulative += self.over.load(Ordering::Relaxed);
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        out.sample(&format!("{name}_bucket"), &l, cumulative as f64);
        out.sample(&format!("{name}_sum"), labels, self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
        out.sample(&format!("{name}_count"), labels, cumulative as f64);
    }
}

/// The Local API routes, as metric labels.
pub const ROUTES: [&str; 10] = [
    "/health",
    "/v1/decisions",
    "/v1/decisions/stream",
    "/v1/decisions/{id}",
    "/v1/watchers",
    "/v1/watchers/login",
    "/v1/alerts",
    "/v1/heartbeat",
    "/v1/usage-metrics",
    "other",
];

/// Counters bumped by the HTTP handlers and the built-in bouncer.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by (route, method, status).
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    /// Latency by route (index in [`ROUTES`]).
    latency: [Histogram; ROUTES.len()],
    /// Decision pulls by bouncer name.
    pulls: Mutex<HashMap<String, u64>>,
    nft_elements: AtomicU64,
    nft_errors: AtomicU64,
    nft_apply: Histogram,
}

impl Metrics {
    /// The label of a request path.
    pub fn route(path: &str) -> &'static str {
        if let Some(r) = ROUTES.iter().find(|r| **r == path) {
            return r;
        }
        match path.strip_prefix("/v1/decisions/") {
            Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => "/v1/decisions/{id}",
            _ => "other",
        }
    }

    /// One Local API request.
    pub fn lapi_request(&self, route: &'static str, method: &'static str, status: u16, elapsed: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((route, method, status))
            .or_default() += 1;
        let i = ROUTES.iter().position(|r| *r == route).unwrap_or(ROUTES.len() - 1);
        self.latency[i].observe(elapsed);
    }

    /// A bouncer pulled decisions.
    pub fn bouncer_pull(&self, bouncer: &str) {
        let mut pulls = self.pulls.lock().unwrap_or_else(PoisonError::into_inner);
        match pulls.get_mut(bouncer) {
            Some(n) => *n += 1,
            None => {
                pulls.insert(bouncer.to_owned(), 1);
            }
        }
    }

    /// The nftables bouncer applied `elements` changes in `elapsed`.
    pub fn nft_applied(&self, elements: usize, elapsed: Duration) {
        self.nft_elements.fetch_add(elements as u64, Ordering::Relaxed);
        self.nft_apply.observe(elapsed);
    }

    /// nft refused a change.
    pub fn nft_error(&self) {
        self.nft_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prometheus text being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// What a scrape reads besides [`Metrics`].
pub struct Sources {
    /// Counters of the node's own handlers.
    pub metrics: Arc<Metrics>,
    /// The decisions.
    pub book: SharedBook,
    /// Per-source ingest counters.
    pub ingest: Vec<Arc<SourceStats>>,
    /// The scenario actor, asked for its counters at each scrape.
    pub scenario: actix::Addr<palisade_actors::actor::ScenarioActor>,
    /// The fleet layer.
    pub fleet: Arc<crate::fleet::Fleet>,
    /// The link to the central tier, when configured.
    pub community: Option<Arc<crate::community::Community>>,
    /// When the node started (seconds since the epoch).
    pub started: f64,
}

/// Writes every metric.
pub async fn render(s: &Sources) -> String {
    let mut e = Exposition::default();
    e.family("palisade_build_info", "gauge", "Version of the running node.");
    e.sample("palisade_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);

    let counter = |e: &mut Exposition,
                   name: &str,
                   help: &str,
                   rows: &mut dyn Iterator<Item = (Vec<(&str, &str)>, u64)>| {
        e.family(name, "counter", help);
        for (labels, v) in rows {
            e.sample(name, &labels, v as f64);
        }
    };

    // Sources.
    let snaps: Vec<_> =
        s.ingest.iter().map(|st| (st.name.as_str(), st.kind.as_str(), st.snapshot())).collect();
    for (name, help, get) in [
        (
            "palisade_source_lines_total",
            "Lines read, by source.",
            (|x: &palisade_actors::ingest::StatsSnapshot| x.lines) as fn(&_) -> u64,
        ),
        ("palisade_source_bytes_total", "Bytes read, by source.", |x| x.bytes),
        ("palisade_source_lines_truncated_total", "Lines cut at the length limit, by source.", |x| {
            x.truncated
        }),
        ("palisade_source_read_errors_total", "Failed opens, reads and accepts, by source.", |x| {
            x.read_errors
        }),
        ("palisade_source_rotations_total", "File rotations and truncations seen, by source.", |x| {
            x.rotations
        }),
        (
            "palisade_source_connections_dropped_total",
            "Syslog TCP connections refused or cut, by source.",
            |x| x.connections_dropped,
        ),
    ] {
        counter(
            &mut e,
            name,
            help,
            &mut snaps.iter().map(|(n, k, snap)| (vec![("source", *n), ("type", *k)], get(snap))),
        );
    }

    // Parsers and buckets, from the scenario actor.
    match s.scenario.send(palisade_actors::actor::GetStats).await {
        Ok(stats) => {
            let p = &stats.pipeline;
            e.family("palisade_pipeline_lines_total", "counter", "Lines the parsers were given.");
            e.sample("palisade_pipeline_lines_total", &[], p.lines as f64);
            let mut parsed: Vec<_> = p.parsed.iter().collect();
            parsed.sort();
            counter(
                &mut e,
                "palisade_parser_hits_total",
                "Lines recognised, by parser.",
                &mut parsed.iter().map(|(k, v)| (vec![("parser", k.as_ref())], **v)),
            );
            let mut unparsed: Vec<_> = p.unparsed.iter().collect();
            unparsed.sort();
            counter(
                &mut e,
                "palisade_parser_misses_total",
                "Lines no parser recognised, by log type.",
                &mut unparsed.iter().map(|(k, v)| (vec![("log_type", k.as_ref())], **v)),
            );
            type Get = fn(&palisade_actors::scenario::ScenarioStats) -> u64;
            let rows: [(&str, &str, Get); 7] = [
                ("palisade_bucket_poured_total", "Events poured into buckets, by scenario.", |x| x.poured),
                ("palisade_bucket_overflows_total", "Bucket overflows (alerts), by scenario.", |x| {
                    x.overflowed
                }),
                ("palisade_bucket_created_total", "Buckets created, by scenario.", |x| x.instantiated),
                (
                    "palisade_bucket_underflows_total",
                    "Buckets freed idle without overflowing, by scenario.",
                    |x| x.underflowed,
                ),
                (
                    "palisade_bucket_blackholed_total",
                    "Overflows silenced by the blackhole, by scenario.",
                    |x| x.blackholed,
                ),
                (
                    "palisade_bucket_evicted_total",
                    "Buckets evicted at the live-bucket cap, by scenario.",
                    |x| x.evicted,
                ),
                (
                    "palisade_bucket_eval_errors_total",
                    "Filter/groupby/distinct evaluation errors, by scenario.",
                    |x| x.eval_errors,
                ),
            ];
            for (name, help, get) in rows {
                counter(
                    &mut e,
                    name,
                    help,
                    &mut stats.scenarios.iter().map(|sc| (vec![("scenario", sc.name.as_ref())], get(sc))),
                );
            }
            e.family("palisade_buckets", "gauge", "Live buckets.");
            e.sample("palisade_buckets", &[], stats.live_buckets as f64);
            let w = stats.watch;
            e.family(
                "palisade_onsight_watched",
                "gauge",
                "Addresses flagged by hash, waiting for their first event.",
            );
            e.sample("palisade_onsight_watched", &[], w.watched as f64);
            counter(
                &mut e,
                "palisade_onsight_flags_total",
                "Addresses flagged by hash, by outcome.",
                &mut [
                    ("added", w.flagged),
                    ("refused_full", w.refused_full),
                    ("hit", w.hits),
                    ("lapsed", w.lapsed),
                ]
                .into_iter()
                .map(|(k, v)| (vec![("outcome", k)], v)),
            );
        }
        Err(err) => tracing::warn!(error = %err, "metrics: scenario actor unavailable"),
    }

    // Decisions.
    {
        // Counted in pages, letting go of the read lock between them, so a scrape of a
        // node holding a million decisions never holds up the decision engine.
        const PAGE: usize = 10_000;
        let now = crate::run::wall_clock();
        let mut active: Vec<((String, String, String), u64)> = Vec::new();
        let mut after = 0;
        loop {
            let book = s.book.read();
            let mut last = None;
            for d in book.after_id(after).take(PAGE) {
                last = Some(d.id);
                if !d.is_active(now) {
                    continue;
                }
                let (o, k, sc) = (d.origin.as_str(), d.kind.as_str(), d.scope.as_str());
                match active.iter_mut().find(|((a, b, c), _)| a == o && b == k && c == sc) {
                    Some((_, n)) => *n += 1,
                    None => active.push(((o.to_owned(), k.to_owned(), sc.to_owned()), 1)),
                }
            }
            match last {
                Some(id) => after = id,
                None => break,
            }
        }
        active.sort();
        e.family("palisade_decisions_active", "gauge", "Active decisions, by origin, type and scope.");
        for ((origin, kind, scope), n) in &active {
            e.sample(
                "palisade_decisions_active",
                &[("origin", origin), ("type", kind), ("scope", scope)],
                *n as f64,
            );
        }
        e.family(
            "palisade_decisions_ended_kept",
            "gauge",
            "Ended decisions kept to tell bouncers about them.",
        );
        e.sample("palisade_decisions_ended_kept", &[], s.book.read().ended_len() as f64);
    }

    // Local API and bouncers.
    {
        let m = &s.metrics;
        let requests = m.requests.lock().unwrap_or_else(PoisonError::into_inner).clone();
        e.family(
            "palisade_lapi_requests_total",
            "counter",
            "Local API requests, by route, method and status.",
        );
        for ((route, method, status), n) in &requests {
            e.sample(
                "palisade_lapi_requests_total",
                &[("route", route), ("method", method), ("status", &status.to_string())],
                *n as f64,
            );
        }
        e.family(
            "palisade_lapi_request_duration_seconds",
            "histogram",
            "Local API request latency (to the response headers), by route.",
        );
        for (route, h) in ROUTES.iter().zip(&m.latency) {
            h.write(&mut e, "palisade_lapi_request_duration_seconds", &[("route", route)]);
        }
        let mut pulls: Vec<(String, u64)> = m
            .pulls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        pulls.sort();
        counter(
            &mut e,
            "palisade_bouncer_pulls_total",
            "Decision pulls, by bouncer.",
            &mut pulls.iter().map(|(b, n)| (vec![("bouncer", b.as_str())], *n)),
        );
        e.family(
            "palisade_nft_elements_applied_total",
            "counter",
            "Element changes the nftables bouncer applied.",
        );
        e.sample("palisade_nft_elements_applied_total", &[], m.nft_elements.load(Ordering::Relaxed) as f64);
        e.family("palisade_nft_errors_total", "counter", "Changes nft refused.");
        e.sample("palisade_nft_errors_total", &[], m.nft_errors.load(Ordering::Relaxed) as f64);
        e.family(
            "palisade_nft_apply_duration_seconds",
            "histogram",
            "Time to compute and apply one nftables update.",
        );
        m.nft_apply.write(&mut e, "palisade_nft_apply_duration_seconds", &[]);
    }

    fleet(&mut e, &s.fleet).await;
    if let Some(c) = &s.community {
        community(&mut e, c);
    }
    process(&mut e, s.started);
    e.finish()
}

/// The link to the central tier and the community list.
fn community(e: &mut Exposition, c: &crate::community::Community) {
    let st = c.handle.stats();
    let gauge = |e: &mut Exposition, name: &str, help: &str, v: f64| {
        e.family(name, "gauge", help);
        e.sample(name, &[], v);
    };
    gauge(
        e,
        "palisade_central_connected",
        "1 while the link to the central tier is up.",
        f64::from(u8::from(st.connected)),
    );
    gauge(
        e,
        "palisade_central_pending_sightings",
        "Own detections waiting to be sent to the central tier.",
        st.pending as f64,
    );
    e.family(
        "palisade_central_sightings_total",
        "counter",
        "Own detections for the central tier, by outcome.",
    );
    for (k, v) in [
        ("sent", st.sent),
        ("accepted", st.accepted),
        ("dropped_queue_full", c.list.sightings_dropped.load(Ordering::Relaxed)),
    ] {
        e.sample("palisade_central_sightings_total", &[("outcome", k)], v as f64);
    }
    e.family("palisade_central_rejected_total", "counter", "Reports the central tier refused, by reason.");
    for (reason, v) in &st.rejected {
        e.sample("palisade_central_rejected_total", &[("reason", reason)], *v as f64);
    }
    gauge(
        e,
        "palisade_community_list_version",
        "Version of the community list applied.",
        st.applied_version as f64,
    );
    gauge(
        e,
        "palisade_community_listed",
        "Addresses on the community list held (by hash).",
        c.list.len() as f64,
    );
    e.family(
        "palisade_community_lookup_hits_total",
        "counter",
        "Bouncer lookups of a community-listed address.",
    );
    e.sample("palisade_community_lookup_hits_total", &[], c.list.lookup_hits.load(Ordering::Relaxed) as f64);
}

/// The fleet: gossip endpoint, reputation policy, propagation delay.
async fn fleet(e: &mut Exposition, fleet: &crate::fleet::Fleet) {
    let snap = fleet.snapshot().await;
    let series =
        |e: &mut Exposition, name: &str, kind: &str, help: &str, label: &str, rows: &[(&str, u64)]| {
            e.family(name, kind, help);
            for (k, v) in rows {
                e.sample(name, &[(label, k)], *v as f64);
            }
        };
    e.family("palisade_fleet_member", "gauge", "1 when the node is in a fleet and its gossip endpoint runs.");
    e.sample("palisade_fleet_member", &[], f64::from(u8::from(snap.member)));
    let r = snap.reputation;
    series(
        e,
        "palisade_fleet_signals_received_total",
        "counter",
        "Verified signals of other members, by what the fleet policy made of them.",
        "outcome",
        &[
            ("ban", r.bans),
            ("flag", r.flags),
            ("unsealable", r.unsealable),
            ("own", r.own),
            ("pending_full", r.pending_full),
        ],
    );
    e.family(
        "palisade_fleet_pending_addresses",
        "gauge",
        "Addresses reported by fewer members than reputation.fleet_reporters.",
    );
    e.sample("palisade_fleet_pending_addresses", &[], r.pending as f64);
    e.family(
        "palisade_gossip_propagation_seconds",
        "histogram",
        "From a signal's observed time (its log line at the origin) to its arrival here.",
    );
    fleet.metrics().propagation.write(e, "palisade_gossip_propagation_seconds", &[]);
    let Some(g) = snap.gossip else { return };
    let (en, net) = (g.engine, g.net);
    series(
        e,
        "palisade_gossip_peers",
        "gauge",
        "Fleet members, by state.",
        "state",
        &[("connected", g.peers_connected), ("alive", g.peers_alive)],
    );
    series(
        e,
        "palisade_gossip_messages_total",
        "counter",
        "Gossip messages, by direction.",
        "direction",
        &[("in", en.messages_in), ("out", en.messages_out)],
    );
    series(
        e,
        "palisade_gossip_bytes_total",
        "counter",
        "Gossip frame bytes, by direction.",
        "direction",
        &[("in", en.bytes_in), ("out", net.bytes_sent)],
    );
    series(
        e,
        "palisade_gossip_udp_bytes_total",
        "counter",
        "UDP bytes on member connections (QUIC overhead included), by direction.",
        "direction",
        &[("in", g.udp_bytes_received), ("out", g.udp_bytes_sent)],
    );
    series(
        e,
        "palisade_gossip_signals_total",
        "counter",
        "Signals, by event: published (own), accepted (new from peers), delivered (to the node), pushed, repaired (sent to fill a peer's gap), duplicate.",
        "event",
        &[
            ("published", en.signals_published),
            ("accepted", en.signals_accepted),
            ("delivered", en.signals_delivered),
            ("pushed", en.signals_pushed),
            ("repaired", en.repair_signals_sent),
            ("duplicate", en.duplicates),
        ],
    );
    series(
        e,
        "palisade_gossip_rejected_total",
        "counter",
        "Input refused, by reason.",
        "reason",
        &[
            ("forged", en.forged),
            ("conflicting", en.conflicting),
            ("malformed", en.malformed),
            ("oversized", en.oversized),
            ("wrong_fleet", en.wrong_fleet),
            ("unknown_epoch", en.unknown_epoch),
            ("clock_skew", en.clock_skew),
            ("revoked_origin", en.revoked_origin),
            ("pending_overflow", en.pending_overflow),
            ("rate_limited", en.rate_limited),
            ("queue_full", net.frames_dropped_queue_full),
        ],
    );
    series(
        e,
        "palisade_gossip_handshakes_total",
        "counter",
        "QUIC connections, by admission result.",
        "result",
        &[("admitted", net.handshakes_admitted), ("refused", net.handshakes_refused)],
    );
    series(
        e,
        "palisade_gossip_joins_total",
        "counter",
        "Join requests answered, by result.",
        "result",
        &[("accepted", net.joins_accepted), ("refused", net.joins_refused)],
    );
    e.family("palisade_gossip_peers_disconnected_total", "counter", "Peers cut off for misbehaving.");
    e.sample("palisade_gossip_peers_disconnected_total", &[], en.peers_disconnected as f64);
}

/// The standard `process_*` metrics, from /proc.
fn process(e: &mut Exposition, started: f64) {
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start at ") ".
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // utime and stime are fields 14 and 15 of the whole line (11 and 12 here).
            e.family("process_cpu_seconds_total", "counter", "User and system CPU time, in seconds.");
            e.sample("process_cpu_seconds_total", &[], (num(11) + num(12)) / USER_HZ);
            e.family("process_virtual_memory_bytes", "gauge", "Virtual memory size, in bytes.");
            e.sample("process_virtual_memory_bytes", &[], num(20));
            e.family("process_threads", "gauge", "Threads.");
            e.sample("process_threads", &[], num(17));
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                * 1024.0
        };
        e.family("process_resident_memory_bytes", "gauge", "Resident set size, in bytes.");
        e.sample("process_resident_memory_bytes", &[], kb("VmRSS:"));
        e.family("process_resident_memory_max_bytes", "gauge", "Peak resident set size, in bytes.");
        e.sample("process_resident_memory_max_bytes", &[], kb("VmHWM:"));
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        e.family("process_open_fds", "gauge", "Open file descriptors.");
        e.sample("process_open_fds", &[], fds.count() as f64);
    }
    e.family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
    );
    e.sample("process_start_time_seconds", &[], started);
}

/// Clock ticks per second in /proc's CPU times: `USER_HZ`, 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// `[metrics]`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics`.
    pub enabled: bool,
    /// Address and port (`127.0.0.1:6060`, as CrowdSec; port 0 picks a free one).
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, listen: "127.0.0.1:6060".into() }
    }
}

impl MetricsConfig {
    /// Checks every key; errors name it.
    pub fn validate(&self) -> Result<(), palisade_actors::decision::ConfigError> {
        self.listen.parse::<SocketAddr>().map(|_| ()).map_err(|_| {
            palisade_actors::decision::ConfigError::new(
                "metrics.listen",
                format!("{:?} is not an address:port", self.listen),
            )
        })
    }
}

/// Starts the metrics endpoint on one worker. Returns where it listens and its handle.
pub fn start(config: &MetricsConfig, sources: Sources) -> Result<(SocketAddr, actix_web::dev::ServerHandle)> {
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("metrics.listen: cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let sources = web::Data::new(sources);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(sources.clone())
            .route("/metrics", web::get().to(scrape))
            .default_service(web::to(|| async { HttpResponse::NotFound().body("try /metrics\n") }))
    })
    .workers(1)
    .max_connections(64)
    .client_request_timeout(Duration::from_secs(5))
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((addr, handle))
}

async fn scrape(sources: web::Data<Sources>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(render(&sources).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut e = Exposition::default();
        h.write(&mut e, "x", &[("route", "a\"b")]);
        let text = e.finish();
        assert!(text.contains("x_bucket{route=\"a\\\"b\",le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("x_bucket{route=\"a\\\"b\",le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("x_bucket{route=\"a\\\"b\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_count{route=\"a\\\"b\"} 3\n"), "{text}");
    }

    #[test]
    fn routes_are_bounded_labels() {
        assert_eq!(Metrics::route("/v1/decisions"), "/v1/decisions");
        assert_eq!(Metrics::route("/v1/../../etc/passwd"), "other");
        assert_eq!(Metrics::route("/v1/decisions/42"), "/v1/decisions/{id}");
    }
}
