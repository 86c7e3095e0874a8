//! The cloneable handle the rest of the node uses to talk to the event
//! loop: bounded commands, each answered through a oneshot.

use libp2p::gossipsub::MessageId;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::topics::Topic;
use super::wire::{Request, Response};
use crate::error::{NodeError, Result};

/// The application's verdict on a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid: drop, do not forward, and penalise the sender.
    Reject,
    /// Drop without penalty (duplicates, stale but honest, overload).
    Ignore,
}

/// A connected peer, as the network layer sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerSnapshot {
    pub peer_id: String,
    pub addresses: Vec<String>,
    pub agent: Option<String>,
    pub rtt_ms: Option<u64>,
    pub gossip_score: Option<f64>,
    pub connections: u32,
    pub connected_for_ms: u64,
    pub admitted: bool,
    /// One per open connection: `tcp`, `quic` or `relayed`.
    pub transports: Vec<String>,
}

pub(crate) enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    Validate {
        message_id: MessageId,
        source: PeerId,
        verdict: Verdict,
    },
    Request {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response>>,
    },
    Respond {
        channel: ResponseChannel<Response>,
        response: Response,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<()>>,
    },
    Admit {
        peer: PeerId,
    },
    Ban {
        peer: PeerId,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerSnapshot>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Reach {
        reply: oneshot::Sender<super::ReachSnapshot>,
    },
    Transports {
        peer: PeerId,
        reply: oneshot::Sender<Vec<super::reach::Transport>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

#[derive(Clone)]
pub struct NetworkClient {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) local_peer_id: PeerId,
}

impl NetworkClient {
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| NodeError::NetworkStopped)?;
        rx.await.map_err(|_| NodeError::NetworkStopped)
    }

    /// Publishes on a topic. Fails while no peer subscribed to it is
    /// connected (gossipsub's `NoPeersSubscribedToTopic`).
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<()> {
        self.call(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Reports the application's verdict on a gossip message; only then is
    /// an accepted message forwarded.
    pub async fn validate(
        &self,
        message_id: MessageId,
        source: PeerId,
        verdict: Verdict,
    ) -> Result<()> {
        self.tx
            .send(Command::Validate {
                message_id,
                source,
                verdict,
            })
            .await
            .map_err(|_| NodeError::NetworkStopped)
    }

    /// Sends a request and waits for the response (bounded by the
    /// protocol's request timeout).
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response> {
        self.call(|reply| Command::Request {
            peer,
            request,
            reply,
        })
        .await?
    }

    pub async fn respond(
        &self,
        channel: ResponseChannel<Response>,
        response: Response,
    ) -> Result<()> {
        self.tx
            .send(Command::Respond { channel, response })
            .await
            .map_err(|_| NodeError::NetworkStopped)
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Marks a peer as admitted (consortium mode): it may enter the
    /// routing table.
    pub async fn admit(&self, peer: PeerId) -> Result<()> {
        self.tx
            .send(Command::Admit { peer })
            .await
            .map_err(|_| NodeError::NetworkStopped)
    }

    /// Disconnects a peer and refuses its connections from now on.
    pub async fn ban(&self, peer: PeerId) -> Result<()> {
        self.tx
            .send(Command::Ban { peer })
            .await
            .map_err(|_| NodeError::NetworkStopped)
    }

    pub async fn peers(&self) -> Result<Vec<PeerSnapshot>> {
        self.call(|reply| Command::Peers { reply }).await
    }

    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// How this node can be reached and how its connections were made.
    pub async fn reach(&self) -> Result<super::ReachSnapshot> {
        self.call(|reply| Command::Reach { reply }).await
    }

    /// How this node is connected to `peer` now, one entry per open
    /// connection (empty if it is not).
    pub async fn transports(&self, peer: PeerId) -> Result<Vec<super::reach::Transport>> {
        self.call(|reply| Command::Transports { peer, reply }).await
    }

    /// Stops the event loop (closing every connection).
    pub async fn shutdown(&self) -> Result<()> {
        self.call(|reply| Command::Shutdown { reply }).await
    }
}
