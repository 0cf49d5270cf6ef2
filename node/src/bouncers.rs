//! Bouncers: the programs that enforce decisions (firewall, nginx, HAProxy...) and pull
//! them from the Local API with an API key.
//!
//! `palisade bouncers add NAME` prints a key once; only its blake3 hash is stored. Like
//! CrowdSec, several instances may share one key: each client address gets its own
//! record of last pull and its own stream cursor, so one instance's deltas never eat
//! another's.

use anyhow::{bail, Result};
use bincode::{Decode, Encode};
use palisade_proto::Timestamp;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use crate::store::{RocksStore, CF_BOUNCERS};

/// Instances remembered per key; the one seen longest ago is forgotten first.
const MAX_INSTANCES: usize = 64;
/// Longest bouncer name.
const MAX_NAME: usize = 128;
/// Bytes of a User-Agent kept.
const MAX_USER_AGENT: usize = 256;

/// Where a bouncer instance's stream left off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode, Serialize, Deserialize)]
pub struct StreamCursor {
    /// Decisions with a larger id are new to it.
    pub last_id: u64,
    /// When it last pulled: decisions that ended after this (less an overlap) are
    /// reported deleted.
    pub pulled_at: Timestamp,
}

/// One instance of a bouncer: a client address using the key.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Instance {
    /// Client address.
    pub address: String,
    /// Its `User-Agent` (bouncers send their name and version there).
    pub user_agent: String,
    /// Last request of any kind.
    pub last_seen: Timestamp,
    /// Last stream pull.
    pub last_pull: Option<Timestamp>,
    /// Its stream position.
    pub cursor: Option<StreamCursor>,
}

/// A registered bouncer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Bouncer {
    /// The name given to `bouncers add`.
    pub name: String,
    /// blake3 of the API key.
    #[serde(skip)]
    pub key_hash: [u8; 32],
    /// When it was added.
    pub created_at: Timestamp,
    /// Its instances, by address.
    pub instances: BTreeMap<String, Instance>,
}

