//! The tier's core: one task that owns the consensus, the tenants, the sensors, the
//! published list and the database, and runs one `select!` loop over commands from the
//! connection tasks and the admin socket and a clock tick.
//!
//! Connection tasks do everything that needs no shared state (decoding, bounds,
//! signatures, rate limits) and hand the core batches of checked signals; the core
//! takes in the commands queued at that moment together, writes them in one RocksDB
//! batch, and only then acknowledges them and publishes the deltas they caused.

use anyhow::{anyhow, Context, Result};
use palisade_consensus::{
    Allowlist, AsnOrgs, Consensus, Explanation, IngestOutcome, ListChangeKind, Report as ConsensusReport,
    SensorRecord, VerifiedAddress,
};
use palisade_proto::central::{
    Ack, DeltaKind, EnrollToken, ListDelta, ListEntry, RefusalCode, RejectReason, Rejection, Welcome,
    MAX_DELTA_ENTRIES, MAX_TENANT_NAME,
};
use palisade_proto::{Epoch, HashKey, HashedIp, NodeId, NodeKey, SignedSignal, Timestamp};
use rand::RngCore;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::config::{AllowlistConfig, CentralConfig};
use super::metrics::Counters;
use super::store::{Batch, CentralStore, ListedRow, ReportRow, SensorRow, TenantRecord};

/// How often connected sensors count as seen, sensor standings are saved, and the
/// report table is swept.
const HOUSEKEEPING: Duration = Duration::from_secs(30);
/// Report rows one sweep step reads.
const SWEEP_ROWS: usize = 20_000;
/// Commands the core takes in together before writing.
const GROUP: usize = 128;

/// A signal after the connection task's checks: `Some(reason)` when it was refused.
pub type Checked = (SignedSignal, Option<RejectReason>);

/// Why the tier refused a session or subscription.
#[derive(Debug, Clone)]
pub struct Refused {
    /// What kind.
    pub code: RefusalCode,
    /// For the operator.
    pub reason: String,
}

fn refused(code: RefusalCode, reason: impl Into<String>) -> Refused {
    Refused { code, reason: reason.into() }
}

/// How a new subscriber catches up before live deltas.
#[derive(Debug)]
pub enum CatchUp {
    /// It holds the current version.
    UpToDate,
    /// Send the logged deltas `from..=to`.
    Log {
        /// First version to send.
        from: u64,
        /// Last version to send (live deltas follow).
        to: u64,
    },
    /// Send the whole list at `version`.
    Snapshot {
        /// The version the snapshot is of.
        version: u64,
        /// Every entry.
        entries: Vec<ListEntry>,
    },
}

/// A delta as published: encoded once, sent to every subscriber.
#[derive(Debug)]
pub struct Published {
    /// Its version.
    pub version: u64,
    /// Entries in it (for metrics).
    pub entries: usize,
    /// The encoded envelope (one frame's body).
    pub bytes: Vec<u8>,
}

/// A subscription: how to catch up, then the live deltas.
#[derive(Debug)]
pub struct Subscription {
    /// Catch-up instructions.
    pub catch_up: CatchUp,
    /// Deltas after the catch-up, as they are published.
    pub live: mpsc::Receiver<Arc<Published>>,
}

/// What the admin socket asks.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Counts and state.
    Status,
    /// Explain hashed IPs (an address is hashed by the caller's side of the core).
    Explain {
        /// An IP address or a 64-hex hashed IP.
        target: String,
    },
    /// Add a tenant.
    TenantAdd {
        /// Its name.
        name: String,
        /// Whether it opts in to the community.
        community: bool,
    },
    /// Every tenant.
    TenantList,
    /// Remove a tenant: its sensors are cut off and forgotten, their reports deleted.
    TenantRemove {
        /// Its name.
        name: String,
    },
}

