//! Syslog (real sockets on 127.0.0.1 port 0), journald (a fake journalctl script),
//! stdin, and the configuration.

use palisade_actors::event::LineBatch;
use palisade_actors::ingest::{
    self, journald, stdin, syslog, Common, IngestConfig, JournaldSource, MemoryCursorStore, SourceKind,
    SourceStats, StartAt, SyslogProtocol, SyslogSource,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

async fn lines(rx: &mut mpsc::Receiver<LineBatch>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let b = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out with {} of {n}: {out:?}", out.len()))
            .expect("open");
        assert!(b.checkpoint.is_none() || b.lines.iter().all(|l| &*l.source == "journald"));
        out.extend(b.lines.into_iter().map(|l| l.text));
    }
    assert_eq!(out.len(), n, "{out:?}");
    out
}

fn syslog_cfg() -> SyslogSource {
    SyslogSource { max_message_len: 64, ..SyslogSource::default() }
}

#[tokio::test]
async fn syslog_udp_datagrams_and_oversized_messages() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = sock.local_addr().expect("addr");
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let stats = Arc::new(SourceStats::new("udp", SourceKind::SyslogUdp));
    let task = tokio::spawn(syslog::run_udp(
        sock,
        syslog_cfg(),
        Common::default(),
        tx,
        shutdown.clone(),
        stats.clone(),
    ));
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    client.send_to(b"<13>Jan  1 00:00:00 host sshd[1]: hello\n", addr).await.expect("send");
    let b = tokio::time::timeout(WAIT, rx.recv()).await.expect("batch").expect("open");
    assert_eq!(b.lines[0].text, "<13>Jan  1 00:00:00 host sshd[1]: hello");
    assert_eq!(&*b.lines[0].source, format!("syslog:udp:{addr}"));
    assert_eq!(&*b.lines[0].log_type, "syslog");
    let big = format!("<13>{}", "z".repeat(200));
    client.send_to(big.as_bytes(), addr).await.expect("send");
    client.send_to(b"<13>after\r\n", addr).await.expect("send");
    assert_eq!(lines(&mut rx, 2).await, [big[..64].to_owned(), "<13>after".to_owned()]);
    assert_eq!(stats.snapshot().truncated, 1);
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops").expect("join");
}

async fn start_tcp(
    cfg: SyslogSource,
) -> (
    std::net::SocketAddr,
    mpsc::Receiver<LineBatch>,
    CancellationToken,
    Arc<SourceStats>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let stats = Arc::new(SourceStats::new("tcp", SourceKind::SyslogTcp));
    let task =
        tokio::spawn(syslog::run_tcp(listener, cfg, Common::default(), tx, shutdown.clone(), stats.clone()));
    (addr, rx, shutdown, stats, task)
}

#[tokio::test]
async fn syslog_tcp_both_framings_and_oversized_messages() {
    let (addr, mut rx, shutdown, stats, task) = start_tcp(syslog_cfg()).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let long = "y".repeat(100);
    let stream =
        format!("<13>newline framed\n15 <13>octet\ncount<13>{long}\n104 <13>{long}<13>last, unterminated");
    c.write_all(stream.as_bytes()).await.expect("write");
    c.shutdown().await.expect("close");
    let got = lines(&mut rx, 5).await;
    assert_eq!(got[0], "<13>newline framed");
    assert_eq!(got[1], "<13>octet\ncount");
    assert_eq!(got[2], format!("<13>{}", &long[..60]));
    assert_eq!(got[3], format!("<13>{}", &long[..60]));
    assert_eq!(got[4], "<13>last, unterminated");
    assert_eq!(stats.snapshot().truncated, 2);
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops").expect("join");
}

