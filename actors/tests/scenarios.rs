//! The shipped scenarios (`hub/scenarios`, `hub/data`) on realistic attack and benign
//! event sequences, built by hand (the parsers are tested on their own), plus two
//! `#[ignore]` tools: a throughput measurement and a scorer over a generated workload.
//!
//! ```sh
//! cargo test -p palisade-actors --release --test scenarios -- --ignored --nocapture throughput
//! WORKLOAD=/tmp/wl cargo test -p palisade-actors --release --test scenarios -- --ignored --nocapture workload
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use palisade_actors::scenario::{Buckets, Scenarios};
use palisade_actors::{Event, Fields, HubFile, Overflow, RawLine};
use palisade_proto::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn hub_files() -> Vec<HubFile> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../hub");
    let mut files = Vec::new();
    for dir in ["scenarios", "data"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir)).expect("hub dir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let text = std::fs::read_to_string(e.path()).expect("read");
            files.push(HubFile { path: format!("{dir}/{}", e.file_name().to_string_lossy()), text });
        }
    }
    files
}

fn engine() -> Buckets {
    Buckets::new(Arc::new(Scenarios::load(&hub_files()).expect("shipped scenarios load")))
}

fn ev(t_ms: i64, meta: &[(&str, &str)], parsed: &[(&str, &str)]) -> Event {
    let mut m = Fields::new();
    for (k, v) in meta {
        m.set(Arc::from(*k), *v);
    }
    let mut p = Fields::new();
    for (k, v) in parsed {
        p.set(Arc::from(*k), *v);
    }
    Event {
        time: Timestamp(t_ms),
        meta: m,
        parsed: p,
        parser: Arc::from("test"),
        line: RawLine {
            source: Arc::from("test"),
            log_type: Arc::from("test"),
            text: String::new(),
            received_at: Timestamp(t_ms),
        },
    }
}

fn ssh(t_ms: i64, ip: &str, log_type: &str, user: &str) -> Event {
    ev(
        t_ms,
        &[("log_type", log_type), ("service", "ssh"), ("source_ip", ip), ("target_user", user)],
        &[("program", "sshd")],
    )
}

const STATIC_EXT: &[&str] = &[".css", ".js", ".png", ".jpg", ".svg", ".webp", ".woff2", ".ico", ".gif"];

fn http_full(t_ms: i64, ip: &str, verb: &str, path: &str, status: u16, ua: &str) -> Event {
    let no_query = path.split('?').next().unwrap_or("");
    let file = no_query.rsplit('/').next().unwrap_or("");
    let ext = file.rfind('.').map(|i| &file[i..]).unwrap_or("");
    let is_static = STATIC_EXT.contains(&ext.to_ascii_lowercase().as_str());
    let status = status.to_string();
    let args = path.split_once('?').map(|(_, a)| a).unwrap_or("");
    ev(
        t_ms,
        &[
            ("log_type", "http_access-log"),
            ("service", "http"),
            ("source_ip", ip),
            ("http_path", path),
            ("http_status", &status),
            ("http_verb", verb),
            ("http_user_agent", ua),
            ("target_fqdn", ""),
        ],
        &[
            ("file_name", file),
            ("file_ext", ext),
            ("static_ressource", if is_static { "true" } else { "false" }),
            ("http_args", args),
        ],
    )
}

const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";

fn run(evs: &[Event]) -> Vec<Overflow> {
    let mut b = engine();
    let mut out = Vec::new();
    for e in evs {
        b.pour(e, &mut out);
    }
    if let Some(last) = evs.iter().map(|e| e.time).max() {
        b.advance(Timestamp(last.0 + 86_400_000), &mut out);
    }
    out
}

fn fired(out: &[Overflow]) -> BTreeSet<String> {
    out.iter().map(|o| o.scenario.to_string()).collect()
}

fn assert_fires(evs: &[Event], scenario: &str) {
    let out = run(evs);
    assert!(fired(&out).contains(scenario), "{scenario} did not fire; fired: {:?}", fired(&out));
}

fn assert_quiet(evs: &[Event]) {
    let out = run(evs);
    assert!(out.is_empty(), "benign traffic flagged: {:?}", fired(&out));
}

