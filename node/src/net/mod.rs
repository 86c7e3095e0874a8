//! Network plumbing: the libp2p swarm and the one event loop that owns it.
//!
//! - [`behaviour`] builds the composite `NetworkBehaviour`;
//! - [`event_loop`] drives the swarm, applies per-peer rate limits, and
//!   turns swarm events into [`NetEvent`]s for the application;
//! - [`NetworkClient`] is the cloneable handle everything else uses
//!   (bounded channel, oneshot replies);
//! - [`codec`] and [`wire`] define the request-response protocol.
//!
//! Application logic (which adverts are valid, who is admitted) lives in
//! `app/`, never here.

mod behaviour;
mod client;
pub mod codec;
mod event_loop;
mod in_flight;
pub mod ip_limits;
pub mod rate;
pub mod reach;
pub mod topics;
pub mod upnp;
pub mod wire;

use std::time::Duration;

use libp2p::gossipsub::MessageId;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

pub use behaviour::{KAD_PROTOCOL, score_params};
#[cfg(any(test, feature = "test-utils"))]
pub(crate) use client::Command;
pub use client::{NetworkClient, PeerSnapshot, Verdict};
pub use reach::{ReachSnapshot, Reachability};
pub use topics::Topic;
pub use wire::{Hello, Request, Response};

use crate::config::NetworkConfig;
use crate::error::{NodeError, Result};

/// Events the network hands to the application.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip message waiting for the application's [`Verdict`].
    Gossip {
        topic: Topic,
        source: PeerId,
        message_id: MessageId,
        data: Vec<u8>,
    },
    /// An inbound request; answer through [`NetworkClient::respond`].
    Request {
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    },
    /// First connection to a peer.
    Connected {
        peer: PeerId,
    },
    /// Last connection to a peer closed.
    Disconnected {
        peer: PeerId,
    },
    /// A peer subscribed to one of our topics.
    Subscribed {
        peer: PeerId,
        topic: Topic,
    },
    NewListenAddr {
        addr: Multiaddr,
    },
}

/// What the network layer needs from the config.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
    pub target_peers: u32,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub max_pending_incoming: u32,
    pub max_pending_incoming_per_ip: u32,
    pub max_established_incoming_per_ip: u32,
    pub handshake_timeout: Duration,
    pub request_rate: (u32, u32),
    pub gossip_rate: (u32, u32),
    pub idle_timeout: Duration,
    pub heartbeat: Duration,
    pub request_timeout: Duration,
    /// Consortium mode: peers enter Kademlia only once admitted.
    pub manual_kad_inserts: bool,
    /// Relays to hold a slot on (each with `/p2p/PEERID`).
    pub relays: Vec<Multiaddr>,
    /// Addresses others reach this node at, announced as confirmed.
    pub external_addrs: Vec<Multiaddr>,
    /// Serve as a relay (its listen addresses are announced as external
    /// when `external_addrs` is empty).
    pub relay_server: bool,
    /// A relay's limits per circuit in consortium mode (`None`: open mode,
    /// libp2p's defaults).
    pub relay_consortium_limits: Option<reach::CircuitLimits>,
    /// AutoNAT v2, client and server.
    pub autonat: bool,
    pub upnp: bool,
}

