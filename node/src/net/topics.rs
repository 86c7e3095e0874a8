//! Gossipsub topics. Each has a name, a size limit enforced before the
//! application sees a message, and an application handler (see
//! `app::gossip`).

use libp2p::gossipsub::{IdentTopic, TopicHash};

/// The topics fairgrid nodes subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Signed capacity adverts.
    Adverts,
    /// Signed job specs and bids (the jobs issue).
    Jobs,
    /// Signed allocations and round traffic (the jobs issue).
    Allocations,
}

impl Topic {
    pub const ALL: [Topic; 3] = [Topic::Adverts, Topic::Jobs, Topic::Allocations];

    pub fn name(self) -> &'static str {
        match self {
            Topic::Adverts => "fairgrid/v1/adverts",
            Topic::Jobs => "fairgrid/v1/jobs",
            Topic::Allocations => "fairgrid/v1/allocations",
        }
    }

    /// Largest message accepted on the topic (the signed envelope).
    pub fn max_bytes(self) -> usize {
        match self {
            Topic::Adverts => 16 * 1024,
            Topic::Jobs => 1200 * 1024,
            Topic::Allocations => 1200 * 1024,
        }
    }

    pub fn ident(self) -> IdentTopic {
        IdentTopic::new(self.name())
    }

    pub fn hash(self) -> TopicHash {
        self.ident().hash()
    }

    pub fn from_hash(hash: &TopicHash) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.hash() == *hash)
    }
}
