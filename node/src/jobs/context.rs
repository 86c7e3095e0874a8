//! What the jobs work needs from the node around it, and nothing more:
//! its key and certificate, the trust policy, the configuration, a network
//! handle, a ledger handle, its jobs, and a small [`Host`] for what only
//! the rest of the node knows (its current offer, the adverts it has seen,
//! consortium admission). The jobs code imports nothing from `app` or
//! `api`; the node builds this once at start (`app::start`).

use std::sync::Arc;

use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::{Keypair, NodeId, OwnerCertificate, ResourceVec, Signed, TrustPolicy};
use libp2p::PeerId;
use tracing::warn;

use super::Jobs;
use crate::config::Config;
use crate::ledger::Ledger;
use crate::net::NetworkClient;

/// What the node around the jobs provides.
pub trait Host: Send + Sync {
    /// What this node offers at `now` (its idle hours applied) and the
    /// price floor of its current advert.
    fn offer(&self, now: u64) -> (ResourceVec, u64);
    /// The cheapest price floor among the live adverts (this node's too).
    fn cheapest_advert(&self, now: u64) -> Option<(u64, NodeId)>;
    /// What the live adverts offer in all (this node's too): the pool
    /// that submitters' dominant shares are shares of.
    fn pool(&self, now: u64) -> ResourceVec;
    /// Whether `peer` completed consortium admission.
    fn admitted(&self, peer: &PeerId) -> bool;
    /// Counts a background ledger append, for the metrics.
    fn appended(&self, ok: bool);
}

/// The jobs service's context.
pub struct JobsContext {
    pub key: Keypair,
    pub node_id: NodeId,
    pub cert: Option<Signed<OwnerCertificate>>,
    pub trust: TrustPolicy,
    pub config: Config,
    pub net: NetworkClient,
    pub ledger: Ledger,
    pub jobs: Jobs,
    pub host: Arc<dyn Host>,
}

impl JobsContext {
    pub fn consortium(&self) -> bool {
        self.trust.consortium
    }

    /// Appends in the background; failures are logged and counted, and
    /// nothing is acknowledged to anyone before the entry is on disk.
    pub fn record(self: &Arc<Self>, body: EntryBody) {
        let ctx = Arc::clone(self);
        tokio::spawn(async move {
            let kind = body.kind().name();
            let appended = ctx.ledger.append(body).await;
            if let Err(e) = &appended {
                warn!(target: "fairgrid::ledger", kind, error = %e, "ledger append failed");
            }
            ctx.host.appended(appended.is_ok());
        });
    }
}
