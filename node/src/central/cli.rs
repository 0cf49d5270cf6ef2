//! `palisade central <command>`.

use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::config::CentralConfig;
use super::tier::{AdminRequest, Status, TenantInfo};

/// Where `palisade central` looks for its configuration without `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/palisade/central.toml";

/// The central tier's commands.
#[derive(Debug, Subcommand)]
pub enum CentralCommand {
    /// Run the central tier (`palisade central run --config central.toml`).
    Run,
    /// Manage tenants (the fleets whose sensors may report).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Tenants, sensors, listed entries, list version, signal counts.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Why an address (hashed with the current epochs' community keys) or a hashed IP
    /// is or is not on the community list: each network group's contribution and each
    /// sensor's trust.
    Explain {
        /// An IP address or a 64-hex hashed IP.
        target: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A sensor without a node: report addresses read from stdin and print the
    /// community list's changes as JSON lines (see `--help`).
    Sensor(super::sensor::SensorArgs),
    /// Measure a central tier: signals ingested per second, or the time from a listing
    /// to every subscriber holding it.
    Bench(super::bench::BenchArgs),
}

/// `palisade central tenant ...`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Add a tenant and print its enrollment token (shown once; only its hash is kept).
    Add {
        /// Its name (letters, digits, - _ .).
        name: String,
        /// Opt in to the community: its signals count in the consensus and its sensors
        /// receive the community list.
        #[arg(long, overrides_with = "no_community")]
        community: bool,
        /// Keep its signals its own (the default).
        #[arg(long)]
        no_community: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Every tenant, with its sensors.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a tenant: its token stops working, its sensors are cut off and forgotten,
    /// their reports are deleted, and entries they alone held up are delisted.
    Remove {
        /// Its name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

fn load(path: Option<&Path>) -> Result<CentralConfig> {
    let path = path.map_or_else(|| PathBuf::from(DEFAULT_CONFIG), Path::to_path_buf);
    CentralConfig::load(&path)
}

fn running(config: &CentralConfig, request: &AdminRequest) -> Result<serde_json::Value> {
    match super::admin::call(&config.admin_socket(), request)? {
        Some(v) => Ok(v),
        None => bail!(
            "the central tier is not running (no admin socket at {}); start it with `palisade central run`",
            config.admin_socket().display()
        ),
    }
}

/// Runs a central command; `config` is the global `--config`.
pub fn main(command: CentralCommand, config: Option<&Path>) -> Result<ExitCode> {
    match command {
        CentralCommand::Run => super::run(load(config)?)?,
        CentralCommand::Tenant(TenantCommand::Add { name, community, no_community, json }) => {
            let community = community && !no_community;
            let config = load(config)?;
            let request = AdminRequest::TenantAdd { name: name.clone(), community };
            let token = match super::admin::call(&config.admin_socket(), &request)? {
                Some(v) => v["token"].as_str().unwrap_or_default().to_owned(),
                None => super::admin::tenant_add_offline(&config, &name, community)?,
            };
            if json {
                println!("{}", serde_json::json!({ "name": name, "community": community, "token": token }));
            } else {
                let opt = if community { "opted in to the community" } else { "not in the community" };
                println!(
                    "tenant {name:?} added ({opt}); its enrollment token (shown once):\n\n    {token}\n\n\
                     Put it in the [central] section of each of its nodes' configuration."
                );
            }
        }
        CentralCommand::Tenant(TenantCommand::Remove { name, json }) => {
            let config = load(config)?;
            let request = AdminRequest::TenantRemove { name: name.clone() };
            let outcome = match super::admin::call(&config.admin_socket(), &request)? {
                Some(v) => v,
                None => super::admin::tenant_remove_offline(&config, &name)?,
            };
            if json {
                println!("{outcome}");
            } else {
                println!(
                    "tenant {name:?} removed: {} sensors cut off, {} reports deleted, {} entries delisted",
                    outcome["sensors"], outcome["reports_deleted"], outcome["delisted"]
                );
            }
        }
        CentralCommand::Tenant(TenantCommand::List { json }) => {
            let config = load(config)?;
            let list: Vec<TenantInfo> =
                match super::admin::call(&config.admin_socket(), &AdminRequest::TenantList)? {
                    Some(v) => serde_json::from_value(v)?,
                    None => super::admin::tenant_list_offline(&config)?,
                };
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                println!("{:<24} {:>9} {:>8} {:>10}", "TENANT", "COMMUNITY", "SENSORS", "CONNECTED");
                for t in &list {
                    println!(
                        "{:<24} {:>9} {:>8} {:>10}",
                        t.name,
                        if t.community { "yes" } else { "no" },
                        t.sensors,
                        t.connected
                    );
                }
            }
        }
        CentralCommand::Status { json } => {
            let config = load(config)?;
            let value = running(&config, &AdminRequest::Status)?;
            if json {
                println!("{value}");
            } else {
                let s: Status = serde_json::from_value(value)?;
                print_status(&s);
            }
        }
        CentralCommand::Explain { target, json } => {
            let config = load(config)?;
            let value = running(&config, &AdminRequest::Explain { target })?;
            if json {
                println!("{value}");
            } else {
                print_explanation(&value);
            }
        }
        CentralCommand::Sensor(args) => return super::sensor::main(args),
        CentralCommand::Bench(args) => return super::bench::main(args),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &Status) {
    let c = &s.counters;
    println!("central tier {}", s.tier);
    println!(
        "  list:      version {} (log from {}), {} entries listed, epoch {}",
        s.version, s.oldest_delta, s.listed, s.epoch
    );
    println!(
        "  consensus: {} hashed IPs tracked, {} live reports, {} network groups",
        s.tracked_ips, s.reports, s.groups
    );
    println!("  tenants:   {} ({} in the community)", s.tenants, s.tenants_community);
    println!(
        "  sensors:   {} enrolled, {} connected, {} subscribed",
        s.sensors, s.sensors_connected, s.subscribers
    );
    let rejected: u64 = c.rejected.iter().sum();
    println!(
        "  signals:   {} received, {} taken in ({} community, {} private), {} rejected",
        c.signals_received,
        c.accepted_community + c.accepted_private,
        c.accepted_community,
        c.accepted_private,
        rejected
    );
    for (reason, n) in palisade_proto::central::RejectReason::ALL.iter().zip(&c.rejected) {
        if *n > 0 {
            println!("             {n} {}", reason.as_str());
        }
    }
    println!(
        "  out:       {} deltas published, {} sent to subscribers ({} entries)",
        c.deltas_published, c.deltas_sent, c.entries_sent
    );
    println!(
        "  defence:   {} sessions refused ({} unknown tokens), {} malformed frames, {} strikes, {} bans, {:.1} s throttled",
        c.refusals,
        c.unknown_tokens,
        c.malformed_frames,
        c.strikes,
        c.bans,
        c.throttled_ms as f64 / 1000.0
    );
}

fn print_explanation(value: &serde_json::Value) {
    for item in value.as_array().into_iter().flatten() {
        let label = item["label"].as_str().unwrap_or("");
        let hash = item["hashed_ip"].as_str().unwrap_or("");
        if item.get("score").is_none() {
            println!("{label}: {hash}: no live reports");
            continue;
        }
        let listed = if item["listed"].as_bool() == Some(true) { "LISTED" } else { "not listed" };
        println!(
            "{label}: {hash}: {listed}: score {:.2} (needs {}), {} groups counted (needs {}){}",
            item["score"].as_f64().unwrap_or(0.0),
            item["threshold"],
            item["groups_counted"],
            item["min_groups"],
            if item["protected"].as_bool() == Some(true) { ", protected" } else { "" }
        );
        for g in item["groups"].as_array().into_iter().flatten() {
            println!(
                "  {} contributes {:.3}{}",
                g["group"].as_str().unwrap_or(""),
                g["contribution"].as_f64().unwrap_or(0.0),
                if g["counts"].as_bool() == Some(true) { "" } else { " (too little to count)" }
            );
            for s in g["sensors"].as_array().into_iter().flatten() {
                println!(
                    "    sensor {} (tenant {}, AS{}): trust {:.3}, evidence {:.2}, weight {:.3}, {} s ago",
                    &s["sensor"].as_str().unwrap_or("")[..16.min(s["sensor"].as_str().unwrap_or("").len())],
                    s["tenant"].as_str().unwrap_or("?"),
                    s["asn"],
                    s["trust"].as_f64().unwrap_or(0.0),
                    s["evidence"].as_f64().unwrap_or(0.0),
                    s["weight"].as_f64().unwrap_or(0.0),
                    s["reported_ago_secs"]
                );
            }
        }
    }
}
