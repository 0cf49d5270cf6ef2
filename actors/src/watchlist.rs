//! The on-sight check: addresses that fleet peers or the central tier flagged by their
//! hash only. Nobody here knows the raw address, so the first event that comes from it
//! is what reveals it: that event becomes an [`Overflow`] at once, before any bucket.
//!
//! The pipeline asks [`Watchlist::check`] for every parsed event with a source address
//! while the list is not empty; it costs one keyed blake3 hash per key in use (one per
//! epoch and origin, usually one or two) and a table lookup.

use palisade_proto::{Epoch, HashKey, HashedIp, Origin, Timestamp};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::event::{Overflow, Remediation};

/// An address flagged by hash.
#[derive(Debug, Clone)]
pub struct Flag {
    /// Who flagged it: [`Origin::Fleet`] or [`Origin::Community`].
    pub origin: Origin,
    /// The hashing epoch of `hashed_ip`.
    pub epoch: Epoch,
    /// The key that hashed it (the fleet's or the community's, for `epoch`).
    pub key: HashKey,
    /// The address, hashed.
    pub hashed_ip: HashedIp,
    /// The scenario reported, which the decision will carry.
    pub scenario: Arc<str>,
    /// The reported confidence.
    pub confidence: u8,
    /// How many events the reporter saw.
    pub events_count: u32,
    /// When the flag lapses if the address never shows up.
    pub until: Timestamp,
}

/// Flagged hashes, bounded, with the keys needed to recognise them.
#[derive(Debug)]
pub struct Watchlist {
    /// One key per (origin, epoch) with at least one entry (a handful), and how many
    /// entries use it.
    keys: Vec<(Origin, Epoch, HashKey, usize)>,
    entries: HashMap<HashedIp, Flag>,
    max: usize,
    stats: WatchStats,
}

/// Counters of the on-sight check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Flags currently held.
    pub watched: u64,
    /// Flags added.
    pub flagged: u64,
    /// Flags refused because the list was full.
    pub refused_full: u64,
    /// Events that matched a flag (each became an overflow).
    pub hits: u64,
    /// Flags that lapsed unseen.
    pub lapsed: u64,
}

impl Watchlist {
    /// An empty list holding at most `max` flags.
    pub fn new(max: usize) -> Self {
        Watchlist { keys: Vec::new(), entries: HashMap::new(), max, stats: WatchStats::default() }
    }

