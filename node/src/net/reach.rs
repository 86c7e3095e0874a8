//! Reachability: how this node can be reached (AutoNAT v2's verdicts, the
//! relay slots it holds), how its connections were made (direct over TCP
//! or QUIC, or relayed), and how hole punching (DCUtR) went. The event
//! loop feeds a [`ReachState`]; `/metrics` and the peers view read its
//! [`ReachSnapshot`]. UPnP port mapping is kept in [`super::upnp`].
//!
//! The relay role: [`relay_config`] keeps libp2p's limits in open mode and
//! raises them in consortium mode, where only admitted peers may reserve a
//! slot or open a circuit ([`Admitted`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, relay};
use serde::Serialize;

/// How a connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Quic,
    /// Through a relay (`/p2p-circuit`).
    Relayed,
}

impl Transport {
    /// Read from a connection's remote address.
    pub fn of(addr: &Multiaddr) -> Transport {
        if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            Transport::Relayed
        } else if addr.iter().any(|p| matches!(p, Protocol::QuicV1)) {
            Transport::Quic
        } else {
            Transport::Tcp
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
            Transport::Relayed => "relayed",
        }
    }
}

/// Whether a peer's connections (one entry each) all go through a relay;
/// false when there are none.
pub fn only_relayed(links: &[Transport]) -> bool {
    !links.is_empty() && links.iter().all(|t| *t == Transport::Relayed)
}

/// Whether peers outside can dial this node, as AutoNAT v2 found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// No address of this node has been tested yet.
    Unknown,
    /// A peer dialled one of its addresses back.
    Public,
    /// Every address tested failed: reach it through a relay.
    Private,
}

/// The peers admitted in consortium mode, shared by the event loop (which
/// admits and forgets them) and the relay (which serves only them).
#[derive(Debug, Clone, Default)]
pub struct Admitted(Arc<Mutex<HashSet<PeerId>>>);

impl Admitted {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<PeerId>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, peer: PeerId) {
        self.set().insert(peer);
    }

    pub fn remove(&self, peer: &PeerId) {
        self.set().remove(peer);
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.set().contains(peer)
    }
}

/// Limits per relayed connection of a consortium relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitLimits {
    pub duration: Duration,
    pub bytes: u64,
}

/// The relay server's config: libp2p's defaults in open mode (`None`);
/// with consortium limits, those limits and only admitted peers served
/// (reservations and the source of every circuit; a circuit's destination
/// holds a reservation, so it was admitted too).
pub fn relay_config(consortium: Option<CircuitLimits>, admitted: &Admitted) -> relay::Config {
    let mut config = relay::Config::default();
    if let Some(limits) = consortium {
        config.max_circuit_duration = limits.duration;
        config.max_circuit_bytes = limits.bytes;
        for limiters in [
            &mut config.reservation_rate_limiters,
            &mut config.circuit_src_rate_limiters,
        ] {
            let admitted = admitted.clone();
            limiters.push(Box::new(move |peer: PeerId, _: &Multiaddr, _: Instant| {
                admitted.contains(&peer)
            }));
        }
    }
    config
}

/// Hole-punch outcomes, by the transport of the direct connection made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HolePunches {
    pub direct: BTreeMap<Transport, u64>,
    /// Attempts that made no direct connection (DCUtR does not say which
    /// transport it tried last).
    pub failed: u64,
}

/// What the event loop knows about reachability, as `/metrics` and the
/// API show it.
#[derive(Debug, Clone, Serialize)]
pub struct ReachSnapshot {
    pub reachability: Reachability,
    /// Addresses AutoNAT v2 confirmed.
    pub public_addrs: Vec<String>,
    /// `/p2p-circuit` addresses this node holds a relay slot on.
    pub relayed_addrs: Vec<String>,
    /// Connections established, by transport, since start.
    pub connections: BTreeMap<Transport, u64>,
    pub hole_punches: HolePunches,
    /// As a relay: reservations accepted and circuits opened for others.
    pub relay_reservations_served: u64,
    pub relay_circuits_served: u64,
    pub upnp: super::upnp::UpnpState,
}

