//! Node routes: status, peers (list and dial), adverts, metrics.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use fairgrid_protocol::NodeId;
use fairgrid_sdk::{AdvertInfo, DialAccepted, DialRequest, LedgerSummary, PeerInfo, Status};
use libp2p::Multiaddr;

use super::error::{ApiError, ApiJson};
use super::views;
use crate::ledger::now_ms;
use crate::state::Shared;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers).post(dial))
        .route("/v1/adverts", get(adverts))
        .route("/v1/adverts/{node}", get(advert))
        .route("/metrics", get(metrics))
}

async fn status(State(shared): State<Arc<Shared>>) -> Result<Json<Status>, ApiError> {
    let now = now_ms();
    let (live, own) = {
        let table = shared.adverts.lock().expect("advert table lock");
        (
            table.live(now).len(),
            table.get(&shared.node_id).map(views::advert),
        )
    };
    let peers = shared.net.peers().await?.len();
    let reach = shared.net.reach().await?;
    let store = shared.ledger.store();
    let head = store.head()?;
    let offered = shared
        .publisher
        .lock()
        .expect("publisher lock")
        .offered(now);
    let not_offering = shared.jobs.jobs.working.paused().or_else(|| {
        (offered.is_zero() && !shared.config.offer.idle_hours.is_empty()).then(|| {
            format!(
                "outside offer.idle_hours ({})",
                shared.config.offer.idle_hours
            )
        })
    });
    Ok(Json(Status {
        node_id: shared.node_id.to_string(),
        owner: shared.ownership.owner.to_string(),
        owner_label: shared.ownership.label.clone(),
        certified: shared.cert.is_some(),
        consortium: shared.consortium(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_secs: shared.started.elapsed().as_secs(),
        listen_addrs: shared
            .listen_addrs
            .lock()
            .map(|l| {
                l.iter()
                    .map(|a| format!("{a}/p2p/{}", shared.node_id))
                    .collect()
            })
            .unwrap_or_default(),
        peers,
        live_adverts: live,
        own_advert: own,
        ledger: LedgerSummary {
            entries: head.map_or(0, |(seq, _, _)| seq + 1),
            head: head.map(|(_, id, _)| id.to_hex()),
            foreign_entries: store.foreign_count().unwrap_or(0) as u64,
        },
        not_offering,
        reachability: serde_json::to_value(reach.reachability)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        relayed_addrs: reach
            .relayed_addrs
            .iter()
            .map(|a| format!("{a}/p2p/{}", shared.node_id))
            .collect(),
        upnp: serde_json::to_value(reach.upnp.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        upnp_addrs: reach
            .upnp
            .mapped
            .iter()
            .map(|a| format!("{a}/p2p/{}", shared.node_id))
            .collect(),
    }))
}

async fn peers(State(shared): State<Arc<Shared>>) -> Result<Json<Vec<PeerInfo>>, ApiError> {
    let peers = shared.net.peers().await?;
    Ok(Json(
        peers
            .into_iter()
            .map(|p| PeerInfo {
                peer_id: p.peer_id,
                addresses: p.addresses,
                agent: p.agent,
                rtt_ms: p.rtt_ms,
                gossip_score: p.gossip_score,
                connections: p.connections,
                connected_for_ms: p.connected_for_ms,
                admitted: p.admitted,
                transports: p.transports,
            })
            .collect(),
    ))
}

async fn dial(
    State(shared): State<Arc<Shared>>,
    ApiJson(body): ApiJson<DialRequest>,
) -> Result<(StatusCode, Json<DialAccepted>), ApiError> {
    let addr: Multiaddr = body
        .addr
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{:?} is not a multiaddr: {e}", body.addr)))?;
    shared
        .net
        .dial(addr.clone())
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DialAccepted {
            dialing: addr.to_string(),
        }),
    ))
}

async fn adverts(State(shared): State<Arc<Shared>>) -> Json<Vec<AdvertInfo>> {
    let table = shared.adverts.lock().expect("advert table lock");
    Json(
        table
            .live(now_ms())
            .into_iter()
            .map(views::advert)
            .collect(),
    )
}

async fn advert(
    State(shared): State<Arc<Shared>>,
    Path(node): Path<String>,
) -> Result<Json<AdvertInfo>, ApiError> {
    let id: NodeId = node
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{node:?} is not a node id: {e}")))?;
    let table = shared.adverts.lock().expect("advert table lock");
    table
        .get(&id)
        .filter(|a| a.advert.expires_at > now_ms())
        .map(|a| Json(views::advert(a)))
        .ok_or_else(|| ApiError::not_found(format!("no live advert from node {node}")))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Result<impl IntoResponse, ApiError> {
    let peers = shared.net.peers().await?.len() as f64;
    let live = shared
        .adverts
        .lock()
        .expect("advert table lock")
        .live(now_ms())
        .len() as f64;
    let entries = shared.ledger.store().len()? as f64;
    let uptime = shared.started.elapsed().as_secs_f64();
    let reach = shared.net.reach().await?;
    let mut text = shared.metrics.render(&[
        ("fairgrid_peers", "Connected peers.", peers),
        (
            "fairgrid_live_adverts",
            "Adverts in the live table (including our own).",
            live,
        ),
        (
            "fairgrid_ledger_entries",
            "Entries in this node's own chain.",
            entries,
        ),
        (
            "fairgrid_uptime_seconds",
            "Seconds since the node started.",
            uptime,
        ),
    ]);
    text.push_str(&reach.render());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