/// Commands to the core.
#[derive(Debug)]
pub enum Command {
    /// A session starts.
    Admit {
        /// The sensor (its TLS identity).
        sensor: NodeId,
        /// Enrollment secret, if the sensor sent one.
        enroll: Option<[u8; 32]>,
        /// The connection's source address.
        remote: SocketAddr,
        /// Its ASN and /24.
        address: VerifiedAddress,
        /// The connection's number, to tell its end from a newer session's.
        conn_id: u64,
        /// Fires when a newer session of the same sensor replaces this one.
        kick: oneshot::Sender<(u32, &'static str)>,
        /// The answer.
        reply: oneshot::Sender<Result<Welcome, Refused>>,
    },
    /// Checked signals of one report.
    Report {
        /// The sensor.
        sensor: NodeId,
        /// Its verified address.
        address: VerifiedAddress,
        /// The report's batch number.
        batch: u64,
        /// The signals.
        signals: Vec<Checked>,
        /// The ack, sent once written.
        reply: oneshot::Sender<Ack>,
    },
    /// A sensor subscribes from a version.
    Subscribe {
        /// The sensor.
        sensor: NodeId,
        /// The last version it applied.
        from: u64,
        /// The answer.
        reply: oneshot::Sender<Result<Subscription, Refused>>,
    },
    /// A session ended.
    Gone {
        /// The sensor.
        sensor: NodeId,
        /// The connection's number from its `Admit`.
        conn_id: u64,
    },
    /// An admin request; the reply is one JSON value.
    Admin(AdminRequest, oneshot::Sender<Result<serde_json::Value, String>>),
}

#[derive(Debug)]
struct Sensor {
    row: SensorRow,
    dirty: bool,
}

struct Session {
    conn_id: u64,
    address: VerifiedAddress,
    kick: oneshot::Sender<(u32, &'static str)>,
}

struct Subscriber {
    sensor: NodeId,
    tx: mpsc::Sender<Arc<Published>>,
}

/// The core's state.
pub struct Tier {
    config: CentralConfig,
    store: Arc<CentralStore>,
    key: NodeKey,
    community_secret: [u8; 32],
    consensus: Consensus,
    tenants: BTreeMap<String, TenantRecord>,
    by_token: HashMap<[u8; 32], String>,
    sensors: HashMap<NodeId, Sensor>,
    connected: HashMap<NodeId, Session>,
    published: HashMap<HashedIp, ListedRow>,
    version: u64,
    oldest_delta: u64,
    subscribers: Vec<Subscriber>,
    counters: Arc<Counters>,
    allowlist_epoch: Option<Epoch>,
    sweep_cursor: Vec<u8>,
    last_housekeeping: Timestamp,
    /// Deltas written but not yet sent to subscribers.
    outgoing: Vec<Arc<Published>>,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier").field("version", &self.version).finish_non_exhaustive()
    }
}

/// The wall clock.
pub fn now() -> Timestamp {
    palisade_gossip::net::wall_clock()
}

impl Tier {
    /// Opens the database and rebuilds the state: tenants, sensors, the consensus (by
    /// replaying the stored reports in the order they arrived) and the published list.
    pub fn open(config: CentralConfig, store: Arc<CentralStore>, counters: Arc<Counters>) -> Result<Tier> {
        let key = crate::keys::node_key(&config.data_dir)?;
        let community_secret = crate::keys::load_or_create_32(&config.data_dir.join("community.secret"))?;
        let mut consensus_config = config.consensus.clone();
        consensus_config.hash_seed = rand::rngs::OsRng.next_u64();
        let consensus =
            Consensus::new(consensus_config, AsnOrgs::new(), Allowlist::new()).map_err(|e| anyhow!("{e}"))?;
        let tenants: BTreeMap<String, TenantRecord> =
            store.tenants().map_err(|e| anyhow!("{e}"))?.into_iter().map(|t| (t.name.clone(), t)).collect();
        let by_token = tenants.values().map(|t| (t.token_hash, t.name.clone())).collect();
        let sensors = store
            .sensors()
            .map_err(|e| anyhow!("{e}"))?
            .into_iter()
            .map(|(id, row)| (id, Sensor { row, dirty: false }))
            .collect();
        let version = store.version().map_err(|e| anyhow!("{e}"))?;
        let oldest_delta = store.oldest_delta().map_err(|e| anyhow!("{e}"))?;
        let mut tier = Tier {
            config,
            store,
            key,
            community_secret,
            consensus,
            tenants,
            by_token,
            sensors,
            connected: HashMap::new(),
            published: HashMap::new(),
            version,
            oldest_delta,
            subscribers: Vec::new(),
            counters,
            allowlist_epoch: None,
            sweep_cursor: Vec::new(),
            last_housekeeping: Timestamp(0),
            outgoing: Vec::new(),
        };
        tier.restore(now())?;
        Ok(tier)
    }

    /// The signing key (connection tasks sign snapshot parts with it).
    pub fn key(&self) -> NodeKey {
        self.key.clone()
    }

