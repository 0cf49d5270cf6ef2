//! The tier's admin socket: how `palisade central status|explain|tenant` talk to a
//! running tier. A Unix socket (mode 0600) carrying one JSON request line and one JSON
//! reply line per connection, like the node's. Tenants can also be added, listed and
//! removed with the tier stopped: the CLI then opens the database itself.

use anyhow::{anyhow, bail, Context, Result};
use palisade_proto::central::EnrollToken;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::config::CentralConfig;
use super::store::{Batch, CentralStore, TenantRecord};
use super::tier::{check_tenant_name, now, AdminRequest, Command, TenantInfo};

/// Longest request line read.
const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ok(serde_json::Value),
    Error(String),
}

/// Serves admin requests until the listener is dropped.
pub async fn serve(listener: tokio::net::UnixListener, core: mpsc::Sender<Command>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let core = core.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, core).await {
                tracing::debug!(error = %e, "admin request failed");
            }
        });
    }
}

async fn handle(stream: tokio::net::UnixStream, core: mpsc::Sender<Command>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await??;
    let reply = match serde_json::from_str::<AdminRequest>(&line) {
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            if core.send(Command::Admin(request, tx)).await.is_err() {
                Reply::Error("the central tier is stopping".into())
            } else {
                match rx.await {
                    Ok(Ok(value)) => Reply::Ok(value),
                    Ok(Err(e)) => Reply::Error(e),
                    Err(_) => Reply::Error("the central tier is stopping".into()),
                }
            }
        }
        Err(e) => Reply::Error(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_string(&reply)?;
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    Ok(())
}

/// Sends `request` to the running tier. `Ok(None)` when no tier is running.
pub fn call(socket: &Path, request: &AdminRequest) -> Result<Option<serde_json::Value>> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            return Ok(None)
        }
        Err(e) => bail!("connecting to the central tier's admin socket {}: {e}", socket.display()),
    };
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    match serde_json::from_str::<Reply>(&reply).context("reading the central tier's reply")? {
        Reply::Ok(v) => Ok(Some(v)),
        Reply::Error(e) => bail!("{e}"),
    }
}

fn open_offline(config: &CentralConfig) -> Result<Arc<CentralStore>> {
    super::ensure_private_dir(&config.data_dir)?;
    Ok(Arc::new(CentralStore::open(&config.db_dir(), config.sync_writes).map_err(|e| anyhow!("{e}"))?))
}

/// Adds a tenant with the tier stopped; returns its token.
pub fn tenant_add_offline(config: &CentralConfig, name: &str, community: bool) -> Result<String> {
    check_tenant_name(name).map_err(anyhow::Error::msg)?;
    let store = open_offline(config)?;
    if store.tenants().map_err(|e| anyhow!("{e}"))?.iter().any(|t| t.name == name) {
        bail!("tenant {name:?} already exists");
    }
    let key = crate::keys::node_key(&config.data_dir)?;
    let (record, secret) = TenantRecord::generate(name, community, now());
    store.commit(&Batch { tenants: vec![record], ..Batch::default() }).map_err(|e| anyhow!("{e}"))?;
    Ok(EnrollToken { tier: key.node_id(), secret }.to_text())
}

/// Removes a tenant with the tier stopped. Its sensors' reports are deleted; entries
/// they alone held up are delisted when the tier starts and re-scores its list.
pub fn tenant_remove_offline(config: &CentralConfig, name: &str) -> Result<serde_json::Value> {
    let store = open_offline(config)?;
    if !store.tenants().map_err(|e| anyhow!("{e}"))?.iter().any(|t| t.name == name) {
        bail!("no tenant {name:?} (see `palisade central tenant list`)");
    }
    let sensors: Vec<_> = store
        .sensors()
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .filter(|(_, row)| row.tenant == name)
        .map(|(id, _)| id)
        .collect();
    let deleted = store.remove_tenant(name, &sensors).map_err(|e| anyhow!("{e}"))?;
    Ok(serde_json::json!({
        "name": name,
        "sensors": sensors.len(),
        "reports_deleted": deleted,
        "reports_forgotten": deleted,
        "delisted": serde_json::Value::Null,
    }))
}

/// Lists tenants with the tier stopped.
pub fn tenant_list_offline(config: &CentralConfig) -> Result<Vec<TenantInfo>> {
    let store = open_offline(config)?;
    let sensors = store.sensors().map_err(|e| anyhow!("{e}"))?;
    Ok(store
        .tenants()
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .map(|t| TenantInfo {
            sensors: sensors.iter().filter(|(_, s)| s.tenant == t.name).count(),
            connected: 0,
            name: t.name,
            community: t.community,
            created: t.created,
        })
        .collect())
}
