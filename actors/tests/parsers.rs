//! The shipped parsers (`hub/parsers`) against sample lines of every supported form,
//! real logs, and the benchmark workload.

use palisade_actors::parser::Parsers;
use palisade_actors::{Event, HubFile, RawLine};
use palisade_proto::Timestamp;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// 2026-11-25T06:00:00Z, the start of the generated workload.
const RECEIVED: Timestamp = Timestamp(1_795_586_400_000);

fn hub_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub")
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<HubFile>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
            let text =
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push(HubFile { path: rel, text });
        }
    }
}

fn parsers() -> Parsers {
    let root = hub_dir();
    let mut files = Vec::new();
    read_tree(&root, &root.join("parsers"), &mut files);
    Parsers::load(&files).unwrap_or_else(|e| panic!("hub parsers do not load: {e}"))
}

fn line(log_type: &str, text: &str) -> RawLine {
    RawLine {
        source: Arc::from("test"),
        log_type: Arc::from(log_type),
        text: text.to_owned(),
        received_at: RECEIVED,
    }
}

fn parse(p: &Parsers, log_type: &str, text: &str) -> Event {
    match p.parse(line(log_type, text)) {
        Ok(e) => e,
        Err(miss) => panic!("{text:?} missed: {miss}\n{}", p.explain(&line(log_type, text))),
    }
}

/// `$CARGO_MANIFEST_DIR/../../shared/data/<rel>`: the repository is cloned with
/// `shared/` beside it. Missing data fails loudly rather than passing silently.
fn shared(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel);
    assert!(
        path.exists(),
        "{} is missing: clone the shared data beside the repository (../shared relative to the repo root)",
        path.display()
    );
    path
}

fn read_lines(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect()
}

/// Parses every line; returns (events, misses as (line, reason)).
fn run_file(p: &Parsers, log_type: &str, lines: &[String]) -> (Vec<Event>, Vec<(String, String)>) {
    let mut events = Vec::new();
    let mut misses = Vec::new();
    for l in lines {
        match p.parse(line(log_type, l)) {
            Ok(e) => events.push(e),
            Err(m) => misses.push((l.clone(), m.to_string())),
        }
    }
    (events, misses)
}

fn program_of(syslog_line: &str) -> &str {
    // `Mon dd hh:mm:ss host prog[pid]: ...`
    let prog = syslog_line.split_whitespace().nth(4).unwrap_or("");
    prog.split(['[', ':']).next().unwrap_or("")
}

#[test]
fn elastic_auth_log_sshd_lines_parse() {
    let p = parsers();
    let lines = read_lines(&shared("data/elastic-examples/auth.log"));
    let (events, misses) = run_file(&p, "syslog", &lines);
    let sshd_total = lines.iter().filter(|l| program_of(l) == "sshd").count();
    let sshd_misses: Vec<_> = misses.iter().filter(|(l, _)| program_of(l) == "sshd").collect();
    let failed = events.iter().filter(|e| e.meta.get("log_type") == Some("ssh_failed-auth")).count();
    eprintln!(
        "auth.log: {} lines, {} events, {} misses; sshd {} lines, {} misses, {} ssh_failed-auth",
        lines.len(),
        events.len(),
        misses.len(),
        sshd_total,
        sshd_misses.len(),
        failed
    );
    for (l, why) in sshd_misses.iter().take(40) {
        eprintln!("  sshd miss ({why}): {l}");
    }
    // Every failure form in this file is recognised; the sshd lines left over are
    // informational (`Server listening`, `Starting session`, `input_userauth_request`...).
    let failure_words = [
        "Failed ",
        "Invalid user",
        "authentication failure",
        "maximum authentication",
        "Bad protocol",
        "Did not receive",
        "Unable to negotiate",
        "Too many authentication",
    ];
    let missed_failures: Vec<_> = sshd_misses
        .iter()
        .filter(|(l, _)| failure_words.iter().any(|w| l.contains(w)) && !l.contains("input_userauth_request"))
        .collect();
    assert!(missed_failures.is_empty(), "failure lines missed: {missed_failures:#?}");
    assert!(sshd_misses.len() * 100 < sshd_total * 5, "more than 5% of sshd lines missed");
    assert!(failed > 1_000, "only {failed} ssh_failed-auth events");
    // Known attackers of this log: every `Failed password` line of theirs (including
    // rsyslog's `message repeated N times: [ ... ]`) is a failed authentication.
    for (ip, at_least) in [("24.151.103.17", 157), ("34.204.227.175", 43), ("49.4.143.105", 40)] {
        let n = events
            .iter()
            .filter(|e| {
                e.meta.get("source_ip") == Some(ip) && e.meta.get("log_type") == Some("ssh_failed-auth")
            })
            .count();
        assert!(n >= at_least, "{ip}: {n} failed-auth events, expected at least {at_least}");
    }
    // Its bad-version probes are pre-auth events of the same attacker.
    assert!(events
        .iter()
        .any(|e| e.meta.get("source_ip") == Some("24.151.103.17")
            && e.meta.get("log_type") == Some("ssh_preauth")));
}