#[test]
fn ssh_bf_fires_on_fast_failures_not_on_near_miss() {
    let evs: Vec<Event> = (0..8).map(|i| ssh(i * 1500, "203.0.113.5", "ssh_failed-auth", "root")).collect();
    assert_fires(&evs, "palisade/ssh-bf");
    // A user who mistypes 3 times, then logs in; twice in the day.
    let mut evs = Vec::new();
    for base in [0, 3 * 3_600_000] {
        for i in 0..3 {
            evs.push(ssh(base + i * 5000, "198.51.100.7", "ssh_failed-auth", "alice"));
        }
        evs.push(ssh(base + 20_000, "198.51.100.7", "ssh_success", "alice"));
    }
    assert_quiet(&evs);
}

#[test]
fn ssh_slow_bf_fires_on_one_failure_every_few_minutes() {
    let evs: Vec<Event> =
        (0..30).map(|i| ssh(i * 200_000, "203.0.113.6", "ssh_failed-auth", "root")).collect();
    let out = run(&evs);
    assert!(fired(&out).contains("palisade/ssh-slow-bf"), "{:?}", fired(&out));
    assert!(!fired(&out).contains("palisade/ssh-bf"));
}

#[test]
fn ssh_user_enum_fires_on_distinct_users() {
    let users = ["admin", "test", "oracle", "postgres", "git", "pi", "guest", "ubuntu"];
    let evs: Vec<Event> = users
        .iter()
        .enumerate()
        .map(|(i, u)| ssh(i as i64 * 12_000, "203.0.113.7", "ssh_failed-auth", u))
        .collect();
    let out = run(&evs);
    assert!(fired(&out).contains("palisade/ssh-user-enum"), "{:?}", fired(&out));
    // The same user over and over is not enumeration.
    let evs: Vec<Event> = (0..5).map(|i| ssh(i * 12_000, "203.0.113.8", "ssh_failed-auth", "root")).collect();
    assert!(!fired(&run(&evs)).contains("palisade/ssh-user-enum"));
}

#[test]
fn ssh_preauth_flood_fires_on_floods_not_on_monitors() {
    let evs: Vec<Event> = (0..300).map(|i| ssh(i * 20, "203.0.113.9", "ssh_preauth", "")).collect();
    assert_fires(&evs, "palisade/ssh-preauth-flood");
    // A monitor that connects every second all day.
    let evs: Vec<Event> = (0..20_000).map(|i| ssh(i * 1000, "198.51.100.9", "ssh_preauth", "")).collect();
    assert_quiet(&evs);
}

#[test]
fn http_probing_fires_on_scanners() {
    let paths = [
        "/wp-login.php",
        "/.env",
        "/phpmyadmin/",
        "/admin/",
        "/xmlrpc.php",
        "/.git/config",
        "/config.json",
        "/backup.zip",
        "/test.php",
        "/cgi-bin/luci",
        "/actuator/env",
        "/owa/",
        "/solr/",
    ];
    let evs: Vec<Event> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| http_full(i as i64 * 700, "203.0.113.10", "GET", p, 404, "python-requests/2.31.0"))
        .collect();
    assert_fires(&evs, "palisade/http-probing");
}

#[test]
fn http_slow_probing_fires_on_low_and_slow_scanners() {
    let paths = [
        "/wp-login.php",
        "/.env",
        "/phpmyadmin/",
        "/xmlrpc.php",
        "/.git/config",
        "/admin.php",
        "/server-status",
        "/cgi-bin/test.cgi",
        "/actuator/health",
        "/pma/",
    ];
    let evs: Vec<Event> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| http_full(i as i64 * 300_000, "203.0.113.11", "GET", p, 404, "curl/7.88.1"))
        .collect();
    assert_fires(&evs, "palisade/http-probing-slow");
}

#[test]
fn http_sensitive_files_and_backdoors() {
    let evs: Vec<Event> = ["/.env", "/.git/config", "/wp-config.php.bak", "/.aws/credentials"]
        .iter()
        .enumerate()
        .map(|(i, p)| http_full(i as i64 * 2000, "203.0.113.12", "GET", p, 404, "Go-http-client/1.1"))
        .collect();
    assert_fires(&evs, "palisade/http-sensitive-files");
    let evs: Vec<Event> = ["/shell.php", "/wso.php", "/c99.php"]
        .iter()
        .enumerate()
        .map(|(i, p)| http_full(i as i64 * 2000, "203.0.113.13", "GET", p, 404, "Go-http-client/1.1"))
        .collect();
    assert_fires(&evs, "palisade/http-backdoor-probing");
}

