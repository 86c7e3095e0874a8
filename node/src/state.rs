//! The node's shared state: what its tasks, the HTTP API and the jobs
//! context are built from. Everything in it is behind short,
//! never-awaited locks. It lives apart from `app` (what the node does)
//! and `api` (how it is asked), so neither imports the other.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fairgrid_protocol::cert::Ownership;
use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::{Keypair, NodeId, OwnerCertificate, Signed, TrustPolicy};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::broadcast;

use crate::adverts::{AdvertPublisher, AdvertTable};
use crate::config::Config;
use crate::jobs::JobsContext;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::net::NetworkClient;

/// An advert this node accepted, for in-process observers (benchmarks).
#[derive(Debug, Clone)]
pub struct AdvertNotice {
    pub node: NodeId,
    pub seq: u64,
    pub at: Instant,
}

/// State shared by the node's tasks and the API.
pub struct Shared {
    pub key: Keypair,
    pub node_id: NodeId,
    /// The API's bearer token.
    pub api_token: String,
    pub config: Config,
    pub ownership: Ownership,
    pub cert: Option<Signed<OwnerCertificate>>,
    pub trust: TrustPolicy,
    pub started: Instant,
    pub net: NetworkClient,
    pub ledger: Ledger,
    pub adverts: Mutex<AdvertTable>,
    pub publisher: Mutex<AdvertPublisher>,
    pub admission: Mutex<Admission>,
    pub metrics: Metrics,
    pub listen_addrs: Mutex<Vec<Multiaddr>>,
    pub notices: broadcast::Sender<AdvertNotice>,
    /// The jobs this node coordinates and works on, with what they need.
    pub jobs: Arc<JobsContext>,
    /// `(node, serial)` pairs already recorded as `CertificateUsed`.
    pub(crate) seen_certs: Mutex<HashSet<(NodeId, u64)>>,
}

impl Shared {
    pub fn consortium(&self) -> bool {
        self.trust.consortium
    }

    /// Appends in the background; failures are logged and counted, and
    /// nothing is acknowledged to anyone before the entry is on disk.
    pub fn record(self: &Arc<Self>, body: EntryBody) {
        self.jobs.record(body);
    }

    /// Records `CertificateUsed` the first time a certificate is relied on.
    pub fn record_certificate(
        self: &Arc<Self>,
        node: NodeId,
        ownership: &Ownership,
        cert: Option<&Signed<OwnerCertificate>>,
    ) {
        let (Some(serial), Some(cert)) = (ownership.serial, cert) else {
            return;
        };
        let fresh = self
            .seen_certs
            .lock()
            .map(|mut seen| seen.insert((node, serial)))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let valid_until = cert
            .verify_and_decode()
            .map(|(_, c)| c.valid_until)
            .unwrap_or(0);
        self.record(EntryBody::CertificateUsed {
            node,
            owner: ownership.owner,
            serial,
            label: ownership.label.clone(),
            valid_until,
        });
    }
}

/// Consortium admission: the peers that presented a valid certificate,
/// and those refused (see `app::trust`).
#[derive(Debug, Default)]
pub struct Admission {
    pub(crate) admitted: HashSet<PeerId>,
    pub(crate) refused: HashSet<PeerId>,
}
