//! The Local API on a real node: bouncer keys, query and stream mode, bad input, and the
//! shapes of every response checked against CrowdSec's swagger file.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;

/// The swagger file of CrowdSec's Local API, kept in shared/reference.
fn swagger() -> serde_yaml::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/crowdsec-localapi-swagger.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap()
}

/// Checks `v` against swagger definition `name`: required fields present, and every
/// field present has the declared JSON type. Returns the field names it checked.
fn conforms(spec: &serde_yaml::Value, name: &str, v: &Value) {
    let def = &spec["definitions"][name];
    assert!(def.is_mapping(), "no definition {name}");
    let obj = v.as_object().unwrap_or_else(|| panic!("{name}: not an object: {v}"));
    if let Some(required) = def["required"].as_sequence() {
        for r in required {
            let r = r.as_str().unwrap();
            assert!(obj.contains_key(r), "{name}: missing required field {r}: {v}");
        }
    }
    let props = def["properties"].as_mapping().unwrap();
    for (field, value) in obj {
        let prop = props
            .get(serde_yaml::Value::String(field.clone()))
            .unwrap_or_else(|| panic!("{name}: field {field} is not in the swagger definition"));
        let resolved = match prop["$ref"].as_str() {
            Some(r) => &spec["definitions"][r.trim_start_matches("#/definitions/")],
            None => prop,
        };
        let ok = match resolved["type"].as_str() {
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some("array") => value.is_array() || value.is_null(),
            Some("object") | None => true,
            Some(other) => panic!("unhandled swagger type {other}"),
        };
        assert!(ok, "{name}.{field}: {value} is not a {:?}", prop["type"]);
    }
}

fn get(addr: SocketAddr, target: &str, key: &str) -> Http {
    http(addr, "GET", target, &[("X-Api-Key", key)], b"")
}

fn list_of(v: &Value) -> Vec<&Value> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().collect(),
        other => panic!("not a list: {other}"),
    }
}

