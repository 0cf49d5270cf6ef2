//! Real logs from `../shared/data` (see its README) through `palisade replay`: nothing
//! may fail, the parsers must recognise them, and the brute-forcers in them are caught.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn shared_data(name: &str) -> PathBuf {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/elastic-examples").join(name);
    assert!(path.exists(), "{} is missing: the repository is cloned with shared/ beside it", path.display());
    path
}

fn replay(dir: &NodeDir, log_type: &str, file: &std::path::Path) -> Vec<serde_json::Value> {
    let out = dir.cli(&["replay", "--type", log_type, "--json", file.to_str().unwrap()]);
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn real_auth_log_brute_forcers_are_caught() {
    let dir = NodeDir::new();
    dir.write_config("");
    let records = replay(&dir, "syslog", &shared_data("auth.log"));
    let summary = records.iter().find(|r| r["kind"] == "summary").expect("summary");
    assert_eq!(summary["lines"], 7121);
    // Every sshd line is recognised; the other programs (CRON, systemd...) need not be.
    assert!(summary["parsed"].as_u64().unwrap() > 3000, "{summary}");
    let flagged: BTreeSet<&str> =
        records.iter().filter(|r| r["kind"] == "alert").filter_map(|r| r["value"].as_str()).collect();
    // The addresses with the most failed logins in the file, each in bursts.
    for ip in [
        "24.151.103.17",
        "91.197.232.109",
        "34.204.227.175",
        "49.4.143.105",
        "201.178.81.113",
        "122.163.61.218",
        "181.26.186.35",
    ] {
        assert!(flagged.contains(ip), "{ip} not caught; flagged: {flagged:?}");
    }
    let decisions: BTreeSet<&str> =
        records.iter().filter(|r| r["kind"] == "decision").filter_map(|r| r["value"].as_str()).collect();
    assert!(decisions.contains("24.151.103.17"));
}

#[test]
fn real_apache_log_parses_without_failure() {
    let dir = NodeDir::new();
    dir.write_config("");
    let records = replay(&dir, "apache", &shared_data("apache_logs"));
    let summary = records.iter().find(|r| r["kind"] == "summary").expect("summary");
    assert_eq!(summary["lines"], 10000);
    let parsed = summary["parsed"].as_u64().unwrap();
    assert!(parsed >= 9990, "apache combined lines must parse: {summary}");
}
