//! The application event loop: takes what the network hands over and
//! dispatches it. Handlers never block; slow work is spawned.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{Shared, gossip, requests, trust};
use crate::net::NetEvent;

pub async fn run(
    shared: Arc<Shared>,
    mut events: mpsc::Receiver<NetEvent>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => handle(&shared, event).await,
                None => return,
            },
            _ = stop.changed() => return,
        }
    }
}

async fn handle(shared: &Arc<Shared>, event: NetEvent) {
    match event {
        NetEvent::Gossip {
            topic,
            source,
            message_id,
            data,
        } => {
            let verdict = gossip::route(shared, topic, source, &data);
            let _ = shared.net.validate(message_id, source, verdict).await;
        }
        NetEvent::Request {
            peer,
            request,
            channel,
        } => requests::handle(shared, peer, request, channel).await,
        NetEvent::Connected { peer } => trust::on_connected(shared, peer),
        NetEvent::Disconnected { peer } => {
            trust::on_disconnected(shared, peer);
            crate::jobs::on_disconnected(&shared.jobs, &peer);
        }
        NetEvent::Subscribed { .. } => {}
        NetEvent::NewListenAddr { addr } => {
            if let Ok(mut addrs) = shared.listen_addrs.lock()
                && !addrs.contains(&addr)
            {
                addrs.push(addr);
            }
        }
    }
}
