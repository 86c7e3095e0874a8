//! The rest of the node, as the jobs service sees it, for tests: a fixed
//! offer and price floor, no adverts, everyone admitted.

use std::sync::atomic::{AtomicU64, Ordering};

use fairgrid_protocol::{NodeId, ResourceVec};
use libp2p::PeerId;

use crate::jobs::Host;

pub struct TestHost {
    pub offer: ResourceVec,
    pub price_floor: u64,
    /// Background ledger appends that failed.
    pub failed_appends: AtomicU64,
}

impl TestHost {
    pub fn new(offer: ResourceVec, price_floor: u64) -> TestHost {
        TestHost {
            offer,
            price_floor,
            failed_appends: AtomicU64::new(0),
        }
    }
}

impl Host for TestHost {
    fn offer(&self, _now: u64) -> (ResourceVec, u64) {
        (self.offer, self.price_floor)
    }

    fn cheapest_advert(&self, _now: u64) -> Option<(u64, NodeId)> {
        None
    }

    /// Every test node offers the same: its own offer is as good a
    /// measure of the pool's proportions as the sum.
    fn pool(&self, _now: u64) -> ResourceVec {
        self.offer
    }

    fn admitted(&self, _peer: &PeerId) -> bool {
        true
    }

    fn appended(&self, ok: bool) {
        if !ok {
            self.failed_appends.fetch_add(1, Ordering::Relaxed);
        }
    }
}