    /// Whether nothing is flagged (the pipeline then skips the check entirely).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> WatchStats {
        WatchStats { watched: self.entries.len() as u64, ..self.stats }
    }

    /// Adds flags; a flag for a hash already held keeps the later expiry.
    pub fn add(&mut self, flags: Vec<Flag>) {
        for flag in flags {
            if let Some(held) = self.entries.get_mut(&flag.hashed_ip) {
                held.until = held.until.max(flag.until);
                continue;
            }
            if self.entries.len() >= self.max {
                self.stats.refused_full += 1;
                continue;
            }
            match self.keys.iter_mut().find(|(o, e, _, _)| *o == flag.origin && *e == flag.epoch) {
                Some((_, _, _, users)) => *users += 1,
                None => self.keys.push((flag.origin.clone(), flag.epoch, flag.key.clone(), 1)),
            }
            self.stats.flagged += 1;
            self.entries.insert(flag.hashed_ip, flag);
        }
    }

    /// The flag matching `ip`, removed from the list (the decision it leads to covers
    /// the address from now on).
    pub fn check(&mut self, ip: IpAddr) -> Option<Flag> {
        let hit =
            self.keys.iter().map(|(_, _, key, _)| key.hash(ip)).find(|h| self.entries.contains_key(h))?;
        let flag = self.entries.remove(&hit)?;
        self.stats.hits += 1;
        self.release(&flag.origin, flag.epoch);
        Some(flag)
    }

    /// One entry fewer uses the key of (`origin`, `epoch`); a key no entry uses goes.
    fn release(&mut self, origin: &Origin, epoch: Epoch) {
        if let Some(at) = self.keys.iter().position(|(o, e, _, _)| o == origin && *e == epoch) {
            self.keys[at].3 -= 1;
            if self.keys[at].3 == 0 {
                self.keys.swap_remove(at);
            }
        }
    }

    /// Drops the flags of these hashes, and with `all_of` every flag of that origin.
    pub fn remove(&mut self, hashes: &[HashedIp], all_of: Option<&Origin>) {
        for h in hashes {
            if let Some(flag) = self.entries.remove(h) {
                self.release(&flag.origin, flag.epoch);
            }
        }
        if let Some(origin) = all_of {
            self.entries.retain(|_, f| f.origin != *origin);
            self.keys.retain(|(o, _, _, _)| o != origin);
        }
    }

    /// The overflow an event from `ip` matching `flag` produces, at `at`.
    pub fn overflow(flag: &Flag, ip: IpAddr, at: Timestamp) -> Overflow {
        let value = ip.to_string();
        Overflow {
            scenario: flag.scenario.clone(),
            scope: palisade_proto::Scope::Ip,
            group_key: value.clone(),
            value,
            events_count: flag.events_count,
            first_at: at,
            last_at: at,
            remediation: Some(Remediation { kind: palisade_proto::DecisionType::Ban, duration: None }),
            confidence: flag.confidence,
            labels: Arc::default(),
            origin: flag.origin.clone(),
        }
    }

    /// Drops flags that lapsed by `now`, and the keys no flag uses any more.
    pub fn prune(&mut self, now: Timestamp) {
        let mut lapsed = Vec::new();
        self.entries.retain(|_, f| {
            let keep = f.until > now;
            if !keep {
                lapsed.push((f.origin.clone(), f.epoch));
            }
            keep
        });
        self.stats.lapsed += lapsed.len() as u64;
        for (origin, epoch) in lapsed {
            self.release(&origin, epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(secret: u8, epoch: u32, ip: &str, until: i64) -> Flag {
        let key = HashKey::derive(&[secret; 32], Epoch(epoch));
        Flag {
            origin: Origin::Fleet,
            epoch: Epoch(epoch),
            hashed_ip: key.hash(ip.parse().unwrap()),
            key,
            scenario: "palisade/ssh-bf".into(),
            confidence: 2,
            events_count: 6,
            until: Timestamp(until),
        }
    }

    #[test]
    fn the_first_event_from_a_flagged_address_matches_once() {
        let mut list = Watchlist::new(10);
        assert!(list.is_empty());
        list.add(vec![flag(1, 7, "198.51.100.4", 1_000), flag(1, 8, "2001:db8::9", 1_000)]);
        assert!(list.check("198.51.100.5".parse().unwrap()).is_none());
        let hit = list.check("198.51.100.4".parse().unwrap()).expect("flagged");
        assert_eq!(hit.epoch, Epoch(7));
        assert!(list.check("198.51.100.4".parse().unwrap()).is_none(), "consumed");
        assert!(list.check("2001:db8::9".parse().unwrap()).is_some(), "other epoch's key");
        let o = Watchlist::overflow(&hit, "198.51.100.4".parse().unwrap(), Timestamp(5));
        assert_eq!((o.origin, o.value.as_str(), o.confidence), (Origin::Fleet, "198.51.100.4", 2));
        assert_eq!(list.stats().hits, 2);
    }

    #[test]
    fn bounded_and_lapsing() {
        let mut list = Watchlist::new(2);
        list.add(vec![
            flag(1, 7, "198.51.100.1", 100),
            flag(1, 7, "198.51.100.2", 300),
            flag(1, 7, "198.51.100.3", 300),
        ]);
        assert_eq!(list.stats().refused_full, 1);
        list.prune(Timestamp(200));
        assert_eq!(list.stats().watched, 1);
        assert_eq!(list.stats().lapsed, 1);
        assert!(list.check("198.51.100.2".parse().unwrap()).is_some());
        list.prune(Timestamp(400));
        assert!(list.is_empty() && list.keys.is_empty());
    }

    #[test]
    fn flags_are_removed_by_hash_or_by_origin() {
        let mut list = Watchlist::new(10);
        list.add(vec![flag(1, 7, "198.51.100.1", 900), flag(1, 7, "198.51.100.2", 900)]);
        let community = Flag { origin: Origin::Community, ..flag(2, 7, "198.51.100.3", 900) };
        list.add(vec![community]);
        list.remove(&[HashKey::derive(&[1; 32], Epoch(7)).hash("198.51.100.1".parse().unwrap())], None);
        assert_eq!(list.stats().watched, 2);
        assert_eq!(list.keys.len(), 2);
        list.remove(&[], Some(&Origin::Community));
        assert_eq!(list.stats().watched, 1);
        assert_eq!(list.keys.len(), 1, "the community's key went with its flags");
        assert!(list.check("198.51.100.2".parse().unwrap()).is_some());
        assert!(list.keys.is_empty(), "the last flag of a key takes the key along");
    }

    #[test]
    fn keys_stay_while_a_flag_uses_them() {
        let mut list = Watchlist::new(10);
        list.add(vec![flag(1, 7, "198.51.100.1", 100), flag(1, 7, "198.51.100.2", 900)]);
        list.add(vec![flag(1, 8, "198.51.100.3", 100)]);
        // A repeated flag extends the held one and uses no new key slot.
        list.add(vec![flag(1, 7, "198.51.100.1", 950)]);
        assert_eq!(list.keys.iter().map(|k| k.3).sum::<usize>(), 3);
        list.prune(Timestamp(500));
        assert_eq!(list.keys.len(), 1, "epoch 8's only flag lapsed");
        assert_eq!(list.stats().watched, 2);
        assert!(list.check("198.51.100.1".parse().unwrap()).is_some());
        assert_eq!(list.keys.len(), 1, "198.51.100.2 still needs epoch 7's key");
        assert!(list.check("198.51.100.2".parse().unwrap()).is_some());
        assert!(list.keys.is_empty());
    }
}
