//! The one task that owns the `Swarm`. It executes commands from
//! [`NetworkClient`](super::NetworkClient)s, forwards events to the
//! application, dials peers it discovers until it has enough, and applies
//! per-peer rate limits before the application sees anything.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::kad;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundFailure, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, dcutr, gossipsub, identify, mdns, noise, ping, relay, tcp,
    upnp, yamux,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::behaviour::{FairgridBehaviour, FairgridBehaviourEvent, KAD_PROTOCOL};
use super::client::{Command, PeerSnapshot, Verdict};
use super::in_flight::{InFlight, Outbound};
use super::rate::RateLimiter;
use super::reach::{Admitted, ReachState, circuit_listen_addr, relay_retry_delay};
use super::topics::Topic;
use super::wire::{Request, Response};
use super::{NetConfig, NetEvent};
use crate::error::{NodeError, Result};

const TARGET: &str = "fairgrid::net";
/// After we admit a relay, how soon to ask it again for a slot it refused
/// (it admits us when our certificate reaches it, about as fast).
const RELAY_RETRY_AFTER_ADMISSION: Duration = Duration::from_millis(500);
/// Outbound requests in flight, at most.
const MAX_PENDING_REQUESTS: usize = 1024;
/// How often to re-run the Kademlia bootstrap once the node has
/// `network.target_peers` peers.
const BOOTSTRAP_EVERY: Duration = Duration::from_secs(30);
/// How often while it has fewer: a node that joined before the peers it
/// should meet were known to its bootstrap node finds them within seconds,
/// not at the next 30 s bootstrap (a 4-node test once waited over 45 s).
const BOOTSTRAP_EVERY_UNDER_TARGET: Duration = Duration::from_secs(5);

