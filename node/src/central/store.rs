//! The central tier's durable state: one RocksDB database under `<data_dir>/db`, one
//! column family per kind of record, every commit one atomic `WriteBatch`.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `tenants` | name | [`TenantRecord`] (the token's hash, never the token) |
//! | `sensors` | node id | [`SensorRow`]: tenant, highest sequence number, standing |
//! | `reports` | hashed IP + node id | [`ReportRow`]: the signed signal as received |
//! | `listed` | hashed IP | [`ListedRow`]: the community list as published |
//! | `deltas` | version (big-endian) | the signed delta |
//! | `meta` | name | counters (`version`) |
//!
//! A report is acknowledged only after the batch holding it is written, so a restart
//! loses nothing acknowledged: on start the tier replays the live reports into a fresh
//! consensus and restores the published list.

use bincode::{Decode, Encode};
use palisade_actors::store::StoreError;
use palisade_proto::central::{ListEntry, SignedDelta};
use palisade_proto::{HashedIp, NodeId, SignedSignal};
use rocksdb::{BlockBasedOptions, Cache, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::path::Path;

use crate::store::open_db;

const CF_TENANTS: &str = "tenants";
const CF_SENSORS: &str = "sensors";
const CF_REPORTS: &str = "reports";
const CF_LISTED: &str = "listed";
const CF_DELTAS: &str = "deltas";
const CF_META: &str = "meta";
const COLUMN_FAMILIES: [&str; 6] = [CF_TENANTS, CF_SENSORS, CF_REPORTS, CF_LISTED, CF_DELTAS, CF_META];
const META_VERSION: &[u8] = b"version";
const META_FORMAT: &[u8] = b"format";

/// The format of the stored records: 2 since signals carry batch proofs (Merkle batch
/// signatures). A database written in format 1 holds reports this version cannot read.
const FORMAT: u32 = 2;

/// A tenant: a fleet (or organisation) whose sensors enroll with one token.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TenantRecord {
    /// Its name.
    pub name: String,
    /// blake3 hash of its enrollment secret.
    pub token_hash: [u8; 32],
    /// Opted in to the community: its signals count and it receives the list.
    pub community: bool,
    /// The secret its sensors hash with when it did not opt in.
    pub own_secret: [u8; 32],
    /// When it was added (ms).
    pub created: i64,
}

impl TenantRecord {
    /// A new tenant with fresh secrets, and the enrollment secret its token carries
    /// (only its hash is kept).
    pub fn generate(name: &str, community: bool, now: palisade_proto::Timestamp) -> (TenantRecord, [u8; 32]) {
        use rand::RngCore;
        let mut secret = [0u8; 32];
        let mut own_secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        rand::rngs::OsRng.fill_bytes(&mut own_secret);
        let record = TenantRecord {
            name: name.to_owned(),
            token_hash: palisade_proto::central::EnrollToken::secret_hash(&secret),
            community,
            own_secret,
            created: now.0,
        };
        (record, secret)
    }
}

/// An enrolled sensor.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct SensorRow {
    /// Its tenant.
    pub tenant: String,
    /// When it enrolled (ms).
    pub enrolled: i64,
    /// Highest signal sequence number taken in.
    pub high_seq: u64,
    /// The address its last connection came from, for operators.
    pub last_addr: String,
    /// Its standing in the consensus (see `palisade_consensus::SensorRecord`).
    pub asn: u32,
    /// /24 of its verified address.
    pub net24: [u8; 3],
    /// Since when it has been at that address (ms).
    pub verified_since: i64,
    /// When it was last seen (ms).
    pub last_seen: i64,
    /// Corroborated novel reports.
    pub confirmed: f64,
    /// Novel reports nobody confirmed.
    pub unconfirmed: f64,
}

/// One sensor's latest report of one hashed IP.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReportRow {
    /// When the tier took it in (ms).
    pub received: i64,
    /// The sensor's verified ASN and /24 when it sent it.
    pub asn: u32,
    /// /24 of the sensor's address.
    pub net24: [u8; 3],
    /// Whether it counts in the consensus (its tenant opted in).
    pub community: bool,
    /// The signal, signature included, as received.
    pub signal: SignedSignal,
}

/// One entry of the published list.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct ListedRow {
    /// The entry as last published.
    pub entry: ListEntry,
    /// When the consensus listed it (ms).
    pub listed_since: i64,
}