    fn restore(&mut self, now: Timestamp) -> Result<()> {
        self.refresh_allowlist(now)?;
        // Replay live community reports in arrival order.
        let ttl =
            i64::try_from(self.config.consensus.report_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut replay: Vec<(i64, ConsensusReport)> = Vec::new();
        self.store
            .each_report(|_, sensor, row| {
                if row.community && now.0.saturating_sub(row.received) <= ttl {
                    let address = VerifiedAddress { asn: palisade_consensus::Asn(row.asn), net24: row.net24 };
                    replay.push((row.received, ConsensusReport::from_signal(&row.signal.signal, address)));
                    let _ = sensor;
                }
            })
            .map_err(|e| anyhow!("{e}"))?;
        replay.sort_by_key(|(at, _)| *at);
        let replayed = replay.len();
        for (at, report) in &replay {
            self.consensus.ingest(report, Timestamp(*at));
        }
        drop(replay);
        self.consensus.drain_changes();
        // Standings as saved (replaying re-credited some reports: the saved record wins).
        for (id, sensor) in &self.sensors {
            let community = self.tenants.get(&sensor.row.tenant).is_some_and(|t| t.community);
            if community && sensor.row.verified_since > 0 {
                self.consensus.restore_sensor(&record_of(id, &sensor.row), now);
            }
        }
        // The list as published: entries whose reports are gone are delisted now.
        let mut changes: BTreeMap<HashedIp, Option<ListEntry>> = BTreeMap::new();
        let mut batch = Batch::default();
        for row in self.store.listed().map_err(|e| anyhow!("{e}"))? {
            let ip = row.entry.ip;
            if self.consensus.restore_listing(&ip, Timestamp(row.listed_since)) {
                self.published.insert(ip, row);
            } else {
                batch.delisted.push(ip);
                changes.insert(ip, None);
            }
        }
        // Listed by the replay but not published before the restart: publish now.
        for listing in self.consensus.published(now) {
            if !self.published.contains_key(&listing.ip) {
                let entry = self.entry_for(listing.ip, listing.score, listing.groups, now, &HashMap::new());
                let row = ListedRow { entry: entry.clone(), listed_since: listing.listed_since.0 };
                self.published.insert(listing.ip, row.clone());
                batch.listed.push(row);
                changes.insert(listing.ip, Some(entry));
            }
        }
        self.emit(&mut batch, changes, now);
        self.store.commit(&batch).map_err(|e| anyhow!("{e}"))?;
        self.outgoing.clear();
        tracing::info!(
            reports = replayed,
            listed = self.published.len(),
            version = self.version,
            sensors = self.sensors.len(),
            tenants = self.tenants.len(),
            "central tier state restored"
        );
        Ok(())
    }

    /// Rebuilds the allowlist for the current and previous epochs when the epoch changed.
    fn refresh_allowlist(&mut self, now: Timestamp) -> Result<()> {
        let epoch = Epoch::containing(now, self.config.epoch_secs());
        if self.allowlist_epoch == Some(epoch) {
            return Ok(());
        }
        let list = build_allowlist(&self.config.allowlist, &self.community_secret, epoch);
        self.consensus.set_allowlist(list);
        self.allowlist_epoch = Some(epoch);
        Ok(())
    }

    /// Runs the core until `commands` closes or `shutdown` fires.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: oneshot::Receiver<()>,
    ) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.publish.tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    let mut group = vec![cmd];
                    while group.len() < GROUP {
                        match commands.try_recv() {
                            Ok(more) => group.push(more),
                            Err(_) => break,
                        }
                    }
                    self.handle(group, now())?;
                }
                _ = tick.tick() => self.tick(now())?,
            }
        }
        self.save_sensors(now(), true)?;
        tracing::info!("central tier core stopped");
        Ok(())
    }

    fn handle(&mut self, group: Vec<Command>, now: Timestamp) -> Result<()> {
        let mut batch = Batch::default();
        let mut acks = Vec::new();
        let mut scenarios: HashMap<HashedIp, (String, Epoch)> = HashMap::new();
        let mut later = Vec::new();
        let mut reporters = Vec::new();
        for cmd in group {
            match cmd {
                Command::Report { sensor, address, batch: number, signals, reply } => {
                    reporters.push(sensor);
                    let ack =
                        self.take_report(sensor, address, number, signals, now, &mut batch, &mut scenarios);
                    acks.push((reply, ack));
                }
                other => later.push(other),
            }
        }
        let changes = self.drain_changes(now, &scenarios);
        self.emit(&mut batch, changes, now);
        // The reporting sensors' rows (highest sequence number, standing) go in the same
        // write as their reports: a replay stays a replay after a restart.
        for id in reporters {
            if let Some(s) = self.sensors.get_mut(&id) {
                if s.dirty {
                    s.dirty = false;
                    batch.sensors.push((id, s.row.clone()));
                }
            }
        }
        self.commit(batch)?;
        for (reply, ack) in acks {
            let _ = reply.send(ack);
        }
        self.broadcast();
        for cmd in later {
            self.handle_one(cmd, now)?;
        }
        Ok(())
    }

    fn handle_one(&mut self, cmd: Command, now: Timestamp) -> Result<()> {
        match cmd {
            Command::Admit { sensor, enroll, remote, address, conn_id, kick, reply } => {
                let session = Session { conn_id, address, kick };
                let answer = self.admit(sensor, enroll, remote, session, now)?;
                let _ = reply.send(answer);
            }
            Command::Subscribe { sensor, from, reply } => {
                let _ = reply.send(self.subscribe(sensor, from));
            }
            Command::Admin(request, reply) => {
                let answer = self.admin(request, now)?;
                let _ = reply.send(answer);
            }
            Command::Gone { sensor, conn_id } => {
                if self.connected.get(&sensor).is_some_and(|s| s.conn_id == conn_id) {
                    self.connected.remove(&sensor);
                }
            }
            Command::Report { .. } => {}
        }
        Ok(())
    }

    fn commit(&mut self, batch: Batch) -> Result<()> {
        // A tier that cannot write must not acknowledge: stop, and let the restart
        // replay what is on disk (sensors resend what was not acknowledged).
        self.store.commit(&batch).map_err(|e| anyhow!("{e}")).context("writing the central tier database")
    }

    #[allow(clippy::too_many_arguments)]
    fn take_report(
        &mut self,
        sensor: NodeId,
        address: VerifiedAddress,
        number: u64,
        signals: Vec<Checked>,
        now: Timestamp,
        batch: &mut Batch,
        scenarios: &mut HashMap<HashedIp, (String, Epoch)>,
    ) -> Ack {
        let mut ack = Ack { batch: number, accepted: 0, rejected: Vec::new() };
        let Some(state) = self.sensors.get_mut(&sensor) else {
            ack.rejected = (0..signals.len() as u32)
                .map(|index| Rejection { index, reason: RejectReason::Invalid })
                .collect();
            return ack;
        };
        let community = self.tenants.get(&state.row.tenant).is_some_and(|t| t.community);
        for (i, (signed, pre)) in signals.into_iter().enumerate() {
            let reason = match pre {
                Some(r) => Some(r),
                None if signed.signal.seq <= state.row.high_seq => Some(RejectReason::Replayed),
                None => None,
            };
            if let Some(reason) = reason {
                self.counters.rejected(reason);
                ack.rejected.push(Rejection { index: i as u32, reason });
                continue;
            }
            state.row.high_seq = signed.signal.seq;
            ack.accepted += 1;
            self.counters.accepted(community);
            let ip = signed.signal.hashed_ip;
            if community {
                let outcome =
                    self.consensus.ingest(&ConsensusReport::from_signal(&signed.signal, address), now);
                self.counters.outcome(outcome);
                if matches!(outcome, IngestOutcome::Recorded { .. } | IngestOutcome::Refreshed { .. }) {
                    scenarios.insert(ip, (signed.signal.scenario.clone(), signed.signal.epoch));
                }
            }
            batch.reports.push((
                ip,
                sensor,
                ReportRow {
                    received: now.0,
                    asn: address.asn.0,
                    net24: address.net24,
                    community,
                    signal: signed,
                },
            ));
        }
        state.dirty = true;
        if community {
            if let Some(record) = self.consensus.sensor_record(&sensor) {
                apply_record(&mut state.row, &record);
            }
        }
        ack
    }

    /// The consensus' changes since the last call, netted per IP (the last one wins).
    fn drain_changes(
        &mut self,
        now: Timestamp,
        scenarios: &HashMap<HashedIp, (String, Epoch)>,
    ) -> BTreeMap<HashedIp, Option<ListEntry>> {
        let mut out = BTreeMap::new();
        for change in self.consensus.drain_changes() {
            match change.kind {
                ListChangeKind::Listed { score, groups } => {
                    let entry = self.entry_for(change.ip, score, groups, now, scenarios);
                    out.insert(change.ip, Some(entry));
                }
                ListChangeKind::Delisted => {
                    out.insert(change.ip, None);
                }
            }
        }
        out
    }

    /// A list entry: scenario and epoch from this batch's reports, else the stored ones.
    fn entry_for(
        &self,
        ip: HashedIp,
        score: f64,
        groups: u32,
        now: Timestamp,
        scenarios: &HashMap<HashedIp, (String, Epoch)>,
    ) -> ListEntry {
        let (scenario, epoch) = scenarios.get(&ip).cloned().unwrap_or_else(|| {
            let rows = self.store.reports_of(&ip, 256).unwrap_or_default();
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for r in rows.iter().filter(|r| r.community) {
                *counts.entry(r.signal.signal.scenario.as_str()).or_default() += 1;
            }
            let scenario = counts.iter().max_by_key(|(_, n)| **n).map_or("unknown", |(s, _)| s).to_owned();
            let epoch = rows
                .first()
                .map_or_else(|| Epoch::containing(now, self.config.epoch_secs()), |r| r.signal.signal.epoch);
            (scenario, epoch)
        });
        ListEntry {
            ip,
            epoch,
            scenario,
            score: score as f32,
            groups: u16::try_from(groups).unwrap_or(u16::MAX),
            until: now.saturating_add(self.entry_ttl()),
        }
    }

    fn entry_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.publish.entry_ttl_hours) * 3600)
    }

    /// Turns netted changes into signed deltas in `batch` (and in the list).
    fn emit(&mut self, batch: &mut Batch, changes: BTreeMap<HashedIp, Option<ListEntry>>, now: Timestamp) {
        if changes.is_empty() {
            return;
        }
        let mut pending: Vec<(HashedIp, Option<ListEntry>)> = Vec::new();
        for (ip, change) in changes {
            match &change {
                Some(entry) => {
                    let since = self.published.get(&ip).map_or(now.0, |r| r.listed_since);
                    let row = ListedRow { entry: entry.clone(), listed_since: since };
                    self.published.insert(ip, row.clone());
                    batch.delisted.retain(|d| *d != ip);
                    batch.listed.retain(|r| r.entry.ip != ip);
                    batch.listed.push(row);
                }
                None => {
                    if self.published.remove(&ip).is_none() && !batch.delisted.contains(&ip) {
                        continue;
                    }
                    batch.listed.retain(|r| r.entry.ip != ip);
                    if !batch.delisted.contains(&ip) {
                        batch.delisted.push(ip);
                    }
                }
            }
            pending.push((ip, change));
        }
        for chunk in pending.chunks(MAX_DELTA_ENTRIES) {
            self.version += 1;
            let mut delta = ListDelta {
                version: self.version,
                kind: DeltaKind::Changes,
                issued_at: now,
                added: Vec::new(),
                removed: Vec::new(),
            };
            for (ip, change) in chunk {
                match change {
                    Some(entry) => delta.added.push(entry.clone()),
                    None => delta.removed.push(*ip),
                }
            }
            self.counters.delta_published(delta.added.len(), delta.removed.len());
            let entries = delta.added.len() + delta.removed.len();
            let signed = delta.sign(&self.key);
            let message =
                palisade_proto::Message::Central(palisade_proto::central::CentralMessage::Delta(signed));
            if let Ok(bytes) = message.encode() {
                self.outgoing.push(Arc::new(Published { version: self.version, entries, bytes }));
            }
            if let palisade_proto::Message::Central(palisade_proto::central::CentralMessage::Delta(signed)) =
                message
            {
                batch.deltas.push(signed);
            }
            if self.oldest_delta == 0 {
                self.oldest_delta = self.version;
            }
        }
        batch.version = Some(self.version);
        let keep = self.config.publish.delta_log_keep;
        if self.version.saturating_sub(self.oldest_delta) >= keep {
            let below = self.version + 1 - keep;
            batch.prune_deltas_below = Some(below);
            self.oldest_delta = below;
        }
    }

    /// Sends the deltas just written to every subscriber; one whose queue is full is
    /// dropped (it resumes from its version when it reconnects).
    fn broadcast(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let outgoing = std::mem::take(&mut self.outgoing);
        let counters = self.counters.clone();
        self.subscribers.retain(|s| {
            for d in &outgoing {
                match s.tx.try_send(d.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        counters.subscriber_dropped();
                        tracing::warn!(sensor = %s.sensor.short(), "subscriber too slow; disconnected");
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    fn tick(&mut self, now: Timestamp) -> Result<()> {
        self.refresh_allowlist(now)?;
        self.consensus.tick(now);
        let mut changes = self.drain_changes(now, &HashMap::new());
        // Republish entries past half their time to live, with a new `until`.
        let half = self.entry_ttl() / 2;
        let until = now.saturating_add(self.entry_ttl());
        for (ip, row) in &self.published {
            if row.entry.until.saturating_sub(half) <= now && !changes.contains_key(ip) {
                let mut entry = row.entry.clone();
                entry.until = until;
                if let Some(score) = self.consensus.score(ip, now) {
                    entry.score = score as f32;
                }
                changes.insert(*ip, Some(entry));
            }
        }
        let mut batch = Batch::default();
        self.emit(&mut batch, changes, now);
        if now.since(self.last_housekeeping) >= HOUSEKEEPING {
            self.last_housekeeping = now;
            for (id, session) in &self.connected {
                if let Some(s) = self.sensors.get_mut(id) {
                    if self.tenants.get(&s.row.tenant).is_some_and(|t| t.community) {
                        self.consensus.observe_sensor(*id, session.address, now);
                    }
                    s.row.last_seen = now.0;
                    s.dirty = true;
                }
            }
            self.save_sensors_into(&mut batch, true);
            let ttl = Duration::from_secs(self.config.consensus.report_ttl_secs);
            let (next, deleted) = self
                .store
                .sweep_reports(&self.sweep_cursor, SWEEP_ROWS, now.saturating_sub(ttl).0)
                .map_err(|e| anyhow!("{e}"))?;
            self.sweep_cursor = next;
            self.counters.reports_expired(deleted);
        }
        self.commit(batch)?;
        self.broadcast();
        Ok(())
    }

    fn save_sensors_into(&mut self, batch: &mut Batch, all: bool) {
        for (id, s) in &mut self.sensors {
            if all || s.dirty {
                if let Some(record) = self.consensus.sensor_record(id) {
                    apply_record(&mut s.row, &record);
                }
                batch.sensors.push((*id, s.row.clone()));
                s.dirty = false;
            }
        }
    }

    fn save_sensors(&mut self, _now: Timestamp, all: bool) -> Result<()> {
        let mut batch = Batch::default();
        self.save_sensors_into(&mut batch, all);
        self.commit(batch)
    }

    fn admit(
        &mut self,
        sensor: NodeId,
        enroll: Option<[u8; 32]>,
        remote: SocketAddr,
        session: Session,
        now: Timestamp,
    ) -> Result<Result<Welcome, Refused>> {
        let address = session.address;
        let named = enroll.map(|secret| self.by_token.get(&EnrollToken::secret_hash(&secret)).cloned());
        let tenant = match (self.sensors.get(&sensor), named) {
            (_, Some(None)) => {
                return Ok(Err(refused(
                    RefusalCode::UnknownToken,
                    "the enrollment token names no tenant of this tier",
                )))
            }
            (Some(s), Some(Some(t))) if s.row.tenant != t => {
                return Ok(Err(refused(
                    RefusalCode::OtherTenant,
                    format!("this sensor is enrolled with tenant {:?}, not {t:?}", s.row.tenant),
                )))
            }
            (Some(s), _) => s.row.tenant.clone(),
            (None, Some(Some(t))) => {
                let row = SensorRow {
                    tenant: t.clone(),
                    enrolled: now.0,
                    high_seq: 0,
                    last_addr: String::new(),
                    asn: address.asn.0,
                    net24: address.net24,
                    verified_since: 0,
                    last_seen: now.0,
                    confirmed: 0.0,
                    unconfirmed: 0.0,
                };
                self.sensors.insert(sensor, Sensor { row, dirty: true });
                tracing::info!(sensor = %sensor.short(), tenant = %t, remote = %remote, "sensor enrolled");
                self.counters.enrolled();
                t
            }
            (None, None) => {
                return Ok(Err(refused(
                    RefusalCode::NotEnrolled,
                    "this sensor is not enrolled: configure the tenant's enrollment token",
                )))
            }
        };
        let Some(record) = self.tenants.get(&tenant).cloned() else {
            return Ok(Err(refused(
                RefusalCode::UnknownToken,
                format!("tenant {tenant:?} no longer exists"),
            )));
        };
        if record.community {
            self.consensus.observe_sensor(sensor, address, now);
        }
        let Some(state) = self.sensors.get_mut(&sensor) else {
            return Ok(Err(refused(RefusalCode::Busy, "sensor state missing")));
        };
        state.row.last_addr = remote.to_string();
        state.row.last_seen = now.0;
        state.dirty = true;
        let next_seq = state.row.high_seq.saturating_add(1);
        if let Some(old) = self.connected.insert(sensor, session) {
            let _ = old.kick.send((super::server::close::REPLACED, "replaced by a newer session"));
        }
        self.save_sensors(now, false)?;
        Ok(Ok(Welcome {
            tenant,
            community: record.community,
            hash_secret: if record.community { self.community_secret } else { record.own_secret },
            epoch_secs: self.config.epoch_secs(),
            next_seq,
            list_version: self.version,
        }))
    }

    fn subscribe(&mut self, sensor: NodeId, from: u64) -> Result<Subscription, Refused> {
        let Some(s) = self.sensors.get(&sensor) else {
            return Err(refused(RefusalCode::NotEnrolled, "subscribe after a welcome"));
        };
        if !self.tenants.get(&s.row.tenant).is_some_and(|t| t.community) {
            return Err(refused(
                RefusalCode::NotCommunity,
                format!("tenant {:?} did not opt in to the community list", s.row.tenant),
            ));
        }
        let (tx, live) = mpsc::channel(self.config.publish.subscriber_queue);
        let catch_up = if from == self.version {
            CatchUp::UpToDate
        } else if from < self.version && self.oldest_delta > 0 && from + 1 >= self.oldest_delta {
            CatchUp::Log { from: from + 1, to: self.version }
        } else {
            let mut entries: Vec<ListEntry> = self.published.values().map(|r| r.entry.clone()).collect();
            entries.sort_by_key(|e| e.ip);
            CatchUp::Snapshot { version: self.version, entries }
        };
        let kind = match &catch_up {
            CatchUp::UpToDate => "up_to_date",
            CatchUp::Log { .. } => "delta_log",
            CatchUp::Snapshot { .. } => "snapshot",
        };
        tracing::info!(sensor = %sensor.short(), from, version = self.version, catch_up = kind, "subscription");
        self.subscribers.retain(|s| s.sensor != sensor);
        self.subscribers.push(Subscriber { sensor, tx });
        Ok(Subscription { catch_up, live })
    }

    fn admin(&mut self, request: AdminRequest, now: Timestamp) -> Result<Result<serde_json::Value, String>> {
        Ok(match request {
            AdminRequest::Status => Ok(serde_json::to_value(self.status(now)).unwrap_or_default()),
            AdminRequest::TenantList => Ok(serde_json::to_value(self.tenant_list()).unwrap_or_default()),
            AdminRequest::TenantAdd { name, community } => match self.add_tenant(&name, community, now)? {
                Ok(token) => Ok(serde_json::json!({ "name": name, "community": community, "token": token })),
                Err(e) => Err(e),
            },
            AdminRequest::Explain { target } => self.explain(&target, now),
            AdminRequest::TenantRemove { name } => self.remove_tenant(&name, now)?,
        })
    }

    fn add_tenant(&mut self, name: &str, community: bool, now: Timestamp) -> Result<Result<String, String>> {
        if let Err(e) = check_tenant_name(name) {
            return Ok(Err(e));
        }
        if self.tenants.contains_key(name) {
            return Ok(Err(format!("tenant {name:?} already exists")));
        }
        let (record, secret) = TenantRecord::generate(name, community, now);
        self.commit(Batch { tenants: vec![record.clone()], ..Batch::default() })?;
        self.by_token.insert(record.token_hash, name.to_owned());
        self.tenants.insert(name.to_owned(), record);
        tracing::info!(tenant = %name, community, "tenant added");
        Ok(Ok(EnrollToken { tier: self.key.node_id(), secret }.to_text()))
    }

    /// Removes a tenant: its token stops working, its sensors' sessions and
    /// subscriptions end, their reports stop counting (entries they alone held up are
    /// delisted in the next delta) and are deleted, and their keys can enroll again only
    /// with another tenant's token, as new sensors.
    fn remove_tenant(&mut self, name: &str, now: Timestamp) -> Result<Result<serde_json::Value, String>> {
        let Some(record) = self.tenants.get(name).cloned() else {
            return Ok(Err(format!("no tenant {name:?} (see `palisade central tenant list`)")));
        };
        let sensors: Vec<NodeId> =
            self.sensors.iter().filter(|(_, s)| s.row.tenant == name).map(|(id, _)| *id).collect();
        let deleted = self.store.remove_tenant(name, &sensors).map_err(|e| anyhow!("{e}"))?;
        self.tenants.remove(name);
        self.by_token.remove(&record.token_hash);
        for id in &sensors {
            self.sensors.remove(id);
            if let Some(session) = self.connected.remove(id) {
                let _ = session
                    .kick
                    .send((super::server::close::REMOVED, "the tenant was removed from the tier"));
            }
        }
        self.subscribers.retain(|s| !sensors.contains(&s.sensor));
        let forgotten = self.consensus.forget_sensors(&sensors, now);
        let changes = self.drain_changes(now, &HashMap::new());
        let delisted = changes.values().filter(|c| c.is_none()).count();
        let mut batch = Batch::default();
        self.emit(&mut batch, changes, now);
        self.commit(batch)?;
        self.broadcast();
        tracing::info!(tenant = %name, sensors = sensors.len(), reports = deleted, delisted, "tenant removed");
        Ok(Ok(serde_json::json!({
            "name": name,
            "sensors": sensors.len(),
            "reports_deleted": deleted,
            "reports_forgotten": forgotten,
            "delisted": delisted,
        })))
    }

    fn tenant_list(&self) -> Vec<TenantInfo> {
        self.tenants
            .values()
            .map(|t| TenantInfo {
                name: t.name.clone(),
                community: t.community,
                sensors: self.sensors.values().filter(|s| s.row.tenant == t.name).count(),
                connected: self
                    .connected
                    .keys()
                    .filter(|id| self.sensors.get(id).is_some_and(|s| s.row.tenant == t.name))
                    .count(),
                created: t.created,
            })
            .collect()
    }

    /// Counts for `palisade central status` and the metrics endpoint.
    pub fn status(&self, now: Timestamp) -> Status {
        let stats = self.consensus.stats();
        let mut scores = [0u64; SCORE_BUCKETS.len() + 1];
        for row in self.published.values() {
            let score = f64::from(row.entry.score);
            let i = SCORE_BUCKETS.iter().position(|b| score <= *b).unwrap_or(SCORE_BUCKETS.len());
            scores[i] += 1;
        }
        Status {
            tier: self.key.node_id().to_string(),
            version: self.version,
            oldest_delta: self.oldest_delta,
            listed: self.published.len(),
            tracked_ips: stats.tracked_ips,
            reports: stats.reports,
            groups: stats.groups,
            tenants: self.tenants.len(),
            tenants_community: self.tenants.values().filter(|t| t.community).count(),
            sensors: self.sensors.len(),
            sensors_connected: self.connected.len(),
            subscribers: self.subscribers.iter().filter(|s| !s.tx.is_closed()).count(),
            epoch: Epoch::containing(now, self.config.epoch_secs()).0,
            score_buckets: SCORE_BUCKETS.to_vec(),
            score_counts: scores.to_vec(),
            counters: self.counters.snapshot(),
        }
    }

    fn explain(&self, target: &str, now: Timestamp) -> Result<serde_json::Value, String> {
        let target = target.trim();
        let candidates: Vec<(String, HashedIp)> = if let Ok(ip) = target.parse::<IpAddr>() {
            let current = Epoch::containing(now, self.config.epoch_secs());
            [current, Epoch(current.0.saturating_sub(1))]
                .into_iter()
                .map(|e| (format!("epoch {}", e.0), HashKey::derive(&self.community_secret, e).hash(ip)))
                .collect()
        } else if let Some(h) = HashedIp::from_hex(target) {
            vec![("hash".to_owned(), h)]
        } else {
            return Err(format!("{target:?} is neither an IP address nor a 64-hex hashed IP"));
        };
        let mut out = Vec::new();
        for (label, ip) in candidates {
            let explanation = self.consensus.explain(&ip, now);
            out.push(self.explanation_json(&label, ip, explanation.as_ref(), now));
        }
        Ok(serde_json::Value::Array(out))
    }

    fn explanation_json(
        &self,
        label: &str,
        ip: HashedIp,
        explanation: Option<&Explanation>,
        now: Timestamp,
    ) -> serde_json::Value {
        let published = self.published.get(&ip).map(|r| {
            serde_json::json!({
                "scenario": r.entry.scenario,
                "epoch": r.entry.epoch.0,
                "listed_since_ms": r.listed_since,
                "until_ms": r.entry.until.0,
            })
        });
        let config = self.consensus.config();
        let Some(ex) = explanation else {
            return serde_json::json!({ "label": label, "hashed_ip": ip.to_hex(), "reports": 0, "published": published });
        };
        let groups: Vec<serde_json::Value> = ex
            .groups
            .iter()
            .map(|g| {
                let sensors: Vec<serde_json::Value> = g
                    .sensors
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "sensor": s.sensor.to_string(),
                            "tenant": self.sensors.get(&s.sensor).map(|x| x.row.tenant.clone()),
                            "asn": s.asn.0,
                            "trust": s.trust,
                            "evidence": s.evidence,
                            "weight": s.weight,
                            "reported_ago_secs": now.since(s.reported_at).as_secs(),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "group": g.group.to_string(),
                    "contribution": g.contribution,
                    "counts": g.contribution >= config.min_group_contribution,
                    "sensors": sensors,
                })
            })
            .collect();
        let (threshold, min_groups) = if ex.protected {
            (config.protected_threshold, config.protected_min_groups)
        } else {
            (config.list_threshold, config.min_groups)
        };
        serde_json::json!({
            "label": label,
            "hashed_ip": ip.to_hex(),
            "score": ex.score,
            "threshold": threshold,
            "groups_counted": ex.groups_counted,
            "min_groups": min_groups,
            "protected": ex.protected,
            "listed": ex.listed_since.is_some(),
            "published": published,
            "groups": groups,
        })
    }
}

/// Upper bounds of the score histogram.
pub const SCORE_BUCKETS: [f64; 10] = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0];

/// A tenant as `tenant list` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TenantInfo {
    /// Its name.
    pub name: String,
    /// Opted in.
    pub community: bool,
    /// Enrolled sensors.
    pub sensors: usize,
    /// Sensors connected now.
    pub connected: usize,
    /// When it was added (ms).
    pub created: i64,
}

