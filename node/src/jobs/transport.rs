//! Sends a job request to a node: over the network, or straight to this
//! node's own handlers when the node is this one (a coordinator that also
//! works on its own job).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fairgrid_protocol::NodeId;
use libp2p::PeerId;

use crate::error::{NodeError, Result};
use crate::jobs::JobsContext;
use crate::net::{Request, Response};

pub fn peer_id(node: &NodeId) -> Result<PeerId> {
    node.to_peer_id_string()
        .parse()
        .map_err(|e| NodeError::Network(format!("{node} is not a peer id: {e}")))
}

/// Boxed, with its `Send` bound spelled out: local handling can itself
/// call out (a worker answering its own coordinator), which an `async fn`
/// would turn into a type that contains itself.
pub fn call<'a>(
    ctx: &'a Arc<JobsContext>,
    to: NodeId,
    request: Request,
) -> Pin<Box<dyn Future<Output = Result<Response>> + Send + 'a>> {
    Box::pin(async move {
        if to == ctx.node_id {
            return Ok(super::handle(Arc::clone(ctx), to, request).await);
        }
        let peer = peer_id(&to)?;
        // A peer over its rate limit answers Busy: back off and resend,
        // for up to about 6 s, before giving the answer to the caller.
        let mut wait = Duration::from_millis(25);
        loop {
            let answer = ctx.net.request(peer, request.clone()).await?;
            if !matches!(answer, Response::Busy) || wait > BUSY_GIVE_UP {
                return Ok(answer);
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    })
}

/// The longest single back-off before a Busy answer is passed on.
const BUSY_GIVE_UP: Duration = Duration::from_millis(3200);
