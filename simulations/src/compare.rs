//! Compares a run with its committed baseline: the regression gate.

use crate::report::RunResult;

/// Tolerances of the gate, applied to the `palisade` algorithm.
pub mod tolerance {
    /// Recall may drop by at most this much (absolute).
    pub const RECALL: f64 = 0.01;
    /// Precision may drop by at most this much (absolute).
    pub const PRECISION: f64 = 0.005;
    /// Botnet recall (suppression) may drop by at most this much.
    pub const BOTNET_RECALL: f64 = 0.02;
    /// Time-to-list may grow by at most this factor...
    pub const TTL_FACTOR: f64 = 1.25;
    /// ...plus this many minutes.
    pub const TTL_SLACK_MIN: f64 = 1.0;
}

/// What got worse, one line per regression; empty when nothing did.
pub fn regressions(baseline: &RunResult, current: &RunResult) -> Vec<String> {
    use tolerance::*;
    let mut out = Vec::new();
    let find = |r: &RunResult| r.algorithms.iter().find(|a| a.measured.algorithm == "palisade").cloned();
    let (Some(b), Some(c)) = (find(baseline), find(current)) else {
        return vec!["`palisade` missing from the baseline or the run".into()];
    };
    let (bm, cm) = (&b.measured, &c.measured);
    let mut lower = |what: &str, base: Option<f64>, now: Option<f64>, tol: f64| {
        if let (Some(base), now) = (base, now) {
            let now_v = now.unwrap_or(0.0);
            if now_v < base - tol {
                out.push(format!("{what} fell from {base:.4} to {now_v:.4} (tolerance {tol})"));
            }
        }
    };
    lower("recall", bm.recall, cm.recall, RECALL);
    lower("precision", bm.precision, cm.precision, PRECISION);
    lower("botnet recall", bm.botnet_recall, cm.botnet_recall, BOTNET_RECALL);
    let counts = [
        ("benign IPs listed", bm.benign_listed, cm.benign_listed),
        ("victims listed", bm.victims_listed, cm.victims_listed),
        ("protected violations", bm.protected_violations, cm.protected_violations),
    ];
    for (what, base, now) in counts {
        if now > base {
            out.push(format!("{what} rose from {base} to {now} (tolerance 0)"));
        }
    }
    for (what, base, now, slack) in [
        ("median time-to-list", bm.ttl_median_min, cm.ttl_median_min, TTL_SLACK_MIN),
        ("p95 time-to-list", bm.ttl_p95_min, cm.ttl_p95_min, 5.0 * TTL_SLACK_MIN),
    ] {
        if let (Some(base), Some(now)) = (base, now) {
            if now > base * TTL_FACTOR + slack {
                out.push(format!(
                    "{what} rose from {base:.1} to {now:.1} min (tolerance x{TTL_FACTOR} + {slack} min)"
                ));
            }
        }
    }
    if let (Some(bc), Some(cc)) = (&b.cost, &c.cost) {
        for (what, base, now) in [
            ("cost (ordinary, aged)", bc.ordinary_aged.asns, cc.ordinary_aged.asns),
            ("cost (ordinary, trusted)", bc.ordinary_trusted.asns, cc.ordinary_trusted.asns),
            ("cost (protected, aged)", bc.protected_aged.asns, cc.protected_aged.asns),
            ("cost (protected, trusted)", bc.protected_trusted.asns, cc.protected_trusted.asns),
            ("cost (allowlisted, trusted)", bc.allowlisted_trusted.asns, cc.allowlisted_trusted.asns),
        ] {
            let cheaper = match (base, now) {
                (None, Some(_)) => true,
                (Some(b), Some(n)) => n < b,
                _ => false,
            };
            if cheaper {
                out.push(format!("{what} fell from {base:?} to {now:?} ASNs (tolerance 0)"));
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;
    use crate::report::{AlgoResult, WorldSummary};
    use crate::run::Measured;

    fn result(recall: f64, benign: usize, ttl: f64) -> RunResult {
        RunResult {
            scenario: "t".into(),
            description: String::new(),
            seed: 3,
            world: WorldSummary {
                honest_sensors: 1,
                honest_asns: 1,
                attacker_sensors: 0,
                events: 0,
                attackers_seen: 0,
                hours: 1.0,
            },
            algorithms: vec![AlgoResult {
                measured: Measured {
                    algorithm: "palisade".into(),
                    precision: Some(1.0),
                    recall: Some(recall),
                    recall_all: None,
                    eligible: 10,
                    botnet_recall: None,
                    ttl_median_min: Some(ttl),
                    ttl_p95_min: Some(ttl * 2.0),
                    benign_listed: benign,
                    benign_hours: 0.0,
                    benign_max_hours: 0.0,
                    victims_listed: 0,
                    victims: 0,
                    protected_violations: 0,
                    peak_tracked_ips: 0,
                    honest_trust: None,
                    attacker_trust: None,
                },
                cost: None,
            }],
            curve: None,
        }
    }

    #[test]
    fn flags_what_got_worse_within_tolerance() {
        let base = result(0.99, 0, 8.0);
        assert!(regressions(&base, &result(0.985, 0, 9.0)).is_empty());
        let worse = regressions(&base, &result(0.97, 1, 20.0));
        assert_eq!(worse.len(), 4, "{worse:?}");
        assert!(worse.iter().any(|w| w.contains("recall")));
        assert!(worse.iter().any(|w| w.contains("benign")));
    }
}
