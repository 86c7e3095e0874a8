//! Routes each gossip message to its topic's handler, which returns the
//! verdict gossipsub forwards (or not) on. To handle a new topic, add an
//! arm here.

use std::sync::Arc;

use libp2p::PeerId;
use tracing::debug;

use super::{Shared, adverts};
use crate::net::{Topic, Verdict};

pub fn route(shared: &Arc<Shared>, topic: Topic, source: PeerId, data: &[u8]) -> Verdict {
    if data.len() > topic.max_bytes() {
        debug!(target: "fairgrid::net", peer = %source, topic = topic.name(), len = data.len(), "oversized gossip message");
        return Verdict::Reject;
    }
    match topic {
        Topic::Adverts => adverts::on_gossip(shared, source, data),
        Topic::Jobs => crate::jobs::worker::on_gossip(&shared.jobs, source, data),
        Topic::Allocations => crate::jobs::window::on_gossip(&shared.jobs, source, data),
    }
}
