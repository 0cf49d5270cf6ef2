//! Machines: CrowdSec log processors and `cscli`-style tools that push alerts and
//! manage decisions through the Local API's watcher endpoints, as in CrowdSec.
//!
//! A machine registers (`POST /v1/watchers`) or is added by the operator (`palisade
//! machines add`); a registered machine can log in only once the operator validated it.
//! Passwords are kept as Argon2id hashes; a login returns a JWT (HS256, one hour, as
//! CrowdSec's) signed with a key kept in `<data_dir>/jwt.secret`.

use anyhow::{bail, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bincode::{Decode, Encode};
use hmac::{Hmac, Mac};
use palisade_proto::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crate::store::{RocksStore, CF_MACHINES};

/// How long a login token is valid (CrowdSec: one hour).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest machine id and password.
const MAX_FIELD: usize = 256;

/// A machine allowed (or asking) to use the watcher endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Machine {
    /// Its id (`machine_id`).
    pub name: String,
    /// Argon2id PHC string.
    #[serde(skip)]
    pub password_hash: String,
    /// Whether the operator accepted it.
    pub validated: bool,
    /// When it was added or registered.
    pub created_at: Timestamp,
    /// Its last login.
    pub last_login: Option<Timestamp>,
    /// The address of its last login.
    pub address: String,
    /// The scenarios it said it runs at its last login.
    pub scenarios: Vec<String>,
}

