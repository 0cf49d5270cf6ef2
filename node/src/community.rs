//! The node's side of the central tier (`[central]`): its own detections go up as
//! sightings (hashed with the community key by the link, never sealed), and the
//! community list comes down as signed, versioned deltas.
//!
//! The list names addresses by hash only, so a listed address is banned (origin
//! `community`) the first time this node meets it: in its own logs (the on-sight check
//! of the scenario pipeline) or in a bouncer's `GET /v1/decisions?ip=` lookup.

use actix::Addr;
use anyhow::{anyhow, Result};
use palisade_actors::actor::{ScenarioActor, Unwatch, Watch};
use palisade_actors::event::Overflow;
use palisade_actors::watchlist::Flag;
use palisade_proto::central::{DeltaKind, ListDelta};
use palisade_proto::{Epoch, HashKey, HashedIp, NodeId, NodeKey, Origin, Timestamp};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::mpsc;

use crate::central::client::{self, CentralHandle, CentralLinkConfig, CommunityHashing, Sighting};

/// Sightings queued for the link before new ones are dropped (and counted): detection
/// never waits for the central tier.
const SIGHTINGS_QUEUE: usize = 65_536;

/// `[central]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CentralConfig {
    /// The central tier's QUIC address (`host:port`); the link is off when unset.
    pub addr: Option<String>,
    /// The tenant's enrollment token (`palisade central tenant add`); needed until the
    /// node is enrolled (it keeps what enrollment returns in `<data_dir>/central/`).
    pub token: Option<String>,
    /// The tier's public key (hex), when not taken from the token.
    pub tier_key: Option<String>,
    /// Local address to connect from.
    pub bind: Option<IpAddr>,
    /// Send this node's detections to the tier.
    pub report: bool,
    /// Follow the community list (tenants that opted in only).
    pub subscribe: bool,
}

impl Default for CentralConfig {
    fn default() -> Self {
        CentralConfig { addr: None, token: None, tier_key: None, bind: None, report: true, subscribe: true }
    }
}

impl CentralConfig {
    /// Checks the values; errors name the key.
    pub fn validate(&self) -> Result<(), palisade_actors::decision::ConfigError> {
        use palisade_actors::decision::ConfigError;
        if let Some(key) = &self.tier_key {
            key.parse::<NodeId>()
                .map_err(|_| ConfigError::new("central.tier_key", "must be 64 hex characters"))?;
        }
        if self.addr.as_deref().is_some_and(|a| a.trim().is_empty()) {
            return Err(ConfigError::new(
                "central.addr",
                "must not be empty (leave it out to turn the link off)",
            ));
        }
        Ok(())
    }
}

/// One listed address.
#[derive(Debug, Clone)]
struct Entry {
    epoch: Epoch,
    scenario: Arc<str>,
    until: Timestamp,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<HashedIp, Entry>,
    /// The key of every epoch some entry was hashed in, with how many entries use it.
    keys: BTreeMap<Epoch, (HashKey, usize)>,
}

impl Inner {
    fn insert(&mut self, ip: HashedIp, entry: Entry, hashing: &CommunityHashing) {
        let epoch = entry.epoch;
        if let Some(old) = self.entries.insert(ip, entry) {
            self.release(old.epoch);
        }
        self.keys.entry(epoch).or_insert_with(|| (hashing.key(epoch), 0)).1 += 1;
    }

    fn remove(&mut self, ip: &HashedIp) {
        if let Some(old) = self.entries.remove(ip) {
            self.release(old.epoch);
        }
    }

    fn release(&mut self, epoch: Epoch) {
        if let Some((_, n)) = self.keys.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                self.keys.remove(&epoch);
            }
        }
    }
}

/// The community list as this node holds it, for bouncers' lookups.
#[derive(Default)]
pub struct CommunityList {
    inner: RwLock<Inner>,
    /// Lookups that found a listed address.
    pub lookup_hits: AtomicU64,
    /// Sightings dropped because the link's queue was full.
    pub sightings_dropped: AtomicU64,
}

