//! Inbound request-response requests. To serve a new request kind, add a
//! variant to `net::wire::Request` and an arm here. Job requests go to
//! `jobs::handle_request`, which answers on its own task.

use std::sync::Arc;

use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;

use super::{Shared, adverts, trust};
use crate::metrics::Metrics;
use crate::net::{Request, Response};

pub async fn handle(
    shared: &Arc<Shared>,
    peer: PeerId,
    request: Request,
    channel: ResponseChannel<Response>,
) {
    Metrics::inc(&shared.metrics.requests_in);
    match request {
        Request::Hello(hello) => trust::on_hello(shared, peer, hello, channel).await,
        Request::AdvertSnapshot => {
            let response = if trust::is_admitted(shared, &peer) {
                Response::Adverts(adverts::snapshot(shared))
            } else {
                Response::refused("not admitted: present a certificate first")
            };
            let _ = shared.net.respond(channel, response).await;
        }
        job => crate::jobs::handle_request(&shared.jobs, peer, job, channel),
    }
}
