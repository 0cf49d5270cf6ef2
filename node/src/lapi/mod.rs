//! The Local API: CrowdSec's bouncer protocol over HTTP, so that every bouncer written
//! for CrowdSec (firewall, nginx, HAProxy, Traefik, Cloudflare) works with a Palisade
//! node unchanged.
//!
//! Readers never queue behind detection: lookups read the decision book under its
//! read lock (indexed by network, never a scan for an address), and the stream is
//! written in pages. Slow clients are cut off by request and keep-alive timeouts.

// Handlers return `Result<_, HttpResponse>` so an error is the response itself, built
// once on the error path: its size does not matter there.
#![allow(clippy::result_large_err)]

mod json;
pub mod query;
pub mod stream;
pub mod watchers;

use actix_web::dev::ServerHandle;
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::{Context, Result};
use palisade_actors::decision::{DecisionBook, SharedBook};
use palisade_proto::{Decision, Timestamp};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::bouncers::{Registry, StreamCursor};
use query::{DecisionQuery, Endpoint};
use stream::{Delta, StreamBody};

/// `[api]`: the Local API.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the Local API.
    pub enabled: bool,
    /// Address and port (`127.0.0.1:8080`, CrowdSec's default; port 0 picks a free one).
    pub listen: String,
    /// HTTP worker threads.
    pub workers: usize,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// A client must send its request headers within this (slow clients are cut off).
    pub request_timeout: String,
    /// Idle keep-alive connections are closed after this.
    pub keep_alive: String,
    /// Serve HTTPS with this certificate chain (PEM); needs `tls_key`.
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            workers: 2,
            max_connections: 1024,
            request_timeout: "5s".into(),
            keep_alive: "75s".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ApiConfig {
    /// Checks every key; errors name it.
    pub fn validate(&self) -> Result<(), palisade_actors::decision::ConfigError> {
        use palisade_actors::decision::ConfigError;
        self.listen.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new("api.listen", format!("{:?} is not an address:port", self.listen))
        })?;
        if self.workers == 0 || self.workers > 64 {
            return Err(ConfigError::new("api.workers", "must be between 1 and 64"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new("api.max_connections", "must be at least 1"));
        }
        duration("api.request_timeout", &self.request_timeout)?;
        duration("api.keep_alive", &self.keep_alive)?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::new("api.tls_cert", "give both tls_cert and tls_key, or neither"));
        }
        Ok(())
    }
}

fn duration(key: &str, text: &str) -> Result<Duration, palisade_actors::decision::ConfigError> {
    palisade_proto::time::parse_duration(text)
        .map_err(|e| palisade_actors::decision::ConfigError::new(key, format!("{text:?}: {e}")))
}

/// What the handlers share.
pub struct Lapi {
    /// The node's decisions.
    pub book: SharedBook,
    /// Registered bouncers.
    pub bouncers: Arc<Registry>,
    /// The wall clock.
    pub clock: fn() -> Timestamp,
    /// Request counters.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Registered machines (watchers).
    pub machines: Arc<crate::machines::Registry>,
    /// Signs and checks machines' login tokens.
    pub jwt: crate::machines::Jwt,
    /// The decision actor, for machines' alerts and deletions.
    pub decisions: actix::Addr<palisade_actors::actor::DecisionActor>,
    /// Alerts pushed by machines.
    pub alerts: Arc<watchers::Alerts>,
    /// The community list (hashed addresses), when the node follows the central tier.
    pub community: Option<Arc<crate::community::CommunityList>>,
}

/// A running Local API.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    handle: ServerHandle,
}