/// Connections kept track of for hole-punch outcomes, at most (the
/// connection limit keeps the real number far below).
const MAX_TRACKED: usize = 4096;

/// The event loop's bookkeeping behind [`ReachSnapshot`].
#[derive(Debug, Default)]
pub struct ReachState {
    tested: BTreeMap<Multiaddr, bool>,
    relayed_addrs: Vec<Multiaddr>,
    open: HashMap<ConnectionId, (PeerId, Transport)>,
    /// Open connections a ping has crossed both ways.
    pinged: HashSet<ConnectionId>,
    connections: BTreeMap<Transport, u64>,
    hole_punches: HolePunches,
    reservations_served: u64,
    circuits_served: u64,
    pub upnp: super::upnp::UpnpState,
}

impl ReachState {
    /// A connection opened; `relayed` as libp2p says of its endpoint (an
    /// inbound relayed connection's remote address is only `/p2p/ID`: the
    /// circuit shows in its local address).
    pub fn connection_established(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        remote: &Multiaddr,
        relayed: bool,
    ) {
        let transport = if relayed {
            Transport::Relayed
        } else {
            Transport::of(remote)
        };
        *self.connections.entry(transport).or_default() += 1;
        if self.open.len() < MAX_TRACKED {
            self.open.insert(id, (peer, transport));
        }
    }

    /// How this node is connected to `peer` now, one entry per connection.
    pub fn transports_to(&self, peer: &PeerId) -> Vec<Transport> {
        let mut found: Vec<Transport> = self
            .open
            .values()
            .filter(|(p, _)| p == peer)
            .map(|(_, t)| *t)
            .collect();
        found.sort();
        found
    }

    /// A ping was answered over `id`; true the first time, for an open
    /// connection.
    pub fn answered_ping(&mut self, id: ConnectionId) -> bool {
        self.open.contains_key(&id) && self.pinged.insert(id)
    }

    /// `peer`'s relayed connections when a direct one to it is open too
    /// (after a hole punch) and a ping has crossed it: they only cost the
    /// relay bandwidth.
    pub fn redundant_relayed(&self, peer: &PeerId) -> Vec<ConnectionId> {
        let to_peer = || self.open.iter().filter(move |(_, (p, _))| p == peer);
        let proven_direct =
            to_peer().any(|(id, (_, t))| *t != Transport::Relayed && self.pinged.contains(id));
        if !proven_direct {
            return Vec::new();
        }
        to_peer()
            .filter(|(_, (_, t))| *t == Transport::Relayed)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn connection_closed(&mut self, id: ConnectionId) {
        self.open.remove(&id);
        self.pinged.remove(&id);
    }

    /// A DCUtR attempt ended: with the direct connection `Ok(id)`, or not.
    pub fn hole_punch(&mut self, result: Result<ConnectionId, ()>) {
        let transport = result
            .ok()
            .and_then(|id| self.open.get(&id).map(|(_, t)| *t));
        match transport {
            Some(t) => *self.hole_punches.direct.entry(t).or_default() += 1,
            None => self.hole_punches.failed += 1,
        }
    }

    /// AutoNAT v2 tested `addr`: reachable from outside or not. The last
    /// verdict per address counts; at most 64 addresses are kept.
    pub fn tested(&mut self, addr: Multiaddr, reachable: bool) {
        if self.tested.len() >= 64 && !self.tested.contains_key(&addr) {
            return;
        }
        self.tested.insert(addr, reachable);
    }

    pub fn listening(&mut self, addr: &Multiaddr) {
        if Transport::of(addr) == Transport::Relayed && !self.relayed_addrs.contains(addr) {
            self.relayed_addrs.push(addr.clone());
        }
    }

    pub fn stopped_listening(&mut self, addr: &Multiaddr) {
        self.relayed_addrs.retain(|a| a != addr);
    }

    pub fn reservation_served(&mut self) {
        self.reservations_served += 1;
    }

    pub fn circuit_served(&mut self) {
        self.circuits_served += 1;
    }

    pub fn snapshot(&self) -> ReachSnapshot {
        let public: Vec<String> = self
            .tested
            .iter()
            .filter(|(_, ok)| **ok)
            .map(|(a, _)| a.to_string())
            .collect();
        let reachability = if !public.is_empty() {
            Reachability::Public
        } else if self.tested.is_empty() {
            Reachability::Unknown
        } else {
            Reachability::Private
        };
        ReachSnapshot {
            reachability,
            public_addrs: public,
            relayed_addrs: self.relayed_addrs.iter().map(|a| a.to_string()).collect(),
            connections: self.connections.clone(),
            hole_punches: self.hole_punches.clone(),
            relay_reservations_served: self.reservations_served,
            relay_circuits_served: self.circuits_served,
            upnp: self.upnp.clone(),
        }
    }
}

impl ReachSnapshot {
    /// What the node's advert says of how it is reached: direct once an
    /// address was confirmed from outside or a router with a public
    /// address forwards one (UPnP), else relayed while it holds a relay
    /// slot, else unknown.
    pub fn advertised(&self) -> fairgrid_protocol::messages::Reach {
        use fairgrid_protocol::messages::Reach;
        if self.reachability == Reachability::Public || self.upnp.is_mapped() {
            Reach::Direct
        } else if !self.relayed_addrs.is_empty() {
            Reach::Relayed
        } else {
            Reach::Unknown
        }
    }