#[test]
fn http_bad_user_agents() {
    for ua in [
        "sqlmap/1.8.11#stable (https://sqlmap.org)",
        "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000001)",
        "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
        "Mozilla/5.0 zgrab/0.x",
        "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
        "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
        "WPScan v3.8.27 (https://wpscan.com/wordpress-security-scanner)",
    ] {
        let out = run(&[http_full(0, "203.0.113.14", "GET", "/", 200, ua)]);
        assert!(fired(&out).contains("palisade/http-bad-user-agent"), "{ua}");
    }
    for ua in [
        BROWSER,
        "curl/8.5.0",
        "okhttp/4.12.0",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ] {
        assert_quiet(&[http_full(0, "198.51.100.14", "GET", "/", 200, ua)]);
    }
}

#[test]
fn http_malformed_requests() {
    let garbage = |t, ip: &str| {
        ev(
            t,
            &[
                ("log_type", "http_access-log"),
                ("service", "http"),
                ("source_ip", ip),
                ("http_status", "400"),
                ("http_path", "\\x16\\x03\\x01\\x00\\xA5"),
                ("target_fqdn", ""),
            ],
            &[],
        )
    };
    assert_fires(
        &[garbage(0, "203.0.113.15"), garbage(60_000, "203.0.113.15")],
        "palisade/http-malformed-requests",
    );
    assert_quiet(&[garbage(0, "198.51.100.15")]);
}

#[test]
fn http_injection_probes() {
    let sqli = [
        "/search?q=tent%27%20AND%201234%3D1234%20AND%20%27abcd%27%3D%27abcd",
        "/search?q=tent%20UNION%20ALL%20SELECT%20NULL%2CNULL--%20-",
        "/search?q=tent%20AND%20SLEEP%285%29",
    ];
    let evs: Vec<Event> = sqli
        .iter()
        .enumerate()
        .map(|(i, p)| http_full(i as i64 * 300, "203.0.113.16", "GET", p, 200, BROWSER))
        .collect();
    assert_fires(&evs, "palisade/http-sqli-probing");
    let xss =
        ["/search?q=%3Cscript%3Ealert(1)%3C/script%3E", "/search?q=%22%3E%3Csvg%20onload%3Dalert(1)%3E"];
    let evs: Vec<Event> = xss
        .iter()
        .enumerate()
        .map(|(i, p)| http_full(i as i64 * 300, "203.0.113.17", "GET", p, 200, BROWSER))
        .collect();
    assert_fires(&evs, "palisade/http-xss-probing");
    let trav = [
        "/static/../../../../etc/passwd",
        "/cgi-bin/.%2e/.%2e/.%2e/bin/sh",
        "/download?file=%252e%252e%252fetc%252fpasswd",
    ];
    let evs: Vec<Event> = trav
        .iter()
        .enumerate()
        .map(|(i, p)| http_full(i as i64 * 300, "203.0.113.18", "GET", p, 404, BROWSER))
        .collect();
    assert_fires(&evs, "palisade/http-path-traversal");
    // Ordinary searches are not injections.
    let evs: Vec<Event> = [
        "/search?q=2+person+tent",
        "/search?q=down+jacket",
        "/search?q=boots+size+44",
        "/category/tents?page=2",
        "/search?q=select+a+stove",
        "/search?q=union+jack+flag",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| http_full(i as i64 * 300, "198.51.100.18", "GET", p, 200, BROWSER))
    .collect();
    assert_quiet(&evs);
}

#[test]
fn http_login_bruteforce() {
    let evs: Vec<Event> =
        (0..15).map(|i| http_full(i * 2000, "203.0.113.19", "POST", "/wp-login.php", 200, BROWSER)).collect();
    assert_fires(&evs, "palisade/http-login-bf");
    let evs: Vec<Event> = (0..8)
        .map(|i| {
            ev(
                i * 3000,
                &[
                    ("log_type", "http_error-log"),
                    ("service", "http"),
                    ("source_ip", "203.0.113.20"),
                    ("sub_type", "auth_fail"),
                ],
                &[],
            )
        })
        .collect();
    assert_fires(&evs, "palisade/http-auth-bf");
    // A user who fails twice then logs in, and an API client refreshing its token.
    let mut evs: Vec<Event> =
        (0..3).map(|i| http_full(i * 8000, "198.51.100.19", "POST", "/login", 200, BROWSER)).collect();
    evs.extend((0..50).map(|i| {
        http_full(i * 60_000, "198.51.100.20", "POST", "/api/v1/auth/refresh", 200, "okhttp/4.12.0")
    }));
    assert_quiet(&evs);
}