impl NetConfig {
    pub fn from_config(c: &NetworkConfig, consortium: bool) -> Result<NetConfig> {
        let parse = |list: &[String], what: &str| -> Result<Vec<Multiaddr>> {
            list.iter()
                .map(|s| {
                    s.parse::<Multiaddr>().map_err(|e| NodeError::Config {
                        origin: format!("network.{what}"),
                        reason: format!("{s:?} is not a multiaddr: {e}"),
                    })
                })
                .collect()
        };
        let with_peer_ids = |list: &[String], what: &str| -> Result<Vec<Multiaddr>> {
            let addrs = parse(list, what)?;
            for addr in &addrs {
                if !addr
                    .iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                {
                    return Err(NodeError::Config {
                        origin: format!("network.{what}"),
                        reason: format!("{addr} has no /p2p/PEERID part"),
                    });
                }
            }
            Ok(addrs)
        };
        let bootstrap = with_peer_ids(&c.bootstrap, "bootstrap")?;
        let relays = with_peer_ids(&c.relays, "relays")?;
        if let Some(addr) = relays.iter().find(|a| {
            a.iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
        }) {
            return Err(NodeError::Config {
                origin: "network.relays".into(),
                reason: format!(
                    "{addr} is already a relayed address; give the relay's own address"
                ),
            });
        }
        let relay_consortium_limits = consortium.then(|| reach::CircuitLimits {
            duration: Duration::from_secs(c.relay_consortium_circuit_secs.max(1)),
            bytes: c
                .relay_consortium_circuit_mib
                .max(1)
                .saturating_mul(1 << 20),
        });
        Ok(NetConfig {
            listen: parse(&c.listen, "listen")?,
            bootstrap,
            mdns: c.mdns,
            target_peers: c.target_peers,
            max_connections: c.max_connections,
            max_connections_per_peer: c.max_connections_per_peer,
            max_pending_incoming: c.max_pending_incoming,
            max_pending_incoming_per_ip: c.max_pending_incoming_per_ip,
            max_established_incoming_per_ip: c.max_established_incoming_per_ip,
            handshake_timeout: Duration::from_secs(c.handshake_timeout_secs),
            request_rate: (c.request_rate_per_sec, c.request_burst),
            gossip_rate: (c.gossip_rate_per_sec, c.gossip_burst),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs.max(1)),
            heartbeat: Duration::from_millis(c.gossip_heartbeat_ms.clamp(50, 10_000)),
            request_timeout: Duration::from_secs(10),
            manual_kad_inserts: consortium,
            relays,
            external_addrs: parse(&c.external_addrs, "external_addrs")?,
            relay_server: c.relay_server,
            relay_consortium_limits,
            autonat: c.autonat,
            upnp: c.upnp,
        })
    }
}

/// The libp2p identity of a fairgrid node key: the same ed25519 key.
pub fn libp2p_keypair(key: &fairgrid_protocol::Keypair) -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::ed25519_from_bytes(key.secret_bytes())
        .expect("32 bytes are a valid ed25519 secret")
}

/// Events waiting for the application, at most.
const EVENT_QUEUE: usize = 1024;
/// Commands waiting for the event loop, at most.
const COMMAND_QUEUE: usize = 1024;

/// Builds the swarm, starts listening and bootstrapping, and spawns the
/// event loop on the current tokio runtime.
pub fn spawn(
    key: &fairgrid_protocol::Keypair,
    config: NetConfig,
) -> Result<(
    NetworkClient,
    mpsc::Receiver<NetEvent>,
    tokio::task::JoinHandle<()>,
)> {
    let keypair = libp2p_keypair(key);
    let local_peer_id = keypair.public().to_peer_id();
    let admitted = reach::Admitted::default();
    let swarm = event_loop::build_swarm(keypair, &config, &admitted)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let mut event_loop = event_loop::EventLoop::new(swarm, cmd_rx, event_tx, config, admitted);
    event_loop.start()?;
    let handle = tokio::spawn(event_loop.run());
    Ok((
        NetworkClient {
            tx: cmd_tx,
            local_peer_id,
        },
        event_rx,
        handle,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_the_libp2p_peer_id() {
        for seed in [&b"a"[..], b"node-7", b"fairgrid"] {
            let key = fairgrid_protocol::Keypair::from_seed(seed);
            let peer = libp2p_keypair(&key).public().to_peer_id();
            assert_eq!(key.node_id().to_peer_id_string(), peer.to_string());
            assert_eq!(
                peer.to_string()
                    .parse::<fairgrid_protocol::NodeId>()
                    .unwrap(),
                key.node_id()
            );
        }
    }
}