impl Running {
    /// Stops accepting and lets requests in flight finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Binds and starts the Local API on the current actix system.
pub fn start(config: &ApiConfig, lapi: Lapi) -> Result<Running> {
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("api.listen: cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let request_timeout = duration("api.request_timeout", &config.request_timeout)?;
    let keep_alive = duration("api.keep_alive", &config.keep_alive)?;
    let metrics = lapi.metrics.clone();
    let data = web::Data::new(lapi);
    let server = HttpServer::new(move || {
        let metrics = metrics.clone();
        App::new()
            .app_data(data.clone())
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service;
                let started = std::time::Instant::now();
                let route = crate::metrics::Metrics::route(req.path());
                let method = match *req.method() {
                    actix_web::http::Method::GET => "GET",
                    actix_web::http::Method::HEAD => "HEAD",
                    actix_web::http::Method::POST => "POST",
                    actix_web::http::Method::DELETE => "DELETE",
                    _ => "other",
                };
                let response = srv.call(req);
                let metrics = metrics.clone();
                async move {
                    let response = response.await?;
                    metrics.lapi_request(route, method, response.status().as_u16(), started.elapsed());
                    Ok(response)
                }
            })
            .configure(routes)
    })
    .workers(config.workers)
    .max_connections(config.max_connections)
    .client_request_timeout(request_timeout)
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(keep_alive)
    .disable_signals()
    .shutdown_timeout(5);
    let server = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => server.listen_rustls_0_23(listener, tls_config(cert, key)?)?,
        _ => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "local API stopped");
        }
    });
    Ok(Running { addr, handle })
}

/// A TLS server configuration from PEM files (ring, TLS 1.2 and 1.3).
fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("api.tls_cert: {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("api.tls_cert: {}: no certificate in the file", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("api.tls_key: {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("api: TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("api.tls_key: the key does not match the certificate")
}

/// The routes, also used by tests.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/health")
            .route(web::get().to(health))
            .route(web::head().to(health))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/decisions/stream")
            .route(web::get().to(decisions_stream))
            .route(web::head().to(head))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/decisions")
            .route(web::get().to(decisions))
            .route(web::head().to(head))
            .route(web::delete().to(watchers::delete_decisions))
            .default_service(web::to(method_not_allowed)),
    )
    .configure(watchers::routes)
    .default_service(web::to(not_found));
}

/// `{"message": ...}` with `status`, CrowdSec's `ErrorResponse`.
pub fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "message": message.into() }))
}

async fn not_found() -> HttpResponse {
    error(StatusCode::NOT_FOUND, "not found")
}

pub(crate) async fn method_not_allowed() -> HttpResponse {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "up" }))
}

/// The bouncer calling, by its `X-Api-Key`: its name, address and stream cursor.
struct Caller {
    name: String,
    address: String,
    cursor: Option<StreamCursor>,
}

fn authenticate(req: &HttpRequest, lapi: &Lapi) -> Result<Caller, HttpResponse> {
    let forbidden = || error(StatusCode::FORBIDDEN, "access forbidden");
    let key = req.headers().get("X-Api-Key").and_then(|v| v.to_str().ok()).ok_or_else(forbidden)?;
    let address = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (name, cursor) =
        lapi.bouncers.authenticate(key.trim(), &address, agent, (lapi.clock)()).ok_or_else(forbidden)?;
    Ok(Caller { name, address, cursor })
}

fn parse_query(req: &HttpRequest, endpoint: Endpoint) -> Result<DecisionQuery, HttpResponse> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed query string: {e}")))?;
    DecisionQuery::parse(&pairs, endpoint).map_err(|e| error(StatusCode::BAD_REQUEST, e))
}

/// `HEAD` on the decision endpoints: authentication only, as CrowdSec.
async fn head(req: HttpRequest, lapi: web::Data<Lapi>) -> HttpResponse {
    match authenticate(&req, &lapi) {
        Ok(_) => HttpResponse::Ok().finish(),
        Err(response) => response,
    }
}