pub fn build_swarm(
    keypair: libp2p::identity::Keypair,
    config: &NetConfig,
    admitted: &Admitted,
) -> Result<Swarm<FairgridBehaviour>> {
    let net_err = |e: String| NodeError::Network(e);
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| net_err(format!("tcp transport: {e}")))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| net_err(format!("relay client transport: {e}")))?;
    let swarm = builder
        .with_behaviour(|key, relay_client| {
            FairgridBehaviour::new(key, relay_client, config, admitted)
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| net_err(format!("behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .with_connection_timeout(config.handshake_timeout)
        .build();
    Ok(swarm)
}

struct PeerState {
    connections: u32,
    since: Instant,
    addresses: Vec<Multiaddr>,
    agent: Option<String>,
    rtt: Option<Duration>,
}

pub struct EventLoop {
    swarm: Swarm<FairgridBehaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    config: NetConfig,
    requests:
        InFlight<OutboundRequestId, InboundRequestId, Request, oneshot::Sender<Result<Response>>>,
    peers: HashMap<PeerId, PeerState>,
    /// Listen addresses peers announced through identify.
    announced: HashMap<PeerId, Vec<Multiaddr>>,
    admitted: Admitted,
    listen_addrs: Vec<Multiaddr>,
    reach: ReachState,
    /// Listeners on relay slots, by the relay address they are on.
    relay_listeners: HashMap<ListenerId, Multiaddr>,
    /// Relay slots to ask for again, and when.
    relay_retries: Vec<(Instant, Multiaddr)>,
    /// Refusals or losses in a row, per relay (reset when it gives a slot).
    relay_failures: HashMap<Multiaddr, u32>,
    gossip_rate: RateLimiter,
    request_rate: RateLimiter,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<FairgridBehaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        config: NetConfig,
        admitted: Admitted,
    ) -> Self {
        let mut reach = ReachState::default();
        reach.upnp = super::upnp::UpnpState::new(config.upnp);
        EventLoop {
            swarm,
            commands,
            events,
            gossip_rate: RateLimiter::new(config.gossip_rate.0, config.gossip_rate.1),
            request_rate: RateLimiter::new(config.request_rate.0, config.request_rate.1),
            config,
            requests: InFlight::default(),
            peers: HashMap::new(),
            announced: HashMap::new(),
            admitted,
            listen_addrs: Vec::new(),
            reach,
            relay_listeners: HashMap::new(),
            relay_retries: Vec::new(),
            relay_failures: HashMap::new(),
        }
    }

    /// Starts listening and dials the bootstrap peers.
    pub(crate) fn start(&mut self) -> Result<()> {
        for addr in self.config.listen.clone() {
            self.swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Network(format!("cannot listen on {addr}: {e}")))?;
        }
        // Relays first: asking for a slot dials the relay, and a relay
        // that is also a bootstrap peer must not be dialled twice at once
        // (the second dial is refused, and with it the slot request).
        let relay_peers: Vec<PeerId> = self.config.relays.iter().filter_map(peer_of).collect();
        for relay in self.config.relays.clone() {
            self.listen_on_relay(relay);
        }
        for addr in self.config.bootstrap.clone() {
            let Some(peer) = peer_of(&addr) else { continue };
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, without_peer(&addr));
            if relay_peers.contains(&peer) {
                continue;
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                warn!(target: TARGET, %addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        for addr in self.config.external_addrs.clone() {
            self.swarm.add_external_address(addr);
        }
        Ok(())
    }

    /// Asks `relay` for a slot (the relay client dials it if needed); a
    /// refusal or a lost slot is retried, backing off.
    fn listen_on_relay(&mut self, relay: Multiaddr) {
        match self.swarm.listen_on(circuit_listen_addr(&relay)) {
            Ok(id) => {
                self.relay_listeners.insert(id, relay);
            }
            Err(e) => self.retry_relay_later(relay, &e.to_string()),
        }
    }

    /// Schedules another request for a slot on `relay`; the third failure
    /// in a row is a warning (two are usual at start: the slot request
    /// meets another dial to the relay and is asked again once the relay
    /// is connected, and a consortium relay refuses until it has admitted
    /// this node), the others only debug lines.
    fn retry_relay_later(&mut self, relay: Multiaddr, reason: &str) {
        let failures = self.relay_failures.entry(relay.clone()).or_default();
        *failures += 1;
        let mut delay = relay_retry_delay(*failures);
        if *failures <= 2 && peer_of(&relay).is_some_and(|p| self.admitted.contains(&p)) {
            // We admitted the relay already; it is about to admit us.
            delay = delay.min(RELAY_RETRY_AFTER_ADMISSION);
        }
        if *failures == 3 {
            warn!(target: TARGET, %relay, %reason, retry_in = ?delay, "no slot on the relay; asking again");
        } else {
            debug!(target: TARGET, %relay, %reason, failures = *failures, retry_in = ?delay, "no slot on the relay yet");
        }
        self.relay_retries.push((Instant::now() + delay, relay));
    }

    /// Before a request to a peer we are not connected to: dial it through
    /// our relays as well as at the addresses we know. A peer behind a NAT
    /// announces no address we can reach, but the nodes of a consortium
    /// share its relay, where the peer holds a slot; once connected, DCUtR
    /// may replace the relayed connection with a direct one. (The request's
    /// own dial then waits for this one; without relays nothing changes.)
    fn dial_through_relays(&mut self, peer: PeerId) {
        if self.config.relays.is_empty() || self.swarm.is_connected(&peer) {
            return;
        }
        let via_relays: Vec<Multiaddr> = self
            .config
            .relays
            .iter()
            .filter(|relay| peer_of(relay) != Some(peer))
            .map(circuit_listen_addr)
            .collect();
        if via_relays.is_empty() {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(via_relays)
            .extend_addresses_through_behaviour()
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(target: TARGET, %peer, error = %e, "no dial through the relays");
        }
    }

    /// Brings a pending retry for relay `peer` forward to `after` from now.
    fn retry_relay_soon(&mut self, peer: PeerId, after: Duration) {
        let soon = Instant::now() + after;
        for (at, relay) in &mut self.relay_retries {
            if peer_of(relay) == Some(peer) && *at > soon {
                *at = soon;
            }
        }
    }

    /// A relay we wait to ask again is now connected: ask at once (a slot
    /// request refused because another dial to the relay was under way,
    /// as at start, need not wait out its back-off).
    fn retry_relay_now(&mut self, peer: PeerId) {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.relay_retries)
            .into_iter()
            .partition(|(_, relay)| peer_of(relay) == Some(peer));
        self.relay_retries = later;
        for (_, relay) in now {
            self.listen_on_relay(relay);
        }
    }

    fn retry_relays(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.relay_retries)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.relay_retries = later;
        for (_, relay) in due {
            self.listen_on_relay(relay);
        }
    }

    pub(crate) async fn run(mut self) {
        let mut bootstrap = tokio::time::interval(BOOTSTRAP_EVERY_UNDER_TARGET);
        bootstrap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_bootstrap: Option<Instant> = None;
        let mut relay_retry = tokio::time::interval(Duration::from_secs(1));
        relay_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = relay_retry.tick(), if !self.relay_retries.is_empty() => self.retry_relays(),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        info!(target: TARGET, "network stopping");
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    None => return,
                },
                _ = bootstrap.tick() => {
                    let every = if self.peers.len() < self.config.target_peers as usize {
                        BOOTSTRAP_EVERY_UNDER_TARGET
                    } else {
                        BOOTSTRAP_EVERY
                    };
                    if last_bootstrap.is_none_or(|at| at.elapsed() + Duration::from_millis(100) >= every) {
                        last_bootstrap = Some(Instant::now());
                        self.bootstrap();
                    }
                }
            }
        }
    }

    fn bootstrap(&mut self) {
        if self.peers.is_empty() && self.config.bootstrap.is_empty() {
            return;
        }
        if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
            debug!(target: TARGET, error = ?e, "kademlia bootstrap skipped");
        }
    }

    fn emit(&self, event: NetEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                warn!(target: TARGET, event = ?short(&event), "application is behind; event dropped");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn on_command(&mut self, command: Command) {
        let behaviour = self.swarm.behaviour_mut();
        match command {
            Command::Publish { topic, data, reply } => {
                let result = behaviour
                    .gossipsub
                    .publish(topic.hash(), data)
                    .map(|_| ())
                    .map_err(|e| NodeError::Network(format!("publish on {}: {e}", topic.name())));
                let _ = reply.send(result);
            }
            Command::Validate {
                message_id,
                source,
                verdict,
            } => {
                let acceptance = match verdict {
                    Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                    Verdict::Reject => gossipsub::MessageAcceptance::Reject,
                    Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
                };
                behaviour.gossipsub.report_message_validation_result(
                    &message_id,
                    &source,
                    acceptance,
                );
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if self.requests.outbound_len() >= MAX_PENDING_REQUESTS {
                    let _ = reply.send(Err(NodeError::Network(
                        "too many requests in flight".into(),
                    )));
                    return;
                }
                self.dial_through_relays(peer);
                self.send_request(Outbound {
                    peer,
                    request,
                    reply,
                    resent: false,
                });
            }
            Command::Respond { channel, response } => {
                if behaviour.reqres.send_response(channel, response).is_err() {
                    debug!(target: TARGET, "response not sent: the peer's stream is gone");
                }
            }
            Command::Dial { addr, reply } => {
                if let Some(peer) = peer_of(&addr) {
                    behaviour.kad.add_address(&peer, without_peer(&addr));
                }
                let result = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| NodeError::Network(format!("dial {addr}: {e}")));
                let _ = reply.send(result);
            }
            Command::Admit { peer } => {
                self.admitted.insert(peer);
                if self.config.manual_kad_inserts {
                    for addr in self.announced.get(&peer).cloned().unwrap_or_default() {
                        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    }
                }
                // A consortium relay admits us as we admit it (both show
                // their certificates at once): ask again for a slot it
                // refused before, in a moment rather than after back-off.
                self.retry_relay_soon(peer, RELAY_RETRY_AFTER_ADMISSION);
            }
            Command::Ban { peer } => {
                self.admitted.remove(&peer);
                behaviour.blocked.block_peer(peer);
                behaviour.kad.remove_peer(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.snapshot());
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::Reach { reply } => {
                let _ = reply.send(self.reach.snapshot());
            }
            Command::Transports { peer, reply } => {
                let _ = reply.send(self.reach.transports_to(&peer));
            }
            Command::Shutdown { .. } => unreachable!("handled by run"),
        }
    }

    fn snapshot(&self) -> Vec<PeerSnapshot> {
        let gossip = &self.swarm.behaviour().gossipsub;
        let mut out: Vec<PeerSnapshot> = self
            .peers
            .iter()
            .map(|(peer, state)| PeerSnapshot {
                peer_id: peer.to_string(),
                addresses: state.addresses.iter().map(|a| a.to_string()).collect(),
                agent: state.agent.clone(),
                rtt_ms: state.rtt.map(|d| d.as_millis() as u64),
                gossip_score: gossip.peer_score(peer),
                connections: state.connections,
                connected_for_ms: state.since.elapsed().as_millis() as u64,
                admitted: !self.config.manual_kad_inserts || self.admitted.contains(peer),
                transports: self
                    .reach
                    .transports_to(peer)
                    .into_iter()
                    .map(|t| t.label().to_string())
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<FairgridBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(target: TARGET, %address, "listening");
                self.reach.listening(&address);
                // A relay hands its clients its external addresses: one
                // whose operator named none announces where it listens.
                if self.config.relay_server
                    && self.config.external_addrs.is_empty()
                    && is_direct(&address)
                {
                    self.swarm.add_external_address(address.clone());
                }
                self.listen_addrs.push(address.clone());
                self.emit(NetEvent::NewListenAddr { addr: address });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.reach.stopped_listening(&address);
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                for address in &addresses {
                    self.reach.stopped_listening(address);
                    self.listen_addrs.retain(|a| a != address);
                }
                if let Some(relay) = self.relay_listeners.remove(&listener_id) {
                    let reason = reason.err().map_or("closed".into(), |e| e.to_string());
                    self.retry_relay_later(relay, &reason);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.reach.connection_established(
                    connection_id,
                    peer_id,
                    endpoint.get_remote_address(),
                    endpoint.is_relayed(),
                );
                let state = self.peers.entry(peer_id).or_insert_with(|| PeerState {
                    connections: 0,
                    since: Instant::now(),
                    addresses: Vec::new(),
                    agent: None,
                    rtt: None,
                });
                state.connections = num_established.get();
                let addr = endpoint.get_remote_address().clone();
                if !state.addresses.contains(&addr) {
                    state.addresses.push(addr);
                }
                if num_established.get() == 1 {
                    debug!(target: TARGET, peer = %peer_id, "connected");
                    self.emit(NetEvent::Connected { peer: peer_id });
                    self.retry_relay_now(peer_id);
                }
                self.close_redundant_relayed(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.reach.connection_closed(connection_id);
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    self.announced.remove(&peer_id);
                    self.admitted.remove(&peer_id);
                    self.gossip_rate.forget(&peer_id);
                    self.request_rate.forget(&peer_id);
                    self.requests.forget_inbound(&peer_id);
                    debug!(target: TARGET, peer = %peer_id, "disconnected");
                    self.emit(NetEvent::Disconnected { peer: peer_id });
                } else if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections = num_established;
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(target: TARGET, peer = ?peer_id, error = %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                debug!(target: TARGET, addr = %send_back_addr, error = %error, "incoming connection refused");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: FairgridBehaviourEvent) {
        match event {
            FairgridBehaviourEvent::Gossipsub(event) => self.on_gossip(event),
            FairgridBehaviourEvent::Reqres(event) => self.on_reqres(event),
            FairgridBehaviourEvent::Identify(identify::Event::Received {
                peer_id, info, ..
            }) => {
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.agent = Some(info.agent_version.clone());
                }
                let speaks_kad = info.protocols.contains(&KAD_PROTOCOL);
                let addrs: Vec<Multiaddr> = info.listen_addrs.into_iter().take(16).collect();
                if speaks_kad
                    && (!self.config.manual_kad_inserts || self.admitted.contains(&peer_id))
                {
                    for addr in &addrs {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                }
                self.announced.insert(peer_id, addrs);
            }
            FairgridBehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Ok(rtt),
            }) => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.rtt = Some(rtt);
                }
                // A connection a ping crossed both ways is one the peer
                // kept: a relayed one beside it may go.
                if self.reach.answered_ping(connection) {
                    self.close_redundant_relayed(peer);
                }
            }
            FairgridBehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) => {
                self.maybe_dial(peer, addresses.into_vec());
            }
            FairgridBehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::Bootstrap(Ok(result)),
                ..
            }) => {
                debug!(target: TARGET, remaining = result.num_remaining, "kademlia bootstrap step");
            }
            FairgridBehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => {
                match &result {
                    Ok(_) => {
                        info!(target: TARGET, peer = %remote_peer_id, "hole punched: direct connection")
                    }
                    Err(e) => {
                        debug!(target: TARGET, peer = %remote_peer_id, error = %e, "hole punch failed; the connection stays relayed")
                    }
                }
                self.reach.hole_punch(result.map_err(|_| ()));
            }
            FairgridBehaviourEvent::AutonatClient(autonat::v2::client::Event {
                tested_addr,
                result,
                ..
            }) => {
                debug!(target: TARGET, addr = %tested_addr, reachable = result.is_ok(), "AutoNAT verdict");
                self.reach.tested(tested_addr, result.is_ok());
            }
            FairgridBehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            }) => {
                info!(target: TARGET, relay = %relay_peer_id, "relay slot reserved");
                self.relay_failures
                    .retain(|addr, _| peer_of(addr) != Some(relay_peer_id));
            }
            FairgridBehaviourEvent::Upnp(event) => {
                match &event {
                    upnp::Event::NewExternalAddr { external_addr, .. } => {
                        info!(target: TARGET, addr = %external_addr, "the router forwards this address to the node (UPnP)")
                    }
                    upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                        warn!(target: TARGET, addr = %external_addr, "the router stopped forwarding this address (UPnP)")
                    }
                    upnp::Event::GatewayNotFound => {
                        info!(target: TARGET, "no UPnP router answered; network.upnp has no effect here")
                    }
                    upnp::Event::NonRoutableGateway => {
                        info!(target: TARGET, "the UPnP router's own address is not public (another NAT is in front of it); no mapping made")
                    }
                }
                self.reach.upnp.on_event(&event);
            }
            FairgridBehaviourEvent::Relay(relay::Event::ReservationReqAccepted { .. }) => {
                self.reach.reservation_served();
            }
            FairgridBehaviourEvent::Relay(relay::Event::CircuitReqAccepted { .. }) => {
                self.reach.circuit_served();
            }
            FairgridBehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if !self.config.manual_kad_inserts {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer, addr.clone());
                    }
                    self.maybe_dial(peer, vec![addr]);
                }
            }
            _ => {}
        }
    }

    fn maybe_dial(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id()
            || self.peers.contains_key(&peer)
            || self.peers.len() >= self.config.target_peers as usize
        {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addresses)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(target: TARGET, %peer, error = %e, "not dialing discovered peer");
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let gossip = &mut self.swarm.behaviour_mut().gossipsub;
                let ignore = |gossip: &mut gossipsub::Behaviour| {
                    gossip.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        gossipsub::MessageAcceptance::Ignore,
                    );
                };
                let Some(topic) = Topic::from_hash(&message.topic) else {
                    ignore(gossip);
                    return;
                };
                if !self.gossip_rate.allow(propagation_source, Instant::now()) {
                    warn!(target: TARGET, peer = %propagation_source, topic = topic.name(), "gossip rate limit exceeded; message dropped");
                    ignore(gossip);
                    return;
                }
                let event = NetEvent::Gossip {
                    topic,
                    source: propagation_source,
                    message_id: message_id.clone(),
                    data: message.data,
                };
                if !self.emit(event) {
                    ignore(&mut self.swarm.behaviour_mut().gossipsub);
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                if let Some(topic) = Topic::from_hash(&topic) {
                    self.emit(NetEvent::Subscribed {
                        peer: peer_id,
                        topic,
                    });
                }
            }
            _ => {}
        }
    }

    fn on_reqres(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => {
                    self.requests.received(request_id, peer);
                    if !self.request_rate.allow(peer, Instant::now()) {
                        warn!(target: TARGET, %peer, "request rate limit exceeded; refused");
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .reqres
                            .send_response(channel, Response::Busy);
                        return;
                    }
                    self.emit(NetEvent::Request {
                        peer,
                        request,
                        channel,
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(sent) = self.requests.finished(&request_id) {
                        let _ = sent.reply.send(Ok(response));
                    }
                    self.close_redundant_relayed(peer);
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(sent) = self.requests.finished(&request_id) {
                    self.request_failed(sent, error);
                }
                self.close_redundant_relayed(peer);
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(target: TARGET, %peer, %error, "inbound request failed");
                self.requests.answered(&request_id);
                self.close_redundant_relayed(peer);
            }
            request_response::Event::ResponseSent {
                peer, request_id, ..
            } => {
                self.requests.answered(&request_id);
                self.close_redundant_relayed(peer);
            }
        }
    }

    fn send_request(&mut self, outbound: Outbound<Request, oneshot::Sender<Result<Response>>>) {
        let id = self
            .swarm
            .behaviour_mut()
            .reqres
            .send_request(&outbound.peer, outbound.request.clone());
        self.requests.sent(id, outbound);
    }

    /// A request whose connection closed under it goes once more over
    /// another connection to the peer, if one is left (we may have closed
    /// a redundant relayed one just as it was sent); any other failure is
    /// the caller's. The receiver may have handled the first copy before
    /// its connection closed: a repeated round start is accepted again, a
    /// repeated update or bid is refused as a duplicate (not as
    /// misbehaviour: the first copy counts), reads are answered again.
    fn request_failed(
        &mut self,
        sent: Outbound<Request, oneshot::Sender<Result<Response>>>,
        error: OutboundFailure,
    ) {
        let still_connected = self
            .peers
            .get(&sent.peer)
            .is_some_and(|s| s.connections > 0);
        if matches!(error, OutboundFailure::ConnectionClosed) && !sent.resent && still_connected {
            debug!(target: TARGET, peer = %sent.peer, "connection closed under a request; sending it again");
            self.send_request(Outbound {
                resent: true,
                ..sent
            });
            return;
        }
        let _ = sent.reply.send(Err(NodeError::Network(format!(
            "request to {} failed: {error}",
            sent.peer
        ))));
    }

    /// Once a direct connection to `peer` is open beside relayed ones (a
    /// hole punch succeeded) and a ping has crossed it (the peer kept it:
    /// it may refuse a new connection after we counted it established),
    /// closes the relayed ones, but only while no
    /// request either way is in flight with the peer: request-response
    /// spreads requests over all of a peer's connections, so a relayed
    /// one left open carries part of the traffic through the relay, and
    /// one closed with a request on it fails that request.
    fn close_redundant_relayed(&mut self, peer: PeerId) {
        if self.requests.any_with(&peer) {
            return;
        }
        for connection in self.reach.redundant_relayed(&peer) {
            if self.swarm.close_connection(connection) {
                debug!(target: TARGET, %peer, "relayed connection closed: a direct one is open");
            }
        }
    }
}

