//! The built-in nftables bouncer: a node with no other bouncer still drops attackers in
//! the kernel.
//!
//! It owns one table (`inet palisade` by default) and never touches anything else: four
//! sets (`addr4`, `net4`, `addr6`, `net6`: single addresses and ranges, IPv4 and IPv6) whose elements carry the decision's
//! remaining time as their timeout, so the kernel lifts a ban on time by itself, and a
//! drop rule on the input hook (forward optional). At start the whole table is rebuilt
//! from the decisions in one atomic transaction; after that it follows the same delta
//! a Local API bouncer gets (new decisions, decisions lifted early), woken as soon as the
//! decision actor commits. Changes go to `nft -f -` in one transaction per delta; when a
//! transaction is refused (an element the kernel timed out a moment ago, overlapping
//! ranges) the elements are applied one by one so one bad element cannot hold up the rest.

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use palisade_actors::decision::{ConfigError, SharedBook};
use palisade_proto::{Decision, Scope, Timestamp};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::bouncers::StreamCursor;
use crate::lapi::query::{DecisionQuery, Endpoint};
use crate::lapi::stream::{Delta, List, Sink};

/// `[bouncer.nftables]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NftConfig {
    /// Enforce decisions with nftables (needs root or CAP_NET_ADMIN).
    pub enabled: bool,
    /// The `nft` program.
    pub nft: String,
    /// The table (family `inet`) the bouncer owns.
    pub table: String,
    /// Drop banned sources on the input hook (traffic to this host).
    pub input: bool,
    /// Drop banned sources on the forward hook too (routers, containers).
    pub forward: bool,
    /// Chain priority; below 0 runs before the usual `filter` chains.
    pub priority: i32,
    /// Decision types enforced.
    pub types: Vec<String>,
    /// Delete the table when the node stops cleanly (bans end with the node).
    pub cleanup_on_exit: bool,
}

impl Default for NftConfig {
    fn default() -> Self {
        NftConfig {
            enabled: false,
            nft: "nft".into(),
            table: "palisade".into(),
            input: true,
            forward: false,
            priority: -10,
            types: vec!["ban".into()],
            cleanup_on_exit: true,
        }
    }
}

/// `[bouncer]`: built-in bouncers.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BouncerConfig {
    /// The nftables bouncer.
    pub nftables: NftConfig,
}

impl NftConfig {
    /// Checks every key; errors name it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !name_ok(&self.table) {
            return Err(ConfigError::new("bouncer.nftables.table", "use 1 to 64 letters, digits, - or _"));
        }
        if self.enabled && !self.input && !self.forward {
            return Err(ConfigError::new("bouncer.nftables", "enable input, forward or both"));
        }
        if self.types.is_empty() {
            return Err(ConfigError::new("bouncer.nftables.types", "name at least one decision type"));
        }
        Ok(())
    }
}

/// The set an element goes to.
fn set_of(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(n) if n.prefix_len() == 32 => "addr4",
        IpNet::V4(_) => "net4",
        IpNet::V6(n) if n.prefix_len() == 128 => "addr6",
        IpNet::V6(_) => "net6",
    }
}

/// The nft text of an element: an address, or a network for the interval sets.
fn element_text(net: &IpNet) -> String {
    match set_of(net) {
        "addr4" | "addr6" => net.addr().to_string(),
        _ => net.to_string(),
    }
}

/// One element change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// Add with a timeout in seconds.
    Add { net: IpNet, secs: u64 },
    /// Remove.
    Delete { net: IpNet },
}

impl Change {
    fn script_line(&self, table: &str) -> String {
        match self {
            Change::Add { net, secs } => {
                format!(
                    "add element inet {table} {} {{ {} timeout {secs}s }}\n",
                    set_of(net),
                    element_text(net)
                )
            }
            Change::Delete { net } => {
                format!("delete element inet {table} {} {{ {} }}\n", set_of(net), element_text(net))
            }
        }
    }
}

/// What the kernel holds, as far as the bouncer knows: the end of each element's timeout.
#[derive(Debug, Default)]
struct Mirror {
    elements: HashMap<IpNet, Timestamp>,
}

/// Turns a delta into element changes against the mirror.
struct Planner<'a> {
    config: &'a NftConfig,
    mirror: &'a mut Mirror,
    changes: Vec<Change>,
}

impl Planner<'_> {
    fn enforced(&self, d: &Decision) -> Option<IpNet> {
        if d.simulated || !matches!(d.scope, Scope::Ip | Scope::Range) {
            return None;
        }
        if !self.config.types.iter().any(|t| t == d.kind.as_str()) {
            return None;
        }
        d.target()
    }
}