#[test]
fn http_aggressive_crawl() {
    let evs: Vec<Event> = (0..100)
        .map(|i| {
            http_full(
                i * 100,
                "203.0.113.21",
                "GET",
                &format!("/products/{}", 1000 + i),
                200,
                "python-requests/2.31.0",
            )
        })
        .collect();
    assert_fires(&evs, "palisade/http-crawl-non-statics");
}

/// A day of benign web traffic: a slow good bot, an office NAT full of browsers, 304s,
/// the odd stale link.
#[test]
fn benign_web_traffic_is_not_flagged() {
    let mut evs = Vec::new();
    let mut t = 0i64;
    // Googlebot: 5,000 pages, one every 2-10 s, 2 % 404.
    for i in 0..5000i64 {
        t += 2000 + (i * 7919 % 8000);
        let status = if i % 50 == 0 { 404 } else { 200 };
        evs.push(http_full(
            t,
            "66.249.66.1",
            "GET",
            &format!("/products/{}", 1000 + i % 4000),
            status,
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ));
    }
    // Office NAT: 40 browsers browsing at once, pages plus assets, some 304s and 404s.
    let mut t = 0i64;
    for i in 0..20_000i64 {
        t += 250 + (i * 104_729 % 1500);
        let path = match i % 10 {
            0 => "/static/css/main.css".to_owned(),
            1 => "/static/js/app.js".to_owned(),
            2 => "/static/img/logo.svg".to_owned(),
            3 => "/cart".to_owned(),
            4 => "/".to_owned(),
            _ => format!("/products/{}", 1000 + (i * 31 % 4000)),
        };
        let status = if i % 10 < 3 && i % 3 == 0 {
            304
        } else if i % 97 == 0 {
            404
        } else {
            200
        };
        evs.push(http_full(t, "198.51.100.30", "GET", &path, status, BROWSER));
    }
    // A feed reader polling with 304s.
    for i in 0..500 {
        evs.push(http_full(i * 900_000, "198.51.100.31", "GET", "/blog/feed.xml", 304, "Feedly/1.0"));
    }
    evs.sort_by_key(|e| e.time);
    assert_quiet(&evs);
}

// ------------------------------------------------------------------- measurement

/// `n` events (30 % sshd, 70 % nginx) from `pool` distinct addresses (0: every event a new one).
fn realistic_events(n: usize, pool: u64) -> Vec<Event> {
    let mut evs = Vec::with_capacity(n);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let paths = [
        "/",
        "/products/1234",
        "/category/tents",
        "/static/css/main.css",
        "/static/js/app.js",
        "/cart",
        "/search?q=tent",
        "/blog/layering-101",
        "/wp-login.php",
        "/.env",
        "/api/v1/cart",
    ];
    for i in 0..n {
        let r = next();
        let a = if pool == 0 { r } else { (r % pool).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7 };
        let ip = format!("{}.{}.{}.{}", 1 + a % 200, (a >> 8) % 256, (a >> 16) % 256, 1 + (a >> 24) % 250);
        let t = i as i64 * 5;
        let e = match r % 10 {
            0..=2 => ssh(t, &ip, if r % 3 == 0 { "ssh_failed-auth" } else { "ssh_success" }, "root"),
            3 => ssh(t, &ip, "ssh_preauth", ""),
            _ => {
                let path = paths[(r >> 32) as usize % paths.len()];
                let status = if (r >> 40) % 5 == 0 { 404 } else { 200 };
                http_full(t, &ip, "GET", path, status, BROWSER)
            }
        };
        evs.push(e);
    }
    evs
}

/// CPU time of this thread, from /proc (10 ms resolution): the machine may be busy.
fn thread_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// A fingerprint of the overflows (in order) and the counters, so that a faster engine can
/// be checked to behave exactly like the previous one on the measurement workload.
fn digest(out: &[Overflow], stats: &[palisade_actors::scenario::ScenarioStats]) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same input gives the same digest on every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for o in out {
        (&*o.scenario, &o.value, &o.group_key, o.events_count, o.first_at.0, o.last_at.0).hash(&mut h);
    }
    for s in stats {
        let counters = (s.poured, s.overflowed, s.instantiated, s.underflowed, s.blackholed, s.evicted);
        (&*s.name, counters, s.distinct_dropped, s.eval_errors).hash(&mut h);
    }
    h.finish()
}

