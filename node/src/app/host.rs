//! The node as the jobs work sees it ([`crate::jobs::Host`]): its offer,
//! the adverts table, admission and the metrics, read through a weak
//! handle (the jobs context lives inside [`Shared`]).

use std::sync::Weak;

use fairgrid_protocol::{NodeId, ResourceVec};
use libp2p::PeerId;

use super::{Shared, trust};
use crate::jobs::Host;
use crate::metrics::Metrics;

pub struct AppHost(pub Weak<Shared>);

impl Host for AppHost {
    fn offer(&self, now: u64) -> (ResourceVec, u64) {
        let Some(shared) = self.0.upgrade() else {
            return (ResourceVec::default(), 0);
        };
        let publisher = shared.publisher.lock().expect("publisher lock");
        let floor = publisher
            .current()
            .map_or(shared.config.offer.price_floor, |a| a.price_floor);
        (publisher.offered(now), floor)
    }

    fn cheapest_advert(&self, now: u64) -> Option<(u64, NodeId)> {
        let shared = self.0.upgrade()?;
        let table = shared.adverts.lock().expect("advert table lock");
        table
            .live(now)
            .into_iter()
            .map(|a| (a.advert.price_floor, a.advert.node))
            .min()
    }

    fn pool(&self, now: u64) -> ResourceVec {
        let Some(shared) = self.0.upgrade() else {
            return ResourceVec::default();
        };
        let table = shared.adverts.lock().expect("advert table lock");
        table
            .live(now)
            .into_iter()
            .fold(ResourceVec::default(), |sum, a| {
                let (x, y) = (sum.as_array(), a.advert.offered.as_array());
                ResourceVec::from_array(std::array::from_fn(|r| x[r].saturating_add(y[r])))
            })
    }

    fn admitted(&self, peer: &PeerId) -> bool {
        self.0
            .upgrade()
            .is_some_and(|shared| trust::is_admitted(&shared, peer))
    }

    fn appended(&self, ok: bool) {
        if let Some(shared) = self.0.upgrade() {
            let counter = if ok {
                &shared.metrics.ledger_appends
            } else {
                &shared.metrics.ledger_append_errors
            };
            Metrics::inc(counter);
        }
    }
}
