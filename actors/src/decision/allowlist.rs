//! Addresses and ranges that are never banned: loopback, the host's own addresses, and
//! whatever the operator lists. Checked before any decision is made, whatever its origin.

use ipnet::IpNet;
use std::net::IpAddr;

use super::index::NetIndex;

/// A set of networks that must never be the target of a decision.
#[derive(Debug, Default)]
pub struct Allowlist {
    index: NetIndex,
    nets: Vec<IpNet>,
}

impl Allowlist {
    /// An allowlist of these networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut list = Allowlist::default();
        for net in nets {
            list.add(net);
        }
        list
    }

    /// Adds a network.
    pub fn add(&mut self, net: IpNet) {
        let net = net.trunc();
        if !self.nets.contains(&net) {
            self.index.insert(&net, self.nets.len() as u64);
            self.nets.push(net);
        }
    }

    /// The allowlisted network that covers `ip`, if any.
    pub fn covering_ip(&self, ip: IpAddr) -> Option<IpNet> {
        let id = *self.index.containing(ip).first()?;
        self.nets.get(usize::try_from(id).ok()?).copied()
    }

    /// The allowlisted network that overlaps `target`, if any: a range that contains an
    /// allowlisted address may not be banned either.
    pub fn overlapping(&self, target: &IpNet) -> Option<IpNet> {
        let ids = self.index.containing_net(target);
        let ids = if ids.is_empty() { self.index.contained_in(target) } else { ids };
        let id = *ids.first()?;
        self.nets.get(usize::try_from(id).ok()?).copied()
    }

    /// The networks, in the order added.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_and_overlaps() {
        let list = Allowlist::new(["127.0.0.0/8", "::1/128", "203.0.113.5/32"].map(|s| s.parse().unwrap()));
        assert!(list.covering_ip("127.0.0.53".parse().unwrap()).is_some());
        assert!(list.covering_ip("::ffff:127.0.0.1".parse().unwrap()).is_some());
        assert!(list.covering_ip("::1".parse().unwrap()).is_some());
        assert!(list.covering_ip("203.0.113.6".parse().unwrap()).is_none());
        assert!(list.overlapping(&"203.0.113.0/24".parse().unwrap()).is_some());
        assert!(list.overlapping(&"127.1.0.0/16".parse().unwrap()).is_some());
        assert!(list.overlapping(&"198.51.100.0/24".parse().unwrap()).is_none());
    }
}
