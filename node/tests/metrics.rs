//! `/metrics` scraped by a real Prometheus (Debian's package): `promtool check metrics`
//! passes on the exposition, and every query of the Grafana dashboard in the repository
//! returns data after a short attack.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `url` percent-encoded for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_and_every_dashboard_query_has_data() {
    let dir = NodeDir::new();
    std::fs::create_dir_all(dir.path("logs")).unwrap();
    dir.write_config(&format!(
        "[[ingest.files]]\npaths = [{:?}]\ntype = \"syslog\"\nstart_at = \"beginning\"\n",
        dir.path("logs/auth.log").display().to_string()
    ));
    let mut lines = ssh_failures("198.51.100.10", 8, 40000);
    lines.push("Nov 25 06:00:00 web-01 kernel: something no parser knows".to_owned());
    append(&dir.path("logs/auth.log"), &lines);
    let node = dir.start();
    wait_for_decisions(&dir, Duration::from_secs(10), |l| values(l).contains(&"198.51.100.10".to_owned()));
    let key = add_bouncer(&dir, "fw");
    let api = node.api();
    assert_eq!(
        http(api, "GET", "/v1/decisions/stream?startup=true", &[("X-Api-Key", &key)], b"").status,
        200
    );
    assert_eq!(http(api, "GET", "/v1/decisions?ip=198.51.100.10", &[("X-Api-Key", &key)], b"").status, 200);

    // The exposition itself.
    let metrics = node.metrics();
    let scrape = http(metrics, "GET", "/metrics", &[], b"");
    assert_eq!(scrape.status, 200);
    let text = scrape.text();
    for needle in [
        "palisade_source_lines_total{source=",
        "palisade_parser_hits_total{parser=",
        "palisade_parser_misses_total{log_type=\"syslog\"} 1",
        "palisade_bucket_poured_total{scenario=\"palisade/ssh-bf\"}",
        "palisade_bucket_overflows_total{scenario=",
        "palisade_decisions_active{origin=\"palisade\",type=\"ban\",scope=\"Ip\"} 1",
        "palisade_lapi_requests_total{route=\"/v1/decisions/stream\",method=\"GET\",status=\"200\"} 1",
        "palisade_lapi_request_duration_seconds_bucket{route=\"/v1/decisions\",le=\"+Inf\"} 1",
        "palisade_bouncer_pulls_total{bouncer=\"fw\"} 2",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(promtool.stdin.take());
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scraping every second.
    let port = free_port();
    let config = dir.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: palisade\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (apt-get install prometheus)");
    let prom: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../grafana/palisade-node.json"))
            .unwrap(),
    )
    .unwrap();
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().replace("$job", ".*"))
        })
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    // Keep the node busy meanwhile so rates move.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing = queries.clone();
    let mut round = 0u16;
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "queries without data: {missing:#?}\nprometheus log:\n{}",
            std::fs::read_to_string(dir.path("prometheus.log")).unwrap_or_default()
        );
        round += 1;
        append(
            &dir.path("logs/auth.log"),
            &ssh_failures(&format!("203.0.113.{}", round % 200 + 1), 2, 41000),
        );
        let _ = http(api, "GET", "/v1/decisions/stream", &[("X-Api-Key", &key)], b"");
        std::thread::sleep(Duration::from_millis(500));
        missing.retain(|q| {
            let Ok(stream) = std::net::TcpStream::connect(prom) else { return true };
            drop(stream);
            let r = http(prom, "GET", &format!("/api/v1/query?query={}", encode(q)), &[], b"");
            if r.status != 200 {
                return true;
            }
            let v = r.json();
            assert_eq!(v["status"], "success", "{q}: {v}");
            v["data"]["result"].as_array().is_none_or(|a| a.is_empty())
        });
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    node.stop();
}
