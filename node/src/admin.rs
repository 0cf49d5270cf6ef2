//! The admin socket: how `palisade decisions ...` talks to a running node.
//!
//! A Unix socket (mode 0600, so only root or the node's user can use it) carrying one
//! JSON request line and one JSON reply line per connection. When no node is running,
//! the CLI opens the database itself and applies the same engine, so the commands work
//! either way.

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use palisade_actors::actor::{AddDecision, DecisionActor, DeleteDecisions, ListDecisions};
use palisade_actors::decision::{DecisionFilter, NewDecision, Verdict};
use palisade_actors::store::{Commit, Store};
use palisade_proto::{Decision, DecisionType, Origin, Scope};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::config::NodeConfig;

/// Longest request line the node reads.
const MAX_REQUEST: usize = 64 * 1024;

/// What the CLI asks.
#[derive(Debug, Clone)]
pub enum Request {
    /// Active decisions matching.
    List(DecisionFilter),
    /// A manual decision.
    Add(NewDecision),
    /// End decisions matching.
    Delete(DecisionFilter),
}

/// What the node answers.
#[derive(Debug, Clone)]
pub enum Response {
    /// Decisions (listed or ended).
    Decisions(Vec<Decision>),
    /// The outcome of an add.
    Verdict(Verdict),
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct WireFilter {
    ip: Option<IpAddr>,
    range: Option<IpNet>,
    value: Option<String>,
    scenario: Option<String>,
    origin: Option<String>,
    id: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WireRequest {
    List { filter: WireFilter },
    Add { scope: String, value: String, duration_secs: u64, kind: String, reason: String, origin: String },
    Delete { filter: WireFilter },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireResponse {
    Decisions(Vec<Decision>),
    Verdict { result: String, decision: Option<Decision> },
    Error(String),
}

impl From<&DecisionFilter> for WireFilter {
    fn from(f: &DecisionFilter) -> Self {
        WireFilter {
            ip: f.ip,
            range: f.range,
            value: f.value.clone(),
            scenario: f.scenario.clone(),
            origin: f.origin.as_ref().map(|o| o.as_str().to_owned()),
            id: f.id,
        }
    }
}

impl From<WireFilter> for DecisionFilter {
    fn from(w: WireFilter) -> Self {
        DecisionFilter {
            ip: w.ip,
            range: w.range,
            value: w.value,
            scenario: w.scenario,
            origin: w.origin.as_deref().map(Origin::from),
            id: w.id,
            ..DecisionFilter::default()
        }
    }
}

fn verdict_to_wire(v: &Verdict) -> WireResponse {
    let (result, decision) = match v {
        Verdict::Created(d) => ("created", Some(d.clone())),
        Verdict::Extended { decision, .. } => ("extended", Some(decision.clone())),
        Verdict::AlreadyCovered(d) => ("already_covered", Some(d.clone())),
        Verdict::Allowlisted(_) => ("allowlisted", None),
        Verdict::NoDecision => ("no_decision", None),
        Verdict::NoTarget => ("no_target", None),
    };
    WireResponse::Verdict { result: result.into(), decision }
}

fn verdict_from_wire(result: &str, decision: Option<Decision>) -> Result<Verdict> {
    Ok(match (result, decision) {
        ("created", Some(d)) => Verdict::Created(d),
        ("extended", Some(d)) => Verdict::Extended { replaced: 0, decision: d },
        ("already_covered", Some(d)) => Verdict::AlreadyCovered(d),
        ("no_decision", None) => Verdict::NoDecision,
        ("no_target", None) => Verdict::NoTarget,
        (other, _) => bail!("unexpected verdict {other:?} from the node"),
    })
}

fn to_wire(request: &Request) -> WireRequest {
    match request {
        Request::List(f) => WireRequest::List { filter: f.into() },
        Request::Delete(f) => WireRequest::Delete { filter: f.into() },
        Request::Add(n) => WireRequest::Add {
            scope: n.scope.as_str().to_owned(),
            value: n.value.clone(),
            duration_secs: n.duration.as_secs(),
            kind: n.kind.as_str().to_owned(),
            reason: n.scenario.clone(),
            origin: n.origin.as_str().to_owned(),
        },
    }
}

fn from_wire(request: WireRequest) -> Request {
    match request {
        WireRequest::List { filter } => Request::List(filter.into()),
        WireRequest::Delete { filter } => Request::Delete(filter.into()),
        WireRequest::Add { scope, value, duration_secs, kind, reason, origin } => Request::Add(NewDecision {
            origin: Origin::from(origin.as_str()),
            kind: DecisionType::from(kind.as_str()),
            scope: Scope::parse(&scope),
            value,
            duration: Duration::from_secs(duration_secs),
            scenario: reason,
            simulated: false,
        }),
    }
}

/// Sends `request` to the running node, or applies it to the database directly when no
/// node is running.
pub fn call(config: &NodeConfig, request: Request) -> Result<Response> {
    let socket = config.admin_socket();
    match UnixStream::connect(&socket) {
        Ok(stream) => call_socket(stream, &request)
            .with_context(|| format!("talking to the node at {}", socket.display())),
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            call_offline(config, request)
        }
        Err(e) => Err(anyhow!("connecting to the node's admin socket {}: {e}", socket.display())),
    }
}

fn call_socket(mut stream: UnixStream, request: &Request) -> Result<Response> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(&to_wire(request))?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    match serde_json::from_str::<WireResponse>(&reply).context("reading the node's reply")? {
        WireResponse::Decisions(d) => Ok(Response::Decisions(d)),
        WireResponse::Verdict { result, decision } => {
            Ok(Response::Verdict(verdict_from_wire(&result, decision)?))
        }
        WireResponse::Error(e) => bail!("{e}"),
    }
}

fn call_offline(config: &NodeConfig, request: Request) -> Result<Response> {
    crate::config::ensure_data_dir(&config.data_dir)?;
    let store = crate::store::RocksStore::open(&config.db_dir()).map_err(|e| anyhow!("{e}"))?;
    let now = crate::run::wall_clock();
    let mut engine = crate::run::decision_engine(config, &store, now)?;
    let response = match request {
        Request::List(filter) => Response::Decisions(engine.select(&filter)),
        Request::Delete(filter) => Response::Decisions(engine.delete(&filter, now)),
        Request::Add(new) => Response::Verdict(engine.add(new, now)?),
    };
    let changes = engine.take_changes();
    let last_decision_id = (!changes.upserts.is_empty()).then(|| engine.last_id());
    store
        .commit(&Commit { decisions: changes, last_decision_id, ..Commit::default() })
        .map_err(|e| anyhow!("{e}"))?;
    Ok(response)
}

/// Binds the admin socket (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    if UnixStream::connect(path).is_ok() {
        bail!("another palisade node is already serving {}", path.display());
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves admin requests until the listener is dropped.
pub async fn serve(listener: tokio::net::UnixListener, decisions: actix::Addr<DecisionActor>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let decisions = decisions.clone();
        actix::spawn(async move {
            if let Err(e) = handle(stream, decisions).await {
                tracing::debug!(error = %e, "admin request failed");
            }
        });
    }
}

