//! UPnP port mapping (`network.upnp`): libp2p asks the LAN's router (an
//! Internet Gateway Device, found by SSDP) to forward this node's listen
//! ports, and confirms the mapped address as external when the router's
//! own address is public. This keeps what the router said, for the API,
//! `/metrics` and the advert's reach.

use std::fmt::Write;

use libp2p::{Multiaddr, upnp};
use serde::Serialize;

/// Mapped addresses kept, at most (a node listens on a few ports).
const MAX_MAPPED: usize = 16;

/// Where port mapping stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpnpStatus {
    /// `network.upnp = false`.
    #[default]
    Off,
    /// Looking for the router.
    Searching,
    /// The router answered; `mapped` holds what it forwards (empty when
    /// every mapping has since expired).
    Gateway,
    /// No router answered the search.
    NoGateway,
    /// The router's own address is not public (another NAT is in front
    /// of it), so a mapping would not make this node reachable.
    NonRoutableGateway,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct UpnpState {
    pub status: UpnpStatus,
    /// External addresses the router forwards to this node.
    pub mapped: Vec<String>,
    /// Mappings the router stopped renewing.
    pub expired: u64,
}

impl UpnpState {
    pub fn new(enabled: bool) -> UpnpState {
        UpnpState {
            status: if enabled {
                UpnpStatus::Searching
            } else {
                UpnpStatus::Off
            },
            ..UpnpState::default()
        }
    }

    pub fn on_event(&mut self, event: &upnp::Event) {
        match event {
            upnp::Event::NewExternalAddr { external_addr, .. } => {
                self.status = UpnpStatus::Gateway;
                self.add(external_addr);
            }
            upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                let gone = external_addr.to_string();
                self.mapped.retain(|a| *a != gone);
                self.expired += 1;
            }
            upnp::Event::GatewayNotFound => self.status = UpnpStatus::NoGateway,
            upnp::Event::NonRoutableGateway => self.status = UpnpStatus::NonRoutableGateway,
        }
    }

    fn add(&mut self, addr: &Multiaddr) {
        let addr = addr.to_string();
        if !self.mapped.contains(&addr) && self.mapped.len() < MAX_MAPPED {
            self.mapped.push(addr);
        }
    }

    /// Whether the router forwards some address to this node.
    pub fn is_mapped(&self) -> bool {
        !self.mapped.is_empty()
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP fairgrid_upnp_mapped_addrs Addresses the LAN's router forwards to this node (UPnP).\n# TYPE fairgrid_upnp_mapped_addrs gauge\nfairgrid_upnp_mapped_addrs {}",
            self.mapped.len()
        );
        let _ = writeln!(
            out,
            "# HELP fairgrid_upnp_expired_total UPnP mappings the router stopped renewing.\n# TYPE fairgrid_upnp_expired_total counter\nfairgrid_upnp_expired_total {}",
            self.expired
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn mappings_come_and_go_as_the_router_says() {
        let mut state = UpnpState::new(true);
        assert_eq!(state.status, UpnpStatus::Searching);
        let local = addr("/ip4/192.168.1.2/tcp/4001");
        let external = addr("/ip4/44.0.0.2/tcp/4001");
        for _ in 0..2 {
            state.on_event(&upnp::Event::NewExternalAddr {
                local_addr: local.clone(),
                external_addr: external.clone(),
            });
        }
        assert_eq!(state.status, UpnpStatus::Gateway);
        assert_eq!(state.mapped, vec!["/ip4/44.0.0.2/tcp/4001".to_string()]);
        assert!(state.is_mapped());
        state.on_event(&upnp::Event::ExpiredExternalAddr {
            local_addr: local,
            external_addr: external,
        });
        assert!(!state.is_mapped());
        assert_eq!(state.expired, 1);
        let mut text = String::new();
        state.render(&mut text);
        assert!(text.contains("fairgrid_upnp_mapped_addrs 0"), "{text}");
        assert!(text.contains("fairgrid_upnp_expired_total 1"), "{text}");
    }

    #[test]
    fn no_router_and_a_router_behind_another_nat_are_told_apart() {
        let mut state = UpnpState::new(true);
        state.on_event(&upnp::Event::GatewayNotFound);
        assert_eq!(state.status, UpnpStatus::NoGateway);
        state.on_event(&upnp::Event::NonRoutableGateway);
        assert_eq!(state.status, UpnpStatus::NonRoutableGateway);
        assert_eq!(UpnpState::new(false).status, UpnpStatus::Off);
    }
}