/// The hash a key is stored and looked up by.
pub fn hash_key(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

/// A fresh random API key (32 hex characters, like CrowdSec's).
pub fn new_key() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Checks a bouncer name: printable, no spaces, bounded.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        bail!("a bouncer name has 1 to {MAX_NAME} characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
        bail!("bouncer name {name:?}: use letters, digits and - _ . @ only");
    }
    Ok(())
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The bouncers of a node, shared by the Local API and the admin socket, persisted in
/// the store's `bouncers` column family.
#[derive(Debug)]
pub struct Registry {
    store: Arc<RocksStore>,
    by_hash: RwLock<HashMap<[u8; 32], Bouncer>>,
}

impl Registry {
    /// Loads the registry.
    pub fn load(store: Arc<RocksStore>) -> Result<Self> {
        let mut by_hash = HashMap::new();
        for (name, raw) in store.records(CF_BOUNCERS).map_err(|e| anyhow::anyhow!("{e}"))? {
            let name = String::from_utf8_lossy(&name);
            match bincode::decode_from_slice::<Bouncer, _>(&raw, bincode_config()) {
                Ok((b, _)) => {
                    by_hash.insert(b.key_hash, b);
                }
                Err(e) => tracing::error!(bouncer = %name, error = %e, "corrupt bouncer record skipped"),
            }
        }
        Ok(Registry { store, by_hash: RwLock::new(by_hash) })
    }

    fn persist(&self, b: &Bouncer) -> Result<()> {
        let raw = bincode::encode_to_vec(b, bincode_config())?;
        self.store.put_record(CF_BOUNCERS, b.name.as_bytes(), &raw).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Registers `name` with the key whose hash is `key_hash`.
    pub fn add(&self, name: &str, key_hash: [u8; 32], now: Timestamp) -> Result<()> {
        check_name(name)?;
        let mut map = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
        if map.values().any(|b| b.name == name) {
            bail!("a bouncer named {name:?} exists already (delete it first)");
        }
        if map.contains_key(&key_hash) {
            bail!("this key is already used by another bouncer");
        }
        let b = Bouncer { name: name.to_owned(), key_hash, created_at: now, instances: BTreeMap::new() };
        self.persist(&b)?;
        map.insert(key_hash, b);
        Ok(())
    }

    /// Removes `name`. Its key stops working at once.
    pub fn delete(&self, name: &str) -> Result<()> {
        let mut map = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
        let Some(hash) = map.iter().find(|(_, b)| b.name == name).map(|(h, _)| *h) else {
            bail!("no bouncer named {name:?}");
        };
        self.store.delete_record(CF_BOUNCERS, name.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
        map.remove(&hash);
        Ok(())
    }

    /// Every bouncer, by name.
    pub fn list(&self) -> Vec<Bouncer> {
        let map = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Bouncer> = map.values().cloned().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The bouncer holding `key`, after noting that `address` used it at `now`.
    /// Returns its name and that instance's stream cursor.
    pub fn authenticate(
        &self,
        key: &str,
        address: &str,
        user_agent: &str,
        now: Timestamp,
    ) -> Option<(String, Option<StreamCursor>)> {
        let hash = hash_key(key);
        let mut end = user_agent.len().min(MAX_USER_AGENT);
        while !user_agent.is_char_boundary(end) {
            end -= 1;
        }
        let user_agent = &user_agent[..end];
        // Most requests change nothing worth a write lock (last_seen is kept to the
        // second): answer them under the read lock, so concurrent lookups do not queue.
        {
            let map = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
            let b = map.get(&hash)?;
            if let Some(i) = b.instances.get(address) {
                if i.user_agent == user_agent && now.since(i.last_seen) < std::time::Duration::from_secs(1) {
                    return Some((b.name.clone(), i.cursor));
                }
            }
        }
        let mut map = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
        let b = map.get_mut(&hash)?;
        if !b.instances.contains_key(address) && b.instances.len() >= MAX_INSTANCES {
            let oldest = b.instances.iter().min_by_key(|(_, i)| i.last_seen).map(|(a, _)| a.clone());
            if let Some(oldest) = oldest {
                b.instances.remove(&oldest);
            }
        }
        let instance = b.instances.entry(address.to_owned()).or_insert_with(|| Instance {
            address: address.to_owned(),
            user_agent: String::new(),
            last_seen: now,
            last_pull: None,
            cursor: None,
        });
        instance.last_seen = now;
        if instance.user_agent != user_agent {
            instance.user_agent = user_agent.to_owned();
        }
        Some((b.name.clone(), instance.cursor))
    }

    /// Records a stream pull by `name` from `address` that reached `cursor`.
    pub fn pulled(&self, name: &str, address: &str, cursor: StreamCursor) {
        let mut map = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
        let Some(b) = map.values_mut().find(|b| b.name == name) else { return };
        if let Some(instance) = b.instances.get_mut(address) {
            instance.last_pull = Some(cursor.pulled_at);
            instance.cursor = Some(cursor);
        }
        let b = b.clone();
        drop(map);
        if let Err(e) = self.persist(&b) {
            tracing::warn!(bouncer = %name, error = %e, "could not save the bouncer's stream position");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(RocksStore::open(dir.path()).expect("open"));
        let reg = Registry::load(store).expect("load");
        (dir, reg)
    }

    #[test]
    fn keys_authenticate_and_survive_a_reload() {
        let (dir, reg) = registry();
        let key = new_key();
        reg.add("fw", hash_key(&key), Timestamp(1)).unwrap();
        assert!(reg.add("fw", hash_key("other"), Timestamp(1)).is_err(), "names are unique");
        assert!(reg.add("fw2", hash_key(&key), Timestamp(1)).is_err(), "keys are unique");
        assert!(reg.authenticate("wrong", "127.0.0.1", "ua", Timestamp(2)).is_none());
        let (name, cursor) = reg.authenticate(&key, "127.0.0.1", "ua/1", Timestamp(2)).unwrap();
        assert_eq!((name.as_str(), cursor), ("fw", None));
        let c = StreamCursor { last_id: 9, pulled_at: Timestamp(3) };
        reg.pulled("fw", "127.0.0.1", c);
        let (_, other) = reg.authenticate(&key, "127.0.0.2", "ua/1", Timestamp(4)).unwrap();
        assert_eq!(other, None, "each address has its own cursor");
        drop(reg);
        let store = Arc::new(RocksStore::open(dir.path()).expect("reopen"));
        let reg = Registry::load(store).unwrap();
        let (_, cursor) = reg.authenticate(&key, "127.0.0.1", "ua/1", Timestamp(5)).unwrap();
        assert_eq!(cursor, Some(c));
        reg.delete("fw").unwrap();
        assert!(reg.authenticate(&key, "127.0.0.1", "ua/1", Timestamp(6)).is_none());
        assert!(reg.delete("fw").is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("cs-firewall-bouncer").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(200)).is_err());
    }
}
