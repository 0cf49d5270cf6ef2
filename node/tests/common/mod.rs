//! Helpers for tests that run the real `palisade` binary.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

pub mod netns;
pub mod tier;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_palisade"))
}

/// A node's files in a temporary directory.
pub struct NodeDir {
    pub dir: tempfile::TempDir,
}

impl Default for NodeDir {
    fn default() -> Self {
        NodeDir { dir: tempfile::tempdir().expect("tempdir") }
    }
}

impl NodeDir {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `config.toml` with `body` after the data_dir line.
    pub fn write_config(&self, body: &str) -> PathBuf {
        let path = self.path("config.toml");
        // Top-level keys of `body` must come before the first table.
        let text = format!(
            "data_dir = {:?}\n{body}\n[log]\nlevel = \"info,palisade=debug\"\n[allowlist]\nhost_addresses = false\n{}",
            self.path("data").display().to_string(),
            if body.contains("[api]") { "" } else { "[api]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n" }
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Runs `palisade --config <config> ARGS` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(self.path("config.toml"))
            .args(args)
            .output()
            .expect("run palisade")
    }

    /// Starts `palisade run`, logging to `node.log`.
    pub fn start(&self) -> Node {
        let starts_before = started_count(&self.path("node.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("node.log"))
            .expect("log file");
        let child = Command::new(bin())
            .arg("--config")
            .arg(self.path("config.toml"))
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start palisade run");
        let node = Node { child, socket: self.path("data").join("admin.sock"), log: self.path("node.log") };
        node.wait_ready(starts_before);
        node
    }
}

fn started_count(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches("palisade node started").count()
}

/// A running node.
pub struct Node {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Node {
    /// Waits for this node's own start line (the log is shared across restarts) and
    /// for its admin socket to answer.
    fn wait_ready(&self, starts_before: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if started_count(&self.log) > starts_before
                && std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node did not start:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "node exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("node did not stop on SIGTERM");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// The address a `"<what> listening"` log line of this node gave (the last one).
    pub fn listening(&self, what: &str) -> std::net::SocketAddr {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains(&format!("{what} listening")))
            .unwrap_or_else(|| panic!("no '{what} listening' line in the log:\n{text}"));
        let addr = line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
        addr.parse().unwrap()
    }

    /// The Local API's address.
    pub fn api(&self) -> std::net::SocketAddr {
        self.listening("local API")
    }

    /// The metrics endpoint's address.
    pub fn metrics(&self) -> std::net::SocketAddr {
        self.listening("metrics endpoint")
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Http {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Http {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request (`Connection: close`), with a minimal response parser that
/// understands chunked bodies.
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Http {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: palisade-tests\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let mut rest = &raw[split + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16).unwrap();
            rest = &rest[end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        out
    } else {
        rest.to_vec()
    };
    Http { status, headers, body }
}

/// `palisade bouncers add NAME --json`: the key.
pub fn add_bouncer(dir: &NodeDir, name: &str) -> String {
    let out = dir.cli(&["bouncers", "add", name, "--json"]);
    assert!(out.status.success(), "bouncers add: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["api_key"].as_str().unwrap().to_owned()
}

/// Appends lines to a file (creating it).
pub fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open log");
    for l in lines {
        writeln!(f, "{l}").expect("append");
    }
    f.flush().expect("flush");
}

/// sshd "Failed password" lines from `ip`, stamped now, as syslog writes them.
pub fn ssh_failures(ip: &str, count: usize, port0: u16) -> Vec<String> {
    let stamp = chrono::Utc::now().format("%b %e %H:%M:%S");
    (0..count)
        .map(|i| {
            format!(
                "{stamp} web-01 sshd[{}]: Failed password for invalid user admin{} from {ip} port {} ssh2",
                4000 + i,
                i,
                port0 as usize + i
            )
        })
        .collect()
}

/// `palisade decisions list --json`, parsed.
pub fn decisions(dir: &NodeDir) -> Vec<serde_json::Value> {
    let out = dir.cli(&["decisions", "list", "--json"]);
    assert!(out.status.success(), "decisions list failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("decisions JSON")
}

/// Polls until `pred` holds for the decision list, or panics after `timeout`.
pub fn wait_for_decisions(
    dir: &NodeDir,
    timeout: Duration,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = decisions(dir);
        if pred(&list) {
            return list;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out; decisions: {list:#?}\nnode log:\n{}",
                std::fs::read_to_string(dir.path("node.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Values of decisions in a list.
pub fn values(list: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().filter_map(|d| d["value"].as_str().map(str::to_owned)).collect();
    v.sort();
    v
}
