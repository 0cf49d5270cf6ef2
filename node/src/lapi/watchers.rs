//! The machine side of the Local API, so CrowdSec log processors and `cscli`-style tools
//! can push to a Palisade node: `POST /v1/watchers` (register), `POST /v1/watchers/login`
//! (JWT), `POST`/`GET /v1/alerts`, `DELETE /v1/decisions[/{id}]`, `GET /v1/heartbeat`.
//!
//! An alert that carries decisions (as `cscli decisions add` sends) gets exactly those;
//! one without (as a CrowdSec agent sends) goes through this node's profiles like a local
//! overflow, with origin `crowdsec`: the allowlist, durations and repeat-offender rules
//! apply. Alerts are kept in the store, the newest `KEEP_ALERTS`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use ipnet::IpNet;
use palisade_actors::actor::{AddDecision, ApplyForeignOverflow, DeleteDecisions};
use palisade_actors::decision::{DecisionFilter, NewDecision, Verdict};
use palisade_actors::event::Remediation;
use palisade_actors::Overflow;
use palisade_proto::{DecisionType, Origin, Scope, Timestamp};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{error, json, Lapi};
use crate::machines::{Claims, TOKEN_LIFETIME};
use crate::store::{RocksStore, CF_ALERTS};

/// Alerts kept; older ones are pruned.
const KEEP_ALERTS: u64 = 10_000;
/// Alerts in one push.
const MAX_ALERTS_PER_PUSH: usize = 1_000;
/// Decisions in one alert.
const MAX_DECISIONS_PER_ALERT: usize = 10_000;

/// Stored alerts.
pub struct Alerts {
    store: Arc<RocksStore>,
    next_id: AtomicU64,
}

impl Alerts {
    /// Opens the alert log kept in `store`.
    pub fn open(store: Arc<RocksStore>) -> anyhow::Result<Self> {
        let last = store
            .last_records(CF_ALERTS, 1)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .first()
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_slice()).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(Alerts { store, next_id: AtomicU64::new(last + 1) })
    }

    fn save(&self, mut alert: Value) -> Result<u64, String> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        alert["id"] = json!(id);
        let raw = serde_json::to_vec(&alert).map_err(|e| e.to_string())?;
        self.store.put_record(CF_ALERTS, &id.to_be_bytes(), &raw).map_err(|e| e.to_string())?;
        if id > KEEP_ALERTS && id.is_multiple_of(100) {
            let below = (id - KEEP_ALERTS).to_be_bytes();
            if let Err(e) = self.store.delete_records_below(CF_ALERTS, &below) {
                tracing::warn!(error = %e, "pruning old alerts failed");
            }
        }
        Ok(id)
    }

    fn newest(&self, limit: usize) -> Vec<Value> {
        match self.store.last_records(CF_ALERTS, limit) {
            Ok(rows) => rows.into_iter().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading alerts failed");
                Vec::new()
            }
        }
    }
}

/// The routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let small = web::PayloadConfig::new(64 * 1024);
    cfg.service(
        web::resource("/v1/watchers")
            .app_data(small.clone())
            .route(web::post().to(register))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/watchers/login")
            .app_data(small)
            .route(web::post().to(login))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/alerts")
            .app_data(web::PayloadConfig::new(8 * 1024 * 1024))
            .route(web::post().to(push_alerts))
            .route(web::get().to(list_alerts))
            .route(web::head().to(list_alerts))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/heartbeat")
            .route(web::get().to(heartbeat))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/decisions/{id}")
            .route(web::delete().to(delete_decision))
            .default_service(web::to(super::method_not_allowed)),
    );
}

/// The machine behind `Authorization: Bearer <jwt>`.
fn machine(req: &HttpRequest, lapi: &Lapi) -> Result<String, HttpResponse> {
    let unauthorized = |m: &str| HttpResponse::Unauthorized().json(json!({ "code": 401, "message": m }));
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .ok_or_else(|| unauthorized("auth header is empty"))?;
    let claims = lapi
        .jwt
        .verify(token.trim(), (lapi.clock)())
        .ok_or_else(|| unauthorized("token is invalid or expired"))?;
    if !lapi.machines.is_active(&claims.id) {
        return Err(unauthorized("machine is unknown or not validated"));
    }
    Ok(claims.id)
}

