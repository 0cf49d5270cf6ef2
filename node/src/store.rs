//! The node's durable state in RocksDB: one database under `data_dir/db`, one column
//! family per kind of record, every commit a single atomic `WriteBatch`.
//!
//! Writes go to RocksDB's write-ahead log before they are acknowledged, so a process
//! killed with SIGKILL loses nothing it committed (the operating system still holds the
//! log). Options are sized for a small daemon: a few MB of memtable and block cache.

use palisade_actors::decision::StoredDecisions;
use palisade_actors::store::{Commit, Store, StoreError};
use palisade_proto::{Decision, SignedSignal, Timestamp};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, DB};
use std::path::Path;

const CF_DECISIONS: &str = "decisions";
const CF_OFFENCES: &str = "offences";
const CF_CURSORS: &str = "cursors";
const CF_OUTBOX: &str = "outbox";
const CF_META: &str = "meta";
/// Bouncers, by name.
pub const CF_BOUNCERS: &str = "bouncers";
/// Machines (watchers), by name.
pub const CF_MACHINES: &str = "machines";
/// Alerts pushed by machines, by id (big-endian u64).
pub const CF_ALERTS: &str = "alerts";
const COLUMN_FAMILIES: [&str; 8] =
    [CF_DECISIONS, CF_OFFENCES, CF_CURSORS, CF_OUTBOX, CF_META, CF_BOUNCERS, CF_MACHINES, CF_ALERTS];
const LAST_DECISION_ID: &[u8] = b"last_decision_id";
const LAST_SIGNAL_SEQ: &[u8] = b"last_signal_seq";

/// How long opening waits for another process to release the database.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn is_lock_error(e: &rocksdb::Error) -> bool {
    let text = e.to_string();
    text.contains("LOCK") || text.contains("lock")
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn err(context: &str) -> impl Fn(rocksdb::Error) -> StoreError + '_ {
    move |e| StoreError(format!("{context}: {e}"))
}

/// Opens (creating if needed) the RocksDB database in `path` with `column_families`.
///
/// The CLI opens a database for a few milliseconds when no process answers on the
/// admin socket; a daemon starting at that moment waits for it instead of failing.
pub fn open_db(path: &Path, column_families: &[&str], opts: &Options) -> Result<DB, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let cfs = column_families.iter().map(|name| ColumnFamilyDescriptor::new(*name, opts.clone()));
        match DB::open_cf_descriptors(opts, path, cfs) {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                let hint = if is_lock_error(&e) {
                    " (is another palisade process using this data_dir?)"
                } else {
                    ""
                };
                return Err(StoreError(format!("opening {}: {e}{hint}", path.display())));
            }
        }
    }
}

/// A raw key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// RocksDB-backed [`Store`].
pub struct RocksStore {
    db: DB,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore").field("path", &self.db.path()).finish()
    }
}

impl RocksStore {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let cache = Cache::new_lru_cache(4 << 20);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_open_files(64);
        opts.set_keep_log_file_num(2);
        opts.set_max_total_wal_size(16 << 20);
        opts.set_write_buffer_size(2 << 20);
        opts.set_max_write_buffer_number(2);
        opts.set_max_background_jobs(1);
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        Ok(RocksStore { db: open_db(path, &COLUMN_FAMILIES, &opts)? })
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or_else(|| StoreError(format!("column family {name} is missing")))
    }

    fn decode<T: bincode::Decode<()>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
        bincode::decode_from_slice(bytes, config())
            .map(|(v, _)| v)
            .map_err(|e| StoreError(format!("corrupt {what} record: {e}")))
    }

    fn encode<T: bincode::Encode>(value: &T) -> Result<Vec<u8>, StoreError> {
        bincode::encode_to_vec(value, config()).map_err(|e| StoreError(format!("encoding: {e}")))
    }

    /// Every record of column family `cf` (one of the `CF_*` constants), by key.
    pub fn records(&self, cf: &str) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf)?, IteratorMode::Start) {
            let (key, value) = item.map_err(err("reading records"))?;
            out.push((key.into_vec(), value.into_vec()));
        }
        Ok(out)
    }

    /// The last `limit` records of `cf`, newest (largest key) first.
    pub fn last_records(&self, cf: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf)?, IteratorMode::End).take(limit) {
            let (key, value) = item.map_err(err("reading records"))?;
            out.push((key.into_vec(), value.into_vec()));
        }
        Ok(out)
    }

    /// Writes one record.
    pub fn put_record(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db.put_cf(self.cf(cf)?, key, value).map_err(err("writing a record"))
    }

    /// Deletes one record.
    pub fn delete_record(&self, cf: &str, key: &[u8]) -> Result<(), StoreError> {
        self.db.delete_cf(self.cf(cf)?, key).map_err(err("deleting a record"))
    }

    /// Deletes the records of `cf` with keys below `below`.
    pub fn delete_records_below(&self, cf: &str, below: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(cf)?, [0u8; 0].as_slice(), below);
        self.db.write(batch).map_err(err("pruning records"))
    }

    fn u64_at(&self, cf: &str, key: &[u8]) -> Result<u64, StoreError> {
        let raw = self.db.get_cf(self.cf(cf)?, key).map_err(err("reading meta"))?;
        Ok(raw.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()).map_or(0, u64::from_be_bytes))
    }
}

