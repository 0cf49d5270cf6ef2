//! The admin socket: how `palisade decisions ...` talks to a running node.
//!
//! A Unix socket (mode 0600, so only root or the node's user can use it) carrying one
//! JSON request line and one JSON reply line per connection. When no node is running,
//! the CLI opens the database itself and applies the same engine, so the commands work
//! either way.

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use palisade_actors::actor::{AddDecision, AddDecisions, DecisionActor, DeleteDecisions, ListDecisions};
use palisade_actors::decision::{DecisionError, DecisionFilter, NewDecision, Verdict};
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

use crate::bouncers::{Bouncer, Registry};
use crate::config::NodeConfig;
use crate::machines::Machine;
use palisade_proto::Timestamp;
use std::sync::Arc;

/// Longest request line the node reads.
const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// What the CLI asks.
#[derive(Debug, Clone)]
pub enum Request {
    /// Active decisions matching.
    List(DecisionFilter),
    /// A manual decision.
    Add(NewDecision),
    /// Many manual decisions (an import), applied and persisted together.
    Import(Vec<NewDecision>),
    /// End decisions matching.
    Delete(DecisionFilter),
    /// Register a bouncer with the hash of its key.
    AddBouncer { name: String, key_hash: [u8; 32] },
    /// Every bouncer.
    ListBouncers,
    /// Remove a bouncer.
    DeleteBouncer { name: String },
    /// Add a machine (validated).
    AddMachine { name: String, password: String },
    /// Every machine.
    ListMachines,
    /// Accept a registered machine.
    ValidateMachine { name: String },
    /// Remove a machine.
    DeleteMachine { name: String },
    /// Fleet membership (running node only).
    Fleet(crate::fleet::FleetRequest),
}

