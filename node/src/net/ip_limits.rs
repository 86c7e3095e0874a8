//! Incoming connections per remote IP address, handshakes in progress and
//! established ones counted apart. libp2p's connection limits count only
//! totals: a few hundred silent TCP connections from one host, each held
//! until the 10 s upgrade timeout and opened again, kept every pending
//! slot full, and a new node could not join for as long as they lasted;
//! one host minting peer ids could likewise fill every established slot.
//! With at most `network.max_pending_incoming_per_ip` handshakes and
//! `network.max_established_incoming_per_ip` connections from any one
//! address, one host takes a few slots and the rest stay free for peers
//! from elsewhere. The established limit is higher: a lab behind one NAT
//! address runs many honest nodes.
//!
//! The counting is a plain value ([`CountByIp`]) so it can be tested
//! without a swarm; [`Behaviour`] feeds it the swarm's events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Incoming connections (pending or established) by remote IP.
#[derive(Debug, Default)]
pub struct CountByIp {
    what: &'static str,
    max_per_ip: usize,
    by_connection: HashMap<ConnectionId, IpAddr>,
    by_ip: HashMap<IpAddr, usize>,
}

/// A connection refused because its address has too many open.
#[derive(Debug)]
pub struct TooManyFromIp {
    pub ip: IpAddr,
    pub max: usize,
    pub what: &'static str,
}

impl std::fmt::Display for TooManyFromIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} already from {}", self.max, self.what, self.ip)
    }
}

impl std::error::Error for TooManyFromIp {}