impl Store for RocksStore {
    fn load_decisions(&self) -> Result<StoredDecisions, StoreError> {
        let mut out = StoredDecisions::default();
        for item in self.db.iterator_cf(self.cf(CF_DECISIONS)?, IteratorMode::Start) {
            let (_, value) = item.map_err(err("reading decisions"))?;
            out.decisions.push(Self::decode::<Decision>(&value, "decision")?);
        }
        for item in self.db.iterator_cf(self.cf(CF_OFFENCES)?, IteratorMode::Start) {
            let (key, value) = item.map_err(err("reading offences"))?;
            let times: Vec<i64> = Self::decode(&value, "offence")?;
            out.offences.push((
                String::from_utf8_lossy(&key).into_owned(),
                times.into_iter().map(Timestamp).collect(),
            ));
        }
        out.last_id = self.u64_at(CF_META, LAST_DECISION_ID)?;
        Ok(out)
    }

    fn load_cursor(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.cf(CF_CURSORS)?, key.as_bytes()).map_err(err("reading a source position"))
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        if commit.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let decisions = self.cf(CF_DECISIONS)?;
        for id in &commit.decisions.removed {
            batch.delete_cf(decisions, id.to_be_bytes());
        }
        for d in &commit.decisions.upserts {
            batch.put_cf(decisions, d.id.to_be_bytes(), Self::encode(d)?);
        }
        let offences = self.cf(CF_OFFENCES)?;
        for (value, times) in &commit.decisions.offences {
            if times.is_empty() {
                batch.delete_cf(offences, value.as_bytes());
            } else {
                let raw: Vec<i64> = times.iter().map(|t| t.0).collect();
                batch.put_cf(offences, value.as_bytes(), Self::encode(&raw)?);
            }
        }
        if let Some(id) = commit.last_decision_id {
            let current = self.u64_at(CF_META, LAST_DECISION_ID)?;
            batch.put_cf(self.cf(CF_META)?, LAST_DECISION_ID, id.max(current).to_be_bytes());
        }
        let cursors = self.cf(CF_CURSORS)?;
        for c in &commit.checkpoints {
            batch.put_cf(cursors, c.key.as_bytes(), &c.value);
        }
        let outbox = self.cf(CF_OUTBOX)?;
        for s in &commit.signals {
            batch.put_cf(outbox, s.signal.seq.to_be_bytes(), Self::encode(s)?);
        }
        if let Some(max) = commit.signals.iter().map(|s| s.signal.seq).max() {
            // Kept apart from the outbox, which is pruned: sequence numbers never repeat.
            let current = self.u64_at(CF_META, LAST_SIGNAL_SEQ)?;
            batch.put_cf(self.cf(CF_META)?, LAST_SIGNAL_SEQ, max.max(current).to_be_bytes());
        }
        if let Some(below) = commit.prune_outbox_below {
            batch.delete_range_cf(outbox, 0u64.to_be_bytes(), below.to_be_bytes());
        }
        self.db.write(batch).map_err(err("committing"))
    }

    fn outbox(&self, from: u64, limit: usize) -> Result<Vec<SignedSignal>, StoreError> {
        let start = from.to_be_bytes();
        let mode = IteratorMode::From(&start, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        let mut unreadable = 0u64;
        for item in self.db.iterator_cf(self.cf(CF_OUTBOX)?, mode).take(limit) {
            let (_, value) = item.map_err(err("reading the outbox"))?;
            // The outbox only serves peers' repairs: a signal stored by an earlier
            // version in another format is skipped (peers had it already), and the
            // fleet still starts.
            match Self::decode::<SignedSignal>(&value, "signal") {
                Ok(signal) => out.push(signal),
                Err(_) => unreadable += 1,
            }
        }
        if unreadable > 0 {
            tracing::warn!(
                unreadable,
                "skipping own signals in the outbox that this version cannot read (stored by an earlier \
                 version); peers repair from the others"
            );
        }
        Ok(out)
    }

    fn last_signal_seq(&self) -> Result<u64, StoreError> {
        self.u64_at(CF_META, LAST_SIGNAL_SEQ)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_store_conforms() {
        let dir = tempfile::tempdir().expect("tempdir");
        palisade_actors::store::conformance::run(dir.path(), |p| RocksStore::open(p).expect("open"));
    }

    #[test]
    fn outbox_signals_this_version_cannot_read_are_skipped() {
        use palisade_actors::store::{conformance::signal, Commit, Store};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let key = palisade_proto::NodeKey::from_bytes(&[4; 32]);
        let signals = vec![signal(&key, 1), signal(&key, 3)];
        store.commit(&Commit { signals, ..Commit::default() }).expect("commit");
        // Seq 2 as an earlier version stored it (a per-signal signature, no proof).
        let cf = store.cf(CF_OUTBOX).expect("cf");
        store.db.put_cf(cf, 2u64.to_be_bytes(), [7u8; 90]).expect("put");
        let read = store.outbox(1, 10).expect("the outbox still reads");
        assert_eq!(read.iter().map(|s| s.signal.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert!(read.iter().all(|s| s.verify().is_ok()));
    }

    #[test]
    fn second_open_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = RocksStore::open(dir.path()).expect("open");
        let err = RocksStore::open(dir.path()).expect_err("locked");
        assert!(err.0.contains("another palisade process"), "{err}");
    }
}