/// The tier's state in numbers.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Status {
    /// The tier's key.
    pub tier: String,
    /// The list's version.
    pub version: u64,
    /// Oldest delta still in the log.
    pub oldest_delta: u64,
    /// Entries on the list.
    pub listed: usize,
    /// Hashed IPs with live reports.
    pub tracked_ips: usize,
    /// Live reports.
    pub reports: usize,
    /// Network groups seen.
    pub groups: usize,
    /// Tenants.
    pub tenants: usize,
    /// Tenants that opted in.
    pub tenants_community: usize,
    /// Enrolled sensors.
    pub sensors: usize,
    /// Sensors connected now.
    pub sensors_connected: usize,
    /// Live subscriptions.
    pub subscribers: usize,
    /// The current hashing epoch.
    pub epoch: u32,
    /// Score histogram bounds.
    pub score_buckets: Vec<f64>,
    /// Listed entries per bucket (not cumulative; the last is above the last bound).
    pub score_counts: Vec<u64>,
    /// Counters.
    pub counters: super::metrics::CountersSnapshot,
}

/// Checks a tenant name: 1 to 64 letters, digits, `-`, `_`, `.`.
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_TENANT_NAME
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!("tenant name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"));
    }
    Ok(())
}

fn record_of(id: &NodeId, row: &SensorRow) -> SensorRecord {
    SensorRecord {
        sensor: *id,
        address: VerifiedAddress { asn: palisade_consensus::Asn(row.asn), net24: row.net24 },
        verified_since: Timestamp(row.verified_since),
        last_seen: Timestamp(row.last_seen),
        confirmed: row.confirmed,
        unconfirmed: row.unconfirmed,
    }
}