impl CountByIp {
    /// Counts up to `max_per_ip` of `what` ("incoming handshakes in
    /// progress") per address.
    pub fn new(what: &'static str, max_per_ip: usize) -> CountByIp {
        CountByIp {
            what,
            max_per_ip,
            ..CountByIp::default()
        }
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(&mut self, connection: ConnectionId, ip: IpAddr) -> Result<(), TooManyFromIp> {
        let count = self.by_ip.entry(ip).or_default();
        if *count >= self.max_per_ip {
            return Err(TooManyFromIp {
                ip,
                max: self.max_per_ip,
                what: self.what,
            });
        }
        *count += 1;
        self.by_connection.insert(connection, ip);
        Ok(())
    }

    /// The connection left this count (its handshake ended, or it
    /// closed); unknown connections are ignored.
    pub fn done(&mut self, connection: ConnectionId) {
        let Some(ip) = self.by_connection.remove(&connection) else {
            return;
        };
        if let Some(count) = self.by_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }

    pub fn count_from(&self, ip: &IpAddr) -> usize {
        self.by_ip.get(ip).copied().unwrap_or(0)
    }
}

/// The remote IP of a multiaddr, if it names one.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

pub struct Behaviour {
    pending: CountByIp,
    established: CountByIp,
}

impl Behaviour {
    pub fn new(max_pending_per_ip: usize, max_established_per_ip: usize) -> Behaviour {
        Behaviour {
            pending: CountByIp::new("incoming handshakes in progress", max_pending_per_ip),
            established: CountByIp::new("incoming connections", max_established_per_ip),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match ip_of(remote_addr) {
            Some(ip) => self
                .pending
                .admit(connection_id, ip)
                .map_err(ConnectionDenied::new),
            None => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending.done(connection_id);
        if let Some(ip) = ip_of(remote_addr) {
            self.established
                .admit(connection_id, ip)
                .map_err(ConnectionDenied::new)?;
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            // Another behaviour may deny a connection this one admitted.
            FromSwarm::ListenFailure(failure) => {
                self.pending.done(failure.connection_id);
                self.established.done(failure.connection_id);
            }
            FromSwarm::ConnectionEstablished(established) => {
                self.pending.done(established.connection_id)
            }
            FromSwarm::ConnectionClosed(closed) => self.established.done(closed.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_at_most_its_share_of_handshakes() {
        let mut pending = CountByIp::new("incoming handshakes in progress", 2);
        let junk: IpAddr = "127.0.0.2".parse().unwrap();
        let honest: IpAddr = "127.0.0.1".parse().unwrap();
        let (a, b, c, d) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
            ConnectionId::new_unchecked(4),
        );
        pending.admit(a, junk).unwrap();
        pending.admit(b, junk).unwrap();
        let refused = pending.admit(c, junk).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "2 incoming handshakes in progress already from 127.0.0.2"
        );
        // Others still get in.
        pending.admit(d, honest).unwrap();
        // A handshake that ends frees its slot; a refused one held none.
        pending.done(a);
        pending.done(c);
        assert_eq!(pending.count_from(&junk), 1);
        pending.admit(c, junk).unwrap();
        for id in [b, c, d] {
            pending.done(id);
        }
        assert_eq!(pending.count_from(&junk), 0);
        assert_eq!(pending.count_from(&honest), 0);
        assert!(pending.by_connection.is_empty() && pending.by_ip.is_empty());
    }

    #[test]
    fn the_remote_ip_is_read_from_the_address() {
        let v4: Multiaddr = "/ip4/10.1.2.3/tcp/4001".parse().unwrap();
        let v6: Multiaddr = "/ip6/::1/tcp/4001".parse().unwrap();
        assert_eq!(ip_of(&v4), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(ip_of(&v6), Some("::1".parse().unwrap()));
        assert_eq!(ip_of(&"/dns4/example.org/tcp/1".parse().unwrap()), None);
    }

    fn swarm<B: NetworkBehaviour>(behaviour: B) -> libp2p::Swarm<B> {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|_| behaviour)
            .expect("behaviour")
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(std::time::Duration::from_secs(60))
            })
            .build()
    }

    /// Drives `server` until it has `count` connections, or 10 s pass.
    async fn established(server: &mut libp2p::Swarm<Behaviour>, count: usize) -> usize {
        use futures::StreamExt;
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.network_info().num_peers() != count {
            if tokio::time::timeout_at(until, server.select_next_some())
                .await
                .is_err()
            {
                break;
            }
        }
        // A little longer, to see any connection beyond `count`.
        let settle = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
        while tokio::time::timeout_at(settle, server.select_next_some())
            .await
            .is_ok()
        {}
        server.network_info().num_peers()
    }

    #[tokio::test]
    async fn a_swarm_keeps_at_most_its_share_of_connections_from_one_address() {
        use futures::StreamExt;
        let mut server = swarm(Behaviour::new(8, 2));
        server
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let address = loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                server.select_next_some().await
            {
                break address;
            }
        };
        // Four identities minted on one host dial in: two are kept.
        let mut clients: Vec<_> = (0..4).map(|_| swarm(dummy::Behaviour)).collect();
        let drive = |clients: &mut Vec<libp2p::Swarm<dummy::Behaviour>>| {
            for client in clients.iter_mut() {
                client.dial(address.clone()).unwrap();
            }
        };
        drive(&mut clients);
        let clients_task = {
            let clients = std::mem::take(&mut clients);
            tokio::spawn(async move {
                let mut clients = clients;
                loop {
                    for client in clients.iter_mut() {
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_millis(5),
                            client.select_next_some(),
                        )
                        .await;
                    }
                }
            })
        };
        assert_eq!(established(&mut server, 2).await, 2);
        assert_eq!(
            server
                .behaviour()
                .established
                .count_from(&"127.0.0.1".parse().unwrap()),
            2
        );
        // Those clients go away: their slots are free again.
        clients_task.abort();
        let _ = clients_task.await;
        assert_eq!(established(&mut server, 0).await, 0);
        assert_eq!(
            server
                .behaviour()
                .established
                .count_from(&"127.0.0.1".parse().unwrap()),
            0
        );
        let mut again: Vec<_> = (0..1).map(|_| swarm(dummy::Behaviour)).collect();
        drive(&mut again);
        let again_task = tokio::spawn(async move {
            loop {
                let _ = again[0].select_next_some().await;
            }
        });
        assert_eq!(established(&mut server, 1).await, 1);
        again_task.abort();
    }
}
