//! Bouncers for real: the built-in nftables bouncer dropping TCP between two network
//! namespaces, and CrowdSec's own bouncers from Debian's packages
//! (`crowdsec-firewall-bouncer`, `crowdsec-custom-bouncer`) and the Python client
//! `pycrowdsec` following a Palisade node's Local API.
//!
//! Needs root, `ip`, `nft`, python3 with pycrowdsec and the Debian bouncers: the test
//! command installs them (scripts/deps.sh). Namespaces are made by each test and always
//! removed; nothing touches the host's own firewall.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::netns::*;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn cli_ok(dir: &NodeDir, args: &[&str]) {
    let out = dir.cli(args);
    assert!(out.status.success(), "palisade {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn builtin_nftables_bouncer_drops_banned_sources() {
    require_root();
    let (a, b, net) = linked_pair(41);
    // A table of someone else's, which the bouncer must leave alone.
    a.sh("nft", &["add", "table", "inet", "someone_else"]);
    a.sh("nft", &["add", "chain", "inet", "someone_else", "keep"]);
    let dir = NodeDir::new();
    // The node's Local API on the namespace's own address is the TCP service attacked.
    dir.write_config("[api]\nlisten = \"0.0.0.0:8080\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[bouncer.nftables]\nenabled = true\n");
    cli_ok(&dir, &["decisions", "add", "--ip", "192.0.2.99", "--duration", "1h"]);
    let node = start_in(&dir, &a);
    let (banned, other, server) = (format!("{net}.2"), format!("{net}.3"), format!("{net}.1"));
    // Decisions made before the start are reconciled into the new table.
    wait_until("the table with the earlier ban", Duration::from_secs(5), || {
        a.nft_list().contains("192.0.2.99")
    });
    let ruleset = a.nft_list();
    assert!(ruleset.contains("table inet palisade") && ruleset.contains("chain input"), "{ruleset}");
    assert!(connects(&b, &banned, &server, 8080), "before the ban");

    cli_ok(&dir, &["decisions", "add", "--ip", &banned, "--duration", "6s"]);
    wait_until("the ban in the set", Duration::from_secs(5), || a.nft_list().contains(&banned));
    assert!(!connects(&b, &banned, &server, 8080), "a banned source is dropped");
    assert!(connects(&b, &other, &server, 8080), "another source still connects");
    // The ban lifts when the decision expires (the kernel's element timeout).
    wait_until("the ban to expire", Duration::from_secs(15), || connects(&b, &banned, &server, 8080));

    // An early delete lifts the ban at once; a range ban covers its addresses.
    cli_ok(&dir, &["decisions", "add", "--range", &format!("{net}.0/30"), "--duration", "1h"]);
    wait_until("the range ban", Duration::from_secs(5), || !connects(&b, &other, &server, 8080));
    cli_ok(&dir, &["decisions", "delete", "--range", &format!("{net}.0/30")]);
    wait_until("the range ban to lift", Duration::from_secs(5), || connects(&b, &other, &server, 8080));

    stop(node);
    let ruleset = a.nft_list();
    assert!(!ruleset.contains("table inet palisade"), "the table is removed on a clean stop: {ruleset}");
    assert!(ruleset.contains("table inet someone_else") && ruleset.contains("chain keep"), "{ruleset}");
}

#[test]
fn nftables_bouncer_without_nft_is_a_clear_error() {
    let dir = NodeDir::new();
    dir.write_config("[bouncer.nftables]\nenabled = true\nnft = \"/nonexistent/nft\"\n");
    let out = Command::new(bin()).arg("--config").arg(dir.path("config.toml")).arg("run").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nftables bouncer") && err.contains("/nonexistent/nft"), "{err}");
}