/// The peer an address leads to: its last `/p2p/ID` (for a relayed
/// address `RELAY/p2p/R/p2p-circuit/p2p/ID`, the peer behind the relay).
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// `addr` without its trailing `/p2p/ID`: what Kademlia stores (the swarm
/// appends the peer id when it dials; two would make it unparseable).
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}

fn short(event: &NetEvent) -> &'static str {
    match event {
        NetEvent::Gossip { .. } => "gossip",
        NetEvent::Request { .. } => "request",
        NetEvent::Connected { .. } => "connected",
        NetEvent::Disconnected { .. } => "disconnected",
        NetEvent::Subscribed { .. } => "subscribed",
        NetEvent::NewListenAddr { .. } => "listen-addr",
    }
}

/// A direct (not relayed) address.
fn is_direct(addr: &Multiaddr) -> bool {
    super::reach::Transport::of(addr) != super::reach::Transport::Relayed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_address_leads_to_the_peer_behind_the_relay() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let direct: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{target}")
            .parse()
            .unwrap();
        let relayed: Multiaddr =
            format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{target}")
                .parse()
                .unwrap();
        assert_eq!(peer_of(&direct), Some(target));
        assert_eq!(peer_of(&relayed), Some(target));
        assert_eq!(without_peer(&direct).to_string(), "/ip4/10.0.0.1/tcp/4001");
        assert_eq!(
            without_peer(&relayed).to_string(),
            format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit")
        );
        let bare: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(peer_of(&bare), None);
        assert_eq!(without_peer(&bare), bare);
    }
}
