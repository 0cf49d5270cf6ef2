//! An index of decisions by network, so that "is this IP banned?" and "what is banned
//! inside this range?" never scan all decisions.
//!
//! Entries are `(first address, prefix length, decision id)` tuples in one B-tree per
//! family: 16 bytes an IPv4 entry, with no allocation of its own, so a million banned
//! addresses cost about 20 MB here. A lookup for the decisions *containing* an address
//! masks it once per prefix length in use (at most 33 for IPv4 and 129 for IPv6, in
//! practice two or three) and reads that key's run; a lookup for the decisions *inside*
//! a range is a B-tree range scan.

use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

fn mask4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

fn last4(start: u32, len: u8) -> u32 {
    if len == 0 {
        u32::MAX
    } else {
        start | !(u32::MAX << (32 - u32::from(len)))
    }
}

fn last6(start: u128, len: u8) -> u128 {
    if len == 0 {
        u128::MAX
    } else {
        start | !(u128::MAX << (128 - u32::from(len)))
    }
}

/// Decision ids by the network they cover.
#[derive(Debug, Default)]
pub struct NetIndex {
    v4: BTreeSet<(u32, u8, u64)>,
    v6: BTreeSet<(u128, u8, u64)>,
    /// How many entries use each prefix length, per family: the lengths to try.
    lens4: BTreeMap<u8, usize>,
    lens6: BTreeMap<u8, usize>,
}

fn bump(lens: &mut BTreeMap<u8, usize>, len: u8, up: bool) {
    if up {
        *lens.entry(len).or_default() += 1;
    } else if let Some(n) = lens.get_mut(&len) {
        *n -= 1;
        if *n == 0 {
            lens.remove(&len);
        }
    }
}

impl NetIndex {
    /// Records that decision `id` covers `net`.
    pub fn insert(&mut self, net: &IpNet, id: u64) {
        match net.trunc() {
            IpNet::V4(n) => {
                if self.v4.insert((u32::from(n.network()), n.prefix_len(), id)) {
                    bump(&mut self.lens4, n.prefix_len(), true);
                }
            }
            IpNet::V6(n) => {
                if self.v6.insert((u128::from(n.network()), n.prefix_len(), id)) {
                    bump(&mut self.lens6, n.prefix_len(), true);
                }
            }
        }
    }

    /// Forgets that decision `id` covers `net`.
    pub fn remove(&mut self, net: &IpNet, id: u64) {
        match net.trunc() {
            IpNet::V4(n) => {
                if self.v4.remove(&(u32::from(n.network()), n.prefix_len(), id)) {
                    bump(&mut self.lens4, n.prefix_len(), false);
                }
            }
            IpNet::V6(n) => {
                if self.v6.remove(&(u128::from(n.network()), n.prefix_len(), id)) {
                    bump(&mut self.lens6, n.prefix_len(), false);
                }
            }
        }
    }

    /// Ids of decisions on exactly `net`.
    pub fn exact(&self, net: &IpNet) -> Vec<u64> {
        match net.trunc() {
            IpNet::V4(n) => {
                let (a, l) = (u32::from(n.network()), n.prefix_len());
                self.v4.range((a, l, 0)..=(a, l, u64::MAX)).map(|e| e.2).collect()
            }
            IpNet::V6(n) => {
                let (a, l) = (u128::from(n.network()), n.prefix_len());
                self.v6.range((a, l, 0)..=(a, l, u64::MAX)).map(|e| e.2).collect()
            }
        }
    }

    /// Ids of decisions whose network contains `ip`.
    pub fn containing(&self, ip: IpAddr) -> Vec<u64> {
        self.containing_net(&IpNet::from(palisade_proto::ip::canonical_ip(ip)))
    }