/// The active decisions `q` selects, without scanning the book when an address,
/// range or address value is given.
fn select<'b>(book: &'b DecisionBook, q: &DecisionQuery, now: Timestamp) -> Vec<&'b Decision> {
    let value_net = q.value.as_deref().and_then(|v| {
        v.parse::<std::net::IpAddr>()
            .map(ipnet::IpNet::from)
            .ok()
            .or_else(|| palisade_proto::decision::parse_target(&palisade_proto::Scope::Range, v).ok())
    });
    let mut out: Vec<&Decision> = match (&q.ip, &q.range, value_net) {
        (Some(ip), _, _) => book.containing(*ip).filter(|d| q.admits(d, now)).collect(),
        (None, Some(net), _) if q.contains => book.containing_net(net).filter(|d| q.admits(d, now)).collect(),
        (None, Some(net), _) => book.contained_in(net).filter(|d| q.admits(d, now)).collect(),
        (None, None, Some(net)) => book.containing_net(&net).filter(|d| q.admits(d, now)).collect(),
        (None, None, None) => return book.iter_active().filter(|d| q.admits(d, now)).collect(),
    };
    out.sort_by_key(|d| d.id);
    out
}

/// `GET /v1/decisions`.
async fn decisions(req: HttpRequest, lapi: web::Data<Lapi>) -> HttpResponse {
    let caller = match authenticate(&req, &lapi) {
        Ok(c) => c,
        Err(response) => return response,
    };
    lapi.metrics.bouncer_pull(&caller.name);
    let q = match parse_query(&req, Endpoint::Query) {
        Ok(q) => q,
        Err(response) => return response,
    };
    let now = (lapi.clock)();
    if let Some(ip) = q.ip {
        community_on_lookup(&lapi, ip, now).await;
    }
    let mut body = Vec::new();
    {
        let book = lapi.book.read();
        let mut first = true;
        let selected = select(&book, &q, now);
        for d in selected.into_iter().skip(q.offset).take(q.limit.unwrap_or(usize::MAX)) {
            json::push(&mut body, &mut first, d, now, false);
        }
        json::close(&mut body, first);
    }
    HttpResponse::Ok().content_type("application/json").body(body)
}

/// The community list names addresses by hash only: a lookup of a listed address that
/// no decision covers yet makes its decision (origin `community`) before answering.
async fn community_on_lookup(lapi: &Lapi, ip: std::net::IpAddr, now: Timestamp) {
    let Some(list) = &lapi.community else { return };
    if lapi.book.read().containing(ip).any(|d| d.is_active(now)) {
        return;
    }
    let Some((scenario, until)) = list.lookup(ip, now) else { return };
    let request = palisade_actors::decision::NewDecision {
        origin: palisade_proto::Origin::Community,
        kind: palisade_proto::DecisionType::Ban,
        scope: palisade_proto::Scope::Ip,
        value: ip.to_string(),
        duration: until.since(now),
        scenario: scenario.to_string(),
        simulated: false,
    };
    match lapi.decisions.send(palisade_actors::actor::AddDecision(request)).await {
        Ok(Ok(Ok(_))) => {
            tracing::info!(value = %ip, scenario = %scenario, "community-listed address banned on lookup")
        }
        Ok(Ok(Err(e))) => tracing::debug!(value = %ip, error = %e, "community listing not applied"),
        Ok(Err(e)) => tracing::error!(error = %e, "cannot persist a community decision"),
        Err(e) => tracing::warn!(error = %e, "decision actor unavailable"),
    }
}

/// `GET /v1/decisions/stream`.
async fn decisions_stream(req: HttpRequest, lapi: web::Data<Lapi>) -> HttpResponse {
    let caller = match authenticate(&req, &lapi) {
        Ok(c) => c,
        Err(response) => return response,
    };
    let q = match parse_query(&req, Endpoint::Stream) {
        Ok(q) => q,
        Err(response) => return response,
    };
    let now = (lapi.clock)();
    let since = if q.startup { None } else { caller.cursor };
    let (delta, next) = Delta::new(lapi.book.clone(), q, now, since);
    lapi.bouncers.pulled(&caller.name, &caller.address, next);
    lapi.metrics.bouncer_pull(&caller.name);
    HttpResponse::Ok().content_type("application/json").streaming(StreamBody::new(delta))
}
