//! The node's advert work: validating incoming adverts (gossip and
//! snapshots), publishing its own, and dropping expired ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fairgrid_protocol::ledger::EntryBody;
use libp2p::PeerId;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{AdvertNotice, Shared, trust};
use crate::adverts::{AdvertRejection, validate_advert};
use crate::ledger::now_ms;
use crate::metrics::Metrics;
use crate::net::wire::MAX_SNAPSHOT_ADVERTS;
use crate::net::{Request, Response, Topic, Verdict};

const TARGET: &str = "fairgrid::adverts";

/// A gossiped advert: only admitted peers may relay (consortium mode).
pub fn on_gossip(shared: &Arc<Shared>, source: PeerId, data: &[u8]) -> Verdict {
    if shared.consortium() && !trust::is_admitted(shared, &source) {
        Metrics::inc(&shared.metrics.adverts_from_unadmitted);
        let refused = trust::is_refused(shared, &source);
        warn!(target: TARGET, peer = %source, reason = "uncertified in consortium mode: relayed by a peer without a valid certificate", "advert rejected");
        return if refused {
            Verdict::Reject
        } else {
            Verdict::Ignore
        };
    }
    match accept(shared, data, &source.to_string(), false) {
        Ok(true) => Verdict::Accept,
        Ok(false) => Verdict::Ignore,
        Err(reason) => {
            warn!(target: TARGET, peer = %source, code = reason.code(), reason = %reason, "advert rejected");
            Verdict::Reject
        }
    }
}

/// Validates and stores an advert. Ok(false): valid but not stored (our
/// own, or the table is full). In a snapshot, adverts we already hold are
/// expected and not counted as rejections.
fn accept(
    shared: &Arc<Shared>,
    data: &[u8],
    from: &str,
    snapshot: bool,
) -> Result<bool, AdvertRejection> {
    let now = now_ms();
    let accepted = {
        let mut table = shared.adverts.lock().expect("advert table lock");
        let accepted = validate_advert(data, now, &shared.trust, |node| table.last_seq(node));
        let accepted = match accepted {
            Ok(a) => a,
            Err(reason) => {
                if !(snapshot && matches!(reason, AdvertRejection::ReplayedSeq { .. })) {
                    shared.metrics.reject(&reason);
                }
                return Err(reason);
            }
        };
        if accepted.advert.node == shared.node_id {
            return Ok(false);
        }
        if !table.insert(accepted.clone(), now, from.to_string()) {
            warn!(target: TARGET, node = %accepted.advert.node, "advert table full; advert ignored");
            return Ok(false);
        }
        accepted
    };
    Metrics::inc(&shared.metrics.adverts_accepted);
    debug!(target: TARGET, node = %accepted.advert.node, seq = accepted.advert.seq, peer = from, "advert accepted");
    let _ = shared.notices.send(AdvertNotice {
        node: accepted.advert.node,
        seq: accepted.advert.seq,
        at: Instant::now(),
    });
    shared.record(EntryBody::AdvertSeen {
        advert_id: accepted.id,
        node: accepted.advert.node,
        owner: accepted.ownership.owner,
        seq: accepted.advert.seq,
        expires_at: accepted.advert.expires_at,
    });
    shared.record_certificate(
        accepted.advert.node,
        &accepted.ownership,
        accepted.advert.owner_cert.as_ref(),
    );
    Ok(true)
}

/// The live adverts this node holds, for a peer's snapshot request.
pub fn snapshot(shared: &Arc<Shared>) -> Vec<Vec<u8>> {
    let now = now_ms();
    let table = shared.adverts.lock().expect("advert table lock");
    table
        .live(now)
        .into_iter()
        .take(MAX_SNAPSHOT_ADVERTS)
        .map(|a| a.signed.to_bytes())
        .collect()
}

/// Asks a newly admitted peer for the adverts it holds, so a newcomer
/// sees the network without waiting for every node's next re-issue.
pub fn request_snapshot(shared: &Arc<Shared>, peer: PeerId) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        match shared.net.request(peer, Request::AdvertSnapshot).await {
            Ok(Response::Adverts(list)) => {
                let mut fresh = 0;
                for data in list.iter().take(MAX_SNAPSHOT_ADVERTS) {
                    match accept(&shared, data, &peer.to_string(), true) {
                        Ok(true) => fresh += 1,
                        Ok(false) | Err(AdvertRejection::ReplayedSeq { .. }) => {}
                        Err(reason) => {
                            warn!(target: TARGET, %peer, code = reason.code(), reason = %reason, "advert in snapshot rejected");
                        }
                    }
                }
                debug!(target: TARGET, %peer, received = list.len(), fresh, "advert snapshot");
            }
            Ok(Response::Refused { reason }) => {
                debug!(target: TARGET, %peer, %reason, "advert snapshot refused");
            }
            Ok(_) => {
                warn!(target: TARGET, %peer, "unexpected answer to an advert snapshot request")
            }
            Err(e) => debug!(target: TARGET, %peer, error = %e, "advert snapshot failed"),
        }
    });
}

/// Issues and publishes this node's advert whenever it is due.
pub async fn publish_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_failure_log = None::<Instant>;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = now_ms();
        let reach = shared.net.reach().await.map(|r| r.advertised());
        let signed = {
            let mut publisher = shared.publisher.lock().expect("publisher lock");
            if let Ok(reach) = reach {
                publisher.set_reach(reach);
            }
            if !publisher.due(now) {
                continue;
            }
            publisher.issue(now)
        };
        let bytes = signed.to_bytes();
        // Our own advert goes in our table too (it is what peers see).
        match validate_advert(&bytes, now, &shared.trust, |_| None) {
            Ok(own) => {
                let mut table = shared.adverts.lock().expect("advert table lock");
                table.insert(own, now, "self".into());
            }
            Err(reason) => {
                warn!(target: TARGET, reason = %reason, "own advert is invalid; check the certificate and offer");
            }
        }
        match shared.net.publish(Topic::Adverts, bytes).await {
            Ok(()) => {
                Metrics::inc(&shared.metrics.adverts_published);
                debug!(target: TARGET, seq = now, "advert published");
            }
            Err(e) => {
                // No subscribed peer yet: try again with a fresh advert.
                shared
                    .publisher
                    .lock()
                    .expect("publisher lock")
                    .invalidate();
                if last_failure_log.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    info!(target: TARGET, error = %e, "advert not published yet (no subscribed peers); retrying");
                    last_failure_log = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Drops expired adverts from the live table.
pub async fn prune_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let expired = shared
            .adverts
            .lock()
            .expect("advert table lock")
            .prune(now_ms());
        for node in expired {
            Metrics::inc(&shared.metrics.adverts_expired);
            info!(target: TARGET, %node, "advert expired; node dropped from the table");
        }
    }
}