/// Everything one commit writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// Reports taken in, by (hashed IP, sensor).
    pub reports: Vec<(HashedIp, NodeId, ReportRow)>,
    /// Sensors whose row changed.
    pub sensors: Vec<(NodeId, SensorRow)>,
    /// Tenants added or changed.
    pub tenants: Vec<TenantRecord>,
    /// New deltas.
    pub deltas: Vec<SignedDelta>,
    /// Entries listed or republished.
    pub listed: Vec<ListedRow>,
    /// Entries delisted.
    pub delisted: Vec<HashedIp>,
    /// The list version after this commit.
    pub version: Option<u64>,
    /// Deltas with a version below this are dropped from the log.
    pub prune_deltas_below: Option<u64>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
            && self.sensors.is_empty()
            && self.tenants.is_empty()
            && self.deltas.is_empty()
            && self.listed.is_empty()
            && self.delisted.is_empty()
            && self.version.is_none()
            && self.prune_deltas_below.is_none()
    }
}

/// The database.
pub struct CentralStore {
    db: DB,
    sync: bool,
}

impl std::fmt::Debug for CentralStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CentralStore").field("path", &self.db.path()).finish()
    }
}

fn err(context: &str) -> impl Fn(rocksdb::Error) -> StoreError + '_ {
    move |e| StoreError(format!("{context}: {e}"))
}

fn encode<T: Encode>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| StoreError(format!("encoding: {e}")))
}

fn decode<T: Decode<()>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    bincode::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StoreError(format!("corrupt {what} record: {e}")))
}

fn report_key(ip: &HashedIp, sensor: &NodeId) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(&ip.0);
    key[32..].copy_from_slice(&sensor.0);
    key
}

fn node_id(bytes: &[u8]) -> Option<NodeId> {
    Some(NodeId(bytes.try_into().ok()?))
}

impl CentralStore {
    /// Opens (creating if needed) the database in `path`. With `sync`, every commit is
    /// flushed to disk before it returns.
    pub fn open(path: &Path, sync: bool) -> Result<CentralStore, StoreError> {
        let cache = Cache::new_lru_cache(64 << 20);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(4);
        opts.set_max_total_wal_size(256 << 20);
        opts.set_write_buffer_size(32 << 20);
        opts.set_max_write_buffer_number(3);
        opts.set_max_background_jobs(2);
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let store = CentralStore { db: open_db(path, &COLUMN_FAMILIES, &opts)?, sync };
        store.check_format(path)?;
        Ok(store)
    }

    /// Refuses a database in another record format with a message that says what to do,
    /// rather than failing later on the first record it cannot read; stamps a new one.
    fn check_format(&self, path: &Path) -> Result<(), StoreError> {
        let meta = self.cf(CF_META)?;
        let stamped = self.db.get_cf(meta, META_FORMAT).map_err(err("reading the format"))?;
        let format = match stamped {
            Some(bytes) => {
                let bytes: [u8; 4] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError("corrupt format record in the meta column family".into()))?;
                u32::from_be_bytes(bytes)
            }
            None => {
                let mut any = self.db.iterator_cf(self.cf(CF_REPORTS)?, IteratorMode::Start);
                if any.next().is_some() {
                    1
                } else {
                    self.db
                        .put_cf(meta, META_FORMAT, FORMAT.to_be_bytes())
                        .map_err(err("stamping the format"))?;
                    FORMAT
                }
            }
        };
        if format != FORMAT {
            return Err(StoreError(format!(
                "the database in {} is in record format {format}, written by another version of \
                 palisade (this one reads format {FORMAT}): move it aside and start afresh (sensors \
                 re-enroll with their tenant's token), or run the version that wrote it",
                path.display()
            )));
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or_else(|| StoreError(format!("column family {name} is missing")))
    }

    /// Removes a tenant in one atomic write: its record, its sensors' rows and every
    /// report of those sensors (a scan of the reports: an operator's rare action).
    /// Returns how many reports were deleted.
    pub fn remove_tenant(&self, name: &str, sensors: &[NodeId]) -> Result<usize, StoreError> {
        let mut wb = WriteBatch::default();
        wb.delete_cf(self.cf(CF_TENANTS)?, name.as_bytes());
        let rows = self.cf(CF_SENSORS)?;
        for id in sensors {
            wb.delete_cf(rows, id.0);
        }
        let reports = self.cf(CF_REPORTS)?;
        let gone: std::collections::HashSet<[u8; 32]> = sensors.iter().map(|s| s.0).collect();
        let mut deleted = 0;
        for item in self.db.iterator_cf(reports, IteratorMode::Start) {
            let (key, _) = item.map_err(err("reading reports"))?;
            if key.len() == 64 && key[32..].try_into().is_ok_and(|id: [u8; 32]| gone.contains(&id)) {
                wb.delete_cf(reports, &key);
                deleted += 1;
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(self.sync);
        self.db.write_opt(wb, &opts).map_err(err("removing a tenant"))?;
        Ok(deleted)
    }

    /// Writes a batch atomically.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        let reports = self.cf(CF_REPORTS)?;
        for (ip, sensor, row) in &batch.reports {
            wb.put_cf(reports, report_key(ip, sensor), encode(row)?);
        }
        let sensors = self.cf(CF_SENSORS)?;
        for (id, row) in &batch.sensors {
            wb.put_cf(sensors, id.0, encode(row)?);
        }
        let tenants = self.cf(CF_TENANTS)?;
        for t in &batch.tenants {
            wb.put_cf(tenants, t.name.as_bytes(), encode(t)?);
        }
        let deltas = self.cf(CF_DELTAS)?;
        for d in &batch.deltas {
            wb.put_cf(deltas, d.delta.version.to_be_bytes(), encode(d)?);
        }
        let listed = self.cf(CF_LISTED)?;
        for ip in &batch.delisted {
            wb.delete_cf(listed, ip.0);
        }
        for row in &batch.listed {
            wb.put_cf(listed, row.entry.ip.0, encode(row)?);
        }
        if let Some(v) = batch.version {
            wb.put_cf(self.cf(CF_META)?, META_VERSION, v.to_be_bytes());
        }
        if let Some(below) = batch.prune_deltas_below {
            wb.delete_range_cf(deltas, 0u64.to_be_bytes(), below.to_be_bytes());
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(self.sync);
        self.db.write_opt(wb, &opts).map_err(err("committing"))
    }

    /// Every tenant.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_TENANTS)?, IteratorMode::Start) {
            let (_, value) = item.map_err(err("reading tenants"))?;
            out.push(decode(&value, "tenant")?);
        }
        Ok(out)
    }