async fn handle(stream: tokio::net::UnixStream, decisions: actix::Addr<DecisionActor>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await??;
    let response = match serde_json::from_str::<WireRequest>(&line) {
        Ok(request) => answer(from_wire(request), &decisions).await,
        Err(e) => WireResponse::Error(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_string(&response)?;
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    Ok(())
}

async fn answer(request: Request, decisions: &actix::Addr<DecisionActor>) -> WireResponse {
    let mailbox = |e: actix::MailboxError| WireResponse::Error(format!("decision actor unavailable: {e}"));
    match request {
        Request::List(filter) => match decisions.send(ListDecisions(filter)).await {
            Ok(list) => WireResponse::Decisions(list),
            Err(e) => mailbox(e),
        },
        Request::Delete(filter) => match decisions.send(DeleteDecisions(filter)).await {
            Ok(Ok(list)) => WireResponse::Decisions(list),
            Ok(Err(e)) => WireResponse::Error(e.to_string()),
            Err(e) => mailbox(e),
        },
        Request::Add(new) => match decisions.send(AddDecision(new)).await {
            Ok(Ok(Ok(verdict))) => verdict_to_wire(&verdict),
            Ok(Ok(Err(e))) => WireResponse::Error(e.to_string()),
            Ok(Err(e)) => WireResponse::Error(e.to_string()),
            Err(e) => mailbox(e),
        },
    }
}