    /// Ids of decisions whose network contains all of `net`.
    pub fn containing_net(&self, net: &IpNet) -> Vec<u64> {
        let mut out = Vec::new();
        match net.trunc() {
            IpNet::V4(n) => {
                let addr = u32::from(n.network());
                for &len in self.lens4.keys().take_while(|l| **l <= n.prefix_len()) {
                    let a = mask4(addr, len);
                    out.extend(self.v4.range((a, len, 0)..=(a, len, u64::MAX)).map(|e| e.2));
                }
            }
            IpNet::V6(n) => {
                let addr = u128::from(n.network());
                for &len in self.lens6.keys().take_while(|l| **l <= n.prefix_len()) {
                    let a = mask6(addr, len);
                    out.extend(self.v6.range((a, len, 0)..=(a, len, u64::MAX)).map(|e| e.2));
                }
            }
        }
        out
    }

    /// Ids of decisions whose network lies inside `net`.
    pub fn contained_in(&self, net: &IpNet) -> Vec<u64> {
        match net.trunc() {
            IpNet::V4(n) => {
                let (start, len) = (u32::from(n.network()), n.prefix_len());
                let end = last4(start, len);
                self.v4
                    .range((start, 0, 0)..=(end, u8::MAX, u64::MAX))
                    .filter(|(s, l, _)| *l >= len && last4(*s, *l) <= end)
                    .map(|e| e.2)
                    .collect()
            }
            IpNet::V6(n) => {
                let (start, len) = (u128::from(n.network()), n.prefix_len());
                let end = last6(start, len);
                self.v6
                    .range((start, 0, 0)..=(end, u8::MAX, u64::MAX))
                    .filter(|(s, l, _)| *l >= len && last6(*s, *l) <= end)
                    .map(|e| e.2)
                    .collect()
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort();
        v
    }

    #[test]
    fn containment_v4_and_v6() {
        let mut idx = NetIndex::default();
        idx.insert(&net("192.0.2.7/32"), 1);
        idx.insert(&net("198.51.100.0/24"), 2);
        idx.insert(&net("10.0.0.0/8"), 3);
        idx.insert(&net("2001:db8::/32"), 4);
        idx.insert(&net("2001:db8::1/128"), 5);
        assert_eq!(idx.containing("192.0.2.7".parse().unwrap()), vec![1]);
        assert_eq!(idx.containing("198.51.100.200".parse().unwrap()), vec![2]);
        assert_eq!(idx.containing("10.255.1.1".parse().unwrap()), vec![3]);
        assert!(idx.containing("192.0.2.8".parse().unwrap()).is_empty());
        assert_eq!(sorted(idx.containing("2001:db8::1".parse().unwrap())), vec![4, 5]);
        assert_eq!(idx.containing("::ffff:10.1.2.3".parse().unwrap()), vec![3]);
        assert_eq!(idx.contained_in(&net("10.0.0.0/7")), vec![3]);
        assert_eq!(idx.contained_in(&net("198.51.0.0/16")), vec![2]);
        assert_eq!(sorted(idx.contained_in(&net("2001:db8::/32"))), vec![4, 5]);
        assert_eq!(idx.containing_net(&net("10.1.0.0/16")), vec![3]);
        assert!(idx.containing_net(&net("0.0.0.0/0")).is_empty());
        assert_eq!(idx.exact(&net("198.51.100.0/24")), vec![2]);
        assert!(idx.exact(&net("198.51.100.0/25")).is_empty());
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
        assert_eq!(idx.contained_in(&net("0.0.0.0/0")), vec![9]);
    }

    #[test]
    fn two_decisions_on_one_network() {
        let mut idx = NetIndex::default();
        idx.insert(&net("192.0.2.1/32"), 1);
        idx.insert(&net("192.0.2.1/32"), 2);
        assert_eq!(idx.exact(&net("192.0.2.1/32")), vec![1, 2]);
        idx.remove(&net("192.0.2.1/32"), 1);
        assert_eq!(idx.containing("192.0.2.1".parse().unwrap()), vec![2]);
        idx.remove(&net("192.0.2.1/32"), 2);
        assert!(idx.is_empty());
        assert!(idx.lens4.is_empty());
    }
}