#[tokio::test]
async fn syslog_tcp_many_connections() {
    let (addr, mut rx, shutdown, _stats, task) = start_tcp(syslog_cfg()).await;
    let mut clients = Vec::new();
    for c in 0..40 {
        clients.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            for i in 0..25 {
                let msg = format!("<13>client {c} msg {i}");
                let framed = if i % 2 == 0 { format!("{msg}\n") } else { format!("{} {msg}", msg.len()) };
                s.write_all(framed.as_bytes()).await.expect("write");
            }
        }));
    }
    let mut got = lines(&mut rx, 1000).await;
    for c in clients {
        c.await.expect("client");
    }
    got.sort();
    let mut want: Vec<String> =
        (0..40).flat_map(|c| (0..25).map(move |i| format!("<13>client {c} msg {i}"))).collect();
    want.sort();
    assert_eq!(got, want);
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops").expect("join");
}

/// Reads until the server closes the connection (or the generous timeout fails the test).
async fn closed_by_server(s: &mut TcpStream) {
    let mut buf = [0u8; 16];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await.expect("server closes the connection") {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn syslog_tcp_connection_cap_idle_and_slowloris() {
    let cfg = SyslogSource {
        max_connections: 2,
        idle_timeout: Duration::from_millis(400),
        message_timeout: Duration::from_millis(600),
        ..syslog_cfg()
    };
    let (addr, mut rx, shutdown, stats, task) = start_tcp(cfg).await;
    // Two connections take the slots (each proves it is served)...
    let mut a = TcpStream::connect(addr).await.expect("a");
    a.write_all(b"<13>a\n").await.expect("write");
    let mut b = TcpStream::connect(addr).await.expect("b");
    b.write_all(b"<13>b\n").await.expect("write");
    let mut got = lines(&mut rx, 2).await;
    got.sort();
    assert_eq!(got, ["<13>a", "<13>b"]);
    // ...a third is closed at once.
    let mut c = TcpStream::connect(addr).await.expect("c");
    closed_by_server(&mut c).await;
    assert_eq!(stats.snapshot().connections_dropped, 1);
    // `a` stays silent: closed for idleness. `b` trickles one message forever: closed
    // when the message is not complete in time, although it is never idle.
    let trickle = tokio::spawn(async move {
        let _ = b.write_all(b"<13>slow").await;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if b.write_all(b".").await.is_err() {
                return b;
            }
        }
        b
    });
    closed_by_server(&mut a).await;
    let mut b = trickle.await.expect("trickle");
    closed_by_server(&mut b).await;
    assert_eq!(stats.snapshot().connections_dropped, 3);
    // The slots are free again.
    let mut d = TcpStream::connect(addr).await.expect("d");
    d.write_all(b"<13>d\n").await.expect("write");
    assert_eq!(lines(&mut rx, 1).await, ["<13>d"]);
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops").expect("join");
}

#[tokio::test]
async fn spawn_binds_syslog_on_both_protocols() {
    let config = IngestConfig {
        syslog: vec![SyslogSource {
            listen: vec!["127.0.0.1:0".parse().expect("addr")],
            protocol: SyslogProtocol::Both,
            ..SyslogSource::default()
        }],
        ..IngestConfig::default()
    };
    let (tx, mut rx) = mpsc::channel(8);
    // The node signals shutdown with a watch channel; a token works the same.
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let handle = ingest::spawn(&config, Arc::new(MemoryCursorStore::new()), tx, shutdown).expect("spawn");
    assert_eq!(handle.source_count(), 2);
    let names: Vec<String> = handle.stats().iter().map(|s| s.name.clone()).collect();
    let udp: std::net::SocketAddr =
        names[0].strip_prefix("syslog:udp:").expect("udp name").parse().expect("addr");
    let tcp: std::net::SocketAddr =
        names[1].strip_prefix("syslog:tcp:").expect("tcp name").parse().expect("addr");
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    client.send_to(b"<13>over udp", udp).await.expect("send");
    assert_eq!(lines(&mut rx, 1).await, ["<13>over udp"]);
    let mut s = TcpStream::connect(tcp).await.expect("connect");
    s.write_all(b"<13>over tcp\n").await.expect("write");
    assert_eq!(lines(&mut rx, 1).await, ["<13>over tcp"]);
    stop.send(true).expect("send");
    tokio::time::timeout(WAIT, handle.join()).await.expect("stops");
}

/// A fake journalctl: records its arguments, prints two entries the first time and
/// exits; the second time prints one more and waits (as --follow does).
fn fake_journalctl(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let args = dir.join("args");
    let script = dir.join("journalctl");
    let body = format!(
        r#"#!/bin/sh
echo "$@" >> '{args}'
if [ "$(wc -l < '{args}')" -eq 1 ]; then
  echo '{{"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1714557600000000","_HOSTNAME":"h","SYSLOG_IDENTIFIER":"sshd","_PID":"7","MESSAGE":"first"}}'
  echo 'not json'
  echo '{{"__CURSOR":"c2","__REALTIME_TIMESTAMP":"1714557601000000","_HOSTNAME":"h","SYSLOG_IDENTIFIER":"sshd","MESSAGE":[98,121,116,101,115,255]}}'
  echo 'boom' >&2
  exit 3
fi
echo '{{"__CURSOR":"c3","__REALTIME_TIMESTAMP":"1714557602000000","_HOSTNAME":"h","SYSLOG_IDENTIFIER":"sshd","_PID":"7","MESSAGE":"third"}}'
exec sleep 600
"#,
        args = args.display()
    );
    std::fs::write(&script, body).expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (script, args)
}

#[tokio::test]
async fn journald_resumes_from_cursor_renders_entries_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (script, args) = fake_journalctl(dir.path());
    let cfg = JournaldSource {
        filters: vec!["_SYSTEMD_UNIT=ssh.service".into()],
        log_type: "syslog".into(),
        start_at: StartAt::End,
        since: None,
        journalctl: script,
        name: None,
    };
    let store = Arc::new(MemoryCursorStore::new());
    store.save(&palisade_actors::event::Checkpoint {
        key: journald::checkpoint_key(&cfg),
        value: b"c0".to_vec(),
    });
    let config = IngestConfig { journald: vec![cfg], ..IngestConfig::default() };
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let handle = ingest::spawn(&config, store, tx, shutdown.clone()).expect("spawn");
    let mut got = Vec::new();
    let mut checkpoints = Vec::new();
    while got.len() < 3 {
        let b = tokio::time::timeout(WAIT, rx.recv()).await.expect("batch").expect("open");
        checkpoints.push(b.checkpoint.clone().expect("journald batches carry a cursor"));
        got.extend(b.lines.into_iter().map(|l| (l.text, l.source.to_string())));
    }
    assert_eq!(got[0].0, "2024-05-01T10:00:00.000000+00:00 h sshd[7]: first");
    assert_eq!(got[1].0, "2024-05-01T10:00:01.000000+00:00 h sshd: bytes\u{fffd}");
    assert_eq!(got[2].0, "2024-05-01T10:00:02.000000+00:00 h sshd[7]: third");
    assert_eq!(got[0].1, "journald");
    let last = checkpoints.last().expect("checkpoint");
    assert_eq!(
        (last.key.as_str(), last.value.as_slice()),
        ("journald:_SYSTEMD_UNIT=ssh.service", &b"c3"[..])
    );
    let recorded = std::fs::read_to_string(&args).expect("args");
    let runs: Vec<&str> = recorded.lines().collect();
    assert_eq!(
        runs[0],
        "--follow --output=json --no-pager --after-cursor=c0 --no-tail _SYSTEMD_UNIT=ssh.service"
    );
    // Restarted after the exit, from the last entry handed over.
    assert_eq!(
        runs[1],
        "--follow --output=json --no-pager --after-cursor=c2 --no-tail _SYSTEMD_UNIT=ssh.service"
    );
    let stats = handle.stats()[0].snapshot();
    assert_eq!(stats.rotations, 1);
    assert!(stats.read_errors >= 2, "bad json and the exit are counted: {stats:?}");
    shutdown.cancel();
    tokio::time::timeout(WAIT, handle.join()).await.expect("stops; the child is killed");
}

