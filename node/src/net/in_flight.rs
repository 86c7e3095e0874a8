//! Requests in flight with each peer, both ways: ours waiting for an
//! answer (with what is needed to send them again) and theirs waiting
//! for ours. The event loop closes a relayed connection that a direct one
//! made redundant only when nothing is in flight with that peer, since
//! libp2p's request-response spreads requests over all of a peer's
//! connections and closing one fails whatever is on it.

use std::collections::HashMap;
use std::hash::Hash;

use libp2p::PeerId;

/// One of our requests waiting for its answer.
#[derive(Debug)]
pub struct Outbound<R, A> {
    pub peer: PeerId,
    pub request: R,
    pub reply: A,
    /// Already sent again once after its connection closed under it.
    pub resent: bool,
}

#[derive(Debug)]
pub struct InFlight<O, I, R, A> {
    outbound: HashMap<O, Outbound<R, A>>,
    inbound: HashMap<I, PeerId>,
}

impl<O: Hash + Eq, I: Hash + Eq, R, A> Default for InFlight<O, I, R, A> {
    fn default() -> Self {
        InFlight {
            outbound: HashMap::new(),
            inbound: HashMap::new(),
        }
    }
}

impl<O: Hash + Eq, I: Hash + Eq, R, A> InFlight<O, I, R, A> {
    pub fn sent(&mut self, id: O, request: Outbound<R, A>) {
        self.outbound.insert(id, request);
    }

    /// Our request `id` was answered or failed: it is no longer in flight.
    pub fn finished(&mut self, id: &O) -> Option<Outbound<R, A>> {
        self.outbound.remove(id)
    }

    pub fn outbound_len(&self) -> usize {
        self.outbound.len()
    }

    pub fn received(&mut self, id: I, from: PeerId) {
        self.inbound.insert(id, from);
    }

    /// Our answer to `id` went out, or could not.
    pub fn answered(&mut self, id: &I) {
        self.inbound.remove(id);
    }

    /// `peer` is gone: its requests to us will not be answered.
    pub fn forget_inbound(&mut self, peer: &PeerId) {
        self.inbound.retain(|_, p| p != peer);
    }

    /// Whether a request either way is waiting on `peer`.
    pub fn any_with(&self, peer: &PeerId) -> bool {
        self.outbound.values().any(|o| &o.peer == peer) || self.inbound.values().any(|p| p == peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(peer: PeerId) -> Outbound<&'static str, ()> {
        Outbound {
            peer,
            request: "bid",
            reply: (),
            resent: false,
        }
    }

    #[test]
    fn a_peer_is_quiet_once_every_request_either_way_is_done() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut flight: InFlight<u64, u64, &str, ()> = InFlight::default();
        assert!(!flight.any_with(&a));
        flight.sent(1, outbound(a));
        flight.received(7, a);
        flight.received(8, b);
        assert!(flight.any_with(&a) && flight.any_with(&b));
        assert_eq!(flight.finished(&1).map(|o| o.request), Some("bid"));
        assert!(
            flight.any_with(&a),
            "their request 7 still waits for our answer"
        );
        flight.answered(&7);
        assert!(!flight.any_with(&a));
        assert!(flight.any_with(&b));
        // Finishing twice, or what was never sent, changes nothing.
        assert!(flight.finished(&1).is_none());
        flight.answered(&99);
        assert!(flight.any_with(&b));
        assert_eq!(flight.outbound_len(), 0);
        flight.forget_inbound(&b);
        assert!(!flight.any_with(&b));
    }
}
