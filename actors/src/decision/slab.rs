//! Decisions by id, in blocks of 64 consecutive ids.
//!
//! Ids are handed out in order and most live for hours, so a block is usually full: a
//! decision costs one pointer here. (A `BTreeMap` filled in key order keeps its nodes
//! half full, which cost four times as much per decision.)

use palisade_proto::Decision;
use std::collections::BTreeMap;

const BITS: u32 = 6;
const SIZE: usize = 1 << BITS;

#[derive(Debug)]
struct Block {
    slots: [Option<Box<Decision>>; SIZE],
    used: u8,
}

/// Decisions by id.
#[derive(Debug, Default)]
pub struct IdSlab {
    blocks: BTreeMap<u64, Block>,
}

fn split(id: u64) -> (u64, usize) {
    (id >> BITS, (id & (SIZE as u64 - 1)) as usize)
}

impl IdSlab {
    /// Stores `d` under its id, replacing any decision with that id.
    pub fn insert(&mut self, d: Decision) {
        let (b, s) = split(d.id);
        let block =
            self.blocks.entry(b).or_insert_with(|| Block { slots: std::array::from_fn(|_| None), used: 0 });
        if block.slots[s].replace(Box::new(d)).is_none() {
            block.used += 1;
        }
    }

    /// Removes and returns the decision with `id`.
    pub fn remove(&mut self, id: u64) -> Option<Decision> {
        let (b, s) = split(id);
        let block = self.blocks.get_mut(&b)?;
        let d = block.slots[s].take()?;
        block.used -= 1;
        if block.used == 0 {
            self.blocks.remove(&b);
        }
        Some(*d)
    }

    /// The decision with `id`.
    pub fn get(&self, id: u64) -> Option<&Decision> {
        let (b, s) = split(id);
        self.blocks.get(&b)?.slots[s].as_deref()
    }

    /// Decisions with ids from `from` on, by id.
    pub fn starting_at(&self, from: u64) -> impl Iterator<Item = &Decision> {
        let (first, _) = split(from);
        self.blocks
            .range(first..)
            .flat_map(|(_, block)| block.slots.iter().filter_map(|s| s.as_deref()))
            .filter(move |d| d.id >= from)
    }

    /// Every decision, by id.
    pub fn values(&self) -> impl Iterator<Item = &Decision> {
        self.starting_at(0)
    }

    /// The largest id held.
    pub fn max_id(&self) -> Option<u64> {
        let (_, block) = self.blocks.iter().next_back()?;
        block.slots.iter().rev().find_map(|s| s.as_deref()).map(|d| d.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::{DecisionType, Origin, Scope, Timestamp, Uuid};

    fn d(id: u64) -> Decision {
        Decision {
            id,
            uuid: Uuid::default(),
            origin: Origin::Cli,
            kind: DecisionType::Ban,
            scope: Scope::Ip,
            value: format!("10.0.0.{}", id % 250),
            created_at: Timestamp(0),
            until: Timestamp(1),
            scenario: "s".into(),
            simulated: false,
        }
    }

    #[test]
    fn insert_get_remove_iterate() {
        let mut slab = IdSlab::default();
        for id in [1, 2, 63, 64, 65, 200, 1_000_000] {
            slab.insert(d(id));
        }
        assert_eq!(slab.get(64).map(|d| d.id), Some(64));
        assert!(slab.get(66).is_none());
        let ids = |it: &mut dyn Iterator<Item = &Decision>| it.map(|d| d.id).collect::<Vec<_>>();
        assert_eq!(ids(&mut slab.values()), vec![1, 2, 63, 64, 65, 200, 1_000_000]);
        assert_eq!(ids(&mut slab.starting_at(64)), vec![64, 65, 200, 1_000_000]);
        assert_eq!(ids(&mut slab.starting_at(66)), vec![200, 1_000_000]);
        assert_eq!(slab.max_id(), Some(1_000_000));
        assert_eq!(slab.remove(1_000_000).map(|d| d.id), Some(1_000_000));
        assert_eq!(slab.max_id(), Some(200));
        assert!(slab.remove(1_000_000).is_none());
        for id in [1, 2, 63] {
            slab.remove(id);
        }
        assert_eq!(slab.blocks.len(), 2, "an emptied block is dropped");
        assert_eq!(ids(&mut slab.starting_at(u64::MAX)), Vec::<u64>::new());
    }
}
