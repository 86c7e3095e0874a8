//! The composite `NetworkBehaviour`: connection limits, block list,
//! identify, ping, Kademlia, mDNS, gossipsub with peer scoring, the
//! request-response protocol, and reachability (relay client and server,
//! DCUtR hole punching, AutoNAT v2, UPnP port mapping). Only plumbing: no
//! application logic.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, allow_block_list, autonat, connection_limits, dcutr, gossipsub, identify,
    identity, kad, mdns, ping, relay, request_response, upnp,
};

use super::NetConfig;
use super::codec::{FairgridCodec, PROTOCOL};
use super::reach::{Admitted, relay_config};
use super::topics::Topic;

pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/fairgrid/kad/1.0.0");
pub const IDENTIFY_PROTOCOL: &str = "/fairgrid/id/1.0.0";

#[derive(NetworkBehaviour)]
pub struct FairgridBehaviour {
    pub per_ip: super::ip_limits::Behaviour,
    pub limits: connection_limits::Behaviour,
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub gossipsub: gossipsub::Behaviour,
    pub reqres: request_response::Behaviour<FairgridCodec>,
    pub relay_client: relay::client::Behaviour,
    pub relay: Toggle<relay::Behaviour>,
    pub dcutr: dcutr::Behaviour,
    pub autonat_client: Toggle<autonat::v2::client::Behaviour>,
    pub autonat_server: Toggle<autonat::v2::server::Behaviour>,
    pub upnp: Toggle<upnp::tokio::Behaviour>,
}

impl FairgridBehaviour {
    pub fn new(
        key: &identity::Keypair,
        relay_client: relay::client::Behaviour,
        config: &NetConfig,
        admitted: &Admitted,
    ) -> Result<Self, String> {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer))
            .with_max_pending_incoming(Some(config.max_pending_incoming))
            .with_max_pending_outgoing(Some(config.max_pending_incoming));

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                .with_agent_version(format!("fairgrid/{}", env!("CARGO_PKG_VERSION")))
                .with_interval(Duration::from_secs(60)),
        );

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_query_timeout(Duration::from_secs(30));
        if config.manual_kad_inserts {
            // Consortium mode: only admitted peers enter the routing table.
            kad_config.set_kbucket_inserts(kad::BucketInserts::Manual);
        }
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Loopback and LAN nodes have no confirmed external address, so
        // automatic mode would leave them as clients nobody can find.
        kad.set_mode(Some(kad::Mode::Server));

        let mdns = if config.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| format!("mdns: {e}"))?,
            )
        } else {
            None
        };

        let gossipsub = build_gossipsub(key, config)?;

        let reqres = request_response::Behaviour::with_codec(
            FairgridCodec,
            [(PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(64),
        );

        Ok(FairgridBehaviour {
            per_ip: super::ip_limits::Behaviour::new(
                config.max_pending_incoming_per_ip as usize,
                config.max_established_incoming_per_ip as usize,
            ),
            limits: connection_limits::Behaviour::new(limits),
            blocked: allow_block_list::Behaviour::default(),
            identify,
            ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(10))),
            kad,
            mdns: Toggle::from(mdns),
            gossipsub,
            reqres,
            relay_client,
            relay: Toggle::from(config.relay_server.then(|| {
                let mut relay = relay::Behaviour::new(
                    peer_id,
                    relay_config(config.relay_consortium_limits, admitted),
                );
                // The operator says this machine is reachable: serve at
                // once, not only once AutoNAT has confirmed an address
                // (libp2p's default), which a relay in a private testbed or
                // without AutoNAT servers around would never get.
                relay.set_status(Some(relay::Status::Enable));
                relay
            })),
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat_client: Toggle::from(
                config.autonat.then(autonat::v2::client::Behaviour::default),
            ),
            autonat_server: Toggle::from(
                config.autonat.then(autonat::v2::server::Behaviour::default),
            ),
            upnp: Toggle::from(config.upnp.then(upnp::tokio::Behaviour::default)),
        })
    }
}

fn build_gossipsub(
    key: &identity::Keypair,
    config: &NetConfig,
) -> Result<gossipsub::Behaviour, String> {
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        .heartbeat_interval(config.heartbeat)
        // Messages are signed by libp2p (author + seqno) and, inside, by
        // fairgrid's own envelopes; unsigned or mis-signed ones are dropped.
        .validation_mode(gossipsub::ValidationMode::Strict)
        // Nothing is forwarded until the application has validated it.
        .validate_messages()
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(&blake3::hash(&m.data).as_bytes()[..20])
        })
        .max_transmit_size(Topic::ALL.iter().map(|t| t.max_bytes()).max().unwrap_or(0) + 4096)
        .duplicate_cache_time(Duration::from_secs(120));
    for topic in Topic::ALL {
        builder.max_transmit_size_for_topic(topic.max_bytes() + 1024, topic.hash());
    }
    let gossip_config = builder
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossip_config,
    )
    .map_err(|e| format!("gossipsub: {e}"))?;
    let (params, thresholds) = score_params();
    gossipsub
        .with_peer_score(params, thresholds)
        .map_err(|e| format!("gossipsub scoring: {e}"))?;
    for topic in Topic::ALL {
        gossipsub
            .subscribe(&topic.ident())
            .map_err(|e| format!("subscribing to {}: {e}", topic.name()))?;
    }
    Ok(gossipsub)
}

/// Peer scoring: each message the application rejects costs its sender
/// (P4, squared), so a peer that keeps sending invalid messages is first
/// no longer gossiped to, then not published to, then ignored entirely.
/// Quiet mesh peers are not penalised (adverts are infrequent).
pub fn score_params() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 20.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -20.0,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    };
    let mut topics = HashMap::new();
    for t in Topic::ALL {
        topics.insert(t.hash(), topic.clone());
    }
    let mut params = gossipsub::PeerScoreParams {
        topics,
        topic_score_cap: 50.0,
        ..Default::default()
    };
    // Many local nodes share 127.0.0.1; colocation is only suspicious on
    // real addresses.
    params.ip_colocation_factor_whitelist.extend([
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]);
    let thresholds = gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    (params, thresholds)
}
