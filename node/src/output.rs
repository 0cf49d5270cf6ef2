//! Human-readable output: aligned tables and dates. Scripts use `--json`.

use palisade_actors::decision::Verdict;
use palisade_proto::{Decision, Timestamp};
use std::io::Write;

use crate::hub::Hub;

/// Writes an aligned table with a header row.
pub fn table<W: Write>(w: &mut W, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(w, "(none)");
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |w: &mut W, cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
        let text: Vec<String> = cells.zip(&widths).map(|(c, width)| format!("{c:<width$}")).collect();
        writeln!(w, "{}", text.join("  ").trim_end())
    };
    line(w, &mut header.iter().copied())?;
    for row in rows {
        line(w, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// `2026-11-25 06:00:00Z`.
pub fn datetime(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(t.0)
        .map_or_else(|| t.to_string(), |d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
}

/// RFC 3339 in UTC, as CrowdSec writes times in JSON.
pub fn rfc3339(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(t.0)
        .map_or_else(String::new, |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn decision_rows(list: &[Decision], now: Timestamp) -> Vec<Vec<String>> {
    list.iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.value.to_string(),
                d.scope.to_string(),
                d.kind.to_string(),
                d.origin.to_string(),
                d.scenario.to_string(),
                palisade_proto::time::go_duration(d.remaining(now)),
            ]
        })
        .collect()
}

const DECISION_HEADER: [&str; 7] = ["ID", "VALUE", "SCOPE", "TYPE", "ORIGIN", "SCENARIO", "EXPIRES IN"];

/// `palisade decisions list`.
pub fn decisions(list: &[Decision], json: bool) {
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    if json {
        let _ = writeln!(w, "{}", serde_json::to_string_pretty(list).unwrap_or_default());
        return;
    }
    let _ = table(&mut w, &DECISION_HEADER, &decision_rows(list, crate::run::wall_clock()));
}

/// `palisade decisions add`.
pub fn verdict(verdict: &Verdict, json: bool) {
    let (what, decision) = match verdict {
        Verdict::Created(d) => ("added", Some(d)),
        Verdict::Extended { decision, .. } => ("extended", Some(decision)),
        Verdict::AlreadyCovered(d) => ("already covered by an active decision", Some(d)),
        _ => ("no decision made", None),
    };
    if json {
        let body = serde_json::json!({ "result": what, "decision": decision });
        println!("{body}");
        return;
    }
    match decision {
        Some(d) => println!(
            "{what}: {} {} {} for {} (id {})",
            d.kind,
            d.scope,
            d.value,
            palisade_proto::time::go_duration(d.remaining(crate::run::wall_clock())),
            d.id
        ),
        None => println!("{what}"),
    }
}

/// `palisade decisions delete`.
pub fn deleted(list: &[Decision], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
        return;
    }
    println!("{} decision(s) deleted", list.len());
    for d in list {
        println!("  {} {} {} ({})", d.id, d.kind, d.value, d.scenario);
    }
}

/// `palisade bouncers list`: one row per instance (address using the key).
pub fn bouncers(list: &[crate::bouncers::Bouncer], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
        return;
    }
    let mut rows = Vec::new();
    for b in list {
        if b.instances.is_empty() {
            rows.push(vec![b.name.clone(), datetime(b.created_at), "-".into(), "never".into(), "-".into()]);
        }
        for i in b.instances.values() {
            rows.push(vec![
                b.name.clone(),
                datetime(b.created_at),
                i.address.clone(),
                i.last_pull.map_or_else(|| "never".to_owned(), datetime),
                if i.user_agent.is_empty() { "-".to_owned() } else { i.user_agent.clone() },
            ]);
        }
    }
    let stdout = std::io::stdout();
    let _ = table(&mut stdout.lock(), &["NAME", "ADDED", "ADDRESS", "LAST PULL", "USER AGENT"], &rows);
}

/// `palisade machines list`.
pub fn machines(list: &[crate::machines::Machine], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                if m.validated { "validated".into() } else { "waiting (palisade machines validate)".into() },
                datetime(m.created_at),
                m.last_login.map_or_else(|| "never".to_owned(), datetime),
                if m.address.is_empty() { "-".to_owned() } else { m.address.clone() },
            ]
        })
        .collect();
    let stdout = std::io::stdout();
    let _ = table(&mut stdout.lock(), &["MACHINE", "STATUS", "ADDED", "LAST LOGIN", "ADDRESS"], &rows);
}