#[test]
fn elastic_apache_log_parses() {
    let p = parsers();
    let lines = read_lines(&shared("data/elastic-examples/apache_logs"));
    let (events, misses) = run_file(&p, "apache", &lines);
    for (l, why) in misses.iter().take(20) {
        eprintln!("  miss ({why}): {l}");
    }
    eprintln!("apache_logs: {} lines, {} misses", lines.len(), misses.len());
    assert!(misses.len() * 1000 < lines.len(), "more than 0.1% missed");
    assert!(events.iter().all(|e| e.meta.get("log_type") == Some("http_access-log")));
    assert!(
        events.iter().all(|e| e.time.0 > 1_400_000_000_000 && e.time.0 < 1_500_000_000_000),
        "times from 2015"
    );
    let not_found = events.iter().filter(|e| e.meta.get("http_status") == Some("404")).count();
    assert_eq!(not_found, 213, "404 responses");
    let busiest = events.iter().filter(|e| e.meta.get("source_ip") == Some("66.249.73.135")).count();
    assert_eq!(busiest, 482, "requests of 66.249.73.135");
    let statics = events.iter().filter(|e| e.parsed.get("static_ressource") == Some("true")).count();
    assert!(statics > 3_000 && statics < 9_000, "{statics} static resources");
}

#[test]
fn workload_sshd_failures_and_nginx_lines_parse() {
    let dir = std::env::temp_dir().join(format!("palisade-parser-wl-{}", std::process::id()));
    let status = std::process::Command::new("python3")
        .arg(shared("bench/gen_workload.py"))
        .args(["--lines", "20000", "--seed", "1", "--out"])
        .arg(&dir)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "gen_workload.py failed");
    let p = parsers();
    let auth = read_lines(&dir.join("auth.log"));
    let access = read_lines(&dir.join("access.log"));
    let (_, access_misses) = run_file(&p, "nginx", &access);
    let mut by_form: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let mut sshd_misses = Vec::new();
    for l in auth.iter().filter(|l| program_of(l) == "sshd") {
        let msg = l.split_once("]: ").map_or("", |x| x.1);
        let form: String = msg.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        let slot = by_form.entry(form).or_default();
        slot.0 += 1;
        if let Err(m) = p.parse(line("syslog", l)) {
            slot.1 += 1;
            sshd_misses.push((l.clone(), m.to_string()));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("workload: {} access lines, {} misses", access.len(), access_misses.len());
    for (form, (n, miss)) in &by_form {
        eprintln!("  sshd {form:<45} {n:>5} lines {miss:>4} misses");
    }
    for (l, why) in sshd_misses.iter().take(20) {
        eprintln!("  sshd miss ({why}): {l}");
    }
    for (l, why) in access_misses.iter().take(20) {
        eprintln!("  nginx miss ({why}): {l}");
    }
    assert!(access_misses.is_empty(), "{} nginx lines missed", access_misses.len());
    assert!(sshd_misses.is_empty(), "{} sshd lines missed", sshd_misses.len());
}

/// `cargo test --release -p palisade-actors --test parsers -- --ignored --nocapture throughput`
#[test]
#[ignore = "measurement: run in release mode"]
fn throughput() {
    let p = parsers();
    let auth = read_lines(&shared("data/elastic-examples/auth.log"));
    let apache = read_lines(&shared("data/elastic-examples/apache_logs"));
    let dir = std::env::temp_dir().join(format!("palisade-parser-bench-{}", std::process::id()));
    let status = std::process::Command::new("python3")
        .arg(shared("bench/gen_workload.py"))
        .args(["--lines", "100000", "--seed", "1", "--out"])
        .arg(&dir)
        .status()
        .expect("python3 runs");
    assert!(status.success());
    let wl_auth = read_lines(&dir.join("auth.log"));
    let wl_access = read_lines(&dir.join("access.log"));
    let _ = std::fs::remove_dir_all(&dir);
    let sets: [(&str, &str, &[String]); 4] = [
        ("elastic auth.log", "syslog", &auth),
        ("elastic apache_logs", "apache", &apache),
        ("workload auth.log", "syslog", &wl_auth),
        ("workload access.log", "nginx", &wl_access),
    ];
    let (mut all_lines, mut all_secs) = (0usize, 0f64);
    for (name, log_type, lines) in sets {
        // Lines are built before timing: the source owns them, the parser takes them.
        let rounds = (200_000 / lines.len()).max(1);
        let mut batch = Vec::with_capacity(lines.len() * rounds);
        for _ in 0..rounds {
            batch.extend(lines.iter().map(|l| line(log_type, l)));
        }
        let n = batch.len();
        let cpu0 = thread_cpu_ns();
        let start = std::time::Instant::now();
        let mut ok = 0usize;
        for l in batch {
            if let Ok(e) = p.parse(l) {
                ok += 1;
                std::hint::black_box(e);
            }
        }
        let wall = start.elapsed().as_secs_f64();
        // CPU time of this thread when the kernel reports it (the machine is shared),
        // else wall time.
        let secs = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
            _ => wall,
        };
        all_lines += n;
        all_secs += secs;
        eprintln!(
            "{name:<22} {n:>8} lines {:>6.1}% parsed {:>10.0} lines per CPU-second ({:.0} per wall second)",
            100.0 * ok as f64 / n as f64,
            n as f64 / secs,
            n as f64 / wall
        );
    }
    eprintln!(
        "{:<22} {all_lines:>8} lines {:>18.0} lines per CPU-second",
        "all",
        all_lines as f64 / all_secs
    );
}

