//! Detection latency and idle memory of a real `palisade run`.
//!
//! Starts the node on a temporary directory watching one file, then 1,000 times: appends
//! a burst of six sshd failures from a new address in one write, and polls the node's
//! admin socket until the ban for that address is in the store. Reports p50/p90/p99/max
//! of (decision visible) - (write returned), and the node's resident memory when idle
//! (before the attacks) and at the end. Run with `cargo bench -p palisade --bench latency`;
//! `LATENCY_ATTACKS=N` changes the count.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn is_banned(socket: &Path, ip: &str) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else { return false };
    let req = format!("{{\"op\":\"list\",\"filter\":{{\"ip\":\"{ip}\"}}}}\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line.contains(&format!("\"value\":\"{ip}\""))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` probe the harness.
    }
    let attacks: usize = std::env::var("LATENCY_ATTACKS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").expect("log");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[log]\nlevel = \"warn\"\n[allowlist]\nhost_addresses = false\n[decisions]\nrepeat_factor = 1.0\n[[ingest.files]]\npaths = [{:?}]\ntype = \"syslog\"\nstart_at = \"beginning\"\n",
            dir.path().join("data").display().to_string(),
            log.display().to_string()
        ),
    )
    .expect("config");
    let mut node = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let socket = dir.path().join("data/admin.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_kb(node.id(), "VmRSS:");

    let mut file = std::fs::OpenOptions::new().append(true).open(&log).expect("open log");
    let mut samples = Vec::with_capacity(attacks);
    for i in 0..attacks {
        let ip = format!("198.{}.{}.{}", 18 + i / 65536, (i / 256) % 256, i % 256);
        let stamp = chrono::Utc::now().format("%b %e %H:%M:%S");
        let mut burst = String::new();
        for k in 0..6 {
            burst.push_str(&format!(
                "{stamp} bench sshd[{}]: Failed password for root from {ip} port {} ssh2\n",
                1000 + k,
                40000 + k
            ));
        }
        file.write_all(burst.as_bytes()).expect("append");
        let t0 = Instant::now();
        let give_up = t0 + Duration::from_secs(10);
        while !is_banned(&socket, &ip) {
            if Instant::now() > give_up {
                eprintln!("attack {i} ({ip}) was not banned within 10 s");
                let _ = node.kill();
                std::process::exit(1);
            }
        }
        samples.push(t0.elapsed());
    }
    let peak_rss = rss_kb(node.id(), "VmHWM:");
    let _ = Command::new("kill").args(["-TERM", &node.id().to_string()]).status();
    let _ = node.wait();

    samples.sort();
    let pct = |p: f64| {
        samples[((samples.len() as f64 * p).ceil() as usize).saturating_sub(1).min(samples.len() - 1)]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{{\"attacks\": {attacks}, \"latency_ms\": {{\"p50\": {:.2}, \"p90\": {:.2}, \"p99\": {:.2}, \"max\": {:.2}}}, \"idle_rss_mb\": {:.1}, \"peak_rss_mb\": {:.1}}}",
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(samples[samples.len() - 1]),
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
}
