//! An index of decisions by network, so that "is this IP banned?" and "what is banned
//! inside this range?" never scan all decisions.
//!
//! Networks are keyed by `(family, first address, prefix length)` in a B-tree. A lookup
//! for the decisions *containing* an address masks it once per prefix length in use (at
//! most 33 for IPv4 and 129 for IPv6, in practice two or three); a lookup for the
//! decisions *contained in* a range is a B-tree range scan.

use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

type Key = (u8, u128, u8);

fn key(net: &IpNet) -> Key {
    let net = net.trunc();
    match net {
        IpNet::V4(v4) => (4, u128::from(u32::from(v4.network())), v4.prefix_len()),
        IpNet::V6(v6) => (6, u128::from(v6.network()), v6.prefix_len()),
    }
}

fn family_bits(family: u8) -> u8 {
    if family == 4 {
        32
    } else {
        128
    }
}

fn mask(addr: u128, family: u8, len: u8) -> u128 {
    let bits = family_bits(family);
    if len == 0 {
        return 0;
    }
    let host_bits = u32::from(bits - len);
    let m = if host_bits >= 128 { 0 } else { !0u128 << host_bits };
    let m = if bits == 32 { m & u128::from(u32::MAX) } else { m };
    addr & m
}

fn last_address(start: u128, family: u8, len: u8) -> u128 {
    let bits = family_bits(family);
    let host_bits = u32::from(bits - len);
    if host_bits == 0 {
        start
    } else if host_bits >= 128 {
        u128::MAX
    } else {
        start | ((1u128 << host_bits) - 1)
    }
}

fn addr_key(ip: IpAddr) -> (u8, u128) {
    match palisade_proto::ip::canonical_ip(ip) {
        IpAddr::V4(v4) => (4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (6, u128::from(v6)),
    }
}

/// Decision ids by the network they cover.
#[derive(Debug, Default)]
pub struct NetIndex {
    nets: BTreeMap<Key, BTreeSet<u64>>,
    /// How many networks use each (family, prefix length): the lengths to try.
    lens: BTreeMap<(u8, u8), usize>,
}

impl NetIndex {
    /// Records that decision `id` covers `net`.
    pub fn insert(&mut self, net: &IpNet, id: u64) {
        let k = key(net);
        if self.nets.entry(k).or_default().insert(id) {
            *self.lens.entry((k.0, k.2)).or_default() += 1;
        }
    }

    /// Forgets that decision `id` covers `net`.
    pub fn remove(&mut self, net: &IpNet, id: u64) {
        let k = key(net);
        let Some(ids) = self.nets.get_mut(&k) else { return };
        if !ids.remove(&id) {
            return;
        }
        if ids.is_empty() {
            self.nets.remove(&k);
        }
        if let Some(count) = self.lens.get_mut(&(k.0, k.2)) {
            *count -= 1;
            if *count == 0 {
                self.lens.remove(&(k.0, k.2));
            }
        }
    }

    /// Ids of decisions whose network contains `ip`.
    pub fn containing(&self, ip: IpAddr) -> Vec<u64> {
        let (family, addr) = addr_key(ip);
        let mut out = Vec::new();
        for &(f, len) in self.lens.keys() {
            if f != family {
                continue;
            }
            if let Some(ids) = self.nets.get(&(family, mask(addr, family, len), len)) {
                out.extend(ids);
            }
        }
        out
    }

    /// Ids of decisions whose network contains all of `net`.
    pub fn containing_net(&self, net: &IpNet) -> Vec<u64> {
        let (family, start, len) = key(net);
        let mut out = Vec::new();
        for &(f, l) in self.lens.keys() {
            if f != family || l > len {
                continue;
            }
            if let Some(ids) = self.nets.get(&(family, mask(start, family, l), l)) {
                out.extend(ids);
            }
        }
        out
    }

    /// Ids of decisions whose network lies inside `net`.
    pub fn contained_in(&self, net: &IpNet) -> Vec<u64> {
        let (family, start, len) = key(net);
        let end = last_address(start, family, len);
        self.nets
            .range((family, start, 0)..=(family, end, u8::MAX))
            .filter(|((_, s, l), _)| *l >= len && last_address(*s, family, *l) <= end)
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect()
    }

    /// Number of distinct networks indexed.
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn containment_v4_and_v6() {
        let mut idx = NetIndex::default();
        idx.insert(&net("192.0.2.7/32"), 1);
        idx.insert(&net("198.51.100.0/24"), 2);
        idx.insert(&net("10.0.0.0/8"), 3);
        idx.insert(&net("2001:db8::/32"), 4);
        idx.insert(&net("2001:db8::1/128"), 5);
        let mut got = idx.containing("192.0.2.7".parse().unwrap());
        got.sort();
        assert_eq!(got, vec![1]);
        assert_eq!(idx.containing("198.51.100.200".parse().unwrap()), vec![2]);
        assert_eq!(idx.containing("10.255.1.1".parse().unwrap()), vec![3]);
        assert!(idx.containing("192.0.2.8".parse().unwrap()).is_empty());
        let mut got = idx.containing("2001:db8::1".parse().unwrap());
        got.sort();
        assert_eq!(got, vec![4, 5]);
        assert_eq!(idx.containing("::ffff:10.1.2.3".parse().unwrap()), vec![3]);
        let mut inside = idx.contained_in(&net("10.0.0.0/7"));
        inside.sort();
        assert_eq!(inside, vec![3]);
        assert_eq!(idx.contained_in(&net("198.51.0.0/16")), vec![2]);
        let mut inside = idx.contained_in(&net("2001:db8::/32"));
        inside.sort();
        assert_eq!(inside, vec![4, 5]);
        assert_eq!(idx.containing_net(&net("10.1.0.0/16")), vec![3]);
        assert!(idx.containing_net(&net("0.0.0.0/0")).is_empty());
        idx.remove(&net("10.0.0.0/8"), 3);
        assert!(idx.containing("10.255.1.1".parse().unwrap()).is_empty());
        assert_eq!(idx.len(), 4);
    }

    #[test]
    fn zero_prefix_covers_everything() {
        let mut idx = NetIndex::default();
        idx.insert(&net("0.0.0.0/0"), 9);
        idx.insert(&net("::/0"), 10);
        assert_eq!(idx.containing("203.0.113.1".parse().unwrap()), vec![9]);
        assert_eq!(idx.containing("2001:db8::9".parse().unwrap()), vec![10]);
        assert_eq!(idx.contained_in(&net("::/0")), vec![10]);
    }
}
