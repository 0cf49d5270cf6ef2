//! The central tier end to end: a real `palisade central run` process on loopback,
//! sensors as real QUIC clients (`palisade central sensor` processes, and a raw client
//! for bad input) sending from different 127.0.0.x addresses that the fixture ASN
//! database maps to different networks.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::tier::*;

use palisade_proto::central::{CentralMessage, EnrollToken, RejectReason, Report, SensorHello};
use palisade_proto::{Epoch, HashKey, Message, NodeKey, Signal, SignedSignal};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `palisade central sensor` process.
struct Sensor {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Sensor {
    fn start(tier: SocketAddr, token: &str, data_dir: &Path, bind: &str) -> Sensor {
        let mut child = Command::new(common::bin())
            .args([
                "central",
                "sensor",
                "--tier",
                &tier.to_string(),
                "--token",
                token,
                "--bind",
                bind,
                "--data-dir",
            ])
            .arg(data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        let stdin = child.stdin.take();
        Sensor { child, stdin, events }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.events.lock().unwrap()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events: {:#?}",
                self.events.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn last_stats(&self) -> Value {
        self.events
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["event"] == "stats")
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits for the sensor's session, then until `n` signals are acknowledged.
    fn wait_accepted(&self, n: u64) {
        self.wait(&format!("{n} accepted"), Duration::from_secs(20), |events| {
            events.iter().any(|e| e["event"] == "stats" && e["stats"]["accepted"].as_u64() >= Some(n))
        });
    }

    fn wait_connected(&self) {
        self.wait("a session", Duration::from_secs(20), |events| {
            events.iter().any(|e| e["event"] == "stats" && e["stats"]["connected"] == true)
        });
    }

    /// Asks whether the community list this sensor holds has `ip`.
    fn holds(&mut self, ip: &str) -> bool {
        let before = self.matches(ip);
        self.send(&format!("? {ip}"));
        let answered =
            |events: &[Value]| events.iter().filter(|e| e["event"] == "match" && e["ip"] == ip).count();
        self.wait("an answer", Duration::from_secs(10), |events| answered(events) > before);
        let events = self.events.lock().unwrap();
        events.iter().rev().find(|e| e["event"] == "match" && e["ip"] == ip).unwrap()["listed"] == true
    }

    fn matches(&self, ip: &str) -> usize {
        self.events.lock().unwrap().iter().filter(|e| e["event"] == "match" && e["ip"] == ip).count()
    }

    fn deltas(&self) -> Vec<Value> {
        self.events.lock().unwrap().iter().filter(|e| e["event"] == "delta").cloned().collect()
    }

    /// Closes stdin and waits for a clean exit (every report acknowledged).
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "sensor exited with {status}");
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn listed(tier: &Tier, ip: &str) -> bool {
    tier.json(&["explain", ip, "--json"]).as_array().unwrap().iter().any(|e| e["listed"] == true)
}

/// A raw QUIC client, to send what no honest sensor sends.
struct Raw {
    rt: tokio::runtime::Runtime,
    key: NodeKey,
    tier_key: palisade_proto::NodeId,
    tier: SocketAddr,
}

impl Raw {
    fn new(tier: SocketAddr, token: &str) -> Raw {
        let token = EnrollToken::from_text(token).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Raw { rt, key: NodeKey::generate(&mut rand::rngs::OsRng), tier_key: token.tier, tier }
    }

    /// One session: hello with `enroll`, then `frames`; returns every frame the tier sent
    /// on the session stream until it closed it or went quiet.
    fn session(&self, enroll: Option<[u8; 32]>, frames: Vec<Vec<u8>>) -> Vec<CentralMessage> {
        self.rt.block_on(async {
            let verifier = Arc::new(palisade_gossip::tls::NodeVerifier::pinned(self.tier_key));
            let (_, crypto) =
                palisade_gossip::tls::quic_crypto_with(&self.key, verifier, b"palisade-central/1").unwrap();
            let mut endpoint = quinn::Endpoint::client("127.0.0.9:0".parse().unwrap()).unwrap();
            endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            let conn = endpoint.connect(self.tier, "palisade-node").unwrap().await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let hello =
                Message::Central(CentralMessage::Hello(SensorHello { enroll, version: "test".into() }));
            palisade_gossip::net::write_frame(&mut send, &hello.encode().unwrap()).await.unwrap();
            let mut out = Vec::new();
            let first = palisade_gossip::net::read_frame(&mut recv, 1 << 20).await.unwrap();
            let Ok(Message::Central(first)) = Message::decode(&first) else {
                panic!("not a central message")
            };
            let welcomed = matches!(first, CentralMessage::Welcome(_));
            out.push(first);
            if welcomed {
                for f in &frames {
                    if palisade_gossip::net::write_frame(&mut send, f).await.is_err() {
                        break;
                    }
                }
                while let Ok(Ok(bytes)) = tokio::time::timeout(
                    Duration::from_secs(3),
                    palisade_gossip::net::read_frame(&mut recv, 1 << 20),
                )
                .await
                {
                    if let Ok(Message::Central(m)) = Message::decode(&bytes) {
                        out.push(m);
                    }
                }
            }
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            out
        })
    }
}

fn signal(key: &NodeKey, secret: &[u8; 32], epoch_secs: u32, seq: u64, ip: &str) -> SignedSignal {
    let now = palisade_gossip::net::wall_clock();
    let epoch = Epoch::containing(now, epoch_secs);
    Signal {
        origin: key.node_id(),
        seq,
        epoch,
        hashed_ip: HashKey::derive(secret, epoch).hash(ip.parse::<IpAddr>().unwrap()),
        scenario: "palisade/ssh-bf".into(),
        confidence: 3,
        observed_at: now,
        events_count: 6,
        sealed_ip: None,
    }
    .sign(key)
}

fn report(batch: u64, signals: Vec<SignedSignal>) -> Vec<u8> {
    Message::Central(CentralMessage::Report(Report { batch, signals })).encode().unwrap()
}

#[test]
fn community_list_from_diverse_networks_reaches_opted_in_sensors_only() {
    let mut tier = Tier::new();
    let token_a = tier.tenant("fleet-a", true);
    let token_b = tier.tenant("fleet-b", true);
    let token_c = tier.tenant("fleet-c", false);
    tier.start();
    let addr = tier.addr();
    let dirs = tempfile::tempdir().unwrap();
    let dir = |name: &str| dirs.path().join(name);

    let mut a1 = Sensor::start(addr, &token_a, &dir("a1"), "127.0.0.1");
    let mut a2 = Sensor::start(addr, &token_a, &dir("a2"), "127.0.0.2");
    let mut b3 = Sensor::start(addr, &token_b, &dir("b3"), "127.0.0.3");
    let mut c4 = Sensor::start(addr, &token_c, &dir("c4"), "127.0.0.4");
    let mut c5 = Sensor::start(addr, &token_c, &dir("c5"), "127.0.0.5");
    let mut shared: Vec<Sensor> = (20..26)
        .map(|i| Sensor::start(addr, &token_a, &dir(&format!("s{i}")), &format!("127.0.0.{i}")))
        .collect();
    for s in [&a1, &a2, &b3, &c4, &c5].into_iter().chain(shared.iter()) {
        s.wait_connected();
    }

    // One attacker seen from three networks: listed.
    for s in [&mut a1, &mut a2, &mut b3] {
        s.send("198.51.100.10 palisade/ssh-bf 3");
    }
    // Another seen by six sensors of one network: never listed.
    for s in shared.iter_mut() {
        s.send("198.51.100.20 palisade/ssh-bf 3");
    }
    // A third seen by one community sensor and two sensors of a tenant that did not opt
    // in: their reports do not count, so it is not listed.
    for s in [&mut a1, &mut c4, &mut c5] {
        s.send("198.51.100.30 palisade/ssh-bf 3");
    }
    for s in shared.iter() {
        s.wait_accepted(1);
    }
    a1.wait_accepted(2);
    for s in [&a2, &b3, &c4] {
        s.wait_accepted(1);
    }
    c5.wait_accepted(1);
    wait_until("the first attacker listed", Duration::from_secs(10), || listed(&tier, "198.51.100.10"));
    assert!(!listed(&tier, "198.51.100.20"), "six sensors of one ASN must not list");
    assert!(!listed(&tier, "198.51.100.30"), "a tenant that did not opt in must not contribute");
    let explained = tier.json(&["explain", "198.51.100.30", "--json"]);
    let groups: Vec<&Value> =
        explained.as_array().unwrap().iter().filter_map(|e| e["groups"].as_array()).flatten().collect();
    assert_eq!(groups.len(), 1, "only fleet-a's network counts: {explained:#}");
    let single = tier.json(&["explain", "198.51.100.20", "--json"]);
    let single_groups: Vec<&Value> =
        single.as_array().unwrap().iter().filter_map(|e| e["groups"].as_array()).flatten().collect();
    assert_eq!(single_groups.len(), 1, "{single:#}");
    assert_eq!(single_groups[0]["group"], "AS64520");
    assert!(single_groups[0]["contribution"].as_f64().unwrap() <= 1.0);

    // Every opted-in sensor holds the entry; the others receive nothing.
    for s in [&mut a1, &mut a2, &mut b3].into_iter().chain(shared.iter_mut()) {
        wait_until("the entry at a subscriber", Duration::from_secs(10), || s.holds("198.51.100.10"));
        assert!(!s.holds("198.51.100.20"));
        assert!(!s.holds("198.51.100.30"));
    }
    for c in [&mut c4, &mut c5] {
        assert!(!c.holds("198.51.100.10"));
        assert!(c.deltas().is_empty(), "a tenant that did not opt in received deltas");
        assert_eq!(c.last_stats()["stats"]["community"], false);
    }

    // A subscriber that goes away resumes from its version: it gets only the changes
    // after it, not a snapshot.
    let a2_version = a2.deltas().last().unwrap()["version"].as_u64().unwrap();
    a2.finish();
    for s in [&mut a1, &mut b3, &mut shared[0]] {
        s.send("198.51.100.40 palisade/http-probing 3");
    }
    wait_until("the second attacker listed", Duration::from_secs(10), || listed(&tier, "198.51.100.40"));
    let a2 = Sensor::start(addr, &token_a, &dir("a2"), "127.0.0.2");
    a2.wait("the resumed delta", Duration::from_secs(20), |events| {
        events.iter().any(|e| e["event"] == "delta" && e["added"].as_array().is_some_and(|a| !a.is_empty()))
    });
    let resumed = a2.deltas();
    assert_eq!(resumed[0]["kind"], "changes", "{resumed:#?}");
    assert_eq!(resumed[0]["version"].as_u64().unwrap(), a2_version + 1, "{resumed:#?}");
    // A new sensor with no history, further behind than the delta log (one delta kept
    // here) reaches, gets the whole list as a snapshot.
    let mut fresh = Sensor::start(addr, &token_b, &dir("fresh"), "127.0.0.6");
    wait_until("a snapshot", Duration::from_secs(10), || fresh.holds("198.51.100.40"));
    assert_eq!(fresh.deltas()[0]["kind"], "snapshot");
    assert!(fresh.holds("198.51.100.10"));

    // Status and metrics agree.
    let status = tier.status();
    assert_eq!(status["listed"], 2);
    assert_eq!(status["tenants"], 3);
    assert_eq!(status["tenants_community"], 2);
    assert!(status["counters"]["accepted_private"].as_u64().unwrap() >= 2);
    let metrics =
        common::http(tier.listening("central metrics endpoint"), "GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("palisade_central_listed_entries 2"), "{metrics}");
    assert!(metrics.contains("palisade_central_tenants{community=\"false\"} 1"), "{metrics}");
    let tenants = tier.json(&["tenant", "list", "--json"]);
    let c = tenants.as_array().unwrap().iter().find(|t| t["name"] == "fleet-c").unwrap();
    assert_eq!((c["community"].clone(), c["sensors"].clone()), (Value::Bool(false), Value::from(2)));
}

#[test]
fn bad_input_is_rejected_counted_and_a_restart_loses_nothing_acknowledged() {
    let mut tier = Tier::new();
    let token = tier.tenant("fleet-a", true);
    tier.start();
    let addr = tier.addr();

    // An unknown token (right tier key, wrong secret) is refused.
    let parsed = EnrollToken::from_text(&token).unwrap();
    let bogus = EnrollToken { tier: parsed.tier, secret: [0x5a; 32] };
    let raw = Raw::new(addr, &bogus.to_text());
    let answer = raw.session(Some(bogus.secret), vec![]);
    assert!(
        matches!(&answer[0], CentralMessage::Refused(r) if r.code == palisade_proto::central::RefusalCode::UnknownToken),
        "{answer:?}"
    );
    // Not enrolled and no token: refused too.
    let answer = raw.session(None, vec![]);
    assert!(matches!(&answer[0], CentralMessage::Refused(_)), "{answer:?}");

    // An enrolled raw sensor sends good, forged, foreign, sealed and replayed signals.
    let mut raw = Raw::new(addr, &token);
    let welcome = match raw.session(Some(parsed.secret), vec![]).remove(0) {
        CentralMessage::Welcome(w) => w,
        other => panic!("{other:?}"),
    };
    let (secret, epoch_secs) = (welcome.hash_secret, welcome.epoch_secs);
    let good = signal(&raw.key, &secret, epoch_secs, 1, "203.0.113.1");
    let mut forged = signal(&raw.key, &secret, epoch_secs, 2, "203.0.113.2");
    forged.signal.events_count += 1;
    let other = NodeKey::generate(&mut rand::rngs::OsRng);
    let foreign = signal(&other, &secret, epoch_secs, 3, "203.0.113.3");
    let mut sealed = signal(&raw.key, &secret, epoch_secs, 4, "203.0.113.4").signal;
    sealed.sealed_ip = Some(palisade_proto::SealedIp { nonce: [1; 24], ciphertext: [2; 33] });
    let sealed = sealed.sign(&raw.key);
    let frames = vec![report(1, vec![good.clone(), forged, foreign, sealed]), report(2, vec![good])];
    let answer = raw.session(None, frames);
    let acks: Vec<_> =
        answer.iter().filter_map(|m| if let CentralMessage::Ack(a) = m { Some(a) } else { None }).collect();
    assert_eq!(acks.len(), 2, "{answer:?}");
    assert_eq!(acks[0].accepted, 1);
    let reasons: Vec<RejectReason> = acks[0].rejected.iter().map(|r| r.reason).collect();
    assert_eq!(reasons, vec![RejectReason::Forged, RejectReason::ForeignOrigin, RejectReason::SealedIp]);
    assert_eq!((acks[1].accepted, acks[1].rejected[0].reason), (0, RejectReason::Replayed));
    // A malformed frame ends the session.
    let answer = raw.session(None, vec![vec![1, 2, 3]]);
    assert!(answer.iter().all(|m| !matches!(m, CentralMessage::Ack(_))), "{answer:?}");

    let counters = tier.status()["counters"].clone();
    let rejected = counters["rejected"].as_array().unwrap();
    let count =
        |r: RejectReason| rejected[RejectReason::ALL.iter().position(|x| *x == r).unwrap()].as_u64().unwrap();
    assert_eq!(count(RejectReason::Forged), 1);
    assert_eq!(count(RejectReason::ForeignOrigin), 1);
    assert_eq!(count(RejectReason::SealedIp), 1);
    assert_eq!(count(RejectReason::Replayed), 1);
    assert!(counters["unknown_tokens"].as_u64().unwrap() >= 1);
    assert!(counters["malformed_frames"].as_u64().unwrap() >= 1);
    assert!(counters["strikes"].as_u64().unwrap() >= 4);
    // Nothing bad got anything listed.
    assert_eq!(tier.status()["listed"], 0);

    // Three networks list an attacker; then the tier is killed and restarted.
    let dirs = tempfile::tempdir().unwrap();
    let mut sensors: Vec<Sensor> = (1..=3)
        .map(|i| Sensor::start(addr, &token, &dirs.path().join(format!("s{i}")), &format!("127.0.0.{i}")))
        .collect();
    for s in sensors.iter_mut() {
        s.wait_connected();
        s.send("192.0.2.50 palisade/ssh-bf 3");
    }
    sensors[0].send("192.0.2.51 palisade/ssh-bf 3");
    sensors[0].wait_accepted(2);
    sensors[1].wait_accepted(1);
    sensors[2].wait_accepted(1);
    wait_until("listed", Duration::from_secs(10), || listed(&tier, "192.0.2.50"));
    let version = tier.status()["version"].as_u64().unwrap();
    tier.kill9();
    tier.start();
    assert!(listed(&tier, "192.0.2.50"), "a listing survives a restart");
    let explained = tier.json(&["explain", "192.0.2.51", "--json"]);
    let reports: usize = explained
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["groups"].as_array())
        .flatten()
        .map(|g| g["sensors"].as_array().unwrap().len())
        .sum();
    assert_eq!(reports, 1, "an acknowledged report survives a restart: {explained:#}");
    let status = tier.status();
    assert_eq!(status["version"].as_u64().unwrap(), version, "no spurious delta after a restart");
    assert_eq!(status["sensors"].as_u64().unwrap(), 4);
    // The replayed signal is still known after the restart: sequence numbers persisted.
    raw.tier = tier.addr();
    let again = report(3, vec![signal(&raw.key, &secret, epoch_secs, 1, "203.0.113.1")]);
    let answer = raw.session(None, vec![again]);
    let ack =
        answer.iter().find_map(|m| if let CentralMessage::Ack(a) = m { Some(a) } else { None }).unwrap();
    assert_eq!(ack.rejected[0].reason, RejectReason::Replayed);
}

#[test]
fn a_removed_tenant_is_cut_off_and_what_only_it_reported_is_delisted() {
    let mut tier = Tier::new();
    let token_gone = tier.tenant("leaving", true);
    let token_stay = tier.tenant("staying", true);
    tier.start();
    let addr = tier.addr();
    let dirs = tempfile::tempdir().unwrap();
    let dir = |name: &str| dirs.path().join(name);
    // Three sensors of the leaving tenant, in three networks, list an attacker alone;
    // a sensor of the staying tenant reports another address and follows the list.
    let mut leaving: Vec<Sensor> = (1..=3)
        .map(|i| Sensor::start(addr, &token_gone, &dir(&format!("l{i}")), &format!("127.0.0.{i}")))
        .collect();
    let mut staying = Sensor::start(addr, &token_stay, &dir("s"), "127.0.0.4");
    staying.wait_connected();
    for s in leaving.iter_mut() {
        s.wait_connected();
        s.send("198.51.100.70 palisade/ssh-bf 3");
    }
    staying.send("198.51.100.71 palisade/ssh-bf 3");
    for s in &leaving {
        s.wait_accepted(1);
    }
    staying.wait_accepted(1);
    wait_until("the entry at the staying sensor", Duration::from_secs(10), || staying.holds("198.51.100.70"));

    let removed = tier.json(&["tenant", "remove", "leaving", "--json"]);
    assert_eq!(removed["sensors"], 3, "{removed}");
    assert_eq!(removed["reports_deleted"], 3, "{removed}");
    assert_eq!(removed["delisted"], 1, "{removed}");
    // The entry only the leaving tenant held up is withdrawn from every subscriber.
    wait_until("the delisting at the staying sensor", Duration::from_secs(10), || {
        !staying.holds("198.51.100.70")
    });
    assert!(!listed(&tier, "198.51.100.70"));
    // Its sensors are cut off, and their reconnects are refused with the reason.
    for s in &leaving {
        s.wait("the refusal", Duration::from_secs(20), |events| {
            events.iter().any(|e| {
                e["event"] == "stats"
                    && e["stats"]["connected"] == false
                    && e["stats"]["last_error"]
                        .as_str()
                        .is_some_and(|m| m.contains("names no tenant") || m.contains("not enrolled"))
            })
        });
    }
    let explained = tier.json(&["explain", "198.51.100.71", "--json"]);
    assert!(explained.to_string().contains("staying"), "the other tenant's reports stay: {explained:#}");
    let status = tier.status();
    assert_eq!(status["tenants"], 1);
    assert_eq!(status["sensors"], 1);
    let err = tier.cli(&["tenant", "remove", "leaving"]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("no tenant \"leaving\""));
    // Across a restart nothing of it comes back.
    tier.stop();
    tier.start();
    assert_eq!(tier.status()["tenants"], 1);
    assert!(!listed(&tier, "198.51.100.70"));
    // With the tier stopped, the CLI removes a tenant from the database itself.
    drop(staying);
    tier.stop();
    let offline = tier.json(&["tenant", "remove", "staying", "--json"]);
    assert_eq!(
        (offline["sensors"].as_u64(), offline["reports_deleted"].as_u64()),
        (Some(1), Some(1)),
        "{offline}"
    );
    tier.start();
    let status = tier.status();
    assert_eq!((status["tenants"].as_u64(), status["sensors"].as_u64()), (Some(0), Some(0)), "{status}");
    assert_eq!(status["tracked_ips"], 0, "{status}");
}
