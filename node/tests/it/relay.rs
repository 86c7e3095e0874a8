//! Issue 16, reachability, on 127.0.0.1: a node that listens on no address
//! of its own (as behind a NAT or a firewall that only lets it dial out)
//! holds a slot on a relay and is reached through it; a consortium relay
//! serves only the peers it has admitted.

use std::time::Duration;

use fairgrid_node::net::{self, NetConfig, NetEvent, NetworkClient, Request, Response, Verdict};
use fairgrid_protocol::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::common::wait_for;

const WAIT: Duration = Duration::from_secs(30);

/// An in-process network peer that answers every request `Accepted`.
fn peer(seed: &[u8], set_up: impl FnOnce(&mut NetConfig)) -> (PeerId, NetworkClient) {
    let key = Keypair::from_seed(seed);
    let mut config = NetConfig::from_config(&Default::default(), false).unwrap();
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    config.autonat = false;
    config.target_peers = 2;
    set_up(&mut config);
    let (client, mut events, _task) = net::spawn(&key, config).unwrap();
    let answer = client.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                NetEvent::Request { channel, .. } => {
                    let _ = answer.respond(channel, Response::Accepted).await;
                }
                NetEvent::Gossip {
                    message_id, source, ..
                } => {
                    let _ = answer.validate(message_id, source, Verdict::Ignore).await;
                }
                _ => {}
            }
        }
    });
    (client.local_peer_id(), client)
}

/// The relay's dialable address, with its peer id.
async fn address_of(id: PeerId, client: &NetworkClient) -> Multiaddr {
    let addr = wait_for(WAIT, "the relay to listen", || async {
        client.listen_addrs().await.ok()?.into_iter().next()
    })
    .await;
    addr.with(Protocol::P2p(id))
}

async fn wait_for_slot(client: &NetworkClient, what: &str) -> String {
    wait_for(WAIT, what, || async {
        client.reach().await.ok()?.relayed_addrs.into_iter().next()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_no_address_of_its_own_is_reached_through_a_relay() {
    let (relay_id, relay) = peer(b"relay", |c| c.relay_server = true);
    let relay_addr = address_of(relay_id, &relay).await;
    let (hidden_id, hidden) = peer(b"hidden", |c| {
        c.listen = Vec::new();
        c.relays = vec![relay_addr.clone()];
    });
    let slot = wait_for_slot(&hidden, "the hidden node's relay slot").await;
    assert!(slot.starts_with(&relay_addr.to_string()), "{slot}");

    let (_, caller) = peer(b"caller", |c| c.listen = Vec::new());
    let via_relay = relay_addr
        .clone()
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(hidden_id));
    caller.dial(via_relay).await.unwrap();
    let answer = wait_for(WAIT, "an answer through the relay", || async {
        caller
            .request(hidden_id, Request::AdvertSnapshot)
            .await
            .ok()
    })
    .await;
    assert!(matches!(answer, Response::Accepted), "{answer:?}");

    let seen = caller.reach().await.unwrap();
    assert!(
        seen.connections
            .get(&net::reach::Transport::Relayed)
            .is_some_and(|n| *n >= 1),
        "the caller made no relayed connection: {seen:?}"
    );
    let served = relay.reach().await.unwrap();
    assert!(served.relay_reservations_served >= 1, "{served:?}");
    assert!(served.relay_circuits_served >= 1, "{served:?}");
    for client in [caller, hidden, relay] {
        let _ = client.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consortium_relay_serves_a_node_only_once_admitted() {
    let limits = net::reach::CircuitLimits {
        duration: Duration::from_secs(3600),
        bytes: 1 << 30,
    };
    let (relay_id, relay) = peer(b"consortium-relay", |c| {
        c.relay_server = true;
        c.relay_consortium_limits = Some(limits);
    });
    let relay_addr = address_of(relay_id, &relay).await;
    let (member_id, member) = peer(b"member", |c| {
        c.listen = Vec::new();
        c.relays = vec![relay_addr.clone()];
    });
    // Refused while not admitted (asked for again after 5 s, then 10 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = member.reach().await.unwrap();
    assert!(
        before.relayed_addrs.is_empty(),
        "a slot before admission: {before:?}"
    );
    assert_eq!(relay.reach().await.unwrap().relay_reservations_served, 0);
    relay.admit(member_id).await.unwrap();
    wait_for_slot(&member, "the admitted node's relay slot").await;
    for client in [member, relay] {
        let _ = client.shutdown().await;
    }
}

/// Two nodes that meet through a relay punch a hole (DCUtR) and go on
/// over a direct connection; on 127.0.0.1 nothing stands in the way, so
/// the attempt must succeed, and both sides count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_meet_through_a_relay_upgrade_to_a_direct_connection() {
    let (relay_id, relay) = peer(b"dcutr-relay", |c| c.relay_server = true);
    let relay_addr = address_of(relay_id, &relay).await;
    let (listener_id, listener) = peer(b"dcutr-listener", |c| {
        c.relays = vec![relay_addr.clone()];
    });
    wait_for_slot(&listener, "the listener's relay slot").await;
    let (_, dialer) = peer(b"dcutr-dialer", |c| c.relays = vec![relay_addr.clone()]);
    wait_for_slot(&dialer, "the dialer's relay slot").await;
    dialer
        .dial(
            relay_addr
                .clone()
                .with(Protocol::P2pCircuit)
                .with(Protocol::P2p(listener_id)),
        )
        .await
        .unwrap();
    let punched = wait_for(WAIT, "a hole punched", || async {
        let mut direct = 0;
        for side in [&dialer, &listener] {
            let reach = side.reach().await.ok()?;
            direct += reach.hole_punches.direct.values().sum::<u64>();
        }
        (direct > 0).then_some(direct)
    })
    .await;
    assert!(punched >= 1);
    for client in [dialer, listener, relay] {
        let _ = client.shutdown().await;
    }
}