fn body_json(body: &[u8]) -> Result<Value, HttpResponse> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn string_field<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a str, HttpResponse> {
    v[key]
        .as_str()
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("{what}: {key} is required (a string)")))
}

/// `POST /v1/watchers`: a machine registers; the operator validates it
/// (`palisade machines validate`) before it can log in.
async fn register(req: HttpRequest, body: web::Bytes, lapi: web::Data<Lapi>) -> HttpResponse {
    let v = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (name, password) = match (
        string_field(&v, "machine_id", "registration"),
        string_field(&v, "password", "registration"),
    ) {
        (Ok(n), Ok(p)) => (n.to_owned(), p.to_owned()),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let machines = lapi.machines.clone();
    let now = (lapi.clock)();
    match web::block(move || machines.add(&name, &password, false, now)).await {
        Ok(Ok(())) => {
            let from = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
            tracing::info!(machine = %v["machine_id"], address = %from, "machine registered; validate it with `palisade machines validate`");
            HttpResponse::Created().finish()
        }
        Ok(Err(e)) => error(StatusCode::FORBIDDEN, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /v1/watchers/login`.
async fn login(req: HttpRequest, body: web::Bytes, lapi: web::Data<Lapi>) -> HttpResponse {
    let v = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (name, password) =
        match (string_field(&v, "machine_id", "login"), string_field(&v, "password", "login")) {
            (Ok(n), Ok(p)) => (n.to_owned(), p.to_owned()),
            (Err(r), _) | (_, Err(r)) => return r,
        };
    let scenarios: Vec<String> = v["scenarios"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let address = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let now = (lapi.clock)();
    let machines = lapi.machines.clone();
    let who = name.clone();
    let ok = web::block(move || machines.login(&who, &password, &address, &scenarios, now)).await;
    match ok {
        Ok(Ok(true)) => {
            let exp = now.saturating_add(TOKEN_LIFETIME);
            let token = lapi.jwt.sign(&Claims { id: name, exp: exp.as_secs(), orig_iat: now.as_secs() });
            let expire = chrono::DateTime::from_timestamp(exp.as_secs(), 0)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default();
            HttpResponse::Ok().json(json!({ "code": 200, "expire": expire, "token": token }))
        }
        Ok(Ok(false)) => error(StatusCode::FORBIDDEN, "incorrect Username or Password"),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn heartbeat(req: HttpRequest, lapi: web::Data<Lapi>) -> HttpResponse {
    match machine(&req, &lapi) {
        Ok(_) => HttpResponse::Ok().finish(),
        Err(r) => r,
    }
}

/// Checks the fields swagger's `Alert` requires, with their types.
fn check_alert(i: usize, a: &Value) -> Result<(), String> {
    type Check = (&'static str, fn(&Value) -> bool, &'static str);
    let kinds: [Check; 12] = [
        ("scenario", Value::is_string, "a string"),
        ("scenario_hash", Value::is_string, "a string"),
        ("scenario_version", Value::is_string, "a string"),
        ("message", Value::is_string, "a string"),
        ("events_count", Value::is_i64, "an integer"),
        ("start_at", Value::is_string, "a string"),
        ("stop_at", Value::is_string, "a string"),
        ("capacity", Value::is_i64, "an integer"),
        ("leakspeed", Value::is_string, "a string"),
        ("simulated", Value::is_boolean, "a boolean"),
        ("events", Value::is_array, "an array"),
        ("source", Value::is_object, "an object"),
    ];
    for (key, ok, what) in kinds {
        if !ok(&a[key]) {
            return Err(format!("alert {i}: {key} is required ({what})"));
        }
    }
    for key in ["scope", "value"] {
        if !a["source"][key].is_string() {
            return Err(format!("alert {i}: source.{key} is required (a string)"));
        }
    }
    if a["decisions"].as_array().is_some_and(|d| d.len() > MAX_DECISIONS_PER_ALERT) {
        return Err(format!("alert {i}: more than {MAX_DECISIONS_PER_ALERT} decisions"));
    }
    Ok(())
}

/// `POST /v1/alerts`.
async fn push_alerts(req: HttpRequest, body: web::Bytes, lapi: web::Data<Lapi>) -> HttpResponse {
    let machine_id = match machine(&req, &lapi) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let v = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(alerts) = v.as_array() else {
        return error(StatusCode::BAD_REQUEST, "the body is a JSON array of alerts");
    };
    if alerts.len() > MAX_ALERTS_PER_PUSH {
        return error(StatusCode::BAD_REQUEST, format!("at most {MAX_ALERTS_PER_PUSH} alerts per request"));
    }
    if let Some(e) = alerts.iter().enumerate().find_map(|(i, a)| check_alert(i, a).err()) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let mut ids = Vec::with_capacity(alerts.len());
    for alert in alerts {
        let decisions = match apply_alert(&lapi, alert).await {
            Ok(d) => d,
            Err(r) => return r,
        };
        let now = (lapi.clock)();
        let mut stored = alert.clone();
        stored["machine_id"] = json!(machine_id);
        stored["created_at"] = json!(crate::output::rfc3339(now));
        stored["decisions"] = Value::Array(decisions);
        let alerts = lapi.alerts.clone();
        match web::block(move || alerts.save(stored)).await {
            Ok(Ok(id)) => ids.push(id.to_string()),
            Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    HttpResponse::Created().json(ids)
}

/// Turns one alert into decisions; returns them in CrowdSec's JSON.
async fn apply_alert(lapi: &Lapi, alert: &Value) -> Result<Vec<Value>, HttpResponse> {
    let now = (lapi.clock)();
    let simulated = alert["simulated"].as_bool().unwrap_or(false);
    let scenario = alert["scenario"].as_str().unwrap_or_default().to_owned();
    let mut verdicts = Vec::new();
    match alert["decisions"].as_array().filter(|d| !d.is_empty()) {
        Some(decisions) => {
            for d in decisions {
                let field = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                let duration = palisade_proto::time::parse_duration(&field("duration")).map_err(|e| {
                    error(StatusCode::BAD_REQUEST, format!("decision duration {:?}: {e}", field("duration")))
                })?;
                let origin = if field("origin").is_empty() { "crowdsec".to_owned() } else { field("origin") };
                let request = NewDecision {
                    origin: Origin::from(origin.as_str()),
                    kind: DecisionType::from(field("type").as_str()),
                    scope: Scope::parse(&field("scope")),
                    value: field("value"),
                    duration,
                    scenario: if field("scenario").is_empty() { scenario.clone() } else { field("scenario") },
                    simulated: simulated || d["simulated"].as_bool().unwrap_or(false),
                };
                match lapi.decisions.send(AddDecision(request)).await {
                    Ok(Ok(Ok(v))) => verdicts.push(v),
                    Ok(Ok(Err(e))) => return Err(error(StatusCode::BAD_REQUEST, e.to_string())),
                    Ok(Err(e)) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
                    Err(e) => return Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
                }
            }
        }
        None if alert["remediation"].as_bool() == Some(true) => {
            let source = &alert["source"];
            let overflow = Overflow {
                scenario: scenario.as_str().into(),
                scope: Scope::parse(source["scope"].as_str().unwrap_or_default()),
                value: source["value"].as_str().unwrap_or_default().to_owned(),
                group_key: source["value"].as_str().unwrap_or_default().to_owned(),
                events_count: u32::try_from(alert["events_count"].as_i64().unwrap_or(0)).unwrap_or(0),
                first_at: now,
                last_at: now,
                remediation: (!simulated).then_some(Remediation { kind: DecisionType::Ban, duration: None }),
                confidence: 0,
                labels: Arc::new(BTreeMap::new()),
            };
            match lapi
                .decisions
                .send(ApplyForeignOverflow { overflow, origin: Origin::from("crowdsec") })
                .await
            {
                Ok(Ok(v)) => verdicts.push(v),
                Ok(Err(e)) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
                Err(e) => return Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
            }
        }
        None => {}
    }
    Ok(verdicts.iter().filter_map(Verdict::decision).map(|d| json::value(d, now)).collect())
}

/// `GET /v1/alerts`: the newest alerts matching the filters.
async fn list_alerts(req: HttpRequest, lapi: web::Data<Lapi>) -> HttpResponse {
    if let Err(r) = machine(&req, &lapi) {
        return r;
    }
    let pairs = match web::Query::<Vec<(String, String)>>::from_query(req.query_string()) {
        Ok(p) => p.into_inner(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed query string: {e}")),
    };
    let filter = match AlertFilter::parse(&pairs, (lapi.clock)()) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let alerts = lapi.alerts.clone();
    let limit = filter.limit;
    let all = web::block(move || alerts.newest(KEEP_ALERTS as usize)).await.unwrap_or_default();
    let book = lapi.book.read();
    let now = (lapi.clock)();
    let out: Vec<&Value> = all.iter().filter(|a| filter.admits(a, &book, now)).take(limit).collect();
    if req.method() == actix_web::http::Method::HEAD {
        return HttpResponse::Ok().finish();
    }
    if out.is_empty() {
        return HttpResponse::Ok().content_type("application/json").body("null");
    }
    HttpResponse::Ok().json(out)
}

/// Filters of `GET /v1/alerts`.
#[derive(Debug, Default)]
struct AlertFilter {
    scope: Option<String>,
    value: Option<String>,
    scenario: Option<String>,
    ip: Option<IpAddr>,
    range: Option<IpNet>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    simulated: Option<bool>,
    has_active_decision: Option<bool>,
    decision_type: Option<String>,
    origin: Option<String>,
    limit: usize,
}

impl AlertFilter {
    fn parse(pairs: &[(String, String)], now: Timestamp) -> Result<Self, String> {
        let mut f = AlertFilter { limit: 100, ..AlertFilter::default() };
        let ago = |k: &str, v: &str| {
            palisade_proto::time::parse_duration(v)
                .map(|d| now.saturating_sub(d))
                .map_err(|e| format!("{k}: {e}"))
        };
        let boolean = |k: &str, v: &str| match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("{k}: {v:?} is not a boolean")),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "scope" => f.scope = Some(v.clone()),
                "value" => f.value = Some(v.clone()),
                "scenario" => f.scenario = Some(v.clone()),
                "ip" => f.ip = Some(v.parse().map_err(|_| format!("ip: {v:?} is not an IP address"))?),
                "range" => {
                    f.range = Some(v.parse().map_err(|_| format!("range: {v:?} is not a CIDR range"))?)
                }
                "since" => f.since = Some(ago(k, v)?),
                "until" => f.until = Some(ago(k, v)?),
                "simulated" => f.simulated = Some(boolean(k, v)?),
                "has_active_decision" => f.has_active_decision = Some(boolean(k, v)?),
                "decision_type" => f.decision_type = Some(v.clone()),
                "origin" => f.origin = Some(v.clone()),
                "limit" => f.limit = v.parse().map_err(|_| format!("limit: {v:?} is not a number"))?,
                // cscli asks for the community list's alerts too: Palisade keeps none here.
                "include_capi" => {
                    boolean(k, v)?;
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(f)
    }

    fn admits(&self, a: &Value, book: &palisade_actors::decision::DecisionBook, now: Timestamp) -> bool {
        let source = &a["source"];
        let s = |k: &str| source[k].as_str().unwrap_or_default();
        if self.scope.as_ref().is_some_and(|x| !x.eq_ignore_ascii_case(s("scope"))) {
            return false;
        }
        if self.value.as_ref().is_some_and(|x| x != s("value")) {
            return false;
        }
        if self.scenario.as_ref().is_some_and(|x| a["scenario"].as_str() != Some(x.as_str())) {
            return false;
        }
        let net = palisade_proto::decision::parse_target(&Scope::parse(s("scope")), s("value")).ok();
        if let Some(ip) = self.ip {
            if !net.is_some_and(|n| n.contains(&ip)) {
                return false;
            }
        }
        if let Some(range) = self.range {
            if !net.is_some_and(|n| range.contains(&n)) {
                return false;
            }
        }
        let created = a["created_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| Timestamp(t.timestamp_millis()));
        if self.since.is_some_and(|t| created.is_none_or(|c| c < t)) {
            return false;
        }
        if self.until.is_some_and(|t| created.is_none_or(|c| c > t)) {
            return false;
        }
        if self.simulated.is_some_and(|x| a["simulated"].as_bool() != Some(x)) {
            return false;
        }
        let decisions = a["decisions"].as_array().map(Vec::as_slice).unwrap_or_default();
        if self
            .decision_type
            .as_ref()
            .is_some_and(|t| !decisions.iter().any(|d| d["type"].as_str() == Some(t.as_str())))
        {
            return false;
        }
        if self
            .origin
            .as_ref()
            .is_some_and(|o| !decisions.iter().any(|d| d["origin"].as_str() == Some(o.as_str())))
        {
            return false;
        }
        if let Some(want) = self.has_active_decision {
            let active = decisions
                .iter()
                .filter_map(|d| d["id"].as_u64())
                .any(|id| book.is_active(id) && book.get(id).is_some_and(|d| d.is_active(now)));
            if active != want {
                return false;
            }
        }
        true
    }
}

/// `DELETE /v1/decisions`: ends the decisions the filters select.
pub async fn delete_decisions(req: HttpRequest, lapi: web::Data<Lapi>) -> HttpResponse {
    if let Err(r) = machine(&req, &lapi) {
        return r;
    }
    let pairs = match web::Query::<Vec<(String, String)>>::from_query(req.query_string()) {
        Ok(p) => p.into_inner(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed query string: {e}")),
    };
    let mut filter = DecisionFilter::default();
    for (k, v) in &pairs {
        match k.as_str() {
            "ip" => match v.parse::<IpAddr>() {
                Ok(ip) => filter.ip = Some(ip),
                Err(_) => return error(StatusCode::BAD_REQUEST, format!("ip: {v:?} is not an IP address")),
            },
            "range" => match v.parse::<IpNet>() {
                Ok(n) => filter.range = Some(n),
                Err(_) => return error(StatusCode::BAD_REQUEST, format!("range: {v:?} is not a CIDR range")),
            },
            "scope" | "scopes" => filter.scope = Some(Scope::parse(v)),
            "value" => filter.value = Some(v.clone()),
            "type" => filter.kind = Some(DecisionType::from(v.as_str())),
            "scenario" => filter.scenario = Some(v.clone()),
            "origin" => filter.origin = Some(Origin::from(v.as_str())),
            "contains" => {}
            other => return error(StatusCode::BAD_REQUEST, format!("unknown parameter {other:?}")),
        }
    }
    end_decisions(&lapi, filter).await
}

async fn delete_decision(req: HttpRequest, path: web::Path<String>, lapi: web::Data<Lapi>) -> HttpResponse {
    if let Err(r) = machine(&req, &lapi) {
        return r;
    }
    let Ok(id) = path.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, format!("decision id {:?} is not a number", path.as_str()));
    };
    end_decisions(&lapi, DecisionFilter { id: Some(id), ..DecisionFilter::default() }).await
}

async fn end_decisions(lapi: &Lapi, filter: DecisionFilter) -> HttpResponse {
    match lapi.decisions.send(DeleteDecisions(filter)).await {
        Ok(Ok(ended)) => HttpResponse::Ok().json(json!({ "nbDeleted": ended.len().to_string() })),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
