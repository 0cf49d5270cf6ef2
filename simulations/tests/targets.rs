//! The targets on the full-size scenarios. Slow (about a minute in release), so
//! ignored by default; `fast-sybil` checks the same properties on a smaller world in
//! the baseline test. Run with
//! `cargo test --release -p palisade-sim --test targets -- --ignored`.

use palisade_sim::scenario::Scenario;
use palisade_sim::{simulate, Options};
use std::path::Path;

fn run(name: &str, seed: u64) -> palisade_sim::report::RunResult {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scenarios/{name}.toml"));
    let mut s = Scenario::load(&path).expect("scenario loads");
    s.algorithms.run = vec!["naive".into(), "palisade".into()];
    simulate(&s, seed, &Options { threads: 2, cost: false })
}

#[test]
#[ignore = "slow: full-size scenarios"]
fn ten_thousand_sybils_in_ten_asns_list_no_benign_ip() {
    for (name, seed) in [("sybil-10-asns", 1), ("sybil-one-asn", 1), ("honest", 1)] {
        let r = run(name, seed);
        let naive = &r.algorithms[0].measured;
        let palisade = &r.algorithms[1].measured;
        let ctx = format!("{name}; reproduce with --seed {seed}");
        assert_eq!(palisade.benign_listed, 0, "{ctx}");
        assert!(palisade.recall.unwrap_or(0.0) >= 0.99, "{ctx}");
        assert!(palisade.ttl_median_min.unwrap_or(f64::MAX) < 10.0, "{ctx}");
        if naive.victims > 0 {
            assert_eq!(naive.victims_listed, naive.victims, "the naive rule should fall for it: {ctx}");
        }
    }
}
