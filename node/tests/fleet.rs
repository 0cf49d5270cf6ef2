//! Fleets for real: `palisade run` processes that join one fleet with `palisade node join`
//! and share bans over QUIC, on loopback and across network namespaces.
//!
//! The namespace test needs root and `ip` (scripts/deps.sh installs iproute2); its
//! namespaces are removed whatever happens.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::netns::*;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A UDP port free on `ip` right now.
fn free_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// A node tailing `<dir>/logs/*.log`, gossiping on `gossip`.
fn fleet_node(gossip: &str, extra: &str) -> NodeDir {
    let dir = NodeDir::new();
    std::fs::create_dir_all(dir.path("logs")).unwrap();
    dir.write_config(&format!(
        "[[ingest.files]]\npaths = [{:?}]\ntype = \"syslog\"\nstart_at = \"beginning\"\n\
         [gossip]\nlisten = {gossip:?}\n{extra}\n",
        dir.path("logs/*.log").display().to_string()
    ));
    dir
}

/// `palisade ARGS --json` (or any command printing JSON), parsed; panics on failure.
fn cli_json(dir: &NodeDir, args: &[&str]) -> Value {
    let out = dir.cli(args);
    assert!(
        out.status.success(),
        "palisade {args:?}: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path("node.log")).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("palisade {args:?}: {e}"))
}

fn node_id(dir: &NodeDir) -> String {
    cli_json(dir, &["fleet", "status", "--json"])["node"].as_str().unwrap().to_owned()
}

/// Members this node sees alive (connected and live in membership).
fn alive_peers(dir: &NodeDir) -> Vec<String> {
    let peers = cli_json(dir, &["node", "peers", "--json"]);
    peers
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "alive")
        .map(|p| p["node"].as_str().unwrap().to_owned())
        .collect()
}

/// The origin of the active decision on `ip`, if any.
fn origin_of(dir: &NodeDir, ip: &str) -> Option<String> {
    decisions(dir).iter().find(|d| d["value"] == ip).map(|d| d["origin"].as_str().unwrap().to_owned())
}