/// Parses one log file once, for a profiler: instruction counts (`valgrind
/// --tool=callgrind --toggle-collect='*Parsers::parse*'`) are stable on a busy machine
/// where CPU time is not.
///
/// `PALISADE_PROFILE_FILE=/tmp/wl/access.log PALISADE_PROFILE_TYPE=nginx cargo test
/// --release -p palisade-actors --test parsers -- --ignored --nocapture profile_one_file`
#[test]
#[ignore = "measurement: run under a profiler"]
fn profile_one_file() {
    let (Ok(file), Ok(log_type)) =
        (std::env::var("PALISADE_PROFILE_FILE"), std::env::var("PALISADE_PROFILE_TYPE"))
    else {
        eprintln!("set PALISADE_PROFILE_FILE and PALISADE_PROFILE_TYPE");
        return;
    };
    let p = parsers();
    let batch: Vec<RawLine> = read_lines(Path::new(&file)).iter().map(|l| line(&log_type, l)).collect();
    let n = batch.len();
    let ok = batch.into_iter().filter_map(|l| p.parse(l).ok()).map(std::hint::black_box).count();
    eprintln!("{n} lines, {ok} parsed");
}

/// Nanoseconds this thread has run on a CPU (Linux), from `/proc/thread-self/schedstat`.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// One case of `data/parsers/samples.txt`.
struct Sample {
    at: usize,
    log_type: String,
    expect: Vec<String>,
    text: String,
}