    /// Every sensor.
    pub fn sensors(&self) -> Result<Vec<(NodeId, SensorRow)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SENSORS)?, IteratorMode::Start) {
            let (key, value) = item.map_err(err("reading sensors"))?;
            let id = node_id(&key).ok_or_else(|| StoreError("corrupt sensor key".into()))?;
            out.push((id, decode(&value, "sensor")?));
        }
        Ok(out)
    }

    /// Calls `f` with every stored report.
    pub fn each_report(&self, mut f: impl FnMut(HashedIp, NodeId, ReportRow)) -> Result<(), StoreError> {
        for item in self.db.iterator_cf(self.cf(CF_REPORTS)?, IteratorMode::Start) {
            let (key, value) = item.map_err(err("reading reports"))?;
            let (Some(ip), Some(sensor)) = (key.get(..32).and_then(node_id), key.get(32..).and_then(node_id))
            else {
                return Err(StoreError("corrupt report key".into()));
            };
            f(HashedIp(ip.0), sensor, decode(&value, "report")?);
        }
        Ok(())
    }

    /// Up to `limit` stored reports of one hashed IP.
    pub fn reports_of(&self, ip: &HashedIp, limit: usize) -> Result<Vec<ReportRow>, StoreError> {
        let mode = IteratorMode::From(&ip.0, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_REPORTS)?, mode).take(limit) {
            let (key, value) = item.map_err(err("reading reports"))?;
            if key.get(..32) != Some(ip.0.as_slice()) {
                break;
            }
            out.push(decode(&value, "report")?);
        }
        Ok(out)
    }

    /// Deletes reports received before `before` (ms), scanning at most `limit` rows from
    /// `cursor` (a report key; empty: the start). Returns where to go on next time
    /// (empty after the last row) and how many rows it deleted.
    pub fn sweep_reports(
        &self,
        cursor: &[u8],
        limit: usize,
        before: i64,
    ) -> Result<(Vec<u8>, usize), StoreError> {
        let reports = self.cf(CF_REPORTS)?;
        let mode = IteratorMode::From(cursor, Direction::Forward);
        let mut wb = WriteBatch::default();
        let mut deleted = 0;
        let mut next = Vec::new();
        for (i, item) in self.db.iterator_cf(reports, mode).enumerate() {
            let (key, value) = item.map_err(err("sweeping reports"))?;
            if i == limit {
                next = key.into_vec();
                break;
            }
            let row: ReportRow = decode(&value, "report")?;
            if row.received < before {
                wb.delete_cf(reports, &key);
                deleted += 1;
            }
        }
        if deleted > 0 {
            self.db.write(wb).map_err(err("sweeping reports"))?;
        }
        Ok((next, deleted))
    }

    /// The published list.
    pub fn listed(&self) -> Result<Vec<ListedRow>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_LISTED)?, IteratorMode::Start) {
            let (_, value) = item.map_err(err("reading the list"))?;
            out.push(decode(&value, "list entry")?);
        }
        Ok(out)
    }

    /// Deltas from version `from` on, at most `limit`, in order.
    pub fn deltas_from(&self, from: u64, limit: usize) -> Result<Vec<SignedDelta>, StoreError> {
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_DELTAS)?, mode).take(limit) {
            let (_, value) = item.map_err(err("reading deltas"))?;
            out.push(decode(&value, "delta")?);
        }
        Ok(out)
    }

    /// The oldest delta version still in the log (0: none).
    pub fn oldest_delta(&self) -> Result<u64, StoreError> {
        match self.db.iterator_cf(self.cf(CF_DELTAS)?, IteratorMode::Start).next() {
            Some(item) => {
                let (key, _) = item.map_err(err("reading deltas"))?;
                Ok(<[u8; 8]>::try_from(key.as_ref()).map_or(0, u64::from_be_bytes))
            }
            None => Ok(0),
        }
    }

    /// The list version last committed.
    pub fn version(&self) -> Result<u64, StoreError> {
        let raw = self.db.get_cf(self.cf(CF_META)?, META_VERSION).map_err(err("reading meta"))?;
        Ok(raw.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()).map_or(0, u64::from_be_bytes))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;
    use palisade_proto::central::{DeltaKind, ListDelta};
    use palisade_proto::{Epoch, NodeKey, Signal, Timestamp};

    fn row(received: i64, key: &NodeKey, seq: u64) -> ReportRow {
        let signal = Signal {
            origin: key.node_id(),
            seq,
            epoch: Epoch(1),
            hashed_ip: HashedIp([seq as u8; 32]),
            scenario: "palisade/ssh-bf".into(),
            confidence: 3,
            observed_at: Timestamp(received),
            events_count: 5,
            sealed_ip: None,
        }
        .sign(key);
        ReportRow { received, asn: 64501, net24: [127, 0, 0], community: true, signal }
    }

    #[test]
    fn a_database_in_an_earlier_record_format_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::from_bytes(&[1; 32]);
        {
            let store = CentralStore::open(dir.path(), false).unwrap();
            let batch = Batch {
                reports: vec![(HashedIp([1; 32]), key.node_id(), row(5, &key, 1))],
                ..Batch::default()
            };
            store.commit(&batch).unwrap();
        }
        // Reopens fine in its own format.
        drop(CentralStore::open(dir.path(), false).unwrap());
        // A database with reports and no format stamp was written before format 2.
        {
            let store = CentralStore::open(dir.path(), false).unwrap();
            store.db.delete_cf(store.cf(CF_META).unwrap(), META_FORMAT).unwrap();
        }
        let Err(err) = CentralStore::open(dir.path(), false) else { panic!("a format-1 database opened") };
        assert!(err.0.contains("record format 1") && err.0.contains("move it aside"), "{err}");
    }

    #[test]
    fn commits_survive_reopening_and_sweeps_expire_old_reports() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::from_bytes(&[1; 32]);
        let tier = NodeKey::from_bytes(&[2; 32]);
        {
            let store = CentralStore::open(dir.path(), false).unwrap();
            let mut batch = Batch::default();
            for i in 1..=5u8 {
                batch.reports.push((
                    HashedIp([i; 32]),
                    key.node_id(),
                    row(i64::from(i) * 1000, &key, u64::from(i)),
                ));
            }
            batch.reports.push((HashedIp([1; 32]), NodeId([9; 32]), row(7000, &key, 1)));
            let delta = ListDelta {
                version: 1,
                kind: DeltaKind::Changes,
                issued_at: Timestamp(1),
                added: vec![],
                removed: vec![HashedIp([3; 32])],
            };
            batch.deltas.push(delta.sign(&tier));
            batch.version = Some(1);
            batch.tenants.push(TenantRecord {
                name: "acme".into(),
                token_hash: [4; 32],
                community: true,
                own_secret: [5; 32],
                created: 9,
            });
            store.commit(&batch).unwrap();
        }
        let store = CentralStore::open(dir.path(), true).unwrap();
        assert_eq!(store.version().unwrap(), 1);
        assert_eq!(store.oldest_delta().unwrap(), 1);
        assert_eq!(store.deltas_from(1, 10).unwrap().len(), 1);
        assert_eq!(store.tenants().unwrap()[0].name, "acme");
        assert_eq!(store.reports_of(&HashedIp([1; 32]), 10).unwrap().len(), 2);
        assert_eq!(store.reports_of(&HashedIp([2; 32]), 10).unwrap().len(), 1);
        // Sweep in pages of two rows: everything received before 3500 goes.
        let (mut cursor, mut deleted) = store.sweep_reports(&[], 2, 3500).unwrap();
        while !cursor.is_empty() {
            let (next, n) = store.sweep_reports(&cursor, 2, 3500).unwrap();
            cursor = next;
            deleted += n;
        }
        assert_eq!(deleted, 3);
        let mut left = 0;
        store
            .each_report(|_, _, r| {
                assert!(r.received >= 3500);
                left += 1;
            })
            .unwrap();
        assert_eq!(left, 3);
        let mut prune = Batch { prune_deltas_below: Some(2), ..Batch::default() };
        prune.version = Some(1);
        store.commit(&prune).unwrap();
        assert_eq!(store.oldest_delta().unwrap(), 0);
    }
}