/// Checks a machine id.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_FIELD {
        bail!("a machine id has 1 to {MAX_FIELD} characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
        bail!("machine id {name:?}: use letters, digits and - _ . @ only");
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    // 8 MiB and two passes: ~10 ms per hash here, and a bounded memory spike (logins
    // are serialised by `Registry::hashing`).
    let params = Params::new(8 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The claims of a login token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The machine id.
    pub id: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub orig_iat: i64,
}

/// Signs and checks HS256 JWTs.
pub struct Jwt {
    key: [u8; 32],
}

impl Jwt {
    /// With `key`.
    pub fn new(key: [u8; 32]) -> Self {
        Jwt { key }
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// A token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let signature = URL_SAFE_NO_PAD.encode(self.mac(signing_input.as_bytes()));
        format!("{signing_input}.{signature}")
    }

    /// The claims of `token` when its signature is ours and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Option<Claims> {
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || token.len() > 4096 {
            return None;
        }
        let expected = self.mac(format!("{header}.{payload}").as_bytes());
        let given = URL_SAFE_NO_PAD.decode(signature).ok()?;
        if !constant_time_eq(&expected, &given) {
            return None;
        }
        let head: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if head["alg"] != "HS256" {
            return None;
        }
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.exp > now.as_secs()).then_some(claims)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The machines of a node, persisted in the store's `machines` column family.
pub struct Registry {
    store: Arc<RocksStore>,
    machines: RwLock<BTreeMap<String, Machine>>,
    /// One password hash at a time: bounds the memory and CPU a flood of logins costs.
    hashing: Mutex<()>,
}

impl Registry {
    /// Loads the registry.
    pub fn load(store: Arc<RocksStore>) -> Result<Self> {
        let mut machines = BTreeMap::new();
        for (name, raw) in store.records(CF_MACHINES).map_err(|e| anyhow::anyhow!("{e}"))? {
            let name = String::from_utf8_lossy(&name);
            match bincode::decode_from_slice::<Machine, _>(&raw, bincode_config()) {
                Ok((m, _)) => {
                    machines.insert(m.name.clone(), m);
                }
                Err(e) => tracing::error!(machine = %name, error = %e, "corrupt machine record skipped"),
            }
        }
        Ok(Registry { store, machines: RwLock::new(machines), hashing: Mutex::new(()) })
    }

    fn persist(&self, m: &Machine) -> Result<()> {
        let raw = bincode::encode_to_vec(m, bincode_config())?;
        self.store.put_record(CF_MACHINES, m.name.as_bytes(), &raw).map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn hash(&self, password: &str) -> Result<String> {
        let _one = self.hashing.lock().unwrap_or_else(PoisonError::into_inner);
        hash_password(password)
    }

    /// Adds (`validated`: by the operator) or registers a machine. Fails if it exists.
    pub fn add(&self, name: &str, password: &str, validated: bool, now: Timestamp) -> Result<()> {
        check_name(name)?;
        if password.is_empty() || password.len() > MAX_FIELD {
            bail!("a password has 1 to {MAX_FIELD} characters");
        }
        if self.machines.read().unwrap_or_else(PoisonError::into_inner).contains_key(name) {
            bail!("machine {name:?} exists already");
        }
        let m = Machine {
            name: name.to_owned(),
            password_hash: self.hash(password)?,
            validated,
            created_at: now,
            last_login: None,
            address: String::new(),
            scenarios: Vec::new(),
        };
        let mut map = self.machines.write().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(name) {
            bail!("machine {name:?} exists already");
        }
        self.persist(&m)?;
        map.insert(m.name.clone(), m);
        Ok(())
    }

    /// Accepts a registered machine.
    pub fn validate(&self, name: &str) -> Result<()> {
        let mut map = self.machines.write().unwrap_or_else(PoisonError::into_inner);
        let Some(m) = map.get_mut(name) else { bail!("no machine {name:?}") };
        m.validated = true;
        let m = m.clone();
        self.persist(&m)
    }

    /// Removes a machine: its tokens stop working at once.
    pub fn delete(&self, name: &str) -> Result<()> {
        let mut map = self.machines.write().unwrap_or_else(PoisonError::into_inner);
        if map.remove(name).is_none() {
            bail!("no machine {name:?}");
        }
        self.store.delete_record(CF_MACHINES, name.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Every machine, by name.
    pub fn list(&self) -> Vec<Machine> {
        self.machines.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Whether `name` may act now (it exists and is validated).
    pub fn is_active(&self, name: &str) -> bool {
        self.machines.read().unwrap_or_else(PoisonError::into_inner).get(name).is_some_and(|m| m.validated)
    }

    /// Checks a login. `Ok(false)`: wrong id or password, or not validated yet.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        address: &str,
        scenarios: &[String],
        now: Timestamp,
    ) -> Result<bool> {
        let Some(hash) = self
            .machines
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .filter(|m| m.validated)
            .map(|m| m.password_hash.clone())
        else {
            return Ok(false);
        };
        let ok = {
            let _one = self.hashing.lock().unwrap_or_else(PoisonError::into_inner);
            verify_password(password, &hash)
        };
        if !ok {
            return Ok(false);
        }
        let mut map = self.machines.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = map.get_mut(name) {
            m.last_login = Some(now);
            m.address = address.to_owned();
            m.scenarios = scenarios.iter().take(1024).map(|s| s.chars().take(256).collect()).collect();
            let m = m.clone();
            drop(map);
            self.persist(&m)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_signed_and_expire() {
        let jwt = Jwt::new([7; 32]);
        let now = Timestamp::from_secs(1_000);
        let claims = Claims { id: "agent-1".into(), exp: 1_000 + 3600, orig_iat: 1_000 };
        let token = jwt.sign(&claims);
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(jwt.verify(&token, now), Some(claims));
        assert_eq!(jwt.verify(&token, Timestamp::from_secs(1_000 + 3600)), None, "expired");
        assert_eq!(Jwt::new([8; 32]).verify(&token, now), None, "another key");
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 3.., "AAA");
        assert_eq!(jwt.verify(&forged, now), None);
        let (head, rest) = token.split_once('.').unwrap();
        let other_payload = URL_SAFE_NO_PAD.encode(br#"{"id":"admin","exp":99999999999,"orig_iat":0}"#);
        let sig = rest.split('.').nth(1).unwrap();
        assert_eq!(jwt.verify(&format!("{head}.{other_payload}.{sig}"), now), None, "payload swapped");
        assert_eq!(jwt.verify("garbage", now), None);
    }

    #[test]
    fn machines_register_validate_and_log_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RocksStore::open(dir.path()).unwrap());
        let reg = Registry::load(store.clone()).unwrap();
        let now = Timestamp(1);
        reg.add("agent", "s3cret-password", false, now).unwrap();
        assert!(reg.add("agent", "x", false, now).is_err());
        assert!(!reg.login("agent", "s3cret-password", "127.0.0.1", &[], now).unwrap(), "not validated yet");
        reg.validate("agent").unwrap();
        assert!(!reg.login("agent", "wrong", "127.0.0.1", &[], now).unwrap());
        assert!(reg.login("agent", "s3cret-password", "127.0.0.1", &["ssh-bf".into()], now).unwrap());
        assert!(reg.is_active("agent"));
        drop(reg);
        let reg = Registry::load(store).unwrap();
        let m = &reg.list()[0];
        assert_eq!((m.validated, m.scenarios.clone()), (true, vec!["ssh-bf".to_owned()]));
        reg.delete("agent").unwrap();
        assert!(!reg.is_active("agent"));
    }
}