#[tokio::test]
async fn journald_missing_command_is_an_error_retried_not_a_crash() {
    let cfg = JournaldSource {
        filters: vec![],
        log_type: "syslog".into(),
        start_at: StartAt::End,
        since: None,
        journalctl: "/nonexistent/journalctl".into(),
        name: Some("j".into()),
    };
    let (tx, _rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let config = IngestConfig { journald: vec![cfg], ..IngestConfig::default() };
    let handle =
        ingest::spawn(&config, Arc::new(MemoryCursorStore::new()), tx, shutdown.clone()).expect("spawn");
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle.stats()[0].snapshot().read_errors == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(WAIT, handle.join()).await.expect("stops during backoff");
}

#[tokio::test]
async fn stdin_reads_to_eof_and_flushes_the_last_line() {
    let input: &[u8] = b"one\r\ntwo\n\nthree";
    let (tx, mut rx) = mpsc::channel(8);
    let stats = Arc::new(SourceStats::new("stdin", SourceKind::Stdin));
    let common = Common { batch_lines: 2, ..Common::default() };
    stdin::run_reader(input, "nginx", common, tx, CancellationToken::new(), stats.clone()).await;
    let mut batches = Vec::new();
    while let Some(b) = rx.recv().await {
        batches.push(b);
    }
    let texts: Vec<&str> = batches.iter().flat_map(|b| b.lines.iter().map(|l| l.text.as_str())).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert!(batches.iter().all(|b| b.lines.len() <= 2 && b.checkpoint.is_none()));
    assert_eq!(&*batches[0].lines[0].log_type, "nginx");
    assert_eq!(stats.snapshot().lines, 3);
}

#[test]
fn config_parses_with_defaults_and_validates() {
    #[derive(serde::Deserialize)]
    struct Node {
        ingest: IngestConfig,
    }
    let text = r#"
        [ingest]
        batch_lines = 256

        [[ingest.files]]
        paths = ["/var/log/auth.log", "/var/log/nginx/*.log"]
        type = "syslog"

        [[ingest.syslog]]
        listen = ["0.0.0.0:5514"]
        protocol = "both"
        idle_timeout = "1m"

        [[ingest.journald]]
        filters = ["_SYSTEMD_UNIT=ssh.service"]

        [ingest.stdin]
        type = "nginx"
    "#;
    let cfg = toml::from_str::<Node>(text).expect("parses").ingest;
    cfg.validate().expect("valid");
    assert_eq!((cfg.batch_lines, cfg.max_line_bytes, cfg.channel_capacity), (256, 65536, 64));
    assert_eq!(cfg.poll_interval, Duration::from_secs(1));
    assert_eq!(cfg.files[0].start_at, StartAt::End);
    assert_eq!(cfg.syslog[0].idle_timeout, Duration::from_secs(60));
    assert_eq!(cfg.syslog[0].max_message_len, 8192);
    assert_eq!(cfg.journald[0].log_type, "syslog");
    assert_eq!(cfg.journald[0].journalctl, std::path::PathBuf::from("journalctl"));

    let unknown = toml::from_str::<Node>("[ingest]\nmax_line = 5\n");
    assert!(unknown.is_err(), "unknown keys are refused");
    let bad_duration = toml::from_str::<Node>("[[ingest.syslog]]\nidle_timeout = \"10\"\n");
    assert!(bad_duration.is_err());

    let err = toml::from_str::<Node>("[[ingest.files]]\npaths = [\"var/log/x\"]\ntype = \"syslog\"\n")
        .expect("parses")
        .ingest
        .validate()
        .expect_err("relative path");
    assert!(err.to_string().contains("ingest.files[0].paths"), "{err}");
    let err = toml::from_str::<Node>("[[ingest.journald]]\nfilters = [\"--output=cat\"]\n")
        .expect("parses")
        .ingest
        .validate()
        .expect_err("option injection");
    assert!(err.to_string().contains("ingest.journald[0].filters"), "{err}");
}