#[test]
fn bouncer_api_query_stream_and_errors() {
    let spec = swagger();
    let dir = NodeDir::new();
    dir.write_config("");
    // A key made while no node runs (the CLI writes the database) works once it starts.
    let key = add_bouncer(&dir, "fw-offline");
    let node = dir.start();
    let api = node.api();
    let key2 = add_bouncer(&dir, "nginx");

    let health = http(api, "GET", "/health", &[], b"");
    assert_eq!((health.status, health.json()), (200, serde_json::json!({"status": "up"})));

    for bad in ["", "not-a-key"] {
        let r = get(api, "/v1/decisions", bad);
        assert_eq!(r.status, 403);
        assert_eq!(r.json(), serde_json::json!({"message": "access forbidden"}));
        conforms(&spec, "ErrorResponse", &r.json());
    }
    let r = http(api, "GET", "/v1/decisions/stream", &[], b"");
    assert_eq!(r.status, 403, "no key");

    // Nothing banned: CrowdSec's null.
    let r = get(api, "/v1/decisions?ip=192.0.2.7", &key);
    assert_eq!((r.status, r.text().as_str()), (200, "null"));

    // Bans by hand: an address, a range, an IPv6 address.
    for args in [
        &["decisions", "add", "--ip", "192.0.2.7", "--duration", "1h"][..],
        &["decisions", "add", "--range", "198.51.100.0/24", "--duration", "2h", "--reason", "bad net"],
        &["decisions", "add", "--ip", "2001:db8::5", "--duration", "30m", "--type", "captcha"],
    ] {
        let out = dir.cli(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    let r = get(api, "/v1/decisions?ip=192.0.2.7", &key);
    assert_eq!(r.status, 200);
    let v = r.json();
    let list = list_of(&v);
    assert_eq!(list.len(), 1);
    conforms(&spec, "Decision", list[0]);
    assert_eq!(list[0]["value"], "192.0.2.7");
    assert_eq!(list[0]["scope"], "Ip");
    assert_eq!(list[0]["type"], "ban");
    assert_eq!(list[0]["origin"], "cli");
    let duration = list[0]["duration"].as_str().unwrap();
    assert!(duration.starts_with("59m") || duration == "1h0m0s", "{duration}");
    assert!(list[0].get("uuid").is_none(), "query mode does not send uuids");

    // An address inside a banned range; a range query either way; IPv6; filters.
    let v = get(api, "/v1/decisions?ip=198.51.100.77", &key).json();
    assert_eq!(list_of(&v).len(), 1);
    assert_eq!(list_of(&v)[0]["value"], "198.51.100.0/24");
    assert_eq!(list_of(&v)[0]["scope"], "Range");
    let v = get(api, "/v1/decisions?range=198.51.100.128/25", &key).json();
    assert_eq!(list_of(&v).len(), 1, "the /24 contains the /25");
    let v = get(api, "/v1/decisions?range=198.51.0.0/16&contains=false", &key).json();
    assert_eq!(list_of(&v).len(), 1, "the /24 is inside the /16");
    let v = get(api, "/v1/decisions?range=192.0.2.0/24&contains=false", &key).json();
    assert_eq!(list_of(&v).len(), 1, "the address is inside the /24");
    let v = get(api, "/v1/decisions?ip=2001:db8::5&type=captcha", &key).json();
    assert_eq!(list_of(&v).len(), 1);
    let v = get(api, "/v1/decisions?ip=2001:db8::5&type=ban", &key).json();
    assert!(v.is_null());
    let v = get(api, "/v1/decisions?scope=range", &key).json();
    assert_eq!(list_of(&v).len(), 1);
    let v = get(api, "/v1/decisions?scenarios_containing=BAD", &key).json();
    assert_eq!(list_of(&v).len(), 1);
    let v = get(api, "/v1/decisions?scenarios_not_containing=manual,bad", &key).json();
    assert!(v.is_null());
    let v = get(api, "/v1/decisions?origins=palisade", &key).json();
    assert!(v.is_null());
    let v = get(api, "/v1/decisions?value=192.0.2.7&scope=Ip", &key2).json();
    assert_eq!(list_of(&v).len(), 1);
    let v = get(api, "/v1/decisions", &key).json();
    assert_eq!(list_of(&v).len(), 3);
    let head = http(api, "HEAD", "/v1/decisions?ip=192.0.2.7", &[("X-Api-Key", &key)], b"");
    assert_eq!((head.status, head.body.len()), (200, 0));

    // Bad input: 400 with a message, 404, 405.
    for target in [
        "/v1/decisions?ip=999.1.1.1",
        "/v1/decisions?range=10.0.0.0/40",
        "/v1/decisions?contains=perhaps",
        "/v1/decisions?bogus=1",
        "/v1/decisions?limit=-3",
        "/v1/decisions/stream?startup=yes",
        "/v1/decisions/stream?scopes=ip&nonsense",
    ] {
        let r = get(api, target, &key);
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        conforms(&spec, "ErrorResponse", &r.json());
        assert!(!r.json()["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(get(api, "/v1/nothing", &key).status, 404);
    assert_eq!(http(api, "POST", "/v1/decisions/stream", &[("X-Api-Key", &key)], b"{}").status, 405);

    // Stream: startup gets everything (ip and range scopes), then deltas.
    let r = get(api, "/v1/decisions/stream?startup=true", &key);
    assert_eq!(r.status, 200);
    let v = r.json();
    conforms(&spec, "DecisionsStreamResponse", &v);
    let new = list_of(&v["new"]);
    assert_eq!(new.len(), 3);
    for d in &new {
        conforms(&spec, "Decision", d);
        assert!(d["uuid"].is_string(), "the stream sends uuids");
    }
    let v = get(api, "/v1/decisions/stream", &key).json();
    assert_eq!(v, serde_json::json!({"new": null, "deleted": null}), "nothing changed since");
    // Another bouncer has its own cursor: its first pull without startup is everything.
    let v = get(api, "/v1/decisions/stream?scopes=range", &key2).json();
    assert_eq!(list_of(&v["new"]).len(), 1, "scopes filter");

    let out = dir.cli(&["decisions", "delete", "--ip", "192.0.2.7"]);
    assert!(out.status.success());
    let out = dir.cli(&["decisions", "add", "--ip", "203.0.113.9", "--duration", "10m"]);
    assert!(out.status.success());
    let v = get(api, "/v1/decisions/stream", &key).json();
    let new: Vec<&str> = list_of(&v["new"]).iter().map(|d| d["value"].as_str().unwrap()).collect();
    let deleted: Vec<&str> = list_of(&v["deleted"]).iter().map(|d| d["value"].as_str().unwrap()).collect();
    assert_eq!(new, vec!["203.0.113.9"]);
    assert_eq!(deleted, vec!["192.0.2.7"]);
    for d in list_of(&v["deleted"]) {
        conforms(&spec, "Decision", d);
    }

    // The cursor survives a restart of the node.
    node.stop();
    let node = dir.start();
    let api = node.api();
    let v = get(api, "/v1/decisions/stream", &key).json();
    assert!(list_of(&v["new"]).is_empty(), "no re-sent decisions after a restart: {v}");

    // `bouncers list` shows each instance's address and last pull.
    let out = dir.cli(&["bouncers", "list", "--json"]);
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let fw = list.as_array().unwrap().iter().find(|b| b["name"] == "fw-offline").unwrap();
    let inst = &fw["instances"]["127.0.0.1"];
    assert_eq!(inst["address"], "127.0.0.1");
    assert_eq!(inst["user_agent"], "palisade-tests");
    assert!(inst["last_pull"].is_i64(), "{fw}");
    let table = dir.cli(&["bouncers", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("fw-offline") && text.contains("127.0.0.1"), "{text}");

    // Deleting a bouncer revokes its key at once.
    assert!(dir.cli(&["bouncers", "delete", "nginx"]).status.success());
    assert_eq!(get(api, "/v1/decisions", &key2).status, 403);
    let dup = dir.cli(&["bouncers", "add", "fw-offline"]);
    assert!(!dup.status.success(), "names are unique");
    node.stop();
}

#[test]
fn slow_clients_do_not_block_others() {
    use std::io::Write;
    let dir = NodeDir::new();
    dir.write_config("");
    let node = dir.start();
    let api = node.api();
    let key = add_bouncer(&dir, "b");
    // Connections that send half a request and stall, more than the workers.
    let mut stalled = Vec::new();
    for _ in 0..32 {
        let mut s = std::net::TcpStream::connect(api).unwrap();
        s.write_all(b"GET /v1/decisions HTTP/1.1\r\nHost: x\r\n").unwrap();
        stalled.push(s);
    }
    let started = std::time::Instant::now();
    let r = get(api, "/v1/decisions", &key);
    assert_eq!(r.status, 200);
    // Stalled clients are cut off at the 5 s request timeout; others never wait for that.
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "a stalled client held up others");
    // An oversized header block is refused, not buffered: an error status, or the
    // connection closed while we were still sending.
    let mut s = std::net::TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let big =
        format!("GET /v1/decisions HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n", "x".repeat(256 * 1024));
    let _ = s.write_all(big.as_bytes());
    let mut reply = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut reply);
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    drop(stalled);
    node.stop();
}

/// An alert as a CrowdSec agent pushes it (no decisions: the Local API's profiles decide).
fn agent_alert(ip: &str) -> Value {
    serde_json::json!({
        "capacity": 5, "decisions": null, "events": [
            {"meta": [{"key": "target_user", "value": "root"}, {"key": "service", "value": "ssh"}],
             "timestamp": "2026-12-02T10:00:00Z"}],
        "events_count": 6, "labels": null, "leakspeed": "10s", "message": format!("Ip {ip} performed 'crowdsecurity/ssh-bf' (6 events over 2s)"),
        "remediation": true, "scenario": "crowdsecurity/ssh-bf", "scenario_hash": "4441dcff07020f6690d998b7101e642359ba405c2abb83565bbbdcee36de280f",
        "scenario_version": "0.1", "simulated": false,
        "source": {"as_name": "", "cn": "", "ip": ip, "latitude": 0, "longitude": 0, "range": "", "scope": "Ip", "value": ip},
        "start_at": "2026-12-02T10:00:00Z", "stop_at": "2026-12-02T10:00:02Z"
    })
}

#[test]
fn machines_register_log_in_push_alerts_and_delete_decisions() {
    let spec = swagger();
    let dir = NodeDir::new();
    dir.write_config("");
    let node = dir.start();
    let api = node.api();
    let json_body = |v: &Value| serde_json::to_vec(v).unwrap();
    let ct = ("Content-Type", "application/json");

    // Registration, then login refused until the operator validates the machine.
    let creds = serde_json::json!({"machine_id": "agent-1", "password": "a-long-random-password"});
    assert_eq!(http(api, "POST", "/v1/watchers", &[ct], &json_body(&creds)).status, 201);
    assert_eq!(http(api, "POST", "/v1/watchers", &[ct], &json_body(&creds)).status, 403, "exists already");
    let login = serde_json::json!({"machine_id": "agent-1", "password": "a-long-random-password", "scenarios": ["crowdsecurity/ssh-bf"]});
    let r = http(api, "POST", "/v1/watchers/login", &[ct], &json_body(&login));
    assert_eq!(r.status, 403, "not validated yet: {}", r.text());
    let out = dir.cli(&["machines", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("waiting"));
    assert!(dir.cli(&["machines", "validate", "agent-1"]).status.success());
    let bad = serde_json::json!({"machine_id": "agent-1", "password": "wrong"});
    assert_eq!(http(api, "POST", "/v1/watchers/login", &[ct], &json_body(&bad)).status, 403);
    let r = http(api, "POST", "/v1/watchers/login", &[ct], &json_body(&login));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    conforms(&spec, "WatcherAuthResponse", &v);
    let token = v["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let auth = ("Authorization", bearer.as_str());
    assert_eq!(http(api, "GET", "/v1/heartbeat", &[auth], b"").status, 200);
    assert_eq!(http(api, "GET", "/v1/heartbeat", &[("Authorization", "Bearer x.y.z")], b"").status, 401);
    assert_eq!(http(api, "GET", "/v1/alerts", &[], b"").status, 401);
    assert_eq!(http(api, "POST", "/v1/watchers/login", &[ct], b"{not json").status, 400);

    // An agent's alert: the node's profiles ban the source, origin crowdsec.
    let r = http(
        api,
        "POST",
        "/v1/alerts",
        &[auth, ct],
        &json_body(&serde_json::json!([agent_alert("192.0.2.44")])),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let ids = r.json();
    assert_eq!(ids.as_array().unwrap().len(), 1);
    assert!(ids[0].is_string());
    let list = wait_for_decisions(&dir, std::time::Duration::from_secs(5), |l| {
        values(l).contains(&"192.0.2.44".to_owned())
    });
    let d = list.iter().find(|d| d["value"] == "192.0.2.44").unwrap();
    assert_eq!(
        (d["origin"].as_str(), d["scenario"].as_str()),
        (Some("crowdsec"), Some("crowdsecurity/ssh-bf"))
    );

    // A cscli-style alert carries its decision.
    let mut manual = agent_alert("198.51.100.45");
    manual["remediation"] = Value::Bool(false);
    manual["decisions"] = serde_json::json!([{"duration": "2h", "origin": "cscli", "scenario": "manual 'ban' from 'admin'",
        "scope": "Ip", "type": "ban", "value": "198.51.100.45"}]);
    let r = http(api, "POST", "/v1/alerts", &[auth, ct], &json_body(&serde_json::json!([manual])));
    assert_eq!(r.status, 201, "{}", r.text());
    let key = add_bouncer(&dir, "fw");
    let v = get(api, "/v1/decisions?ip=198.51.100.45", &key).json();
    assert_eq!(list_of(&v).len(), 1);
    assert_eq!(list_of(&v)[0]["origin"], "cscli");
    let duration = list_of(&v)[0]["duration"].as_str().unwrap().to_owned();
    assert!(duration.starts_with("1h59m") || duration == "2h0m0s", "{duration}");

    // Malformed alerts: 400 naming the field.
    let mut broken = agent_alert("192.0.2.46");
    broken.as_object_mut().unwrap().remove("scenario");
    let r = http(api, "POST", "/v1/alerts", &[auth, ct], &json_body(&serde_json::json!([broken])));
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("scenario"), "{}", r.text());
    assert_eq!(http(api, "POST", "/v1/alerts", &[auth, ct], b"{}").status, 400);

    // Listing alerts, with filters.
    let r = http(api, "GET", "/v1/alerts?scenario=crowdsecurity/ssh-bf&ip=192.0.2.44", &[auth], b"");
    assert_eq!(r.status, 200);
    let v = r.json();
    let alerts = v.as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    conforms(&spec, "Alert", &alerts[0]);
    assert_eq!(alerts[0]["machine_id"], "agent-1");
    assert_eq!(alerts[0]["decisions"][0]["value"], "192.0.2.44");
    let r = http(api, "GET", "/v1/alerts?has_active_decision=true&origin=cscli", &[auth], b"");
    assert_eq!(r.json().as_array().map(Vec::len), Some(1));
    assert_eq!(http(api, "GET", "/v1/alerts?bogus=1", &[auth], b"").status, 400);

    // Deleting decisions, by filter and by id.
    let r = http(api, "DELETE", "/v1/decisions?ip=192.0.2.44", &[auth], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"nbDeleted": "1"}));
    conforms(&spec, "DeleteDecisionResponse", &r.json());
    let id = list_of(&get(api, "/v1/decisions?ip=198.51.100.45", &key).json())[0]["id"].as_u64().unwrap();
    let r = http(api, "DELETE", &format!("/v1/decisions/{id}"), &[auth], b"");
    assert_eq!(r.json(), serde_json::json!({"nbDeleted": "1"}));
    assert!(get(api, "/v1/decisions", &key).json().is_null());
    assert_eq!(http(api, "DELETE", "/v1/decisions?colour=red", &[auth], b"").status, 400);

    // A deleted machine's token stops working.
    assert!(dir.cli(&["machines", "delete", "agent-1"]).status.success());
    assert_eq!(http(api, "GET", "/v1/heartbeat", &[auth], b"").status, 401);
    node.stop();
}

#[test]
fn tls_when_configured() {
    let dir = NodeDir::new();
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    dir.write_config(&format!(
        "[api]\nlisten = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        cert.display().to_string(),
        key.display().to_string()
    ));
    let node = dir.start();
    let api = node.api();
    let key_ = add_bouncer(&dir, "tls");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&cert)
        .args([
            "-H",
            &format!("X-Api-Key: {key_}"),
            &format!("https://127.0.0.1:{}/v1/decisions", api.port()),
        ])
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "null");
    node.stop();

    // A key that does not match the certificate is a clear error at start.
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let out = dir.cli(&["run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.tls_key"), "{err}");
}
