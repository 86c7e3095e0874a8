//! Incoming handshakes in progress, per remote IP address. libp2p's
//! connection limits count pending incoming connections only in total: a
//! few hundred silent TCP connections from one host, each held until the
//! 10 s upgrade timeout and opened again, kept every slot full, and a new
//! node could not join for as long as they lasted. With at most
//! `max_per_ip` handshakes from any one address, junk from one host takes
//! a few slots and the rest stay free for peers from elsewhere.
//!
//! The counting is a plain value ([`PendingByIp`]) so it can be tested
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

/// Pending incoming connections by remote IP.
#[derive(Debug, Default)]
pub struct PendingByIp {
    max_per_ip: usize,
    by_connection: HashMap<ConnectionId, IpAddr>,
    by_ip: HashMap<IpAddr, usize>,
}

/// A connection refused because its address has too many handshakes open.
#[derive(Debug)]
pub struct TooManyFromIp {
    pub ip: IpAddr,
    pub max: usize,
}

impl std::fmt::Display for TooManyFromIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} incoming handshakes already in progress from {}",
            self.max, self.ip
        )
    }
}

impl std::error::Error for TooManyFromIp {}

impl PendingByIp {
    pub fn new(max_per_ip: usize) -> PendingByIp {
        PendingByIp {
            max_per_ip,
            ..PendingByIp::default()
        }
    }

    /// Admits a new pending connection from `ip`, or says why not.
    pub fn admit(&mut self, connection: ConnectionId, ip: IpAddr) -> Result<(), TooManyFromIp> {
        let count = self.by_ip.entry(ip).or_default();
        if *count >= self.max_per_ip {
            return Err(TooManyFromIp {
                ip,
                max: self.max_per_ip,
            });
        }
        *count += 1;
        self.by_connection.insert(connection, ip);
        Ok(())
    }

    /// The connection's handshake ended (established, failed or denied).
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

    pub fn pending_from(&self, ip: &IpAddr) -> usize {
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
    pending: PendingByIp,
}

impl Behaviour {
    pub fn new(max_per_ip: usize) -> Behaviour {
        Behaviour {
            pending: PendingByIp::new(max_per_ip),
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
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending.done(connection_id);
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
            FromSwarm::ListenFailure(failure) => self.pending.done(failure.connection_id),
            FromSwarm::ConnectionEstablished(established) => {
                self.pending.done(established.connection_id)
            }
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
        let mut pending = PendingByIp::new(2);
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
        assert!(refused.to_string().contains("from 127.0.0.2"), "{refused}");
        // Others still get in.
        pending.admit(d, honest).unwrap();
        // A handshake that ends frees its slot; a refused one held none.
        pending.done(a);
        pending.done(c);
        assert_eq!(pending.pending_from(&junk), 1);
        pending.admit(c, junk).unwrap();
        for id in [b, c, d] {
            pending.done(id);
        }
        assert_eq!(pending.pending_from(&junk), 0);
        assert_eq!(pending.pending_from(&honest), 0);
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
}
