//! The command line: `palisade <command>`. Output is for humans by default and for
//! scripts with `--json`.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use palisade_actors::decision::{DecisionFilter, NewDecision};
use palisade_proto::time::parse_duration;
use palisade_proto::{DecisionType, Origin, Scope};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::admin::{self, Request, Response};
use crate::config::NodeConfig;
use crate::output;

/// Palisade: collaborative intrusion prevention.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about, propagate_version = true)]
struct Cli {
    /// Configuration file (default: /etc/palisade/config.toml when it exists, else built-in defaults).
    #[arg(long, short = 'c', global = true, env = "PALISADE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node: watch logs, detect attacks, ban attackers.
    Run,
    /// Replay log files through the detection engine and show what would have been caught.
    Replay(ReplayArgs),
    /// Show, for each log line, which parser matched and the fields it set, or why none did.
    Explain(ExplainArgs),
    /// List, add or delete decisions.
    #[command(subcommand)]
    Decisions(DecisionsCommand),
    /// Manage the bouncers allowed to pull decisions from the Local API.
    #[command(subcommand)]
    Bouncers(BouncersCommand),
    /// Manage the machines (CrowdSec log processors, cscli) allowed to push alerts.
    #[command(subcommand)]
    Machines(MachinesCommand),
    /// Create and administer a fleet (on the node that holds the fleet admin key).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// This node's fleet membership: join, leave, peers.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Inspect the detection content.
    #[command(subcommand)]
    Hub(HubCommand),
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The central tier: run it, manage its tenants, inspect it; a standalone sensor.
    #[command(subcommand)]
    Central(crate::central::cli::CentralCommand),
    /// Run consensus simulations (the same as the `palisade-sim` binary; `palisade sim --help`).
    #[command(disable_help_flag = true)]
    Sim {
        /// Arguments for the simulator.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// The log formats `replay` and `explain` know.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogType {
    /// Syslog lines (auth.log, syslog, journald exports): sshd and other programs.
    Syslog,
    /// nginx access or error log.
    Nginx,
    /// Apache access or error log.
    Apache,
}

impl LogType {
    /// The label the parsers select on.
    pub fn label(self) -> &'static str {
        match self {
            LogType::Syslog => "syslog",
            LogType::Nginx => "nginx",
            LogType::Apache => "apache",
        }
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The format of the files.
    #[arg(long = "type", short = 't', value_enum)]
    pub log_type: LogType,
    /// One JSON object per alert and decision on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Log files (`-` for stdin).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The format of the lines.
    #[arg(long = "type", short = 't', value_enum)]
    pub log_type: LogType,
    /// JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// A log file, or `-` (the default) for stdin.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DecisionsCommand {
    /// Active decisions.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ban an address or range by hand.
    Add {
        /// Address to ban.
        #[arg(long, conflicts_with = "range", required_unless_present = "range")]
        ip: Option<IpAddr>,
        /// CIDR range to ban.
        #[arg(long)]
        range: Option<IpNet>,
        /// How long (e.g. 4h, 30m, 2d).
        #[arg(long, short = 'd', default_value = "4h")]
        duration: String,
        /// Remediation (ban, captcha...).
        #[arg(long = "type", default_value = "ban")]
        kind: String,
        /// Why (shown as the decision's scenario).
        #[arg(long, default_value = "manual ban")]
        reason: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Ban many addresses or ranges at once, one per line of a file (`-` for stdin);
    /// blank lines and `#` comments are skipped.
    Import {
        /// The file.
        file: PathBuf,
        /// How long each ban lasts.
        #[arg(long, short = 'd', default_value = "4h")]
        duration: String,
        /// Remediation (ban, captcha...).
        #[arg(long = "type", default_value = "ban")]
        kind: String,
        /// Why (shown as the decisions' scenario).
        #[arg(long, default_value = "import")]
        reason: String,
    },
    /// End decisions now.
    Delete {
        #[command(flatten)]
        filter: FilterArgs,
        /// Delete every active decision (required when no filter is given).
        #[arg(long)]
        all: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Clone)]
struct FilterArgs {
    /// Decisions covering this address.
    #[arg(long)]
    ip: Option<IpAddr>,
    /// Decisions covering this range.
    #[arg(long)]
    range: Option<IpNet>,
    /// Scenario name contains.
    #[arg(long)]
    scenario: Option<String>,
    /// Origin (palisade, fleet, community, cli).
    #[arg(long)]
    origin: Option<String>,
    /// Decision id.
    #[arg(long)]
    id: Option<u64>,
}

impl FilterArgs {
    fn to_filter(&self) -> DecisionFilter {
        DecisionFilter {
            ip: self.ip,
            range: self.range,
            scenario: self.scenario.clone(),
            origin: self.origin.as_deref().map(Origin::from),
            id: self.id,
            ..DecisionFilter::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.ip.is_none()
            && self.range.is_none()
            && self.scenario.is_none()
            && self.origin.is_none()
            && self.id.is_none()
    }
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Create a fleet administered by this node: makes the fleet admin key
    /// (<data_dir>/fleet-admin.key, keep it safe) and starts gossip.
    Init {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print a join token for a new node (`palisade node join <this node> --token ...`).
    Invite {
        /// How long the token stays valid (e.g. 10m, 1h, 2d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a member from the fleet, everywhere: its connections are refused.
    Revoke {
        /// The member's node id (see `palisade node peers`).
        node: String,
    },
    /// This node's membership.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Join a fleet through a member, with a token from `palisade fleet invite`.
    Join {
        /// Any member, `host:port` of its gossip endpoint: a member without the admin
        /// key relays the request to the admin node named in the token.
        peer: String,
        /// The join token.
        #[arg(long)]
        token: String,
    },
    /// Leave the fleet: stop gossip and forget the membership.
    Leave,
    /// The fleet members this node knows: state, address, last heard, signals exchanged.
    Peers {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BouncersCommand {
    /// Register a bouncer and print its API key (shown once; only its hash is kept).
    Add {
        /// A name for it (letters, digits, - _ . @).
        name: String,
        /// Use this key instead of a random one (e.g. one already in a bouncer's config).
        #[arg(long)]
        key: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Registered bouncers, with each instance's address and last pull.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a bouncer: its key stops working at once.
    Delete {
        /// Its name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum MachinesCommand {
    /// Add a machine and print its credentials (the password is shown once).
    Add {
        /// Its machine id.
        name: String,
        /// Use this password instead of a random one.
        #[arg(long)]
        password: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Machines, validated or waiting.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Accept a machine that registered itself (`POST /v1/watchers`).
    Validate {
        /// Its machine id.
        name: String,
    },
    /// Remove a machine: its tokens stop working at once.
    Delete {
        /// Its machine id.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum HubCommand {
    /// Parsers and scenarios in use.
    List {
        /// JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and the detection content; print the effective configuration.
    Check,
}

/// Parses the command line and runs the command.
pub fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let load = || NodeConfig::load(cli.config.as_deref()).map(|(c, _)| c);
    match cli.command {
        Command::Run => {
            let config = load()?;
            crate::run::run(config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => crate::replay::replay(&load()?, &args),
        Command::Explain(args) => crate::replay::explain(&load()?, &args),
        Command::Decisions(cmd) => decisions(&load()?, cmd),
        Command::Bouncers(cmd) => bouncers(&load()?, cmd),
        Command::Fleet(cmd) => fleet(&load()?, cmd),
        Command::Node(cmd) => node(&load()?, cmd),
        Command::Machines(cmd) => machines(&load()?, cmd),
        Command::Hub(HubCommand::List { json }) => {
            let config = load()?;
            let hub = crate::hub::load(config.hub_dir.as_deref())?;
            output::hub_list(&hub, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Central(cmd) => crate::central::cli::main(cmd, cli.config.as_deref()),
        Command::Sim { args } => {
            Ok(palisade_sim::cli::main(std::iter::once(std::ffi::OsString::from("palisade sim")).chain(args)))
        }
        Command::Config(ConfigCommand::Check) => {
            let (config, path) = NodeConfig::load(cli.config.as_deref())?;
            let hub = crate::hub::load(config.hub_dir.as_deref())?;
            let source = path.map_or_else(|| "built-in defaults".to_owned(), |p| p.display().to_string());
            println!("configuration OK ({source})");
            println!(
                "detection content OK ({}): {} parsers, {} scenarios",
                hub.origin,
                hub.parsers.list().len(),
                hub.scenarios.list().len()
            );
            println!("data_dir: {}", config.data_dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn fleet_call(config: &NodeConfig, request: crate::fleet::FleetRequest) -> Result<crate::fleet::FleetReply> {
    match admin::call(config, Request::Fleet(request))? {
        Response::Fleet(reply) => Ok(reply),
        _ => bail!("unexpected reply from the node"),
    }
}

fn fleet(config: &NodeConfig, cmd: FleetCommand) -> Result<ExitCode> {
    use crate::fleet::{FleetReply, FleetRequest};
    let reply = match &cmd {
        FleetCommand::Init { .. } => fleet_call(config, FleetRequest::Init)?,
        FleetCommand::Invite { ttl, .. } => {
            let ttl = palisade_proto::time::parse_duration(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            fleet_call(config, FleetRequest::Invite { ttl_secs: ttl.as_secs() })?
        }
        FleetCommand::Revoke { node } => fleet_call(config, FleetRequest::Revoke { node: node.clone() })?,
        FleetCommand::Status { .. } => fleet_call(config, FleetRequest::Status)?,
    };
    let json = matches!(
        cmd,
        FleetCommand::Init { json: true }
            | FleetCommand::Invite { json: true, .. }
            | FleetCommand::Status { json: true }
    );
    if json {
        println!("{}", serde_json::to_string(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    match reply {
        FleetReply::Initialized { fleet, node, address } => println!(
            "fleet {fleet} created; this node ({node}) administers it and gossips on {address}.\n\
             The admin key is in {}: back it up and keep it private.\n\
             Invite a node with: palisade fleet invite --ttl 1h",
            config.data_dir.join("fleet-admin.key").display()
        ),
        FleetReply::Token { token, expires_ms, peer } => println!(
            "{token}\n\nValid until {}. On the new node run:\n\n    palisade node join {peer} --token {token}",
            output::datetime(palisade_proto::Timestamp(expires_ms))
        ),
        FleetReply::Revoked { node, serial } => {
            println!("node {node} revoked (revocation list {serial}); members are told now")
        }
        FleetReply::Status(s) => output::fleet_status(&s),
        other => bail!("unexpected reply from the node: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn node(config: &NodeConfig, cmd: NodeCommand) -> Result<ExitCode> {
    use crate::fleet::{FleetReply, FleetRequest};
    match cmd {
        NodeCommand::Join { peer, token } => {
            match fleet_call(config, FleetRequest::Join { peer, token })? {
                FleetReply::Joined { fleet, peer } => {
                    println!("joined fleet {fleet} through {peer}; this node now shares its signals with the fleet")
                }
                other => bail!("unexpected reply from the node: {other:?}"),
            }
        }
        NodeCommand::Leave => match fleet_call(config, FleetRequest::Leave)? {
            FleetReply::Left { fleet } => println!("left fleet {fleet}"),
            other => bail!("unexpected reply from the node: {other:?}"),
        },
        NodeCommand::Peers { json } => match fleet_call(config, FleetRequest::Peers)? {
            FleetReply::Peers { peers } => output::peers(&peers, json),
            other => bail!("unexpected reply from the node: {other:?}"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn bouncers(config: &NodeConfig, cmd: BouncersCommand) -> Result<ExitCode> {
    match cmd {
        BouncersCommand::Add { name, key, json } => {
            crate::bouncers::check_name(&name)?;
            let key = match key {
                Some(k) if k.trim().len() < 16 => bail!("--key: use at least 16 characters"),
                Some(k) => k.trim().to_owned(),
                None => crate::bouncers::new_key(),
            };
            let request =
                Request::AddBouncer { name: name.clone(), key_hash: crate::bouncers::hash_key(&key) };
            admin::call(config, request)?;
            if json {
                println!("{}", serde_json::json!({ "name": name, "api_key": key }));
            } else {
                println!("API key for bouncer {name:?}:\n\n    {key}\n\nPut it in the bouncer's configuration (api_key); it is not shown again.");
            }
        }
        BouncersCommand::List { json } => {
            let Response::Bouncers(list) = admin::call(config, Request::ListBouncers)? else {
                bail!("unexpected reply from the node");
            };
            output::bouncers(&list, json);
        }
        BouncersCommand::Delete { name } => {
            admin::call(config, Request::DeleteBouncer { name: name.clone() })?;
            println!("bouncer {name:?} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn machines(config: &NodeConfig, cmd: MachinesCommand) -> Result<ExitCode> {
    match cmd {
        MachinesCommand::Add { name, password, json } => {
            crate::machines::check_name(&name)?;
            let password = password
                .unwrap_or_else(|| format!("{}{}", crate::bouncers::new_key(), crate::bouncers::new_key()));
            admin::call(config, Request::AddMachine { name: name.clone(), password: password.clone() })?;
            if json {
                println!("{}", serde_json::json!({ "machine_id": name, "password": password }));
            } else {
                println!("machine {name:?} added; its credentials (shown once):\n\n    login: {name}\n    password: {password}");
            }
        }
        MachinesCommand::List { json } => {
            let Response::Machines(list) = admin::call(config, Request::ListMachines)? else {
                bail!("unexpected reply from the node");
            };
            output::machines(&list, json);
        }
        MachinesCommand::Validate { name } => {
            admin::call(config, Request::ValidateMachine { name: name.clone() })?;
            println!("machine {name:?} validated");
        }
        MachinesCommand::Delete { name } => {
            admin::call(config, Request::DeleteMachine { name: name.clone() })?;
            println!("machine {name:?} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Decisions per admin request in an import.
const IMPORT_BATCH: usize = 5_000;

fn decisions(config: &NodeConfig, cmd: DecisionsCommand) -> Result<ExitCode> {
    match cmd {
        DecisionsCommand::List { filter, json } => {
            let Response::Decisions(list) = admin::call(config, Request::List(filter.to_filter()))? else {
                bail!("unexpected reply from the node");
            };
            output::decisions(&list, json);
        }
        DecisionsCommand::Add { ip, range, duration, kind, reason, json } => {
            let (scope, value) = match (ip, range) {
                (Some(ip), _) => (Scope::Ip, ip.to_string()),
                (None, Some(range)) => (Scope::Range, range.to_string()),
                (None, None) => bail!("give --ip or --range"),
            };
            let duration = parse_duration(&duration).map_err(anyhow::Error::msg).context("--duration")?;
            let request = NewDecision {
                origin: Origin::Cli,
                kind: DecisionType::from(kind.as_str()),
                scope,
                value,
                duration,
                scenario: reason,
                simulated: false,
            };
            let Response::Verdict(verdict) = admin::call(config, Request::Add(request))? else {
                bail!("unexpected reply from the node");
            };
            output::verdict(&verdict, json);
        }
        DecisionsCommand::Import { file, duration, kind, reason } => {
            let duration = parse_duration(&duration).map_err(anyhow::Error::msg).context("--duration")?;
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let mut requests = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let value = line.split('#').next().unwrap_or("").trim();
                if value.is_empty() {
                    continue;
                }
                let scope = if value.contains('/') { Scope::Range } else { Scope::Ip };
                palisade_proto::decision::parse_target(&scope, value)
                    .map_err(|e| anyhow::anyhow!("{}:{}: {e}", file.display(), i + 1))?;
                requests.push(NewDecision {
                    origin: Origin::Cli,
                    kind: DecisionType::from(kind.as_str()),
                    scope,
                    value: value.to_owned(),
                    duration,
                    scenario: reason.clone(),
                    simulated: false,
                });
            }
            let (mut made, mut refused) = (0, Vec::new());
            for chunk in requests.chunks(IMPORT_BATCH) {
                let Response::Imported { made: m, refused: r } =
                    admin::call(config, Request::Import(chunk.to_vec()))?
                else {
                    bail!("unexpected reply from the node");
                };
                made += m;
                refused.extend(r);
            }
            println!("{made} decision(s) made or extended, {} refused", refused.len());
            for r in refused.iter().take(20) {
                println!("  refused: {r}");
            }
        }
        DecisionsCommand::Delete { filter, all, json } => {
            if filter.is_empty() && !all {
                bail!("give a filter (--ip, --range, --scenario, --origin, --id) or --all");
            }
            let Response::Decisions(list) = admin::call(config, Request::Delete(filter.to_filter()))? else {
                bail!("unexpected reply from the node");
            };
            output::deleted(&list, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}