fn bouncer_config(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn crowdsec_firewall_bouncer_follows_palisade() {
    require_root();
    let a = Netns::new("f");
    let dir = NodeDir::new();
    dir.write_config("[api]\nlisten = \"127.0.0.1:8080\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let node = start_in(&dir, &a);
    let key = add_bouncer(&dir, "firewall");
    let config = bouncer_config(
        dir.dir.path(),
        "fw.yaml",
        &format!(
            "mode: nftables\nupdate_frequency: 1s\ndaemonize: false\nlog_mode: file\nlog_dir: {}\nlog_level: info\n\
             api_url: http://127.0.0.1:8080/\napi_key: {key}\ndisable_ipv6: false\ndeny_action: DROP\ndeny_log: false\n\
             supported_decisions_types:\n  - ban\nblacklists_ipv4: crowdsec-blacklists\nblacklists_ipv6: crowdsec6-blacklists\n\
             nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: crowdsec\n    chain: crowdsec-chain\n\
             \x20 ipv6:\n    enabled: true\n    set-only: false\n    table: crowdsec6\n    chain: crowdsec6-chain\n\
             prometheus:\n  enabled: false\n  listen_addr: 127.0.0.1\n  listen_port: 60601\n",
            dir.dir.path().display()
        ),
    );
    let mut bouncer = a
        .cmd("crowdsec-firewall-bouncer")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "crowdsec-firewall-bouncer (apt-get install --no-install-recommends crowdsec-firewall-bouncer)",
        );
    cli_ok(&dir, &["decisions", "add", "--ip", "203.0.113.50", "--duration", "1h"]);
    cli_ok(&dir, &["decisions", "add", "--ip", "2001:db8::50", "--duration", "1h"]);
    let log = || std::fs::read_to_string(dir.path("crowdsec-firewall-bouncer.log")).unwrap_or_default();
    let in_sets = |ip: &str| a.nft_list().contains(ip);
    let deadline = Duration::from_secs(20);
    wait_until("the bouncer to add 203.0.113.50", deadline, || in_sets("203.0.113.50"));
    wait_until("the bouncer to add 2001:db8::50", deadline, || in_sets("2001:db8::50"));
    cli_ok(&dir, &["decisions", "delete", "--ip", "203.0.113.50"]);
    wait_until("the bouncer to delete 203.0.113.50", deadline, || !in_sets("203.0.113.50"));
    assert!(in_sets("2001:db8::50"), "the other ban stays:\n{}", a.nft_list());
    let _ = bouncer.kill();
    let _ = bouncer.wait();
    let text = log();
    assert!(!text.contains("level=error"), "bouncer errors:\n{text}");
    stop(node);
}

#[test]
fn crowdsec_custom_bouncer_gets_add_and_delete_calls() {
    let dir = NodeDir::new();
    dir.write_config("");
    let node = dir.start();
    let api = node.api();
    let key = add_bouncer(&dir, "custom");
    let calls = dir.path("calls.txt");
    let script = bouncer_config(
        dir.dir.path(),
        "record.sh",
        &format!("#!/bin/sh\necho \"$1 $2 $3 $4\" >> {}\n", calls.display()),
    );
    run("chmod", &["755", script.to_str().unwrap()]);
    let config = bouncer_config(
        dir.dir.path(),
        "custom.yaml",
        &format!(
            "bin_path: {}\nfeed_via_stdin: false\ntotal_retries: 0\nscenarios_containing: []\nscenarios_not_containing: []\n\
             origins: []\npiddir: {}\nupdate_frequency: 1s\ncache_retention_duration: 1s\ndaemonize: false\nlog_mode: file\n\
             log_dir: {}\nlog_level: info\napi_url: http://{api}/\napi_key: {key}\nprometheus:\n  enabled: false\n",
            script.display(),
            dir.dir.path().display(),
            dir.dir.path().display()
        ),
    );
    let mut bouncer = Command::new("crowdsec-custom-bouncer")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("crowdsec-custom-bouncer (apt-get install --no-install-recommends crowdsec-custom-bouncer)");
    cli_ok(&dir, &["decisions", "add", "--ip", "198.51.100.61", "--duration", "1h", "--reason", "test ban"]);
    let read = || std::fs::read_to_string(&calls).unwrap_or_default();
    wait_until("an add call", Duration::from_secs(20), || read().contains("add 198.51.100.61"));
    cli_ok(&dir, &["decisions", "delete", "--ip", "198.51.100.61"]);
    wait_until("a del call", Duration::from_secs(20), || read().contains("del 198.51.100.61"));
    let text = read();
    let add = text.lines().find(|l| l.starts_with("add 198.51.100.61")).unwrap();
    let duration: u64 = add.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&duration), "the bouncer got the remaining seconds: {add}");
    assert!(add.contains("test ban"), "{add}");
    let _ = bouncer.kill();
    let _ = bouncer.wait();
    node.stop();
}

#[test]
fn pycrowdsec_streams_decisions() {
    let dir = NodeDir::new();
    dir.write_config("");
    let node = dir.start();
    let api = node.api();
    let key = add_bouncer(&dir, "python");
    let script = r#"
import subprocess, sys, time
from pycrowdsec.client import StreamClient
palisade, config, url, key = sys.argv[1:5]
def cli(*args):
    subprocess.run([palisade, "--config", config, "decisions", *args], check=True, stdout=subprocess.DEVNULL)
def wait(pred, what):
    deadline = time.time() + 15
    while not pred():
        if time.time() > deadline:
            sys.exit(f"timed out waiting for {what}: {client.get_current_decisions()}")
        time.sleep(0.1)
cli("add", "--ip", "192.0.2.61", "--duration", "1h")
client = StreamClient(key, lapi_url=url, interval=1)
client.run()
wait(lambda: client.get_action_for("192.0.2.61") == "ban", "the startup pull")
cli("add", "--range", "198.51.100.0/24", "--duration", "1h", "--type", "captcha")
wait(lambda: client.get_action_for("198.51.100.0/24") == "captcha", "a delta")
cli("delete", "--ip", "192.0.2.61")
wait(lambda: client.get_action_for("192.0.2.61") is None, "a deletion")
print("ok")
"#;
    let out = Command::new("python3")
        .args(["-c", script, bin().to_str().unwrap(), dir.path("config.toml").to_str().unwrap()])
        .arg(format!("http://{api}/"))
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pycrowdsec (pip install pycrowdsec): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    node.stop();
}
