//! Who may take part. In open mode every peer is admitted. In consortium
//! mode a peer must show, right after connecting, a certificate from an
//! allowlisted owner (the `Hello` request, answered by ours); a peer that
//! cannot is refused, disconnected and blocked, and until it is admitted
//! nothing it relays is accepted.

use std::sync::Arc;
use std::time::Duration;

use fairgrid_protocol::cert::Ownership;
use fairgrid_protocol::{NodeId, OwnerCertificate, PROTOCOL_VERSION, Signed};
use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use tracing::{info, warn};

use super::{Shared, adverts};
use crate::ledger::now_ms;
use crate::metrics::Metrics;
use crate::net::{Hello, Request, Response};

const TARGET: &str = "fairgrid::trust";

pub use crate::state::Admission;

pub fn is_admitted(shared: &Shared, peer: &PeerId) -> bool {
    shared
        .admission
        .lock()
        .map(|a| a.admitted.contains(peer))
        .unwrap_or(false)
}

pub fn is_refused(shared: &Shared, peer: &PeerId) -> bool {
    shared
        .admission
        .lock()
        .map(|a| a.refused.contains(peer))
        .unwrap_or(false)
}

fn our_hello(shared: &Shared) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        certificate: shared.cert.clone(),
    }
}

pub fn on_connected(shared: &Arc<Shared>, peer: PeerId) {
    if !shared.consortium() {
        if let Ok(mut a) = shared.admission.lock() {
            a.admitted.insert(peer);
        }
        adverts::request_snapshot(shared, peer);
        return;
    }
    let shared = Arc::clone(shared);
    let timeout = Duration::from_millis(shared.config.trust.hello_timeout_ms.max(100));
    tokio::spawn(async move {
        let answer = tokio::time::timeout(
            timeout,
            shared.net.request(peer, Request::Hello(our_hello(&shared))),
        )
        .await;
        match answer {
            Ok(Ok(Response::Hello(hello))) => {
                match check(&shared, &peer, hello.certificate.as_ref()) {
                    Ok(ownership) => {
                        admit(&shared, peer, ownership, hello.certificate.as_ref()).await
                    }
                    Err(reason) => refuse(&shared, peer, &reason).await,
                }
            }
            Ok(Ok(Response::Refused { reason })) => {
                refuse(
                    &shared,
                    peer,
                    &format!("it refused our certificate: {reason}"),
                )
                .await
            }
            Ok(Ok(_)) => {
                refuse(
                    &shared,
                    peer,
                    "unexpected answer to the certificate handshake",
                )
                .await
            }
            Ok(Err(e)) => {
                refuse(&shared, peer, &format!("certificate handshake failed: {e}")).await
            }
            Err(_) => refuse(&shared, peer, "no certificate within the handshake timeout").await,
        }
    });
}

pub fn on_disconnected(shared: &Arc<Shared>, peer: PeerId) {
    if let Ok(mut a) = shared.admission.lock() {
        a.admitted.remove(&peer);
    }
}

/// A peer's `Hello`: in consortium mode, check its certificate; answer
/// with ours either way (open-mode nodes answer every hello).
pub async fn on_hello(
    shared: &Arc<Shared>,
    peer: PeerId,
    hello: Hello,
    channel: ResponseChannel<Response>,
) {
    if !shared.consortium() {
        let _ = shared
            .net
            .respond(channel, Response::Hello(our_hello(shared)))
            .await;
        return;
    }
    match check(shared, &peer, hello.certificate.as_ref()) {
        Ok(ownership) => {
            let _ = shared
                .net
                .respond(channel, Response::Hello(our_hello(shared)))
                .await;
            admit(shared, peer, ownership, hello.certificate.as_ref()).await;
        }
        Err(reason) => {
            let _ = shared
                .net
                .respond(channel, Response::refused(&reason))
                .await;
            // Give the refusal a moment to reach the peer before closing.
            tokio::time::sleep(Duration::from_millis(200)).await;
            refuse(shared, peer, &reason).await;
        }
    }
}

fn check(
    shared: &Shared,
    peer: &PeerId,
    cert: Option<&Signed<OwnerCertificate>>,
) -> Result<Ownership, String> {
    let node = NodeId::from_peer_id_string(&peer.to_string())
        .map_err(|e| format!("peer id is not a fairgrid node key: {e}"))?;
    shared
        .trust
        .resolve_owner(&node, cert, now_ms())
        .map_err(|e| e.to_string())
}

async fn admit(
    shared: &Arc<Shared>,
    peer: PeerId,
    ownership: Ownership,
    cert: Option<&Signed<OwnerCertificate>>,
) {
    let fresh = shared
        .admission
        .lock()
        .map(|mut a| a.admitted.insert(peer))
        .unwrap_or(false);
    if !fresh {
        return;
    }
    Metrics::inc(&shared.metrics.peers_admitted);
    info!(target: TARGET, %peer, owner = %ownership.owner, label = %ownership.label, "peer admitted");
    let _ = shared.net.admit(peer).await;
    if let Ok(node) = NodeId::from_peer_id_string(&peer.to_string()) {
        shared.record_certificate(node, &ownership, cert);
    }
    adverts::request_snapshot(shared, peer);
}

async fn refuse(shared: &Arc<Shared>, peer: PeerId, reason: &str) {
    if let Ok(mut a) = shared.admission.lock() {
        a.admitted.remove(&peer);
        a.refused.insert(peer);
    }
    Metrics::inc(&shared.metrics.peers_refused);
    warn!(target: TARGET, %peer, %reason, "peer refused: uncertified in consortium mode; disconnecting");
    let _ = shared.net.ban(peer).await;
}
