//! Measures the consensus's memory per tracked IP: `cargo run --release -p
//! palisade-consensus --example memory -- 1000000` ingests three reports from three
//! networks for each of N distinct IPs and prints the resident set size (Linux).

use palisade_consensus::{
    Allowlist, Asn, AsnOrgs, Consensus, ConsensusConfig, Defences, Report, ScenarioKind, VerifiedAddress,
};
use palisade_proto::{HashedIp, NodeId, Timestamp};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    // Rate limits off: this measures memory, not the budget.
    let config = ConsensusConfig {
        defences: Defences { rate_limit: false, ..Defences::default() },
        ..ConsensusConfig::default()
    };
    let Ok(mut c) = Consensus::new(config, AsnOrgs::new(), Allowlist::new()) else {
        eprintln!("invalid config");
        return;
    };
    let before = rss_kb();
    let now = Timestamp(1_767_225_600_000);
    for i in 0..n {
        let mut ip = [0u8; 32];
        ip[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        for k in 0..3u32 {
            let sensor = (i as u32 % 1000) * 3 + k;
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&sensor.to_le_bytes());
            let report = Report {
                sensor: NodeId(id),
                address: VerifiedAddress {
                    asn: Asn(100 + sensor % 300),
                    net24: [10, 0, (sensor % 250) as u8],
                },
                hashed_ip: HashedIp(ip),
                scenario: ScenarioKind::Application,
                confidence: 3,
                observed_at: now,
            };
            c.ingest(&report, now);
        }
    }
    let after = rss_kb();
    let stats = c.stats();
    println!(
        "{} IPs, {} reports, {} sensors: {} MB resident, {:.0} bytes per IP (3 reports each)",
        stats.tracked_ips,
        stats.reports,
        stats.sensors,
        (after - before) / 1024,
        (after - before) as f64 * 1024.0 / stats.tracked_ips.max(1) as f64
    );
}
