//! Output: the JSON record of a run, its markdown table and its SVG chart.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use crate::cost::Cost;
use crate::run::Measured;

/// Counts that describe the simulated world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldSummary {
    /// Honest sensors.
    pub honest_sensors: usize,
    /// Distinct ASNs they sit in.
    pub honest_asns: usize,
    /// Attacker sensor identities (all churn generations).
    pub attacker_sensors: usize,
    /// Events (reports and heartbeats).
    pub events: usize,
    /// Real attackers reported by an honest sensor.
    pub attackers_seen: usize,
    /// Hours measured (after the warm-up).
    pub hours: f64,
}

/// The attacker's cheapest way to list one victim, per victim class and sensor profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Costs {
    /// Ordinary victim, sensors with 60 days of presence and no record.
    pub ordinary_aged: Cost,
    /// Ordinary victim, sleepers with a corroborated record.
    pub ordinary_trusted: Cost,
    /// Protected victim, sensors with 60 days of presence and no record.
    pub protected_aged: Cost,
    /// Protected victim, sleepers with a corroborated record.
    pub protected_trusted: Cost,
    /// Allowlisted victim, sleepers with a corroborated record.
    pub allowlisted_trusted: Cost,
}

/// One algorithm's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlgoResult {
    /// Measured in the run.
    #[serde(flatten)]
    pub measured: Measured,
    /// Found by search.
    pub cost: Option<Costs>,
}

/// P(victim listed) against budget, per algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// Budgets (ASNs).
    pub budgets: Vec<usize>,
    /// Sensors per ASN.
    pub sensors_per_asn: usize,
    /// Trials per point.
    pub trials: usize,
    /// (algorithm, probability per budget).
    pub series: Vec<(String, Vec<f64>)>,
}

/// Everything one run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// What it shows.
    pub description: String,
    /// The seed that reproduces it.
    pub seed: u64,
    /// The world.
    pub world: WorldSummary,
    /// Per algorithm.
    pub algorithms: Vec<AlgoResult>,
    /// Budget curve, when computed.
    pub curve: Option<Curve>,
}

/// Rounds to 4 decimals so that JSON output is short and stable.
pub fn r4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

fn trust(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.2}"))
}

fn num(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1}"))
}

fn cost(c: &Cost) -> String {
    match (c.asns, c.sensors) {
        (Some(a), Some(s)) => format!("{a} / {s}"),
        _ => "never".into(),
    }
}

