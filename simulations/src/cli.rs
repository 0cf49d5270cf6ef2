//! The `palisade-sim` command line, callable as a library function so that the node
//! binary can offer it as `palisade sim`.

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::report::RunResult;
use crate::scenario::Scenario;
use crate::{simulate, Options};

/// Deterministic simulations of poisoning attacks on Palisade's consensus.
#[derive(Debug, Parser)]
#[command(name = "palisade-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario and compares every algorithm on it.
    Run {
        /// The scenario file (simulations/scenarios/*.toml).
        scenario: PathBuf,
        /// The seed that drives every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write <name>-seed<N>.{json,md,svg}.
        #[arg(long, default_value = "sim-out")]
        out: PathBuf,
        /// Worker threads (one algorithm per thread at a time).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Skip the attacker-cost search and the budget curve.
        #[arg(long)]
        no_cost: bool,
    },
    /// Runs scenarios with their baseline's seed and fails if `palisade` got worse.
    Check {
        /// Scenario files.
        scenarios: Vec<PathBuf>,
        /// Directory of baseline JSON files (<name>.json).
        #[arg(long, default_value = "simulations/baseline")]
        baseline: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Runs scenarios and writes their results as the new baseline.
    Baseline {
        /// Scenario files.
        scenarios: Vec<PathBuf>,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory to write <name>.json into.
        #[arg(long, default_value = "simulations/baseline")]
        out: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

/// Runs the CLI with `args` (the first one is the program name).
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(path: &Path, text: &str) -> Result<(), crate::SimError> {
    std::fs::write(path, text).map_err(|e| crate::SimError::Io(path.display().to_string(), e))
}

fn run(command: Command) -> Result<ExitCode, crate::SimError> {
    match command {
        Command::Run { scenario, seed, out, threads, no_cost } => {
            println!("seed: {seed}");
            let s = Scenario::load(&scenario)?;
            let result = simulate(&s, seed, &Options { threads, cost: !no_cost && s.cost.enabled });
            let md = result.markdown();
            println!("{md}");
            std::fs::create_dir_all(&out).map_err(|e| crate::SimError::Io(out.display().to_string(), e))?;
            let stem = format!("{}-seed{}", s.name, seed);
            write(&out.join(format!("{stem}.json")), &result.to_json())?;
            write(&out.join(format!("{stem}.md")), &md)?;
            if let Some(svg) = result.svg() {
                write(&out.join(format!("{stem}.svg")), &svg)?;
            }
            println!("wrote {}/{stem}.{{json,md,svg}}; reproduce with --seed {seed}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { scenarios, baseline, threads } => {
            let mut failed = false;
            for path in scenarios {
                let s = Scenario::load(&path)?;
                let file = baseline.join(format!("{}.json", s.name));
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| crate::SimError::Io(file.display().to_string(), e))?;
                let base: RunResult = serde_json::from_str(&text)
                    .map_err(|e| crate::SimError::Scenario(file.display().to_string(), e.to_string()))?;
                let with_cost = base.algorithms.iter().any(|a| a.cost.is_some());
                let current = simulate(&s, base.seed, &Options { threads, cost: with_cost });
                let worse = crate::compare::regressions(&base, &current);
                if worse.is_empty() {
                    println!("{}: ok (seed {})", s.name, base.seed);
                } else {
                    failed = true;
                    println!("{}: WORSE than {}:", s.name, file.display());
                    for w in worse {
                        println!("  - {w}");
                    }
                    println!("  reproduce with --seed {}", base.seed);
                }
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Baseline { scenarios, seed, out, threads } => {
            println!("seed: {seed}");
            std::fs::create_dir_all(&out).map_err(|e| crate::SimError::Io(out.display().to_string(), e))?;
            for path in scenarios {
                let s = Scenario::load(&path)?;
                let result = simulate(&s, seed, &Options { threads, cost: s.cost.enabled });
                let file = out.join(format!("{}.json", s.name));
                write(&file, &result.to_json())?;
                println!("wrote {}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
