//! The node end to end: a real `palisade run` process tailing a real file, RocksDB in a
//! temporary directory, the CLI talking to it over the admin socket.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::*;
use std::time::Duration;

fn config_for(dir: &NodeDir) -> std::path::PathBuf {
    dir.write_config(&format!(
        "[[ingest.files]]\npaths = [{:?}]\ntype = \"syslog\"\nstart_at = \"beginning\"\n",
        dir.path("logs/*.log").display().to_string()
    ))
}

#[test]
fn attack_is_banned_and_survives_rotation_and_kill9() {
    let dir = NodeDir::new();
    std::fs::create_dir_all(dir.path("logs")).unwrap();
    config_for(&dir);
    let log = dir.path("logs/auth.log");
    append(&log, &["Nov 25 06:00:00 web-01 sshd[1]: Server listening on 0.0.0.0 port 22.".to_owned()]);
    let node = dir.start();

    // A brute force: the 6th failure in a burst overflows palisade/ssh-bf (capacity 5).
    append(&log, &ssh_failures("198.51.100.10", 6, 40000));
    let list =
        wait_for_decisions(&dir, Duration::from_secs(5), |l| values(l).contains(&"198.51.100.10".to_owned()));
    let d = list.iter().find(|d| d["value"] == "198.51.100.10").unwrap();
    assert_eq!(d["origin"], "palisade");
    assert_eq!(d["type"], "ban");
    assert!(d["scenario"].as_str().unwrap().starts_with("palisade/ssh"), "{d}");

    // Rotation by rename-and-create in the middle of an attack: 3 lines before, 3 after.
    let lines = ssh_failures("2001:db8::77", 6, 41000);
    append(&log, &lines[..3]);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(&log, dir.path("logs/auth.log.1")).unwrap();
    append(&log, &lines[3..]);
    wait_for_decisions(&dir, Duration::from_secs(5), |l| values(l).contains(&"2001:db8::77".to_owned()));

    // Copytruncate rotation, then a new attacker in the truncated file.
    std::fs::copy(&log, dir.path("logs/auth.log.2")).unwrap();
    std::fs::write(&log, b"").unwrap();
    append(&log, &ssh_failures("203.0.113.30", 6, 42000));
    wait_for_decisions(&dir, Duration::from_secs(5), |l| values(l).contains(&"203.0.113.30".to_owned()));

    // kill -9, then lines written while the node is down, then restart.
    node.kill9();
    append(&log, &ssh_failures("192.0.2.200", 6, 43000));
    let node = dir.start();
    let list =
        wait_for_decisions(&dir, Duration::from_secs(5), |l| values(l).contains(&"192.0.2.200".to_owned()));
    assert_eq!(
        values(&list),
        vec!["192.0.2.200", "198.51.100.10", "2001:db8::77", "203.0.113.30"],
        "every decision survived and nothing was re-read into duplicates"
    );
    // Nothing was read twice: re-reading the first attack would extend (replace) its
    // decision, changing its id.
    let first = list.iter().find(|d| d["value"] == "198.51.100.10").unwrap();
    assert_eq!(first["id"], d["id"], "the first decision was not re-made after restart");

    // Manual decisions through the admin socket, and deletion.
    let out = dir.cli(&["decisions", "add", "--ip", "198.51.100.99", "--duration", "1h", "--reason", "test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = dir.cli(&["decisions", "add", "--ip", "127.0.0.1"]);
    assert!(!out.status.success(), "loopback is allowlisted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("allowlisted"));
    let out = dir.cli(&["decisions", "delete", "--ip", "198.51.100.10"]);
    assert!(out.status.success());
    let list = decisions(&dir);
    assert!(!values(&list).contains(&"198.51.100.10".to_owned()));
    assert!(values(&list).contains(&"198.51.100.99".to_owned()));
    node.stop();

    // With the node stopped, the CLI reads the database directly.
    let list = decisions(&dir);
    assert!(values(&list).contains(&"198.51.100.99".to_owned()));
}

#[test]
fn replay_and_run_make_the_same_decisions() {
    let dir = NodeDir::new();
    std::fs::create_dir_all(dir.path("logs")).unwrap();
    config_for(&dir);
    let sample = dir.path("sample.log");
    let mut lines = Vec::new();
    for (i, ip) in ["198.51.100.1", "198.51.100.2", "2001:db8::3", "203.0.113.4"].iter().enumerate() {
        lines.extend(ssh_failures(ip, 4 + i * 2, 40000 + i as u16 * 100));
    }
    append(&sample, &lines);
    let out = dir.cli(&["replay", "--type", "syslog", "--json", sample.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut replayed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "decision")
        .map(|v| format!("{} {} {}", v["value"], v["scenario"], v["duration_secs"]))
        .collect();
    replayed.sort();
    assert!(!replayed.is_empty());

    let node = dir.start();
    append(&dir.path("logs/auth.log"), &lines);
    let expected_values: Vec<String> = {
        let mut v: Vec<String> =
            replayed.iter().map(|r| r.split(' ').next().unwrap().trim_matches('"').to_owned()).collect();
        v.sort();
        v.dedup();
        v
    };
    let list = wait_for_decisions(&dir, Duration::from_secs(5), |l| values(l) == expected_values);
    node.stop();
    let mut live: Vec<String> = list
        .iter()
        .map(|d| {
            let secs = (d["until"].as_i64().unwrap() - d["created_at"].as_i64().unwrap()) / 1000;
            format!("{} {} {}", d["value"], d["scenario"], secs)
        })
        .collect();
    live.sort();
    // Replay lists every decision made; live shows the one in force per value.
    let mut replay_final = replayed.clone();
    replay_final.dedup_by(|a, b| a.split(' ').next() == b.split(' ').next());
    assert_eq!(live, replay_final);
}

#[test]
fn broken_config_and_hub_stop_startup_with_location() {
    let dir = NodeDir::new();
    std::fs::write(dir.path("config.toml"), "data_dir = \"/tmp/x\"\n[decisions]\ndefault_duration = 4\n")
        .unwrap();
    let out = dir.cli(&["config", "check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.toml:3:"), "{err}");

    let hub = dir.path("hub");
    std::fs::create_dir_all(hub.join("scenarios")).unwrap();
    std::fs::create_dir_all(hub.join("parsers/s01-parse")).unwrap();
    std::fs::write(hub.join("parsers/s01-parse/bad.yaml"), "name: x\nnodes:\n  - pattern: '(unclosed'\n")
        .unwrap();
    dir.write_config(&format!("hub_dir = {:?}\n", hub.display().to_string()));
    let out = dir.cli(&["config", "check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:"), "{err}");
}

#[test]
fn config_check_and_hub_list_work_on_defaults() {
    let dir = NodeDir::new();
    dir.write_config("");
    let out = dir.cli(&["config", "check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    let out = dir.cli(&["hub", "list", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> =
        v["scenarios"].as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(names.iter().any(|n| n.contains("ssh")), "{names:?}");
}

#[test]
fn the_simulator_is_reachable_from_the_node_binary() {
    let out = std::process::Command::new(bin()).args(["sim", "--help"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("baseline"), "{help}");
    let out = std::process::Command::new(bin()).args(["sim", "run", "/nonexistent.toml"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn stamps_without_a_zone_are_read_in_the_host_zone() {
    let dir = NodeDir::new();
    dir.write_config("");
    let line = "Dec  2 10:00:00 web-01 sshd[1]: Failed password for root from 192.0.2.1 port 22 ssh2\n";
    // POSIX TZ strings: no zoneinfo files needed. EST5EDT is UTC-5 in December.
    for (tz, want) in [("UTC0", "T10:00:00"), ("XST-2", "T08:00:00"), ("EST5EDT,M3.2.0,M11.1.0", "T15:00:00")]
    {
        let mut child = std::process::Command::new(bin())
            .arg("--config")
            .arg(dir.path("config.toml"))
            .args(["explain", "--type", "syslog", "--json"])
            .env("TZ", tz)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), line.as_bytes()).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("{want}.000Z\"")), "TZ={tz}: {text}");
    }
}
