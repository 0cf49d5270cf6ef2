//! The node's secrets on disk: its ed25519 identity and the secret its signals' IP
//! hashes are keyed with. Created on first start, readable by the owner only.

use anyhow::{bail, Context, Result};
use palisade_proto::NodeKey;
use rand::rngs::OsRng;
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads 32 hex-encoded bytes from `path`, creating the file with fresh random bytes
/// (mode 0600) when it does not exist.
pub fn load_or_create_32(path: &Path) -> Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut out = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut out)
                .with_context(|| format!("{} must hold 64 hex characters", path.display()))?;
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(file = %path.display(), mode = format!("{mode:o}"), "secret file is readable by others; chmod 600 it");
            }
            Ok(out)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            OsRng.fill_bytes(&mut bytes);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(file, "{}", hex::encode(bytes))?;
            file.sync_all()?;
            Ok(bytes)
        }
        Err(e) => bail!("reading {}: {e}", path.display()),
    }
}

/// Writes `bytes` to `path` atomically (a fresh temporary file, mode 0600, synced, then
/// renamed over `path`): readers see the old content or the new, never a part.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The node's identity key (`<data_dir>/node.key`).
pub fn node_key(data_dir: &Path) -> Result<NodeKey> {
    Ok(NodeKey::from_bytes(&load_or_create_32(&data_dir.join("node.key"))?))
}

/// The secret that keys IP hashes and seals (`<data_dir>/signal.secret`); the fleet
/// replaces it with the fleet secret when the node joins one.
pub fn signal_secret(data_dir: &Path) -> Result<[u8; 32]> {
    load_or_create_32(&data_dir.join("signal.secret"))
}

/// The key that signs machines' login tokens (`<data_dir>/jwt.secret`).
pub fn jwt_secret(data_dir: &Path) -> Result<[u8; 32]> {
    load_or_create_32(&data_dir.join("jwt.secret"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = node_key(dir.path()).unwrap();
        let b = node_key(dir.path()).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        let mode = std::fs::metadata(dir.path().join("node.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join("signal.secret"), "zz").unwrap();
        assert!(signal_secret(dir.path()).unwrap_err().to_string().contains("64 hex"));
    }
}