/// `palisade hub list`.
pub fn hub_list(hub: &Hub, json: bool) {
    let parsers = hub.parsers.list();
    let scenarios = hub.scenarios.list();
    if json {
        let go = |d: Option<std::time::Duration>| d.map(palisade_proto::time::go_duration);
        let scenarios: Vec<serde_json::Value> = scenarios
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "description": s.description,
                    "type": s.kind.as_str(),
                    "capacity": s.capacity,
                    "leakspeed": go(s.leakspeed),
                    "duration": go(s.duration),
                    "blackhole": go(s.blackhole),
                    "labels": s.labels,
                    "filter": s.filter,
                    "native": s.native,
                    "file": s.file,
                })
            })
            .collect();
        let body = serde_json::json!({ "parsers": parsers, "scenarios": scenarios });
        println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
        return;
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    let _ = writeln!(w, "Parsers ({}, {})", parsers.len(), hub.origin);
    let rows: Vec<Vec<String>> =
        parsers.iter().map(|p| vec![p.stage.clone(), p.name.clone(), p.description.clone()]).collect();
    let _ = table(&mut w, &["STAGE", "NAME", "DESCRIPTION"], &rows);
    let _ = writeln!(w, "\nScenarios ({})", scenarios.len());
    let rows: Vec<Vec<String>> = scenarios
        .iter()
        .map(|s| {
            let bucket = match (s.leakspeed, s.duration) {
                (Some(leak), _) => format!(
                    "{} cap {} leak {}",
                    s.kind.as_str(),
                    s.capacity,
                    palisade_proto::time::go_duration(leak)
                ),
                (None, Some(d)) => format!("{} {}", s.kind.as_str(), palisade_proto::time::go_duration(d)),
                _ => s.kind.as_str().to_owned(),
            };
            vec![s.name.clone(), bucket, s.description.clone()]
        })
        .collect();
    let _ = table(&mut w, &["NAME", "BUCKET", "DESCRIPTION"], &rows);
}

/// `palisade node peers`.
pub fn peers(rows: &[crate::fleet::PeerRow], json: bool) {
    if json {
        println!("{}", serde_json::to_string(rows).unwrap_or_default());
        return;
    }
    let now = crate::run::wall_clock();
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|p| {
            vec![
                p.node.clone(),
                p.state.clone(),
                p.address.clone().unwrap_or_else(|| "-".into()),
                p.last_heard_ms.map_or_else(
                    || "never".into(),
                    |ms| format!("{}s ago", now.since(Timestamp(ms)).as_secs()),
                ),
                p.signals_out.to_string(),
                p.signals_in.to_string(),
                p.version.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    if table_rows.is_empty() {
        println!("no other members known yet");
        return;
    }
    let _ = table(
        &mut std::io::stdout(),
        &["NODE", "STATE", "ADDRESS", "LAST HEARD", "SIGNALS OUT", "SIGNALS IN", "VERSION"],
        &table_rows,
    );
}

/// `palisade fleet status`.
pub fn fleet_status(s: &crate::fleet::StatusRow) {
    println!("node:               {}", s.node);
    match &s.fleet {
        None => println!("fleet:              none (palisade fleet init, or palisade node join)"),
        Some(fleet) => {
            println!(
                "fleet:              {fleet}{}",
                if s.admin { " (this node holds the admin key)" } else { "" }
            );
            println!("gossip address:     {}", s.address.as_deref().unwrap_or("-"));
            if let Some(ms) = s.expires_ms {
                println!("membership expires: {}", datetime(Timestamp(ms)));
            }
            println!("peers connected:    {}", s.peers_connected);
            println!("signals published:  {}", s.signals_published);
            println!("signals received:   {}", s.signals_received);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut out = Vec::new();
        table(&mut out, &["A", "BB"], &[vec!["xxx".into(), "y".into()], vec!["z".into(), "wwww".into()]])
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A    BB\nxxx  y\nz    wwww\n");
        assert_eq!(datetime(Timestamp(0)), "1970-01-01 00:00:00Z");
    }
}