    /// The Prometheus text of these figures.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let reachability = match self.reachability {
            Reachability::Unknown => 0,
            Reachability::Public => 1,
            Reachability::Private => 2,
        };
        let _ = writeln!(
            out,
            "# HELP fairgrid_reachability AutoNAT v2 verdict: 0 unknown, 1 public, 2 private.\n# TYPE fairgrid_reachability gauge\nfairgrid_reachability {reachability}"
        );
        let _ = writeln!(
            out,
            "# HELP fairgrid_relay_slots Relay slots this node holds.\n# TYPE fairgrid_relay_slots gauge\nfairgrid_relay_slots {}",
            self.relayed_addrs.len()
        );
        let _ = writeln!(
            out,
            "# HELP fairgrid_connections_total Connections established, by transport.\n# TYPE fairgrid_connections_total counter"
        );
        for t in [Transport::Tcp, Transport::Quic, Transport::Relayed] {
            let n = self.connections.get(&t).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "fairgrid_connections_total{{transport=\"{}\"}} {n}",
                t.label()
            );
        }
        let _ = writeln!(
            out,
            "# HELP fairgrid_hole_punches_total Hole-punch (DCUtR) attempts, by outcome and the transport of the direct connection made.\n# TYPE fairgrid_hole_punches_total counter"
        );
        for t in [Transport::Tcp, Transport::Quic] {
            let n = self.hole_punches.direct.get(&t).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "fairgrid_hole_punches_total{{outcome=\"direct\",transport=\"{}\"}} {n}",
                t.label()
            );
        }
        let _ = writeln!(
            out,
            "fairgrid_hole_punches_total{{outcome=\"failed\",transport=\"any\"}} {}",
            self.hole_punches.failed
        );
        let _ = writeln!(
            out,
            "# HELP fairgrid_relay_served_total As a relay: reservations accepted and circuits opened for other nodes.\n# TYPE fairgrid_relay_served_total counter\nfairgrid_relay_served_total{{what=\"reservation\"}} {}\nfairgrid_relay_served_total{{what=\"circuit\"}} {}",
            self.relay_reservations_served, self.relay_circuits_served
        );
        self.upnp.render(&mut out);
        out
    }
}

/// How long to wait before asking a relay for a slot again after
/// `failures` refusals or losses in a row: 5 s, doubling, at most 60 s (a
/// consortium relay admits a node a moment after it connects; one that is
/// down or refuses for good is not asked every 5 s forever).
pub fn relay_retry_delay(failures: u32) -> Duration {
    let first = Duration::from_secs(5);
    first
        .saturating_mul(1 << failures.saturating_sub(1).min(4))
        .min(Duration::from_secs(60))
}

