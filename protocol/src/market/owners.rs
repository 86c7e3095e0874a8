//! Grouping bids by owner (for the caps of step 3) in one pass over the
//! bids: an open-addressing table maps the first eight bytes of an owner
//! key to its group, whole keys are compared on every match (two owners
//! that share a prefix get two groups), and the few distinct owners are
//! sorted at the end. A 100,000-bid book has 50 to 2000 owners, so the
//! table stays in the CPU cache while the bids stream past; sorting the
//! bids by owner instead cost a radix sort of every bid.
//!
//! The table's slot hash is keyed by the clearing seed, which no bidder
//! knows in advance, so owner keys cannot be chosen to collide in it. The
//! result does not depend on the table: groups are renumbered in owner-key
//! order.

use super::radix::prefix_of;
use crate::Hash32;
use crate::identity::OwnerId;

/// Owners in first-seen order, found by key prefix with linear probing.
pub(crate) struct OwnerTable {
    /// Group + 1 per slot (0: empty); the length is a power of two, at
    /// least twice the number of groups.
    slots: Vec<u32>,
    owners: Vec<OwnerId>,
    prefixes: Vec<u64>,
    /// Multiply-shift hash keys from the seed (`mul` odd).
    xor: u64,
    mul: u64,
}

impl OwnerTable {
    pub(crate) fn new(seed: &Hash32) -> Self {
        let word = |at: usize| u64::from_le_bytes(seed.0[at..at + 8].try_into().expect("8 bytes"));
        OwnerTable {
            slots: vec![0; 64],
            owners: Vec::new(),
            prefixes: Vec::new(),
            xor: word(0),
            mul: word(8) | 1,
        }
    }

    fn slot_of(&self, prefix: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        ((prefix ^ self.xor).wrapping_mul(self.mul) >> (64 - bits)) as usize
    }

    /// The group of `owner` (first seen: 0, next new owner: 1, ...).
    pub(crate) fn group_of(&mut self, owner: &OwnerId) -> u32 {
        let prefix = prefix_of(&owner.0.0);
        let mask = self.slots.len() - 1;
        let mut slot = self.slot_of(prefix);
        loop {
            match self.slots[slot] {
                0 => break,
                g => {
                    let g = g - 1;
                    if self.prefixes[g as usize] == prefix && self.owners[g as usize] == *owner {
                        return g;
                    }
                }
            }
            slot = (slot + 1) & mask;
        }
        let g = self.owners.len() as u32;
        self.owners.push(*owner);
        self.prefixes.push(prefix);
        self.slots[slot] = g + 1;
        if self.owners.len() * 2 > self.slots.len() {
            self.grow();
        }
        g
    }

    /// The distinct owners, sorted, and `groups` renumbered to index them.
    pub(crate) fn finish(self, groups: Vec<u32>) -> (Vec<OwnerId>, Vec<u32>) {
        let seen = self.owners;
        let mut by_key: Vec<u32> = (0..seen.len() as u32).collect();
        by_key.sort_unstable_by_key(|&g| seen[g as usize]);
        let mut renumber = vec![0u32; seen.len()];
        for (position, &g) in by_key.iter().enumerate() {
            renumber[g as usize] = position as u32;
        }
        let owners = by_key.iter().map(|&g| seen[g as usize]).collect();
        let owner_of = groups.iter().map(|&g| renumber[g as usize]).collect();
        (owners, owner_of)
    }

    fn grow(&mut self) {
        self.slots = vec![0; self.slots.len() * 2];
        let mask = self.slots.len() - 1;
        for (g, &prefix) in self.prefixes.iter().enumerate() {
            let mut slot = self.slot_of(prefix);
            while self.slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = g as u32 + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{NodeId, PublicKey};
    use crate::market::ValidBid;
    use crate::resources::ResourceVec;

    fn bid_of(owner: [u8; 32]) -> ValidBid {
        ValidBid {
            bid_id: Hash32::ZERO,
            node: NodeId(PublicKey([0; 32])),
            owner: OwnerId(PublicKey(owner)),
            ask: 0,
            capacity: ResourceVec::default(),
            speed_milli: 0,
        }
    }

    fn owners_of(bids: &[ValidBid], seed: &Hash32) -> (Vec<OwnerId>, Vec<u32>) {
        let mut table = OwnerTable::new(seed);
        let groups = bids.iter().map(|b| table.group_of(&b.owner)).collect();
        table.finish(groups)
    }

    /// The definition: distinct owners sorted, each bid's position.
    fn reference(bids: &[ValidBid]) -> (Vec<OwnerId>, Vec<u32>) {
        let mut owners: Vec<OwnerId> = bids.iter().map(|b| b.owner).collect();
        owners.sort();
        owners.dedup();
        let of = bids
            .iter()
            .map(|b| owners.binary_search(&b.owner).unwrap() as u32)
            .collect();
        (owners, of)
    }

    #[test]
    fn groups_like_the_definition_with_shared_prefixes_and_growth() {
        let mut state = 3u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            state >> 20
        };
        for owners in [1u64, 5, 40, 700] {
            let bids: Vec<ValidBid> = (0..3000)
                .map(|_| {
                    let o = next() % owners;
                    let mut key = [0u8; 32];
                    // Half the owners share their first eight bytes.
                    if o % 2 == 0 {
                        key[..8].copy_from_slice(&[7; 8]);
                    } else {
                        key[..8].copy_from_slice(&o.to_be_bytes());
                    }
                    key[8..16].copy_from_slice(&o.to_le_bytes());
                    bid_of(key)
                })
                .collect();
            for seed in [Hash32::ZERO, Hash32::of(b"seed")] {
                assert_eq!(owners_of(&bids, &seed), reference(&bids), "{owners} owners");
            }
        }
        assert_eq!(owners_of(&[], &Hash32::ZERO), (vec![], vec![]));
    }
}