fn wait_for(what: &str, timeout: Duration, dirs: &[&NodeDir], mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !pred() {
        if Instant::now() > deadline {
            let logs: Vec<String> = dirs
                .iter()
                .map(|d| std::fs::read_to_string(d.path("node.log")).unwrap_or_default())
                .collect();
            panic!("timed out waiting for {what}; node logs:\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn attack(dir: &NodeDir, ip: &str, port0: u16) {
    append(&dir.path("logs/auth.log"), &ssh_failures(ip, 6, port0));
}

/// Creates the fleet on `admin` and returns a join token.
fn init_and_invite(admin: &NodeDir) -> String {
    let init = cli_json(admin, &["fleet", "init", "--json"]);
    assert_eq!(init["kind"], "initialized", "{init}");
    let invite = cli_json(admin, &["fleet", "invite", "--ttl", "10m", "--json"]);
    invite["token"].as_str().unwrap().to_owned()
}

fn join(dir: &NodeDir, peer: &str, token: &str) {
    let out = dir.cli(&["node", "join", peer, "--token", token]);
    assert!(out.status.success(), "join: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("joined fleet"));
}

#[test]
fn five_nodes_join_one_by_one_share_bans_catch_up_and_shut_out_the_revoked() {
    let ports: Vec<String> = (0..5).map(|_| format!("127.0.0.1:{}", free_port("127.0.0.1"))).collect();
    let dirs: Vec<NodeDir> = ports.iter().map(|p| fleet_node(p, "")).collect();
    let all: Vec<&NodeDir> = dirs.iter().collect();
    let mut nodes: Vec<Option<Node>> = dirs.iter().map(|d| Some(d.start())).collect();

    // Before any fleet, fleet commands say what to do.
    let out = dirs[1].cli(&["node", "peers"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in a fleet"), "{out:?}");
    let out = dirs[1].cli(&["fleet", "invite"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not hold the fleet admin key"), "{out:?}");

    let token = init_and_invite(&dirs[0]);
    // A damaged token is refused before any traffic, with a clear message.
    let out = dirs[1].cli(&["node", "join", &ports[0], "--token", "palisade-join-00"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("join token is not valid"), "{out:?}");

    // Join one by one, each through the member that joined before it (members relay
    // the request to the admin node); each newcomer meets every member already in.
    for i in 1..5 {
        join(&dirs[i], &ports[i - 1], &token);
        wait_for(&format!("node {i} to see {i} members alive"), Duration::from_secs(20), &all, || {
            alive_peers(&dirs[i]).len() == i
        });
    }
    let ids: Vec<String> = dirs.iter().map(node_id).collect();
    for (i, dir) in dirs.iter().enumerate() {
        wait_for("a full mesh", Duration::from_secs(20), &all, || alive_peers(dir).len() == 4);
        assert!(!alive_peers(dir).contains(&ids[i]));
    }
    let out = dirs[2].cli(&["node", "join", &ports[0], "--token", &token]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already a member"), "{out:?}");

    // An attack on node 2 is banned on all five: by detection there, by the fleet elsewhere.
    attack(&dirs[2], "198.51.100.21", 40000);
    wait_for("the ban on every node", Duration::from_secs(10), &all, || {
        dirs.iter().all(|d| origin_of(d, "198.51.100.21").is_some())
    });
    for (i, dir) in dirs.iter().enumerate() {
        let want = if i == 2 { "palisade" } else { "fleet" };
        assert_eq!(origin_of(dir, "198.51.100.21").as_deref(), Some(want), "node {i}");
    }

    // Node 4 is killed during an attack on node 1, and catches up after its restart.
    nodes[4].take().unwrap().kill9();
    attack(&dirs[1], "198.51.100.22", 41000);
    wait_for("the ban on the live nodes", Duration::from_secs(10), &all, || {
        dirs[..4].iter().all(|d| origin_of(d, "198.51.100.22").is_some())
    });
    nodes[4] = Some(dirs[4].start());
    wait_for("the restarted node to catch up", Duration::from_secs(20), &all, || {
        origin_of(&dirs[4], "198.51.100.22").as_deref() == Some("fleet")
    });

    // The admin revokes node 3: it hears nothing more, and nothing it says is believed.
    let out = dirs[3].cli(&["fleet", "revoke", &ids[1]]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not hold the fleet admin key"));
    let revoked = dirs[0].cli(&["fleet", "revoke", &ids[3]]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    wait_for("node 3 to be cut off everywhere", Duration::from_secs(20), &all, || {
        [0, 1, 2, 4].iter().all(|&i| !alive_peers(&dirs[i]).contains(&ids[3]))
    });
    attack(&dirs[1], "198.51.100.23", 42000);
    attack(&dirs[3], "198.51.100.24", 43000);
    wait_for("the ban on the remaining members", Duration::from_secs(10), &all, || {
        [0, 2, 4].iter().all(|&i| origin_of(&dirs[i], "198.51.100.23").is_some())
    });
    assert_eq!(origin_of(&dirs[3], "198.51.100.24").as_deref(), Some("palisade"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(origin_of(&dirs[3], "198.51.100.23"), None, "the revoked node got a signal");
    for i in [0, 1, 2, 4] {
        assert_eq!(origin_of(&dirs[i], "198.51.100.24"), None, "node {i} believed the revoked node");
    }

    // The fleet shows on /metrics.
    let metrics = http(nodes[0].as_ref().unwrap().metrics(), "GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("palisade_fleet_member 1"), "{metrics}");
    assert!(metrics.contains("palisade_gossip_signals_total{event=\"delivered\"}"), "{metrics}");
    assert!(metrics.contains("palisade_gossip_propagation_seconds_count"), "{metrics}");

    // Leaving stops gossip; a node restarted with a membership that is not its own
    // (another node's certificate) runs without the fleet and says why.
    let left = dirs[4].cli(&["node", "leave"]);
    assert!(left.status.success(), "{}", String::from_utf8_lossy(&left.stderr));
    assert!(cli_json(&dirs[4], &["fleet", "status", "--json"])["fleet"].is_null());
    nodes[4].take().unwrap().stop();
    std::fs::copy(dirs[2].path("data/fleet.json"), dirs[4].path("data/fleet.json")).unwrap();
    nodes[4] = Some(dirs[4].start());
    let log = std::fs::read_to_string(dirs[4].path("node.log")).unwrap();
    assert!(log.contains("fleet gossip did not start"), "{log}");
    assert!(log.contains("membership certificate is not valid"), "{log}");

    for node in nodes.into_iter().flatten() {
        node.stop();
    }
}

/// Five namespaces on one bridge (in a sixth namespace): 10.78.N.1..5.
struct Lan {
    bridge: Netns,
    hosts: Vec<Netns>,
}

impl Lan {
    fn new(n: usize) -> Lan {
        let bridge = Netns::new("br");
        run("ip", &["-n", &bridge.name, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &bridge.name, "link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        for i in 0..n {
            let host = Netns::new(&format!("h{i}"));
            let (inner, outer) = (format!("{}i", host.name), format!("{}o", host.name));
            run("ip", &["link", "add", &inner, "type", "veth", "peer", "name", &outer]);
            run("ip", &["link", "set", &inner, "netns", &host.name]);
            run("ip", &["link", "set", &outer, "netns", &bridge.name]);
            run("ip", &["-n", &bridge.name, "link", "set", &outer, "master", "br0", "up"]);
            run("ip", &["-n", &host.name, "addr", "add", &format!("10.78.0.{}/24", i + 1), "dev", &inner]);
            run("ip", &["-n", &host.name, "link", "set", &inner, "up"]);
            hosts.push(host);
        }
        Lan { bridge, hosts }
    }

    /// Cuts host `i` off the bridge, or plugs it back.
    fn link(&self, i: usize, up: bool) {
        let outer = format!("{}o", self.hosts[i].name);
        run("ip", &["-n", &self.bridge.name, "link", "set", &outer, if up { "up" } else { "down" }]);
    }
}

#[test]
fn a_node_cut_off_by_a_link_down_converges_after_the_heal() {
    require_root();
    let lan = Lan::new(5);
    let addrs: Vec<String> = (1..=5).map(|i| format!("10.78.0.{i}:7946")).collect();
    // Short QUIC timers, so that the cut outlasts the connections and the heal has to
    // go through reconnection and anti-entropy rather than QUIC's own retransmissions.
    let timers = "keep_alive = \"500ms\"\nidle_timeout = \"2s\"";
    let dirs: Vec<NodeDir> = addrs.iter().map(|a| fleet_node(a, timers)).collect();
    let all: Vec<&NodeDir> = dirs.iter().collect();
    let _nodes: Vec<NsNode> = dirs.iter().zip(&lan.hosts).map(|(d, ns)| start_in(d, ns)).collect();
    let token = init_and_invite(&dirs[0]);
    for dir in &dirs[1..] {
        join(dir, &addrs[0], &token);
    }
    for dir in &dirs {
        wait_for("a full mesh", Duration::from_secs(30), &all, || alive_peers(dir).len() == 4);
    }

    attack(&dirs[0], "198.51.100.31", 40000);
    wait_for("the first ban everywhere", Duration::from_secs(10), &all, || {
        dirs.iter().all(|d| origin_of(d, "198.51.100.31").is_some())
    });

    // Cut node 4 off; attacks go on on both sides of the cut.
    lan.link(4, false);
    std::thread::sleep(Duration::from_secs(3));
    let inside = ["198.51.100.32", "198.51.100.33", "198.51.100.34"];
    for (k, ip) in inside.iter().enumerate() {
        attack(&dirs[k], ip, 41000 + 100 * k as u16);
    }
    attack(&dirs[4], "198.51.100.35", 42000);
    wait_for("bans inside the partition", Duration::from_secs(10), &all, || {
        dirs[..4].iter().all(|d| inside.iter().all(|ip| origin_of(d, ip).is_some()))
    });
    assert!(inside.iter().all(|ip| origin_of(&dirs[4], ip).is_none()), "node 4 was not cut off");
    assert!(dirs[..4].iter().all(|d| origin_of(d, "198.51.100.35").is_none()));
    std::thread::sleep(Duration::from_secs(2));

    // Heal: every node ends with every decision.
    lan.link(4, true);
    let every = ["198.51.100.31", "198.51.100.32", "198.51.100.33", "198.51.100.34", "198.51.100.35"];
    wait_for("every decision on every node after the heal", Duration::from_secs(30), &all, || {
        dirs.iter().all(|d| every.iter().all(|ip| origin_of(d, ip).is_some()))
    });
}

#[test]
fn an_address_known_by_hash_only_is_banned_at_its_first_event() {
    // The origin does not seal addresses: peers learn only the hash, and ban the address
    // the moment it shows up in their own logs, before any bucket could fill.
    let ports: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port("127.0.0.1"))).collect();
    let origin = fleet_node(&ports[0], "[reputation]\nseal_ips = false");
    let peer = fleet_node(&ports[1], "");
    let all = [&origin, &peer];
    let nodes = [origin.start(), peer.start()];
    let token = init_and_invite(&origin);
    join(&peer, &ports[0], &token);
    wait_for("the pair to connect", Duration::from_secs(20), &all, || alive_peers(&peer).len() == 1);

    attack(&origin, "203.0.113.41", 40000);
    wait_for("the flag to arrive", Duration::from_secs(10), &all, || {
        http(nodes[1].metrics(), "GET", "/metrics", &[], b"").text().contains("palisade_onsight_watched 1")
    });
    assert_eq!(origin_of(&peer, "203.0.113.41"), None, "nothing to ban yet: the peer has only a hash");

    // One line from another address changes nothing; one from the flagged address bans it.
    append(&peer.path("logs/auth.log"), &ssh_failures("203.0.113.42", 1, 41000));
    append(&peer.path("logs/auth.log"), &ssh_failures("203.0.113.41", 1, 41001));
    wait_for("the ban on first sight", Duration::from_secs(10), &all, || {
        origin_of(&peer, "203.0.113.41").as_deref() == Some("fleet")
    });
    assert_eq!(origin_of(&peer, "203.0.113.42"), None);
    let metrics = http(nodes[1].metrics(), "GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("palisade_onsight_flags_total{outcome=\"hit\"} 1"), "{metrics}");
    // Each scenario the attack overflowed at the origin is a signal; all name one hash.
    assert!(!metrics.contains("palisade_fleet_signals_received_total{outcome=\"flag\"} 0"), "{metrics}");
    assert!(metrics.contains("palisade_onsight_flags_total{outcome=\"added\"} 1"), "{metrics}");
    for node in nodes {
        node.stop();
    }
}
