//! `palisade`: collaborative intrusion prevention.
//!
//! This binary wires the engines of `palisade-actors` to the world: it reads the
//! configuration, opens RocksDB, starts the actors and the log sources, serves the
//! admin socket, and offers the operator's commands. It contains no detection logic.

mod admin;
mod bouncers;
mod central;
mod cli;
mod community;
mod config;
mod fleet;
mod hub;
mod keys;
mod lapi;
mod machines;
mod metrics;
mod nft;
mod output;
mod replay;
mod run;
mod store;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
