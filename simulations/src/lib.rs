//! Deterministic, seeded simulations of poisoning attacks on Palisade's community
//! consensus, side by side with naive baselines.
//!
//! A scenario file (`simulations/scenarios/*.toml`) describes a world (honest sensors
//! spread over ASNs, real attackers with DShield-like reach and lifetimes, benign
//! traffic with honest false reports) and an attack (Sybil floods, sleepers, targeted
//! victims, identity churn, suppression). [`simulate`] turns it into one time-ordered
//! stream of reports, feeds the same stream to every algorithm, and measures each
//! published list against the ground truth; [`cost`] searches for the attacker's
//! cheapest way to get one victim listed.
//!
//! This crate must never read the wall clock or use unseeded randomness: one printed
//! `u64` seed reproduces a run byte for byte. It never touches the network.

pub mod algorithms;
pub mod cli;
pub mod compare;
pub mod cost;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod world;

use algorithms::{AlgoSpec, ALL};
use report::{AlgoResult, Costs, Curve, RunResult, WorldSummary};
use scenario::Scenario;

/// A simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A scenario (or baseline) file is invalid.
    #[error("{0}: {1}")]
    Scenario(String, String),
}

/// How to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Worker threads.
    pub threads: usize,
    /// Run the attacker-cost search and the budget curve.
    pub cost: bool,
}

/// The algorithms a scenario runs, in display order.
pub fn algorithms(scenario: &Scenario) -> Vec<(String, AlgoSpec)> {
    let names: Vec<String> = if scenario.algorithms.run.is_empty() {
        ALL.iter().map(|s| (*s).to_owned()).collect()
    } else {
        scenario.algorithms.run.clone()
    };
    names.into_iter().filter_map(|n| AlgoSpec::parse(&n, &scenario.algorithms).map(|s| (n, s))).collect()
}

/// Runs `scenario` with `seed`.
pub fn simulate(scenario: &Scenario, seed: u64, options: &Options) -> RunResult {
    let world = world::generate(scenario, seed);
    let specs = algorithms(scenario);
    let tick_ms = (scenario.world.tick_minutes * 60_000.0) as i64;
    let measured = run::run_all(&world, &specs, tick_ms, scenario.world.eligible_min_asns, options.threads);
    let c = &scenario.cost;
    let costs: Vec<Option<Costs>> = specs
        .iter()
        .map(|(_, spec)| {
            options.cost.then(|| {
                use cost::{search, Profile, VictimClass};
                Costs {
                    ordinary_aged: search(
                        spec,
                        VictimClass::Ordinary,
                        Profile::Aged,
                        c.max_asns,
                        c.sensors_per_asn,
                    ),
                    ordinary_trusted: search(
                        spec,
                        VictimClass::Ordinary,
                        Profile::Trusted,
                        c.max_asns,
                        c.sensors_per_asn,
                    ),
                    protected_aged: search(
                        spec,
                        VictimClass::Protected,
                        Profile::Aged,
                        c.max_asns,
                        c.sensors_per_asn,
                    ),
                    protected_trusted: search(
                        spec,
                        VictimClass::Protected,
                        Profile::Trusted,
                        c.max_asns,
                        c.sensors_per_asn,
                    ),
                    allowlisted_trusted: search(
                        spec,
                        VictimClass::Allowlisted,
                        Profile::Trusted,
                        c.max_asns,
                        c.sensors_per_asn,
                    ),
                }
            })
        })
        .collect();
    let curve = options.cost.then(|| Curve {
        budgets: c.budgets.clone(),
        sensors_per_asn: c.curve_sensors_per_asn,
        trials: c.trials,
        series: specs
            .iter()
            .map(|(name, spec)| {
                let ps = cost::curve(spec, seed, &c.budgets, c.curve_sensors_per_asn, c.trials);
                (name.clone(), ps.into_iter().map(report::r4).collect())
            })
            .collect(),
    });
    let algorithms = measured
        .into_iter()
        .zip(costs)
        .map(|(mut m, cost)| {
            for v in [
                &mut m.precision,
                &mut m.recall,
                &mut m.recall_all,
                &mut m.botnet_recall,
                &mut m.ttl_median_min,
                &mut m.ttl_p95_min,
                &mut m.honest_trust,
                &mut m.attacker_trust,
            ] {
                *v = v.map(report::r4);
            }
            m.benign_hours = report::r4(m.benign_hours);
            m.benign_max_hours = report::r4(m.benign_max_hours);
            AlgoResult { measured: m, cost }
        })
        .collect();
    RunResult {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        seed,
        world: WorldSummary {
            honest_sensors: scenario.world.honest_sensors,
            honest_asns: world.honest_asns,
            attacker_sensors: world.sensors.iter().filter(|s| s.role == world::Role::Attacker).count(),
            events: world.events.len(),
            attackers_seen: world.attackers.values().filter(|t| t.first_honest.is_some()).count(),
            hours: scenario.world.hours,
        },
        algorithms,
        curve,
    }
}

impl RunResult {
    /// Pretty JSON, byte-identical for the same scenario and seed.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}
