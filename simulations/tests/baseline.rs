//! The regression gate: every scenario marked `fast = true` runs with the seed stored in
//! its committed baseline (`simulations/baseline/<name>.json`) and must not be worse
//! than it beyond the tolerances of `palisade_sim::compare::tolerance`.
//!
//! After an intended change, regenerate with:
//! `cargo run --release -p palisade-sim -- baseline simulations/scenarios/fast-*.toml --seed 1`

use palisade_sim::report::RunResult;
use palisade_sim::scenario::Scenario;
use palisade_sim::{simulate, Options};
use std::path::Path;

#[test]
fn fast_scenarios_are_no_worse_than_the_baseline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut entries: Vec<_> = std::fs::read_dir(root.join("scenarios"))
        .expect("scenarios directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    entries.sort();
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in entries {
        let scenario = Scenario::load(&path).expect("scenario loads");
        if !scenario.fast {
            continue;
        }
        let file = root.join("baseline").join(format!("{}.json", scenario.name));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let base: RunResult = serde_json::from_str(&text).expect("baseline parses");
        let with_cost = base.algorithms.iter().any(|a| a.cost.is_some());
        let now = simulate(&scenario, base.seed, &Options { threads: 2, cost: with_cost });
        let worse = palisade_sim::compare::regressions(&base, &now);
        if !worse.is_empty() {
            failures.push(format!(
                "{} is worse than {}:\n  - {}\n  reproduce with --seed {}",
                scenario.name,
                file.display(),
                worse.join("\n  - "),
                base.seed
            ));
        }
        checked += 1;
    }
    assert!(checked >= 2, "expected fast scenarios, found {checked}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