fn apply_record(row: &mut SensorRow, record: &SensorRecord) {
    row.asn = record.address.asn.0;
    row.net24 = record.address.net24;
    row.verified_since = record.verified_since.0;
    row.last_seen = record.last_seen.0;
    row.confirmed = record.confirmed;
    row.unconfirmed = record.unconfirmed;
}

/// The allowlist of one epoch (and the one before, for signals made just before the
/// change): every listed address hashed with the community key.
pub fn build_allowlist(config: &AllowlistConfig, secret: &[u8; 32], epoch: Epoch) -> Allowlist {
    let mut list = Allowlist::new();
    for e in [epoch, Epoch(epoch.0.saturating_sub(1))] {
        let key = HashKey::derive(secret, e);
        for net in &config.never {
            for ip in net.hosts_all() {
                list.allow(key.hash(ip));
            }
        }
        for net in &config.protected {
            for ip in net.hosts_all() {
                list.protect(key.hash(ip));
            }
        }
    }
    list
}

/// Every address of a range, network and broadcast included (`IpNet::hosts` skips them).
trait HostsAll {
    fn hosts_all(&self) -> Box<dyn Iterator<Item = IpAddr> + '_>;
}

impl HostsAll for ipnet::IpNet {
    fn hosts_all(&self) -> Box<dyn Iterator<Item = IpAddr> + '_> {
        match self {
            ipnet::IpNet::V4(v4) => {
                let start = u32::from(v4.network());
                let end = u32::from(v4.broadcast());
                Box::new((start..=end).map(|a| IpAddr::V4(a.into())))
            }
            ipnet::IpNet::V6(v6) => Box::new(std::iter::once(IpAddr::V6(v6.addr()))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;

    #[test]
    fn allowlists_hash_every_address_of_both_epochs() {
        let config = AllowlistConfig {
            never: vec!["192.0.2.0/30".parse().unwrap()],
            protected: vec!["2001:db8::1/128".parse().unwrap()],
            max_addresses: 100,
        };
        let secret = [3; 32];
        let list = build_allowlist(&config, &secret, Epoch(10));
        for e in [9, 10] {
            let key = HashKey::derive(&secret, Epoch(e));
            for a in ["192.0.2.0", "192.0.2.3"] {
                assert!(list.is_allowed(&key.hash(a.parse().unwrap())));
            }
            assert!(list.is_protected(&key.hash("2001:db8::1".parse().unwrap())));
        }
        let key = HashKey::derive(&secret, Epoch(10));
        assert!(!list.is_allowed(&key.hash("192.0.2.4".parse().unwrap())));
        assert!(!list.is_allowed(&HashKey::derive(&secret, Epoch(8)).hash("192.0.2.1".parse().unwrap())));
        assert_eq!(list.len(), 2 * 5);
    }

    use palisade_consensus::Asn;
    use palisade_proto::central::ListDelta;
    use palisade_proto::Signal;

    fn tier(dir: &std::path::Path, keep: u64) -> Tier {
        let mut config = CentralConfig { data_dir: dir.to_path_buf(), ..CentralConfig::default() };
        config.publish.delta_log_keep = keep;
        config.consensus.new_sensor_trust = 1.0;
        config.consensus.min_groups = 1;
        config.consensus.list_threshold = 0.5;
        config.consensus.sensor_new_ip_burst = 1e9;
        let store = Arc::new(CentralStore::open(&dir.join("db"), false).unwrap());
        Tier::open(config, store, Arc::new(Counters::default())).unwrap()
    }

    fn admit(t: &mut Tier, key: &NodeKey, token: &str, asn: u32) -> Welcome {
        let secret = EnrollToken::from_text(token).unwrap().secret;
        let address = VerifiedAddress { asn: Asn(asn), net24: [10, 0, asn as u8] };
        let session = Session { conn_id: 1, address, kick: oneshot::channel().0 };
        t.admit(key.node_id(), Some(secret), "127.0.0.1:1".parse().unwrap(), session, now()).unwrap().unwrap()
    }

    fn report(t: &mut Tier, key: &NodeKey, welcome: &Welcome, ips: std::ops::Range<u32>, asn: u32) -> Ack {
        let at = now();
        let signals = ips
            .enumerate()
            .map(|(i, n)| {
                let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | n));
                let epoch = Epoch::containing(at, welcome.epoch_secs);
                let signal = Signal {
                    origin: key.node_id(),
                    seq: welcome.next_seq + i as u64,
                    epoch,
                    hashed_ip: HashKey::derive(&welcome.hash_secret, epoch).hash(ip),
                    scenario: "palisade/ssh-bf".into(),
                    confidence: 3,
                    observed_at: at,
                    events_count: 6,
                    sealed_ip: None,
                };
                (signal.sign(key), None)
            })
            .collect();
        let address = VerifiedAddress { asn: Asn(asn), net24: [10, 0, asn as u8] };
        let (reply, mut ack) = oneshot::channel();
        t.handle(vec![Command::Report { sensor: key.node_id(), address, batch: 1, signals, reply }], at)
            .unwrap();
        ack.try_recv().unwrap()
    }