/// What the node answers.
#[derive(Debug, Clone)]
pub enum Response {
    /// Decisions (listed or ended).
    Decisions(Vec<Decision>),
    /// The outcome of an add.
    Verdict(Verdict),
    /// The outcome of an import: decisions made, and the refused values with why.
    Imported { made: usize, refused: Vec<String> },
    /// Bouncers.
    Bouncers(Vec<Bouncer>),
    /// Machines.
    Machines(Vec<Machine>),
    /// A fleet answer.
    Fleet(crate::fleet::FleetReply),
    /// Done, nothing to report.
    Done,
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
struct WireNew {
    scope: String,
    value: String,
    duration_secs: u64,
    kind: String,
    reason: String,
    origin: String,
}

impl From<&NewDecision> for WireNew {
    fn from(n: &NewDecision) -> Self {
        WireNew {
            scope: n.scope.as_str().to_owned(),
            value: n.value.clone(),
            duration_secs: n.duration.as_secs(),
            kind: n.kind.as_str().to_owned(),
            reason: n.scenario.clone(),
            origin: n.origin.as_str().to_owned(),
        }
    }
}

impl From<WireNew> for NewDecision {
    fn from(w: WireNew) -> Self {
        NewDecision {
            origin: Origin::from(w.origin.as_str()),
            kind: DecisionType::from(w.kind.as_str()),
            scope: Scope::parse(&w.scope),
            value: w.value,
            duration: Duration::from_secs(w.duration_secs),
            scenario: w.reason,
            simulated: false,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum WireRequest {
    List { filter: WireFilter },
    Add(WireNew),
    Import { decisions: Vec<WireNew> },
    Delete { filter: WireFilter },
    AddBouncer { name: String, key_hash: String },
    ListBouncers,
    DeleteBouncer { name: String },
    AddMachine { name: String, password: String },
    ListMachines,
    ValidateMachine { name: String },
    DeleteMachine { name: String },
    Fleet { request: crate::fleet::FleetRequest },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireResponse {
    Decisions(Vec<Decision>),
    Verdict { result: String, decision: Option<Decision> },
    Imported { made: usize, refused: Vec<String> },
    Bouncers(Vec<Bouncer>),
    Machines(Vec<Machine>),
    Fleet(crate::fleet::FleetReply),
    Done,
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
        Request::Add(n) => WireRequest::Add(n.into()),
        Request::Import(list) => WireRequest::Import { decisions: list.iter().map(WireNew::from).collect() },
        Request::AddBouncer { name, key_hash } => {
            WireRequest::AddBouncer { name: name.clone(), key_hash: hex::encode(key_hash) }
        }
        Request::ListBouncers => WireRequest::ListBouncers,
        Request::DeleteBouncer { name } => WireRequest::DeleteBouncer { name: name.clone() },
        Request::AddMachine { name, password } => {
            WireRequest::AddMachine { name: name.clone(), password: password.clone() }
        }
        Request::ListMachines => WireRequest::ListMachines,
        Request::ValidateMachine { name } => WireRequest::ValidateMachine { name: name.clone() },
        Request::DeleteMachine { name } => WireRequest::DeleteMachine { name: name.clone() },
        Request::Fleet(request) => WireRequest::Fleet { request: request.clone() },
    }
}

fn from_wire(request: WireRequest) -> Result<Request> {
    Ok(match request {
        WireRequest::List { filter } => Request::List(filter.into()),
        WireRequest::Delete { filter } => Request::Delete(filter.into()),
        WireRequest::Add(n) => Request::Add(n.into()),
        WireRequest::Import { decisions } => {
            Request::Import(decisions.into_iter().map(NewDecision::from).collect())
        }
        WireRequest::AddBouncer { name, key_hash } => {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&key_hash, &mut hash).context("key_hash")?;
            Request::AddBouncer { name, key_hash: hash }
        }
        WireRequest::ListBouncers => Request::ListBouncers,
        WireRequest::DeleteBouncer { name } => Request::DeleteBouncer { name },
        WireRequest::AddMachine { name, password } => Request::AddMachine { name, password },
        WireRequest::ListMachines => Request::ListMachines,
        WireRequest::ValidateMachine { name } => Request::ValidateMachine { name },
        WireRequest::DeleteMachine { name } => Request::DeleteMachine { name },
        WireRequest::Fleet { request } => Request::Fleet(request),
    })
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
            if matches!(request, Request::Fleet(_)) {
                bail!(
                    "no node is running at {} (fleet commands act on the running node: start it with `palisade run`)",
                    socket.display()
                );
            }
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
        WireResponse::Imported { made, refused } => Ok(Response::Imported { made, refused }),
        WireResponse::Bouncers(b) => Ok(Response::Bouncers(b)),
        WireResponse::Machines(m) => Ok(Response::Machines(m)),
        WireResponse::Fleet(f) => Ok(Response::Fleet(f)),
        WireResponse::Done => Ok(Response::Done),
        WireResponse::Error(e) => bail!("{e}"),
    }
}

fn call_offline(config: &NodeConfig, request: Request) -> Result<Response> {
    crate::config::ensure_data_dir(&config.data_dir)?;
    let store = Arc::new(crate::store::RocksStore::open(&config.db_dir()).map_err(|e| anyhow!("{e}"))?);
    let now = crate::run::wall_clock();
    let request = match request {
        Request::List(f) => Request::List(f),
        Request::Add(n) => Request::Add(n),
        Request::Import(n) => Request::Import(n),
        Request::Delete(f) => Request::Delete(f),
        registry => {
            let node = Registries {
                bouncers: &Registry::load(store.clone())?,
                machines: &crate::machines::Registry::load(store)?,
            };
            return registry_answer(registry, &node, now);
        }
    };
    let mut engine = crate::run::decision_engine(config, store.as_ref(), now)?;
    let response = match request {
        Request::List(filter) => Response::Decisions(engine.select(&filter)),
        Request::Delete(filter) => Response::Decisions(engine.delete(&filter, now)),
        Request::Add(new) => Response::Verdict(engine.add(new, now)?),
        Request::Import(list) => {
            imported(list.into_iter().map(|n| (n.value.clone(), engine.add(n, now))).collect())
        }
        _ => bail!("unreachable admin request"),
    };
    let changes = engine.take_changes();
    let last_decision_id = (!changes.upserts.is_empty()).then(|| engine.last_id());
    store
        .commit(&Commit { decisions: changes, last_decision_id, ..Commit::default() })
        .map_err(|e| anyhow!("{e}"))?;
    Ok(response)
}

/// Sums up an import's verdicts.
fn imported(results: Vec<(String, Result<Verdict, DecisionError>)>) -> Response {
    let mut made = 0;
    let mut refused = Vec::new();
    for (value, r) in results {
        match r {
            Ok(v) if v.decision().is_some() => made += 1,
            Ok(v) => refused.push(format!("{value}: {v:?}")),
            Err(e) => refused.push(format!("{value}: {e}")),
        }
    }
    Response::Imported { made, refused }
}

/// The bouncer and machine registries.
struct Registries<'a> {
    bouncers: &'a Registry,
    machines: &'a crate::machines::Registry,
}

/// Applies a bouncer or machine request.
fn registry_answer(request: Request, r: &Registries<'_>, now: Timestamp) -> Result<Response> {
    match request {
        Request::AddBouncer { name, key_hash } => {
            r.bouncers.add(&name, key_hash, now).map(|()| Response::Done)
        }
        Request::ListBouncers => Ok(Response::Bouncers(r.bouncers.list())),
        Request::DeleteBouncer { name } => r.bouncers.delete(&name).map(|()| Response::Done),
        Request::AddMachine { name, password } => {
            r.machines.add(&name, &password, true, now).map(|()| Response::Done)
        }
        Request::ListMachines => Ok(Response::Machines(r.machines.list())),
        Request::ValidateMachine { name } => r.machines.validate(&name).map(|()| Response::Done),
        Request::DeleteMachine { name } => r.machines.delete(&name).map(|()| Response::Done),
        _ => bail!("not a bouncer or machine request"),
    }
}

/// What the admin socket serves requests with.
#[derive(Clone)]
pub struct Node {
    /// The decision actor.
    pub decisions: actix::Addr<DecisionActor>,
    /// The bouncers.
    pub bouncers: Arc<Registry>,
    /// The machines.
    pub machines: Arc<crate::machines::Registry>,
    /// The fleet layer.
    pub fleet: Arc<crate::fleet::Fleet>,
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
pub async fn serve(listener: tokio::net::UnixListener, node: Node) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        actix::spawn(async move {
            if let Err(e) = handle(stream, node).await {
                tracing::warn!(error = %e, "admin request failed");
            }
        });
    }
}