/// Prints events/s through `Buckets::pour` with every shipped scenario loaded, then
/// advances a day (outside the timed part) and prints a digest of the overflows and
/// counters: an optimisation must leave it unchanged.
#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn throughput() {
    for (pool, what) in
        [(5_000, "5,000 source addresses"), (0, "a new source address for every event (worst case)")]
    {
        // THROUGHPUT_EVENTS=100000 for a run under callgrind.
        let n = std::env::var("THROUGHPUT_EVENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
        let evs = realistic_events(n, pool);
        let mut b = engine();
        let mut out = Vec::new();
        let (start, cpu0) = (std::time::Instant::now(), thread_cpu_secs());
        for e in &evs {
            b.pour(e, &mut out);
        }
        let (secs, cpu) = (start.elapsed().as_secs_f64(), thread_cpu_secs() - cpu0);
        b.advance(Timestamp(evs.len() as i64 * 5 + 86_400_000), &mut out);
        println!(
            "{what}: {} events through {} scenarios in {:.3} s wall, {:.3} s CPU: {:.0} events/CPU-s, {} overflows, {} live buckets, digest {:016x}",
            evs.len(),
            b.stats().len(),
            secs,
            cpu,
            evs.len() as f64 / cpu,
            out.len(),
            b.live_buckets(),
            digest(&out, b.stats())
        );
    }
}

// --------------------------------------------------------------- workload scoring

fn month(m: &str) -> u32 {
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|x| *x == m)
        .map(|p| p as u32 + 1)
        .unwrap_or(1)
}

fn epoch_ms(year: i64, mon: u32, day: u32, h: u32, mi: u32, s: u32) -> i64 {
    // Days from civil (Howard Hinnant).
    let y = if mon <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mon as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + (h * 3600 + mi * 60 + s) as i64) * 1000
}

/// A crude stand-in for the real sshd parser (only what the scenarios read).
fn parse_auth(line: &str) -> Option<Event> {
    let mut it = line.split_whitespace();
    let (mon, day, hms) = (it.next()?, it.next()?, it.next()?);
    let mut hms = hms.split(':').map(|x| x.parse::<u32>().unwrap_or(0));
    let t = epoch_ms(2026, month(mon), day.parse().ok()?, hms.next()?, hms.next()?, hms.next()?);
    let _host = it.next()?;
    let prog = it.next()?;
    if !prog.starts_with("sshd") {
        return None;
    }
    let msg = line.split_once(": ").map(|(_, m)| m)?;
    let words: Vec<&str> = msg.split_whitespace().collect();
    let after = |w: &str| words.iter().position(|x| *x == w).and_then(|i| words.get(i + 1)).copied();
    let (log_type, user, ip) = if msg.starts_with("Failed password for invalid user ") {
        ("ssh_failed-auth", words.get(5).copied(), after("from"))
    } else if msg.starts_with("Failed password for ") {
        ("ssh_failed-auth", words.get(3).copied(), after("from"))
    } else if msg.starts_with("Invalid user ") {
        ("ssh_failed-auth", words.get(2).copied(), after("from"))
    } else if msg.starts_with("Accepted ") {
        ("ssh_success", words.get(3).copied(), after("from"))
    } else if msg.contains("[preauth]") && msg.starts_with("Connection closed by ") && words.len() == 7 {
        ("ssh_preauth", None, words.get(3).copied())
    } else if msg.starts_with("Unable to negotiate with ") {
        ("ssh_bad_keyexchange", None, words.get(3).copied())
    } else if msg.starts_with("Did not receive identification string from ") {
        ("ssh_refused_conn", None, words.get(5).copied())
    } else {
        return None;
    };
    Some(ssh(t, ip?, log_type, user.unwrap_or("")))
}