impl RunResult {
    /// The run as a markdown section.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let w = &self.world;
        let _ = writeln!(out, "### {} (seed {})\n", self.scenario, self.seed);
        if !self.description.is_empty() {
            let _ = writeln!(out, "{}\n", self.description.trim());
        }
        let _ = writeln!(
            out,
            "{} honest sensors in {} ASNs, {} attacker sensor identities, {} real attackers seen, {} events, {} h measured.\n",
            w.honest_sensors, w.honest_asns, w.attacker_sensors, w.attackers_seen, w.events, w.hours
        );
        let _ = writeln!(out, "| algorithm | precision | recall (eligible) | recall (all seen) | TTL median (min) | TTL p95 (min) | benign listed | benign IP-hours | longest benign (h) | victims listed | protected violations | botnet recall | mean trust honest / attacker | peak tracked IPs |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for a in &self.algorithms {
            let m = &a.measured;
            let _ = writeln!(
                out,
                "| {} | {} | {} ({}) | {} | {} | {} | {} | {:.1} | {:.1} | {}/{} | {} | {} | {} / {} | {} |",
                m.algorithm,
                pct(m.precision),
                pct(m.recall),
                m.eligible,
                pct(m.recall_all),
                num(m.ttl_median_min),
                num(m.ttl_p95_min),
                m.benign_listed,
                m.benign_hours,
                m.benign_max_hours,
                m.victims_listed,
                m.victims,
                m.protected_violations,
                pct(m.botnet_recall),
                trust(m.honest_trust),
                trust(m.attacker_trust),
                m.peak_tracked_ips,
            );
        }
        if self.algorithms.iter().any(|a| a.cost.is_some()) {
            let _ = writeln!(out, "\nAttacker's cheapest way to list one victim within 24 h (ASNs / sensors; search up to the configured bounds):\n");
            let _ = writeln!(out, "| algorithm | ordinary victim, aged sensors | ordinary victim, trusted sleepers | protected victim, aged sensors | protected victim, trusted sleepers | allowlisted victim, trusted sleepers |");
            let _ = writeln!(out, "|---|---|---|---|---|---|");
            for a in &self.algorithms {
                if let Some(c) = &a.cost {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} |",
                        a.measured.algorithm,
                        cost(&c.ordinary_aged),
                        cost(&c.ordinary_trusted),
                        cost(&c.protected_aged),
                        cost(&c.protected_trusted),
                        cost(&c.allowlisted_trusted)
                    );
                }
            }
        }
        if let Some(c) = &self.curve {
            let _ = writeln!(out, "\nP(ordinary victim listed within 24 h) by attacker budget (ASNs x {} sensors, random ages and records, {} trials):\n", c.sensors_per_asn, c.trials);
            let header: Vec<String> = c.budgets.iter().map(|b| b.to_string()).collect();
            let _ = writeln!(out, "| algorithm | {} |", header.join(" | "));
            let _ = writeln!(out, "|---|{}", "---|".repeat(c.budgets.len()));
            for (name, ps) in &c.series {
                let cells: Vec<String> = ps.iter().map(|p| format!("{p:.2}")).collect();
                let _ = writeln!(out, "| {} | {} |", name, cells.join(" | "));
            }
        }
        out
    }

    /// The budget curve as an SVG line chart (no fonts or libraries needed).
    pub fn svg(&self) -> Option<String> {
        let c = self.curve.as_ref()?;
        let (w, h, left, right, top, bottom) = (820.0, 460.0, 60.0, 250.0, 40.0, 50.0);
        let pw = w - left - right;
        let ph = h - top - bottom;
        let n = c.budgets.len().max(2) - 1;
        let x = |i: usize| left + pw * i as f64 / n as f64;
        let y = |p: f64| top + ph * (1.0 - p);
        let colours = [
            "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf",
        ];
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14">P(victim listed within 24 h) vs attacker budget ({}: seed {})</text>"#,
            left + pw / 2.0,
            self.scenario,
            self.seed
        );
        for k in 0..=4 {
            let p = k as f64 / 4.0;
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{yy:.1}" x2="{x2:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{p:.2}</text>"##,
                yy = y(p),
                x2 = left + pw,
                tx = left - 6.0,
                ty = y(p) + 4.0
            );
        }
        for (i, b) in c.budgets.iter().enumerate() {
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{yb:.1}" stroke="#eee"/><text x="{xx:.1}" y="{ty:.1}" text-anchor="middle">{b}</text>"##,
                xx = x(i),
                yb = top + ph,
                ty = top + ph + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">attacker budget: distinct ASNs ({} sensors each, aged 0-90 days, half with farmed records)</text>"#,
            left + pw / 2.0,
            h - 12.0,
            c.sensors_per_asn
        );
        for (k, (name, ps)) in c.series.iter().enumerate() {
            let colour = colours[k % colours.len()];
            let points: Vec<String> =
                ps.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x(i), y(*p))).collect();
            let dash = if name.starts_with("palisade-no") { r#" stroke-dasharray="5,3""# } else { "" };
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
                points.join(" ")
            );
            let ly = top + 14.0 + 18.0 * k as f64;
            let lx = left + pw + 16.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/><text x="{}" y="{}">{name}</text>"#,
                lx + 24.0,
                lx + 30.0,
                ly + 4.0
            );
        }
        let _ = writeln!(s, "</svg>");
        Some(s)
    }
}
