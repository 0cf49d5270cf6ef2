//! Decisions as CrowdSec's Local API writes them, so its bouncers parse them unchanged.

use palisade_proto::{Decision, Timestamp};
use serde::Serialize;
use std::time::Duration;

/// `until - now` as Go's `time.Duration.String()` after rounding to seconds: `"3h59m50s"`,
/// `"0s"`, and negative for decisions that have ended (`"-1m2s"`).
pub fn signed_go_duration(until: Timestamp, now: Timestamp) -> String {
    let ms = until.0.saturating_sub(now.0);
    let text = palisade_proto::time::go_duration(Duration::from_millis(ms.unsigned_abs()));
    if ms < 0 && text != "0s" {
        format!("-{text}")
    } else {
        text
    }
}

/// One decision in CrowdSec's JSON model (`definitions.Decision` of its swagger file).
/// `until` and `simulated` are not set by the bouncer endpoints; `uuid` is sent by the
/// stream only.
#[derive(Debug, Serialize)]
pub struct WireDecision<'a> {
    duration: String,
    id: u64,
    origin: &'a str,
    scenario: &'a str,
    scope: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    uuid: Option<String>,
    value: &'a str,
}

impl<'a> WireDecision<'a> {
    /// `d` at `now`; `with_uuid` for the stream.
    pub fn new(d: &'a Decision, now: Timestamp, with_uuid: bool) -> Self {
        WireDecision {
            duration: signed_go_duration(d.until, now),
            id: d.id,
            origin: d.origin.as_str(),
            scenario: &d.scenario,
            scope: d.scope.as_str(),
            kind: d.kind.as_str(),
            uuid: with_uuid.then(|| d.uuid.to_string()),
            value: &d.value,
        }
    }
}

/// Appends `d` to a JSON array being written in `out`: `[` before the first element, `,`
/// before the others.
pub fn push(out: &mut Vec<u8>, first: &mut bool, d: &Decision, now: Timestamp, with_uuid: bool) {
    out.push(if *first { b'[' } else { b',' });
    *first = false;
    // Writing plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &WireDecision::new(d, now, with_uuid));
}

/// Closes an array begun with [`push`]; an array that got no element is written `null`,
/// as CrowdSec (a nil Go slice) does.
pub fn close(out: &mut Vec<u8>, first: bool) {
    out.extend_from_slice(if first { b"null" } else { b"]" });
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::{DecisionType, Origin, Scope};

    #[test]
    fn go_durations_with_sign() {
        let now = Timestamp::from_secs(1_000);
        assert_eq!(signed_go_duration(Timestamp::from_secs(1_000 + 14_390), now), "3h59m50s");
        assert_eq!(signed_go_duration(Timestamp::from_secs(1_000 + 3_600), now), "1h0m0s");
        assert_eq!(signed_go_duration(Timestamp::from_secs(1_000 + 59), now), "59s");
        assert_eq!(signed_go_duration(Timestamp::from_secs(1_000 - 62), now), "-1m2s");
        assert_eq!(signed_go_duration(Timestamp(1_000_200), now), "0s");
    }

    #[test]
    fn crowdsec_shape() {
        let d = Decision {
            id: 2336,
            uuid: palisade_proto::Uuid::default(),
            origin: Origin::Cli,
            kind: DecisionType::Ban,
            scope: Scope::Ip,
            value: "192.168.1.1".into(),
            created_at: Timestamp(0),
            until: Timestamp::from_secs(3_600),
            scenario: "manual ban".into(),
            simulated: false,
        };
        let mut out = Vec::new();
        let mut first = true;
        close(&mut out, first);
        assert_eq!(out, b"null");
        out.clear();
        push(&mut out, &mut first, &d, Timestamp(0), false);
        close(&mut out, first);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"duration":"1h0m0s","id":2336,"origin":"cli","scenario":"manual ban",
                "scope":"Ip","type":"ban","value":"192.168.1.1"}])
        );
    }
}