/// A crude stand-in for the real nginx parser.
fn parse_access(line: &str) -> Option<Event> {
    let ip = line.split(' ').next()?;
    let ts = line.split_once('[')?.1.split_once(']')?.0;
    let (date, rest) = ts.split_once(':')?;
    let mut d = date.split('/');
    let (day, mon, year) = (d.next()?.parse().ok()?, month(d.next()?), d.next()?.parse().ok()?);
    let mut hms = rest.split(' ').next()?.split(':').map(|x| x.parse::<u32>().unwrap_or(0));
    let t = epoch_ms(year, mon, day, hms.next()?, hms.next()?, hms.next()?);
    let quoted: Vec<&str> = line.split('"').collect();
    let request = quoted.get(1)?;
    let status = quoted.get(2)?.split_whitespace().next()?;
    let ua = quoted.get(5).copied().unwrap_or("");
    let parts: Vec<&str> = request.split(' ').collect();
    if parts.len() == 3 && parts[2].starts_with("HTTP/") {
        Some(http_full(t, ip, parts[0], parts[1], status.parse().ok()?, ua))
    } else {
        Some(ev(
            t,
            &[
                ("log_type", "http_access-log"),
                ("service", "http"),
                ("source_ip", ip),
                ("http_status", status),
                ("http_path", request),
                ("http_user_agent", ua),
                ("target_fqdn", ""),
            ],
            &[],
        ))
    }
}

/// Replays a `bench/gen_workload.py` directory through the shipped scenarios (with the
/// stand-in parsers above) and scores the flagged IPs against its `truth.json`.
#[test]
#[ignore = "needs WORKLOAD=<dir from bench/gen_workload.py>"]
fn workload() {
    let Ok(dir) = std::env::var("WORKLOAD") else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    let mut evs = Vec::new();
    for line in std::fs::read_to_string(dir.join("auth.log")).expect("auth.log").lines() {
        evs.extend(parse_auth(line));
    }
    for line in std::fs::read_to_string(dir.join("access.log")).expect("access.log").lines() {
        evs.extend(parse_access(line));
    }
    evs.sort_by_key(|e| e.time);
    let mut b = engine();
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    for e in &evs {
        b.pour(e, &mut out);
    }
    let secs = start.elapsed().as_secs_f64();
    b.advance(Timestamp(i64::MAX / 2), &mut out);
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).expect("truth")).expect("json");
    let mut flagged: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for o in &out {
        flagged.entry(o.value.clone()).or_default().insert(o.scenario.to_string());
    }
    let attackers = truth["attackers"].as_object().expect("attackers");
    let roles = truth["benign_roles"].as_object().expect("roles");
    let (mut tp, mut fneg, mut fp) = (0, 0, 0);
    for (ip, kinds) in attackers {
        if flagged.contains_key(ip) {
            tp += 1;
        } else {
            fneg += 1;
            println!("MISSED {ip} {kinds}");
        }
    }
    for (ip, role) in roles {
        if let Some(s) = flagged.get(ip) {
            fp += 1;
            println!("FALSE POSITIVE {ip} {role} {s:?}");
        }
    }
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for o in &out {
        *per.entry(o.scenario.to_string()).or_default() += 1;
    }
    println!(
        "{} events in {secs:.3} s ({:.0}/s); overflows per scenario: {per:?}",
        evs.len(),
        evs.len() as f64 / secs
    );
    println!("attackers found {tp}, missed {fneg}; benign flagged {fp}");
    assert_eq!(fp, 0);
    assert_eq!(fneg, 0);
}

/// Prints digests of the measurement workload under a small live-bucket cap (eviction
/// order) and with out-of-order times (late events): compare before and after a change.
#[test]
#[ignore = "behaviour fingerprint; run with --release --ignored --nocapture"]
fn digest_under_pressure() {
    let scenarios = Arc::new(Scenarios::load(&hub_files()).expect("shipped scenarios load"));
    let mut evs = realistic_events(200_000, 3_000);
    // Every 7th event 40 s late.
    for (i, e) in evs.iter_mut().enumerate() {
        if i % 7 == 0 {
            e.time = Timestamp(e.time.0 - 40_000);
        }
    }
    for cap in [2_000, 1_000_000] {
        let mut b = Buckets::with_max_buckets(scenarios.clone(), cap);
        let mut out = Vec::new();
        for e in &evs {
            b.pour(e, &mut out);
        }
        b.advance(Timestamp(2_000_000_000), &mut out);
        println!("cap {cap}: {} overflows, digest {:016x}", out.len(), digest(&out, b.stats()));
    }
}
