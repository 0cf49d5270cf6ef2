//! A `palisade central run` process for tests, with the fixture ASN database that maps
//! 127.0.0.N to AS 6450N.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A test consensus: full trust at once, 3 networks and a score of 1.5 to list (a
/// sensor at confidence 3 gives its network 0.63).
pub const CONSENSUS: &str = "[consensus]\nnew_sensor_trust = 1.0\nmin_groups = 3\nlist_threshold = 1.5\n";

pub struct Tier {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
}

impl Tier {
    pub fn new() -> Tier {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/asn/loopback.mmdb");
        let config = format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nasn_database = {:?}\n[publish]\ntick_ms = 100\ndelta_log_keep = 1\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info,palisade=debug\"\n{CONSENSUS}",
            dir.path().join("data").display().to_string(),
            fixture.display().to_string(),
        );
        std::fs::write(dir.path().join("central.toml"), config).unwrap();
        Tier { dir, child: None }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("central.toml")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("central.log")
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(super::bin())
            .arg("--config")
            .arg(self.config())
            .arg("central")
            .args(args)
            .output()
            .unwrap()
    }

    pub fn start(&mut self) {
        let before = self.listening_lines();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).unwrap();
        let child = Command::new(super::bin())
            .arg("--config")
            .arg(self.config())
            .args(["central", "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.listening_lines() == before {
            assert!(Instant::now() < deadline, "tier did not start:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    pub fn listening_lines(&self) -> usize {
        self.log_text().matches("central tier listening").count()
    }

    pub fn listening(&self, what: &str) -> SocketAddr {
        let text = self.log_text();
        let line = text.lines().rev().find(|l| l.contains(&format!("{what} listening"))).unwrap();
        line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap()
    }

    /// SIGTERM, and waits for the tier to close its connections and exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() {
                assert!(Instant::now() < deadline, "the tier did not stop on SIGTERM");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Makes the next start listen where this one does (the tier's port survives a restart).
    pub fn pin_listen(&self) {
        let config = std::fs::read_to_string(self.config()).unwrap();
        let pinned = config.replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"{}\"", self.addr()), 1);
        std::fs::write(self.config(), pinned).unwrap();
    }

    pub fn addr(&self) -> SocketAddr {
        self.listening("central tier")
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn tenant(&self, name: &str, community: bool) -> String {
        let flag = if community { "--community" } else { "--no-community" };
        let out = self.cli(&["tenant", "add", name, flag, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn status(&self) -> Value {
        self.json(&["status", "--json"])
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        self.kill9();
    }
}