    fn token(t: &mut Tier, name: &str, community: bool) -> String {
        t.add_tenant(name, community, now()).unwrap().unwrap()
    }

    #[test]
    fn many_changes_split_into_bounded_deltas_and_catch_up_picks_log_or_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tier(dir.path(), 2);
        let token = token(&mut t, "a", true);
        let key = NodeKey::from_bytes(&[1; 32]);
        let welcome = admit(&mut t, &key, &token, 64501);
        let (_, mut live) = {
            let sub = t.subscribe(key.node_id(), 0).unwrap();
            assert!(matches!(sub.catch_up, CatchUp::UpToDate));
            ((), sub.live)
        };
        let ack = report(&mut t, &key, &welcome, 0..1500, 64501);
        assert_eq!((ack.accepted, ack.rejected.len()), (1500, 0));
        assert_eq!(t.published.len(), 1500);
        // 1,500 listings: two deltas of at most 1,024 entries, versions 1 and 2, sent live.
        let mut got = Vec::new();
        while let Ok(p) = live.try_recv() {
            let Ok(palisade_proto::Message::Central(palisade_proto::central::CentralMessage::Delta(d))) =
                palisade_proto::Message::decode(&p.bytes)
            else {
                panic!("not a delta")
            };
            d.verify(&t.key.node_id()).unwrap();
            got.push(d.delta);
        }
        let sizes: Vec<usize> = got.iter().map(|d: &ListDelta| d.added.len()).collect();
        assert_eq!(sizes, vec![1024, 476]);
        assert_eq!(got.iter().map(|d| d.version).collect::<Vec<_>>(), vec![1, 2]);
        // A third delta, then the log keeps two: from 1 is in reach, from 0 is not.
        let next = Welcome { next_seq: 1501, ..welcome.clone() };
        report(&mut t, &key, &next, 1500..1501, 64501);
        assert_eq!((t.version, t.oldest_delta), (3, 2));
        assert!(matches!(t.subscribe(key.node_id(), 1).unwrap().catch_up, CatchUp::Log { from: 2, to: 3 }));
        match t.subscribe(key.node_id(), 0).unwrap().catch_up {
            CatchUp::Snapshot { version, entries } => assert_eq!((version, entries.len()), (3, 1501)),
            other => panic!("{other:?}"),
        }
        // Replays are refused; the sequence survives a reopening, and so does the list.
        assert_eq!(report(&mut t, &key, &welcome, 0..1, 64501).rejected[0].reason, RejectReason::Replayed);
        drop(t);
        let mut t = tier(dir.path(), 2);
        assert_eq!((t.version, t.published.len()), (3, 1501));
        let again = admit(&mut t, &key, &token, 64501);
        assert_eq!(again.next_seq, 1502);
    }

    #[test]
    fn tenants_outside_the_community_are_stored_not_counted_nor_served() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tier(dir.path(), 100);
        let private = token(&mut t, "p", false);
        let key = NodeKey::from_bytes(&[2; 32]);
        let welcome = admit(&mut t, &key, &private, 64502);
        assert!(!welcome.community);
        assert_ne!(welcome.hash_secret, t.community_secret, "a private tenant gets its own secret");
        let ack = report(&mut t, &key, &welcome, 0..10, 64502);
        assert_eq!(ack.accepted, 10);
        assert_eq!((t.published.len(), t.consensus.stats().tracked_ips), (0, 0));
        assert_eq!(t.subscribe(key.node_id(), 0).unwrap_err().code, RefusalCode::NotCommunity);
        let mut stored = 0;
        t.store
            .each_report(|_, _, row| {
                assert!(!row.community);
                stored += 1;
            })
            .unwrap();
        assert_eq!(stored, 10);
        // Unknown tokens and unenrolled sensors are refused.
        let stranger = NodeKey::from_bytes(&[3; 32]);
        let address = VerifiedAddress { asn: Asn(1), net24: [1, 1, 1] };
        let session = || Session { conn_id: 2, address, kick: oneshot::channel().0 };
        let refused =
            t.admit(stranger.node_id(), Some([9; 32]), "127.0.0.1:2".parse().unwrap(), session(), now());
        assert_eq!(refused.unwrap().unwrap_err().code, RefusalCode::UnknownToken);
        let refused = t.admit(stranger.node_id(), None, "127.0.0.1:2".parse().unwrap(), session(), now());
        assert_eq!(refused.unwrap().unwrap_err().code, RefusalCode::NotEnrolled);
    }

    #[test]
    fn tenant_names_are_checked() {
        assert!(check_tenant_name("acme-1.prod_x").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            assert!(check_tenant_name(bad).is_err(), "{bad:?}");
        }
    }
}