/// The address to listen on for a slot on `relay`: `relay/p2p-circuit`.
pub fn circuit_listen_addr(relay: &Multiaddr) -> Multiaddr {
    relay.clone().with(Protocol::P2pCircuit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_transport_is_read_from_the_address() {
        let relay =
            "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        assert_eq!(Transport::of(&addr("/ip4/1.2.3.4/tcp/1")), Transport::Tcp);
        assert_eq!(
            Transport::of(&addr("/ip4/1.2.3.4/udp/1/quic-v1")),
            Transport::Quic
        );
        let circuit = circuit_listen_addr(&addr(relay));
        assert_eq!(Transport::of(&circuit), Transport::Relayed);
        assert!(circuit.to_string().ends_with("/p2p-circuit"));
    }

    #[test]
    fn a_peer_is_relayed_only_while_no_direct_connection_is_open() {
        assert!(!only_relayed(&[]));
        assert!(only_relayed(&[Transport::Relayed]));
        assert!(!only_relayed(&[Transport::Quic, Transport::Relayed]));
        assert!(!only_relayed(&[Transport::Tcp]));
    }

    #[test]
    fn relay_retries_back_off_to_a_minute() {
        let secs: Vec<u64> = (1..=7).map(|n| relay_retry_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn reachability_follows_autonat_verdicts() {
        let mut state = ReachState::default();
        assert_eq!(state.snapshot().reachability, Reachability::Unknown);
        state.tested(addr("/ip4/1.2.3.4/tcp/1"), false);
        assert_eq!(state.snapshot().reachability, Reachability::Private);
        state.tested(addr("/ip4/1.2.3.4/udp/1/quic-v1"), true);
        let snap = state.snapshot();
        assert_eq!(snap.reachability, Reachability::Public);
        assert_eq!(snap.public_addrs, vec!["/ip4/1.2.3.4/udp/1/quic-v1"]);
        // The latest verdict per address counts.
        state.tested(addr("/ip4/1.2.3.4/udp/1/quic-v1"), false);
        assert_eq!(state.snapshot().reachability, Reachability::Private);
    }

    #[test]
    fn relayed_connections_are_redundant_only_beside_a_direct_one() {
        let mut state = ReachState::default();
        let (peer, other) = (PeerId::random(), PeerId::random());
        let circuit = addr(
            "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        );
        let (relayed, second, direct, elsewhere) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
            ConnectionId::new_unchecked(4),
        );
        state.connection_established(relayed, peer, &circuit, true);
        state.connection_established(second, peer, &circuit, true);
        state.connection_established(elsewhere, other, &addr("/ip4/5.6.7.8/tcp/9"), false);
        assert!(
            state.redundant_relayed(&peer).is_empty(),
            "relayed only: the relay is the way to the peer"
        );
        state.connection_established(direct, peer, &addr("/ip4/1.2.3.4/udp/9/quic-v1"), false);
        assert!(
            state.redundant_relayed(&peer).is_empty(),
            "not before a ping has crossed the direct connection"
        );
        assert!(state.answered_ping(relayed));
        assert!(
            state.redundant_relayed(&peer).is_empty(),
            "a ping over a relayed connection proves nothing direct"
        );
        assert!(state.answered_ping(direct));
        assert!(!state.answered_ping(direct), "news only once");
        assert!(
            !state.answered_ping(ConnectionId::new_unchecked(99)),
            "not for a connection that is not open"
        );
        let mut redundant = state.redundant_relayed(&peer);
        redundant.sort();
        assert_eq!(redundant, vec![relayed, second]);
        assert!(state.redundant_relayed(&other).is_empty());
        state.connection_closed(direct);
        assert!(state.redundant_relayed(&peer).is_empty());
    }

    #[test]
    fn hole_punches_count_by_the_transport_of_the_direct_connection() {
        let mut state = ReachState::default();
        let (tcp, quic, relayed) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        let peer = PeerId::random();
        state.connection_established(relayed, peer, &addr("/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"), true);
        assert_eq!(state.transports_to(&peer), vec![Transport::Relayed]);
        state.connection_established(tcp, peer, &addr("/ip4/1.2.3.4/tcp/9"), false);
        state.connection_established(quic, peer, &addr("/ip4/1.2.3.4/udp/9/quic-v1"), false);
        assert_eq!(
            state.transports_to(&peer),
            vec![Transport::Tcp, Transport::Quic, Transport::Relayed]
        );
        assert!(state.transports_to(&PeerId::random()).is_empty());
        // Inbound through a relay, the remote address is only the peer id.
        let mut inbound_state = ReachState::default();
        let other = PeerId::random();
        let inbound = ConnectionId::new_unchecked(4);
        inbound_state.connection_established(inbound, other, &addr(&format!("/p2p/{other}")), true);
        assert_eq!(
            inbound_state.transports_to(&other),
            vec![Transport::Relayed]
        );
        state.hole_punch(Ok(tcp));
        state.hole_punch(Ok(quic));
        state.hole_punch(Err(()));
        // A connection closed before the outcome arrived counts as failed.
        state.connection_closed(tcp);
        state.hole_punch(Ok(tcp));
        let snap = state.snapshot();
        assert_eq!(snap.hole_punches.direct[&Transport::Tcp], 1);
        assert_eq!(snap.hole_punches.direct[&Transport::Quic], 1);
        assert_eq!(snap.hole_punches.failed, 2);
        assert_eq!(snap.connections[&Transport::Relayed], 1);
        let text = snap.render();
        assert!(
            text.contains("fairgrid_hole_punches_total{outcome=\"direct\",transport=\"quic\"} 1")
        );
        assert!(
            text.contains("fairgrid_hole_punches_total{outcome=\"failed\",transport=\"any\"} 2")
        );
        assert!(text.contains("fairgrid_connections_total{transport=\"relayed\"} 1"));
    }

    #[test]
    fn the_advert_says_direct_over_relayed_over_unknown() {
        use fairgrid_protocol::messages::Reach;
        let mut state = ReachState::default();
        assert_eq!(state.snapshot().advertised(), Reach::Unknown);
        state.tested(addr("/ip4/1.2.3.4/tcp/1"), false);
        assert_eq!(state.snapshot().advertised(), Reach::Unknown);
        state.listening(&addr("/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"));
        assert_eq!(state.snapshot().advertised(), Reach::Relayed);
        state.tested(addr("/ip4/1.2.3.4/udp/1/quic-v1"), true);
        assert_eq!(state.snapshot().advertised(), Reach::Direct);
    }

    #[test]
    fn relayed_listen_addresses_are_the_relay_slots() {
        let mut state = ReachState::default();
        let slot = addr(
            "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
        );
        state.listening(&addr("/ip4/127.0.0.1/tcp/5"));
        state.listening(&slot);
        state.listening(&slot);
        assert_eq!(state.snapshot().relayed_addrs.len(), 1);
        state.stopped_listening(&slot);
        assert!(state.snapshot().relayed_addrs.is_empty());
    }

    #[test]
    fn a_consortium_relay_serves_only_admitted_peers_with_raised_limits() {
        let admitted = Admitted::default();
        let open = relay_config(None, &admitted);
        let defaults = relay::Config::default();
        assert_eq!(open.max_circuit_bytes, defaults.max_circuit_bytes);
        assert_eq!(open.max_circuit_duration, defaults.max_circuit_duration);
        let limits = CircuitLimits {
            duration: Duration::from_secs(3600),
            bytes: 1 << 30,
        };
        let mut consortium = relay_config(Some(limits), &admitted);
        assert_eq!(consortium.max_circuit_bytes, 1 << 30);
        let (member, stranger) = (PeerId::random(), PeerId::random());
        admitted.insert(member);
        let at = addr("/ip4/1.2.3.4/tcp/1");
        let now = Instant::now();
        let gate = consortium.reservation_rate_limiters.last_mut().unwrap();
        assert!(gate.try_next(member, &at, now));
        assert!(!gate.try_next(stranger, &at, now));
        let gate = consortium.circuit_src_rate_limiters.last_mut().unwrap();
        assert!(!gate.try_next(stranger, &at, now));
        admitted.remove(&member);
        assert!(!gate.try_next(member, &at, now));
    }
}
