//! The query parameters of `GET /v1/decisions` and `GET /v1/decisions/stream`, parsed
//! strictly: an unknown parameter or a malformed value is a 400 with a message, never
//! silently ignored (a typo in a bouncer's filter would otherwise widen what it gets).

use ipnet::IpNet;
use palisade_proto::{Decision, DecisionType, Origin, Scope, Timestamp};
use std::net::IpAddr;

/// Which endpoint the parameters are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v1/decisions`.
    Query,
    /// `GET /v1/decisions/stream`.
    Stream,
}

/// The filters a bouncer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionQuery {
    /// Decisions covering this address.
    pub ip: Option<IpAddr>,
    /// With `contains` (the default): decisions covering all of this range; without:
    /// decisions inside it.
    pub range: Option<IpNet>,
    /// See `range`.
    pub contains: bool,
    /// Scopes (`Ip`, `Range`, ...). The stream defaults to `Ip` and `Range`.
    pub scopes: Option<Vec<Scope>>,
    /// Exact value.
    pub value: Option<String>,
    /// Exact remediation.
    pub kind: Option<DecisionType>,
    /// Origins.
    pub origins: Option<Vec<String>>,
    /// The scenario contains one of these (case-insensitive).
    pub scenarios_containing: Vec<String>,
    /// The scenario contains none of these (case-insensitive).
    pub scenarios_not_containing: Vec<String>,
    /// Include simulated decisions.
    pub simulated: bool,
    /// Stream: everything, not only what changed since the last pull.
    pub startup: bool,
    /// Stream: include the community blocklist (CrowdSec's `community_pull`).
    pub community: bool,
    /// Only decisions with a larger id.
    pub id_gt: Option<u64>,
    /// At most this many decisions.
    pub limit: Option<usize>,
    /// Skip this many decisions first.
    pub offset: usize,
}

impl Default for DecisionQuery {
    fn default() -> Self {
        DecisionQuery {
            ip: None,
            range: None,
            contains: true,
            scopes: None,
            value: None,
            kind: None,
            origins: None,
            scenarios_containing: Vec::new(),
            scenarios_not_containing: Vec::new(),
            simulated: false,
            startup: false,
            community: true,
            id_gt: None,
            limit: None,
            offset: 0,
        }
    }
}

/// Go's `strconv.ParseBool`, which CrowdSec's bouncers are written against.
fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{key}: {v:?} is not a boolean (true or false)")),
    }
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{key}: {v:?} is not a non-negative integer"))
}

