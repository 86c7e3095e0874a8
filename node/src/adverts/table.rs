//! The table of live adverts, one per node, with per-node sequence memory
//! that outlives the advert (so an old advert cannot be replayed after the
//! newer one expired). Expired entries are dropped by [`AdvertTable::prune`].

use std::collections::BTreeMap;

use fairgrid_protocol::messages::{CapacityAdvert, MAX_ADVERT_LIFETIME_MS};
use fairgrid_protocol::{Hash32, NodeId, Signed};

use super::validate::AcceptedAdvert;

#[derive(Debug, Clone)]
pub struct LiveAdvert {
    pub id: Hash32,
    pub signed: Signed<CapacityAdvert>,
    pub advert: CapacityAdvert,
    pub owner: fairgrid_protocol::OwnerId,
    pub owner_label: String,
    pub received_at: u64,
    /// The peer it came from ("self" for this node's own advert).
    pub from: String,
}

#[derive(Debug)]
pub struct AdvertTable {
    live: BTreeMap<NodeId, LiveAdvert>,
    /// Highest accepted seq per node, and when it may be forgotten.
    seqs: BTreeMap<NodeId, (u64, u64)>,
    max_entries: usize,
}

impl AdvertTable {
    pub fn new(max_entries: usize) -> Self {
        AdvertTable {
            live: BTreeMap::new(),
            seqs: BTreeMap::new(),
            max_entries: max_entries.max(1),
        }
    }

    pub fn last_seq(&self, node: &NodeId) -> Option<u64> {
        self.seqs.get(node).map(|(seq, _)| *seq)
    }

    /// Inserts a validated advert. False if the table is full (a new node
    /// beyond `max_entries`); the caller ignores the advert then.
    pub fn insert(&mut self, accepted: AcceptedAdvert, now: u64, from: String) -> bool {
        let node = accepted.advert.node;
        if !self.live.contains_key(&node) && self.live.len() >= self.max_entries {
            return false;
        }
        if !self.seqs.contains_key(&node) && self.seqs.len() >= 2 * self.max_entries {
            return false;
        }
        self.seqs
            .insert(node, (accepted.advert.seq, now + MAX_ADVERT_LIFETIME_MS));
        self.live.insert(
            node,
            LiveAdvert {
                id: accepted.id,
                signed: accepted.signed,
                advert: accepted.advert,
                owner: accepted.ownership.owner,
                owner_label: accepted.ownership.label,
                received_at: now,
                from,
            },
        );
        true
    }

    /// Drops adverts that expired by `now`; returns their nodes.
    pub fn prune(&mut self, now: u64) -> Vec<NodeId> {
        let expired: Vec<NodeId> = self
            .live
            .iter()
            .filter(|(_, a)| a.advert.expires_at <= now)
            .map(|(n, _)| *n)
            .collect();
        for node in &expired {
            self.live.remove(node);
        }
        self.seqs.retain(|_, (_, forget_after)| *forget_after > now);
        expired
    }

    /// Live adverts at `now`, by node.
    pub fn live(&self, now: u64) -> Vec<&LiveAdvert> {
        self.live
            .values()
            .filter(|a| a.advert.expires_at > now)
            .collect()
    }

    pub fn get(&self, node: &NodeId) -> Option<&LiveAdvert> {
        self.live.get(node)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}