fn samples() -> Vec<Sample> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/parsers/samples.txt");
    let text = std::fs::read_to_string(&path).expect("samples.txt");
    let mut out = Vec::new();
    let mut pending: Option<(usize, String, Vec<String>)> = None;
    for (i, l) in text.lines().enumerate() {
        if let Some(head) = l.strip_prefix("@ ") {
            let mut parts = head.split(" | ");
            let log_type = parts.next().unwrap_or("").trim().to_owned();
            pending = Some((i + 1, log_type, parts.map(str::to_owned).collect()));
        } else if l.starts_with('#') || l.trim().is_empty() {
            continue;
        } else if let Some((at, log_type, expect)) = pending.take() {
            out.push(Sample { at, log_type, expect, text: l.to_owned() });
        } else {
            panic!("samples.txt:{}: a line without an `@ ...` expectation before it", i + 1);
        }
    }
    out
}

fn field(e: &Event, name: &str) -> Option<String> {
    match name {
        "time" => Some(rfc3339(e.time)),
        "parser" => Some(e.parser.to_string()),
        _ => match name.strip_prefix("parsed.") {
            Some(k) => e.parsed.get(k).map(str::to_owned),
            None => e.meta.get(name).map(str::to_owned),
        },
    }
}

fn rfc3339(t: Timestamp) -> String {
    let secs = t.0.div_euclid(1000);
    let ms = t.0.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil from days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, (sod / 60) % 60, sod % 60)
}

#[test]
fn every_supported_form_parses_as_documented() {
    let p = parsers();
    let cases = samples();
    assert!(cases.len() > 100, "samples.txt has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let result = p.parse(line(&case.log_type, &case.text));
        let mut problems = Vec::new();
        let miss = case.expect.iter().find_map(|x| x.strip_prefix("miss="));
        match (&result, miss) {
            (Ok(_), Some(stage)) => problems.push(format!("expected a miss at {stage}, got an event")),
            (Err(m), Some(stage)) => {
                if &*m.stage != stage {
                    problems.push(format!("missed at {} ({}), expected at {stage}", m.stage, m.reason));
                }
                for x in &case.expect {
                    if let Some(want) = x.strip_prefix("reason~") {
                        if !m.reason.to_string().contains(want) {
                            problems.push(format!("reason {:?} lacks {want:?}", m.reason.to_string()));
                        }
                    }
                }
            }
            (Err(m), None) => problems.push(format!("missed: {m}")),
            (Ok(e), None) => {
                for x in &case.expect {
                    if let Some(name) = x.strip_prefix('!') {
                        if let Some(v) = field(e, name) {
                            problems.push(format!("{name} should be unset, is {v:?}"));
                        }
                    } else if let Some((name, want)) = x.split_once('=') {
                        let got = field(e, name);
                        if got.as_deref() != Some(want) {
                            problems.push(format!("{name}: got {got:?}, want {want:?}"));
                        }
                    } else {
                        problems.push(format!("bad expectation {x:?}"));
                    }
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "samples.txt:{} [{}] {}\n    {}\n{}",
                case.at,
                case.log_type,
                case.text,
                problems.join("\n    "),
                p.explain(&line(&case.log_type, &case.text))
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} samples wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn explain_and_list_describe_the_shipped_parsers() {
    let p = parsers();
    let text = "Mar 27 13:06:56 host sshd[1]: Failed password for root from 192.0.2.1 port 22 ssh2";
    let event = parse(&p, "syslog", text);
    let x = p.explain(&line("syslog", text));
    let human = x.to_string();
    assert!(human.contains("node failed-auth-fast: matched"), "{human}");
    assert!(human.contains("palisade/nginx-logs skipped"), "{human}");
    let json = serde_json::to_value(&x).expect("serialises");
    assert_eq!(json["result"]["status"], "parsed");
    assert_eq!(json["result"]["parser"], &*event.parser);
    let names: Vec<String> = p.list().into_iter().map(|i| format!("{} {}", i.stage, i.name)).collect();
    for want in [
        "s00-raw palisade/syslog-logs",
        "s01-parse palisade/sshd-logs",
        "s01-parse palisade/nginx-logs",
        "s01-parse palisade/apache-logs",
        "s02-enrich palisade/dateparse-enrich",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(p.list().iter().all(|i| !i.description.is_empty()));
}