impl DecisionQuery {
    /// Parses `pairs` (the query string, in order) for `endpoint`.
    pub fn parse(pairs: &[(String, String)], endpoint: Endpoint) -> Result<Self, String> {
        let mut q = DecisionQuery::default();
        for (key, v) in pairs {
            let v = v.as_str();
            match key.as_str() {
                "ip" => {
                    let ip =
                        v.trim().parse::<IpAddr>().map_err(|_| format!("ip: {v:?} is not an IP address"))?;
                    q.ip = Some(palisade_proto::ip::canonical_ip(ip));
                }
                "range" => {
                    let target = palisade_proto::decision::parse_target(&Scope::Range, v)
                        .map_err(|_| format!("range: {v:?} is not a CIDR range"))?;
                    q.range = Some(target);
                }
                "contains" => q.contains = parse_bool(key, v)?,
                "scope" | "scopes" => {
                    let scopes: Vec<Scope> = list(v).iter().map(|s| Scope::parse(s)).collect();
                    q.scopes = (!scopes.is_empty()).then_some(scopes);
                }
                "value" => q.value = (!v.is_empty()).then(|| v.to_owned()),
                "type" => q.kind = (!v.is_empty()).then(|| DecisionType::from(v)),
                "origins" | "origin" => {
                    let origins = list(v);
                    q.origins = (!origins.is_empty()).then_some(origins);
                }
                "scenarios_containing" => q.scenarios_containing = lower(list(v)),
                "scenarios_not_containing" => q.scenarios_not_containing = lower(list(v)),
                "simulated" => q.simulated = parse_bool(key, v)?,
                "id_gt" => q.id_gt = Some(number(key, v)?),
                "limit" => q.limit = Some(number(key, v)?),
                "offset" => q.offset = number(key, v)?,
                // Decisions are kept one per (value, type, scope) already.
                "dedup" => {
                    parse_bool(key, v)?;
                }
                "startup" if endpoint == Endpoint::Stream => q.startup = parse_bool(key, v)?,
                "community_pull" if endpoint == Endpoint::Stream => q.community = parse_bool(key, v)?,
                // Blocklists other than the community's: Palisade has none to leave out.
                "additional_pull" if endpoint == Endpoint::Stream => {
                    parse_bool(key, v)?;
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        if endpoint == Endpoint::Stream && q.scopes.is_none() {
            q.scopes = Some(vec![Scope::Ip, Scope::Range]);
        }
        if q.ip.is_some() && q.range.is_some() {
            return Err("give ip or range, not both".to_owned());
        }
        Ok(q)
    }

    /// Whether `d` passes every filter but the network ones (which select the
    /// candidates through the index) at `now`.
    pub fn admits(&self, d: &Decision, now: Timestamp) -> bool {
        if !self.admits_ended(d) {
            return false;
        }
        d.is_active(now)
    }

    /// Like [`admits`](Self::admits), without the time check (for deletions).
    pub fn admits_ended(&self, d: &Decision) -> bool {
        if d.simulated && !self.simulated {
            return false;
        }
        if !self.community && d.origin == Origin::Community {
            return false;
        }
        if self.id_gt.is_some_and(|id| d.id <= id) {
            return false;
        }
        if self.scopes.as_ref().is_some_and(|s| !s.contains(&d.scope)) {
            return false;
        }
        if self.value.as_ref().is_some_and(|v| v != &d.value) {
            return false;
        }
        if self.kind.as_ref().is_some_and(|k| k != &d.kind) {
            return false;
        }
        if self.origins.as_ref().is_some_and(|o| !o.iter().any(|o| o.eq_ignore_ascii_case(d.origin.as_str())))
        {
            return false;
        }
        if !self.scenarios_containing.is_empty() || !self.scenarios_not_containing.is_empty() {
            let scenario = d.scenario.to_lowercase();
            if !self.scenarios_containing.is_empty()
                && !self.scenarios_containing.iter().any(|s| scenario.contains(s.as_str()))
            {
                return false;
            }
            if self.scenarios_not_containing.iter().any(|s| scenario.contains(s.as_str())) {
                return false;
            }
        }
        true
    }
}

fn lower(v: Vec<String>) -> Vec<String> {
    v.into_iter().map(|s| s.to_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn decision(scenario: &str, origin: Origin) -> Decision {
        Decision {
            id: 5,
            uuid: palisade_proto::Uuid::default(),
            origin,
            kind: DecisionType::Ban,
            scope: Scope::Ip,
            value: "192.0.2.1".into(),
            created_at: Timestamp(0),
            until: Timestamp(10_000),
            scenario: scenario.into(),
            simulated: false,
        }
    }

    #[test]
    fn parses_what_bouncers_send() {
        let q = DecisionQuery::parse(
            &pairs(&[
                ("startup", "true"),
                ("scopes", "ip,range"),
                ("origins", "palisade,cli"),
                ("scenarios_containing", "SSH,http"),
                ("scenarios_not_containing", ""),
            ]),
            Endpoint::Stream,
        )
        .unwrap();
        assert!(q.startup);
        assert_eq!(q.scopes, Some(vec![Scope::Ip, Scope::Range]));
        assert_eq!(q.scenarios_containing, vec!["ssh", "http"]);
        assert!(q.scenarios_not_containing.is_empty());
        let q = DecisionQuery::parse(&[], Endpoint::Stream).unwrap();
        assert_eq!(q.scopes, Some(vec![Scope::Ip, Scope::Range]), "the stream's default scopes");
        let q = DecisionQuery::parse(&pairs(&[("ip", "::ffff:192.0.2.1")]), Endpoint::Query).unwrap();
        assert_eq!(q.ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(q.scopes, None);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for (k, v, why) in [
            ("ipp", "1.2.3.4", "unknown parameter"),
            ("ip", "1.2.3.400", "not an IP"),
            ("range", "1.2.3.4/33", "not a CIDR"),
            ("contains", "maybe", "not a boolean"),
            ("limit", "-1", "non-negative"),
            ("startup", "true", "unknown parameter"),
        ] {
            let err = DecisionQuery::parse(&pairs(&[(k, v)]), Endpoint::Query).unwrap_err();
            assert!(err.contains(why), "{k}={v}: {err}");
        }
        assert!(DecisionQuery::parse(&pairs(&[("ip", "1.2.3.4"), ("range", "1.2.3.0/24")]), Endpoint::Query)
            .is_err());
    }

    #[test]
    fn filters() {
        let now = Timestamp(1_000);
        let q = |p: &[(&str, &str)]| DecisionQuery::parse(&pairs(p), Endpoint::Query).unwrap();
        let d = decision("palisade/ssh-bf", Origin::Palisade);
        assert!(q(&[]).admits(&d, now));
        assert!(!q(&[]).admits(&d, Timestamp(10_000)), "expired");
        assert!(q(&[("scenarios_containing", "SSH")]).admits(&d, now));
        assert!(!q(&[("scenarios_containing", "http")]).admits(&d, now));
        assert!(!q(&[("scenarios_not_containing", "ssh")]).admits(&d, now));
        assert!(q(&[("origins", "cli,palisade")]).admits(&d, now));
        assert!(!q(&[("origins", "cli")]).admits(&d, now));
        assert!(!q(&[("scope", "range")]).admits(&d, now));
        assert!(q(&[("type", "ban"), ("value", "192.0.2.1")]).admits(&d, now));
        assert!(!q(&[("type", "captcha")]).admits(&d, now));
        assert!(!q(&[("id_gt", "5")]).admits(&d, now));
        let mut sim = d.clone();
        sim.simulated = true;
        assert!(!q(&[]).admits(&sim, now));
        assert!(q(&[("simulated", "true")]).admits(&sim, now));
        let community = decision("community", Origin::Community);
        let stream = DecisionQuery::parse(&pairs(&[("community_pull", "false")]), Endpoint::Stream).unwrap();
        assert!(!stream.admits(&community, now));
    }
}