impl CommunityList {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).entries.len()
    }

    /// The scenario and expiry of the listing of `ip`, if it is listed and current.
    pub fn lookup(&self, ip: IpAddr, now: Timestamp) -> Option<(Arc<str>, Timestamp)> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if inner.entries.is_empty() {
            return None;
        }
        let found = inner.keys.values().find_map(|(key, _)| inner.entries.get(&key.hash(ip)))?;
        if found.until <= now {
            return None;
        }
        self.lookup_hits.fetch_add(1, Ordering::Relaxed);
        Some((found.scenario.clone(), found.until))
    }

    /// Applies a delta; returns the flags to add to the on-sight check, the hashes to
    /// drop from it, and whether every community flag goes first (a snapshot begins).
    fn apply(&self, delta: &ListDelta, hashing: &CommunityHashing) -> (Vec<Flag>, Vec<HashedIp>, bool) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let reset = matches!(delta.kind, DeltaKind::Snapshot { part: 0, .. });
        if reset {
            *inner = Inner::default();
        }
        for ip in &delta.removed {
            inner.remove(ip);
        }
        let mut flags = Vec::with_capacity(delta.added.len());
        for e in &delta.added {
            let scenario: Arc<str> = e.scenario.as_str().into();
            inner.insert(e.ip, Entry { epoch: e.epoch, scenario: scenario.clone(), until: e.until }, hashing);
            flags.push(Flag {
                origin: Origin::Community,
                epoch: e.epoch,
                key: hashing.key(e.epoch),
                hashed_ip: e.ip,
                scenario,
                confidence: 2,
                events_count: u32::from(e.groups),
                until: e.until,
            });
        }
        (flags, delta.removed.clone(), reset)
    }
}

/// The running link, as the rest of the node sees it.
pub struct Community {
    /// The link's handle (stats, shutdown).
    pub handle: CentralHandle,
    /// The list, for lookups and metrics.
    pub list: Arc<CommunityList>,
    /// Where the node's own detections go.
    sightings: mpsc::Sender<Sighting>,
    report: bool,
}

impl Community {
    /// Starts the link to the tier named in `config` (inside the node's runtime).
    pub fn start(
        config: &CentralConfig,
        data_dir: &Path,
        key: NodeKey,
        scenario: Addr<ScenarioActor>,
    ) -> Result<Option<Community>> {
        let Some(addr) = config.addr.clone() else { return Ok(None) };
        // The node holds the list in memory only: after a restart it needs all of it, so
        // it subscribes from the start (a snapshot) rather than from the version it had.
        // Within a run, a reconnect resumes from the last delta applied.
        let link_dir = data_dir.join("central");
        match std::fs::remove_file(link_dir.join(client::STATE_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow!("resetting {}: {e}", link_dir.join(client::STATE_FILE).display()))
            }
            _ => {}
        }
        let link_config = CentralLinkConfig {
            addr,
            token: config.token.clone(),
            tier_key: config
                .tier_key
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|_| anyhow!("central.tier_key: not a key"))?,
            data_dir: link_dir,
            bind: config.bind,
            subscribe: config.subscribe,
            ..CentralLinkConfig::default()
        };
        let link = client::start(link_config, key).map_err(|e| anyhow!("{e}"))?;
        let list = Arc::new(CommunityList::default());
        let (tx, rx) = mpsc::channel(SIGHTINGS_QUEUE);
        actix::spawn(send_sightings(rx, link.handle.clone()));
        actix::spawn(follow(link.deltas, link.handle.clone(), list.clone(), scenario));
        Ok(Some(Community { handle: link.handle, list, sightings: tx, report: config.report }))
    }

    /// Queues this node's own detections for the tier (never waits).
    pub fn report(&self, overflows: &[Overflow]) {
        if !self.report {
            return;
        }
        for sighting in overflows.iter().filter_map(Sighting::from_overflow) {
            if self.sightings.try_send(sighting).is_err() {
                self.list.sightings_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn send_sightings(mut rx: mpsc::Receiver<Sighting>, handle: CentralHandle) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 512).await > 0 {
        if handle.report(std::mem::take(&mut batch)).await.is_err() {
            return;
        }
    }
}

/// Applies the deltas in order: the list for lookups, the flags for the on-sight check.
async fn follow(
    mut deltas: mpsc::Receiver<ListDelta>,
    handle: CentralHandle,
    list: Arc<CommunityList>,
    scenario: Addr<ScenarioActor>,
) {
    while let Some(delta) = deltas.recv().await {
        let Ok(hashing) = handle.wait_hashing().await else { return };
        let (flags, removed, reset) = list.apply(&delta, &hashing);
        if reset || !removed.is_empty() {
            let all = reset.then_some(Origin::Community);
            let _ = scenario.send(Unwatch { hashes: removed, all_of: all }).await;
        }
        if !flags.is_empty() {
            let _ = scenario.send(Watch(flags)).await;
        }
        tracing::debug!(
            version = delta.version,
            added = delta.added.len(),
            removed = delta.removed.len(),
            "community list delta applied"
        );
        if handle.applied(&delta).await.is_err() {
            return;
        }
    }
}