/// The kernel drops an element this long after its timeout at the latest; a delete
/// closer to the end than this is left to the kernel (it may already be gone).
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);

impl Sink for Planner<'_> {
    fn item(&mut self, list: List, d: &Decision, now: Timestamp) {
        let Some(net) = self.enforced(d) else { return };
        match list {
            List::New => {
                let secs = d.until.since(now).as_secs_f64().ceil() as u64;
                if secs == 0 {
                    return;
                }
                // nft's `add` leaves an existing element's timeout alone: an extended
                // ban is deleted and added again in the same transaction.
                if let Some(old) = self.mirror.elements.get(&net) {
                    if *old >= d.until {
                        return;
                    }
                    if *old > now.saturating_add(EXPIRY_MARGIN) {
                        self.changes.push(Change::Delete { net });
                    }
                }
                self.mirror.elements.insert(net, d.until);
                self.changes.push(Change::Add { net, secs });
            }
            List::Deleted => {
                if let Some(old) = self.mirror.elements.remove(&net) {
                    if old > now.saturating_add(EXPIRY_MARGIN) {
                        self.changes.push(Change::Delete { net });
                    }
                }
            }
        }
    }

    fn end(&mut self, _: List) {}
}

/// The table with its sets and rules, replacing any previous copy, in one transaction.
fn table_script(config: &NftConfig) -> String {
    let t = &config.table;
    let mut s = String::new();
    // `add` then `delete` removes a table that may or may not exist without an error.
    let _ = writeln!(s, "add table inet {t}\ndelete table inet {t}\ntable inet {t} {{");
    for (name, kind, interval) in [
        ("addr4", "ipv4_addr", false),
        ("net4", "ipv4_addr", true),
        ("addr6", "ipv6_addr", false),
        ("net6", "ipv6_addr", true),
    ] {
        let flags = if interval { "interval, timeout" } else { "timeout" };
        let _ = writeln!(s, "  set {name} {{ type {kind}; flags {flags}; }}");
    }
    for (hook, on) in [("input", config.input), ("forward", config.forward)] {
        if !on {
            continue;
        }
        let _ = writeln!(
            s,
            "  chain {hook} {{ type filter hook {hook} priority {}; policy accept;",
            config.priority
        );
        for (family, set) in [("ip", "addr4"), ("ip", "net4"), ("ip6", "addr6"), ("ip6", "net6")] {
            let _ = writeln!(s, "    {family} saddr @{set} counter drop");
        }
        let _ = writeln!(s, "  }}");
    }
    s.push_str("}\n");
    s
}

/// Runs `nft -f -` with `script`.
async fn nft(config: &NftConfig, script: &str) -> Result<()> {
    let mut child = tokio::process::Command::new(&config.nft)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("bouncer.nftables.nft: cannot run {:?}", config.nft))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("nft did not finish within 30 s")??;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Checks at start that nft runs and may change the ruleset: a clear error instead of a
/// bouncer that silently enforces nothing.
pub async fn check(config: &NftConfig) -> Result<()> {
    let probe = format!("add table inet {t}\nlist table inet {t}\n", t = config.table);
    nft(config, &probe).await.map_err(|e| {
        let text = format!("{e:#}");
        let hint = if text.contains("Operation not permitted") {
            " (the nftables bouncer needs root or CAP_NET_ADMIN)"
        } else if text.contains("cannot run") {
            " (install the nftables package, or set bouncer.nftables.nft)"
        } else {
            ""
        };
        anyhow::anyhow!("nftables bouncer: {text}{hint}")
    })
}