async fn handle(stream: tokio::net::UnixStream, node: Node) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await??;
    let response =
        match serde_json::from_str::<WireRequest>(&line).map_err(anyhow::Error::from).and_then(from_wire) {
            Ok(request) => answer(request, &node).await,
            Err(e) => WireResponse::Error(format!("bad request: {e:#}")),
        };
    let mut out = serde_json::to_string(&response)?;
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    Ok(())
}

async fn answer(request: Request, node: &Node) -> WireResponse {
    let decisions = &node.decisions;
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
        Request::Import(list) => {
            let values: Vec<String> = list.iter().map(|n| n.value.clone()).collect();
            match decisions.send(AddDecisions(list)).await {
                Ok(Ok(results)) => match imported(values.into_iter().zip(results).collect()) {
                    Response::Imported { made, refused } => WireResponse::Imported { made, refused },
                    _ => WireResponse::Error("unexpected import result".into()),
                },
                Ok(Err(e)) => WireResponse::Error(e.to_string()),
                Err(e) => mailbox(e),
            }
        }
        Request::Fleet(request) => match node.fleet.answer(request).await {
            Ok(reply) => WireResponse::Fleet(reply),
            Err(e) => WireResponse::Error(format!("{e:#}")),
        },
        Request::Add(new) => match decisions.send(AddDecision(new)).await {
            Ok(Ok(Ok(verdict))) => verdict_to_wire(&verdict),
            Ok(Ok(Err(e))) => WireResponse::Error(e.to_string()),
            Ok(Err(e)) => WireResponse::Error(e.to_string()),
            Err(e) => mailbox(e),
        },
        registry => match registry_answer(
            registry,
            &Registries { bouncers: &node.bouncers, machines: &node.machines },
            crate::run::wall_clock(),
        ) {
            Ok(Response::Bouncers(b)) => WireResponse::Bouncers(b),
            Ok(Response::Machines(m)) => WireResponse::Machines(m),
            Ok(_) => WireResponse::Done,
            Err(e) => WireResponse::Error(format!("{e:#}")),
        },
    }
}
