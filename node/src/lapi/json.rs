//! Decisions as CrowdSec's Local API writes them, so its bouncers parse them unchanged.

use palisade_proto::time::GoDuration;
use palisade_proto::{Decision, Timestamp};
use std::time::Duration;

/// Appends `d` to a JSON array being written in `out`: `[` before the first element, `,`
/// before the others. The fields are those of CrowdSec's `Decision` model (its swagger
/// file); `until` and `simulated` are not set by the bouncer endpoints, and `uuid` is
/// sent by the stream only. Written by hand, without an allocation per decision: a
/// million-decision stream is mostly this loop.
pub fn push(out: &mut Vec<u8>, first: &mut bool, d: &Decision, now: Timestamp, with_uuid: bool) {
    use std::io::Write;
    out.push(if *first { b'[' } else { b',' });
    *first = false;
    let ms = d.until.0.saturating_sub(now.0);
    let sign = if ms <= -500 { "-" } else { "" };
    let duration = GoDuration(Duration::from_millis(ms.unsigned_abs()));
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{{\"duration\":\"{sign}{duration}\",\"id\":{},\"origin\":", d.id);
    string(out, d.origin.as_str());
    out.extend_from_slice(b",\"scenario\":");
    string(out, &d.scenario);
    out.extend_from_slice(b",\"scope\":");
    string(out, d.scope.as_str());
    out.extend_from_slice(b",\"type\":");
    string(out, d.kind.as_str());
    if with_uuid {
        let _ = write!(out, ",\"uuid\":\"{}\"", d.uuid);
    }
    out.extend_from_slice(b",\"value\":");
    string(out, &d.value);
    out.push(b'}');
}

/// A JSON string, escaped.
fn string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// One decision as a JSON value (alerts carry the decisions they made).
pub fn value(d: &Decision, now: Timestamp) -> serde_json::Value {
    let mut out = Vec::new();
    let mut first = true;
    push(&mut out, &mut first, d, now, true);
    serde_json::from_slice(&out[1..]).unwrap_or(serde_json::Value::Null)
}

/// Closes an array begun with [`push`]; an array that got no element is written `null`,
/// as CrowdSec (a nil Go slice) does.
pub fn close(out: &mut Vec<u8>, first: bool) {
    out.extend_from_slice(if first { b"null" } else { b"]" });
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::{DecisionType, Origin, Scope, Uuid};

    fn decision(until: Timestamp) -> Decision {
        Decision {
            id: 2336,
            uuid: Uuid::default(),
            origin: Origin::Cli,
            kind: DecisionType::Ban,
            scope: Scope::Ip,
            value: "192.168.1.1".into(),
            created_at: Timestamp(0),
            until,
            scenario: "manual \"ban\"".into(),
            simulated: false,
        }
    }

    #[test]
    fn go_durations_with_sign() {
        let now = Timestamp::from_secs(1_000);
        let at = |until: Timestamp| value(&decision(until), now)["duration"].as_str().unwrap().to_owned();
        assert_eq!(at(Timestamp::from_secs(1_000 + 14_390)), "3h59m50s");
        assert_eq!(at(Timestamp::from_secs(1_000 + 3_600)), "1h0m0s");
        assert_eq!(at(Timestamp::from_secs(1_000 + 59)), "59s");
        assert_eq!(at(Timestamp::from_secs(1_000 - 62)), "-1m2s");
        assert_eq!(at(Timestamp(1_000_200)), "0s");
        assert_eq!(at(Timestamp(999_800)), "0s");
    }

    #[test]
    fn crowdsec_shape() {
        let d = decision(Timestamp::from_secs(3_600));
        let mut out = Vec::new();
        let mut first = true;
        close(&mut out, first);
        assert_eq!(out, b"null");
        out.clear();
        push(&mut out, &mut first, &d, Timestamp(0), false);
        push(&mut out, &mut first, &d, Timestamp(0), true);
        close(&mut out, first);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"duration":"1h0m0s","id":2336,"origin":"cli","scenario":"manual \"ban\"",
                "scope":"Ip","type":"ban","value":"192.168.1.1"},
                {"duration":"1h0m0s","id":2336,"origin":"cli","scenario":"manual \"ban\"",
                "scope":"Ip","type":"ban","uuid":"00000000-0000-0000-0000-000000000000","value":"192.168.1.1"}])
        );
    }
}