/// The bouncer: rebuilds the table, then follows the decisions until `shutdown`.
pub async fn run(
    config: NftConfig,
    book: SharedBook,
    clock: fn() -> Timestamp,
    mut changed: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let query = match DecisionQuery::parse(&[], Endpoint::Stream) {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "nftables bouncer: bad query");
            return;
        }
    };
    let mut mirror = Mirror::default();
    let mut cursor: Option<StreamCursor> = None;
    // The table is rebuilt from scratch at start: everything goes in one transaction.
    let mut rebuild = true;
    loop {
        let now = clock();
        let started = std::time::Instant::now();
        let (mut delta, next) = Delta::new(book.clone(), query.clone(), now, cursor);
        let mut planner = Planner { config: &config, mirror: &mut mirror, changes: Vec::new() };
        if rebuild {
            planner.mirror.elements.clear();
        }
        delta.drain(&mut planner);
        let changes = planner.changes;
        let mut script = if rebuild { table_script(&config) } else { String::new() };
        for c in &changes {
            script.push_str(&c.script_line(&config.table));
        }
        let applied = if script.is_empty() { Ok(()) } else { nft(&config, &script).await };
        match applied {
            Ok(()) => {
                cursor = Some(next);
                rebuild = false;
                if !changes.is_empty() {
                    metrics.nft_applied(changes.len(), started.elapsed());
                    tracing::debug!(changes = changes.len(), elapsed = ?started.elapsed(), "nftables updated");
                }
            }
            Err(e) if rebuild => {
                metrics.nft_error();
                tracing::error!(error = %e, "nftables bouncer: cannot build its table; retrying in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = shutdown.changed() => break,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "nftables transaction refused; applying elements one by one");
                let mut failed = 0;
                for c in &changes {
                    if let Err(e) = nft(&config, &c.script_line(&config.table)).await {
                        failed += 1;
                        // A delete of an element the kernel timed out already is fine.
                        if matches!(c, Change::Add { .. }) {
                            metrics.nft_error();
                            tracing::warn!(error = %e, change = ?c, "nftables bouncer: element refused");
                        }
                    }
                }
                metrics.nft_applied(changes.len() - failed, started.elapsed());
                cursor = Some(next);
            }
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    if config.cleanup_on_exit {
        match nft(&config, &format!("delete table inet {}\n", config.table)).await {
            Ok(()) => tracing::info!(table = %config.table, "nftables table removed"),
            Err(e) => tracing::warn!(error = %e, "nftables bouncer: could not remove its table"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::{DecisionType, Origin};

    fn decision(value: &str, scope: Scope, until: i64) -> Decision {
        Decision {
            id: 1,
            uuid: palisade_proto::Uuid::default(),
            origin: Origin::Cli,
            kind: DecisionType::Ban,
            scope,
            value: value.into(),
            created_at: Timestamp(0),
            until: Timestamp::from_secs(until),
            scenario: "s".into(),
            simulated: false,
        }
    }

    #[test]
    fn plans_adds_extensions_and_early_deletes() {
        let config = NftConfig::default();
        let mut mirror = Mirror::default();
        let now = Timestamp::from_secs(100);
        let mut p = Planner { config: &config, mirror: &mut mirror, changes: Vec::new() };
        p.item(List::New, &decision("192.0.2.1", Scope::Ip, 160), now);
        p.item(List::New, &decision("2001:db8::/32", Scope::Range, 200), now);
        let mut captcha = decision("192.0.2.9", Scope::Ip, 160);
        captcha.kind = DecisionType::Captcha;
        p.item(List::New, &captcha, now);
        p.item(List::New, &decision("192.0.2.1", Scope::Ip, 400), now);
        p.item(List::Deleted, &decision("2001:db8::/32", Scope::Range, 100), now);
        p.item(List::Deleted, &decision("192.0.2.77", Scope::Ip, 100), now);
        let script: String = p.changes.iter().map(|c| c.script_line("palisade")).collect();
        assert_eq!(
            script,
            "add element inet palisade addr4 { 192.0.2.1 timeout 60s }\n\
             add element inet palisade net6 { 2001:db8::/32 timeout 100s }\n\
             delete element inet palisade addr4 { 192.0.2.1 }\n\
             add element inet palisade addr4 { 192.0.2.1 timeout 300s }\n\
             delete element inet palisade net6 { 2001:db8::/32 }\n"
        );
        // An element about to time out is left to the kernel.
        let later = Timestamp::from_secs(399_500 / 1000);
        let mut p = Planner { config: &config, mirror: &mut mirror, changes: Vec::new() };
        p.item(List::Deleted, &decision("192.0.2.1", Scope::Ip, 399), later);
        assert!(p.changes.is_empty(), "{:?}", p.changes);
    }

    #[test]
    fn table_script_drops_on_the_chosen_hooks() {
        let config = NftConfig { forward: true, ..NftConfig::default() };
        let s = table_script(&config);
        assert!(s.starts_with("add table inet palisade\ndelete table inet palisade\n"));
        assert!(s.contains("set net4 { type ipv4_addr; flags interval, timeout; }"));
        assert!(s.contains("chain input { type filter hook input priority -10; policy accept;"));
        assert!(s.contains("chain forward {"));
        assert!(s.contains("ip6 saddr @net6 counter drop"));
        let bad = NftConfig { table: "x; flush ruleset".into(), ..NftConfig::default() };
        assert!(bad.validate().is_err());
    }
}
