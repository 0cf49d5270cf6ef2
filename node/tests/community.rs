//! Nodes of three tenants and a central tier, all real processes on loopback. Each node
//! connects from its own 127.0.0.x address, which the fixture ASN database maps to its
//! own network (AS 6450x); the tier lists an address reported from 3 networks.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::tier::*;
use common::*;
use std::time::{Duration, Instant};

/// A node of a tenant: tails `<dir>/logs/*.log`, reports to the tier from `bind`.
fn tenant_node(tier: std::net::SocketAddr, token: &str, bind: &str) -> NodeDir {
    let dir = NodeDir::new();
    std::fs::create_dir_all(dir.path("logs")).unwrap();
    dir.write_config(&format!(
        "[[ingest.files]]\npaths = [{:?}]\ntype = \"syslog\"\nstart_at = \"beginning\"\n\
         [central]\naddr = \"{tier}\"\ntoken = \"{token}\"\nbind = \"{bind}\"\n",
        dir.path("logs/*.log").display().to_string()
    ));
    dir
}

fn metric(node: &Node, name: &str) -> f64 {
    let text = http(node.metrics(), "GET", "/metrics", &[], b"").text();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn origin_of(dir: &NodeDir, ip: &str) -> Option<String> {
    decisions(dir).iter().find(|d| d["value"] == ip).map(|d| d["origin"].as_str().unwrap().to_owned())
}

fn wait_for(what: &str, timeout: Duration, tier: &Tier, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\ntier log:\n{}", tier.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn attack(dir: &NodeDir, ip: &str, port0: u16) {
    append(&dir.path("logs/auth.log"), &ssh_failures(ip, 6, port0));
}

#[test]
fn three_tenants_share_a_community_list_by_network_diversity() {
    let mut tier = Tier::new();
    tier.start();
    tier.pin_listen();
    let addr = tier.addr();
    let (a, b, c) = (tier.tenant("alpha", true), tier.tenant("beta", true), tier.tenant("gamma", false));
    // alpha: two nodes in AS 64501 and 64502, plus two more in AS 64501 (one network);
    // beta: AS 64503 and 64504; gamma (not in the community): AS 64505.
    let dirs = [
        tenant_node(addr, &a, "127.0.0.1"),
        tenant_node(addr, &a, "127.0.0.2"),
        tenant_node(addr, &b, "127.0.0.3"),
        tenant_node(addr, &b, "127.0.0.4"),
        tenant_node(addr, &c, "127.0.0.5"),
        tenant_node(addr, &a, "127.0.0.1"),
        tenant_node(addr, &a, "127.0.0.1"),
    ];
    let mut nodes: Vec<Node> = dirs.iter().map(|d| d.start()).collect();
    for node in &nodes {
        wait_for("every node's session", Duration::from_secs(30), &tier, || {
            metric(node, "palisade_central_connected") == 1.0
        });
    }

    // Seen from three networks (alpha's two, beta's first): listed, and every opted-in
    // node gets the entry, including beta's second node, which never saw the attacker.
    for (k, i) in [0, 1, 2].into_iter().enumerate() {
        attack(&dirs[i], "198.51.100.61", 40000 + 100 * k as u16);
        attack(&dirs[i], "198.51.100.62", 41000 + 100 * k as u16);
    }
    wait_for("the listing to reach opted-in nodes", Duration::from_secs(30), &tier, || {
        [0, 1, 2, 3, 5, 6].iter().all(|&i| metric(&nodes[i], "palisade_community_listed") >= 2.0)
    });
    // On sight: one failed login from the listed address on beta's second node bans it.
    append(&dirs[3].path("logs/auth.log"), &ssh_failures("198.51.100.61", 1, 42000));
    wait_for("the on-sight community ban", Duration::from_secs(10), &tier, || {
        origin_of(&dirs[3], "198.51.100.61").as_deref() == Some("community")
    });
    // On lookup: a bouncer asking about the other listed address gets a decision.
    let key = add_bouncer(&dirs[3], "fw");
    let reply = http(nodes[3].api(), "GET", "/v1/decisions?ip=198.51.100.62", &[("X-Api-Key", &key)], b"");
    assert_eq!(reply.status, 200);
    let list = reply.json();
    assert_eq!(list[0]["origin"], "community", "{list}");
    assert_eq!(list[0]["value"], "198.51.100.62", "{list}");
    assert_eq!(origin_of(&dirs[3], "198.51.100.62").as_deref(), Some("community"));

    // The tenant that did not opt in receives nothing...
    assert_eq!(metric(&nodes[4], "palisade_community_listed"), 0.0);
    append(&dirs[4].path("logs/auth.log"), &ssh_failures("198.51.100.61", 1, 43000));
    // ...and does not count: gamma plus two alpha networks is only two community networks.
    for (k, i) in [4, 0, 1].into_iter().enumerate() {
        attack(&dirs[i], "198.51.100.63", 44000 + 100 * k as u16);
    }
    // Many sensors of one network count as one: three alpha nodes in AS 64501.
    for (k, i) in [0, 5, 6].into_iter().enumerate() {
        attack(&dirs[i], "198.51.100.64", 45000 + 100 * k as u16);
    }
    wait_for("the tier to receive every report", Duration::from_secs(20), &tier, || {
        [0, 1, 4, 5, 6].iter().all(|&i| metric(&nodes[i], "palisade_central_pending_sightings") == 0.0)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(metric(&nodes[3], "palisade_community_listed"), 2.0, "only the diverse reports were listed");
    assert_eq!(origin_of(&dirs[4], "198.51.100.61"), None, "gamma got the community list");

    // The tier is killed and restarts on its address; the nodes reconnect, resume from
    // their version, and a new listing still reaches them. The restarted tier resets the
    // old sessions (stateless resets keyed from its node key), so the nodes need not wait
    // for their 30 s idle timeout: 15 s is ample for the reconnect, and too short for it.
    let version = metric(&nodes[3], "palisade_community_list_version");
    assert!(version >= 1.0);
    tier.kill9();
    tier.start();
    for (k, i) in [0, 1, 3].into_iter().enumerate() {
        attack(&dirs[i], "198.51.100.65", 46000 + 100 * k as u16);
    }
    wait_for("the new listing after the tier's restart", Duration::from_secs(15), &tier, || {
        metric(&nodes[2], "palisade_community_listed") == 3.0
    });
    assert!(metric(&nodes[2], "palisade_community_list_version") > version);
    let log = tier.log_text();
    let after = &log[log.rfind("central tier listening").unwrap()..];
    assert!(after.contains("catch_up=\"up_to_date\"") || after.contains("catch_up=\"delta_log\""), "{after}");
    assert!(!after.contains("catch_up=\"snapshot\""), "a node started over instead of resuming:\n{after}");

    // A node stopped while the tier is away keeps the sightings it could not send, and
    // sends them after its restart.
    tier.stop();
    // (The tier's close says so at once; were it lost, the 30 s idle timeout would.)
    wait_for("the nodes to see the tier gone", Duration::from_secs(45), &tier, || {
        metric(&nodes[3], "palisade_central_connected") == 0.0
    });
    attack(&dirs[3], "198.51.100.66", 47000);
    wait_for("the sighting queued", Duration::from_secs(20), &tier, || {
        metric(&nodes[3], "palisade_central_pending_sightings") >= 1.0
    });
    nodes.remove(3).stop();
    tier.start();
    nodes.insert(3, dirs[3].start());
    wait_for("the saved sighting at the tier", Duration::from_secs(30), &tier, || {
        let explained = tier.json(&["explain", "198.51.100.66", "--json"]);
        explained.to_string().contains("\"sensors\":[{")
    });

    for node in nodes.drain(..) {
        node.stop();
    }
}
