//! Network namespaces for tests that need several hosts: made by each test, always
//! removed, never touching the host's own network or firewall.

use super::{bin, NodeDir};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn require_root() {
    let uid = run("id", &["-u"]);
    assert_eq!(uid.trim(), "0", "these tests make network namespaces and nftables rules: run them as root");
}

/// A network namespace, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("pal{}{tag}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn sh(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn nft_list(&self) -> String {
        let out = self.cmd("nft").args(["list", "ruleset"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Two namespaces joined by a veth pair: `a` has 10.77.N.1, `b` has .2 and .3.
pub fn linked_pair(n: u8) -> (Netns, Netns, String) {
    let a = Netns::new("a");
    let b = Netns::new("b");
    let (va, vb) = (format!("{}v", a.name), format!("{}v", b.name));
    run("ip", &["link", "add", &va, "type", "veth", "peer", "name", &vb]);
    run("ip", &["link", "set", &va, "netns", &a.name]);
    run("ip", &["link", "set", &vb, "netns", &b.name]);
    let net = format!("10.77.{n}");
    run("ip", &["-n", &a.name, "addr", "add", &format!("{net}.1/24"), "dev", &va]);
    run("ip", &["-n", &b.name, "addr", "add", &format!("{net}.2/24"), "dev", &vb]);
    run("ip", &["-n", &b.name, "addr", "add", &format!("{net}.3/24"), "dev", &vb]);
    run("ip", &["-n", &a.name, "link", "set", &va, "up"]);
    run("ip", &["-n", &b.name, "link", "set", &vb, "up"]);
    (a, b, net)
}

/// Whether a TCP connection from `source` (in `ns`) to `target` completes within 1.5 s.
pub fn connects(ns: &Netns, source: &str, target: &str, port: u16) -> bool {
    let script = format!(
        "import socket,sys\ns=socket.socket()\ns.settimeout(1.5)\ns.bind(('{source}',0))\n\
         try:\n  s.connect(('{target}',{port}))\nexcept OSError:\n  sys.exit(1)\n"
    );
    ns.cmd("python3").args(["-c", &script]).status().unwrap().success()
}

pub fn wait_until(what: &str, timeout: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node running in a namespace, killed if the test ends without stopping it.
pub struct NsNode(pub Option<Child>);

impl Drop for NsNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn start_in(dir: &NodeDir, ns: &Netns) -> NsNode {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.path("node.log")).unwrap();
    let child = ns
        .cmd(bin().to_str().unwrap())
        .arg("--config")
        .arg(dir.path("config.toml"))
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let node = NsNode(Some(child));
    let sock = dir.path("data").join("admin.sock");
    wait_until("the node to start", Duration::from_secs(30), || {
        std::fs::read_to_string(dir.path("node.log")).unwrap_or_default().contains("palisade node started")
            && std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    node
}

pub fn stop(mut node: NsNode) {
    let Some(mut child) = node.0.take() else { return };
    run("kill", &["-TERM", &child.id().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "node exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("node did not stop");
}
