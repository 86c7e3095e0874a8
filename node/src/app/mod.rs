//! The application: what the node does with what the network brings.
//!
//! [`start`] wires the parts together: the ledger, the network event loop,
//! the advert publisher and pruner, the application event loop, the jobs
//! context and the HTTP API. [`Shared`] (in `crate::state`) is the state
//! they share; everything in it is behind short, never-awaited locks.
//!
//! Where the jobs work plugs in:
//! - gossip: add an arm for the topic in [`gossip::route`];
//! - request-response: add a variant to `net::wire::{Request, Response}`
//!   (with its size limit) and an arm in [`requests::handle`];
//! - ledger: `shared.ledger.append(EntryBody::...)` for any entry kind,
//!   `shared.ledger.store_foreign(..)` for other nodes' entries;
//! - API: merge a router in `api::router`.
//!
//! The jobs work (`crate::jobs`) is wired in through exactly these points,
//! and sees the node only through its context (`jobs::JobsContext`, with
//! [`host::AppHost`] for the offer, the adverts and admission): `jobs`
//! imports nothing from `app`, `api` or `state`.

pub mod adverts;
pub mod events;
pub mod gossip;
pub mod host;
pub mod requests;
pub mod trust;

pub use crate::state::{AdvertNotice, Shared};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fairgrid_protocol::messages::Hardware;
use fairgrid_protocol::{Keypair, NodeId, OwnerCertificate, OwnerId, Signed, TrustPolicy};
use libp2p::Multiaddr;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::info;

use crate::adverts::{AdvertPublisher, AdvertTable};
use crate::config::Config;
use crate::datadir::{self, DataDir};
use crate::error::{NodeError, Result};
use crate::jobs::JobsContext;
use crate::ledger::{Ledger, now_ms};
use crate::metrics::Metrics;
use crate::net::{self, NetConfig};

/// What `start` needs.
pub struct NodeSetup {
    pub data_dir: DataDir,
    pub config: Config,
    pub key: Keypair,
    pub api_token: String,
    /// Use these figures instead of probing (benchmarks with many nodes).
    pub hardware: Option<Hardware>,
}

/// A started node. Dropping it without [`RunningNode::shutdown`] leaves the
/// tasks running until the runtime stops.
pub struct RunningNode {
    pub shared: Arc<Shared>,
    pub api_addr: SocketAddr,
    data_dir: DataDir,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    net_task: JoinHandle<()>,
}

/// The trust policy from the config: consortium flag, allowlist, and the
/// revocation lists (each checked to be signed by its owner).
pub fn trust_policy(config: &Config) -> Result<TrustPolicy> {
    let mut policy = TrustPolicy {
        consortium: config.trust.consortium,
        ..Default::default()
    };
    for owner in &config.trust.allowlist {
        let id: OwnerId = owner.parse().map_err(|_| NodeError::Config {
            origin: "trust.allowlist".into(),
            reason: format!("{owner:?} is not an owner id"),
        })?;
        policy.allowlist.insert(id);
    }
    for file in &config.trust.revocation_files {
        let signed = datadir::read_revocation(std::path::Path::new(file))?;
        let list =
            fairgrid_protocol::Revocation::verify(&signed).map_err(|e| NodeError::Config {
                origin: format!("revocation file {file}"),
                reason: e.to_string(),
            })?;
        policy.apply_revocation(&list);
    }
    Ok(policy)
}

/// This node's certificate: the configured file, else `node.cert` in the
/// data dir if present.
pub fn own_certificate(
    config: &Config,
    data_dir: &DataDir,
) -> Result<Option<Signed<OwnerCertificate>>> {
    let path = if config.trust.certificate.is_empty() {
        let default = data_dir.cert_path();
        if !default.exists() {
            return Ok(None);
        }
        default
    } else {
        PathBuf::from(&config.trust.certificate)
    };
    datadir::read_certificate(&path).map(Some)
}

pub async fn start(setup: NodeSetup) -> Result<RunningNode> {
    let NodeSetup {
        data_dir,
        config,
        key,
        api_token,
        hardware,
    } = setup;
    let node_id = key.node_id();
    let trust = trust_policy(&config)?;
    let cert = own_certificate(&config, &data_dir)?;
    let ownership = trust
        .resolve_owner(&node_id, cert.as_ref(), now_ms())
        .map_err(|e| NodeError::Config {
            origin: "this node's certificate".into(),
            reason: e.to_string(),
        })?;
    let ledger = Ledger::open_with_cache(
        &data_dir.ledger_path(),
        key.clone(),
        config.storage.ledger_cache_mib << 20,
    )?;
    let jobs = crate::jobs::Jobs::open(data_dir.root(), &config)?;
    let hardware = match hardware {
        Some(hw) => hw,
        None => {
            let probe = Duration::from_millis(config.advert.probe_ms);
            tokio::task::spawn_blocking(move || crate::adverts::probe::probe_hardware(probe))
                .await
                .map_err(|e| NodeError::Network(format!("probe task: {e}")))?
        }
    };
    info!(target: "fairgrid::adverts", cores = hardware.cpu_cores, gflops = hardware.cpu_gflops, mem_mib = hardware.mem_mib, "hardware probed");
    let publisher = AdvertPublisher::new(
        key.clone(),
        cert.clone(),
        ownership.max_capacity,
        hardware,
        config.offer.clone(),
        config.advert.lifetime_secs * 1000,
        config.advert.reissue_after_percent,
    )
    .map_err(|reason| NodeError::Config {
        origin: "offer".into(),
        reason,
    })?;
    let net_config = NetConfig::from_config(&config.network, trust.consortium)?;
    let (net, net_events, net_task) = net::spawn(&key, net_config)?;
    let (notices, _) = broadcast::channel(4096);
    let shared = Arc::new_cyclic(|weak| Shared {
        jobs: Arc::new(JobsContext {
            key: key.clone(),
            node_id,
            cert: cert.clone(),
            trust: trust.clone(),
            config: config.clone(),
            net: net.clone(),
            ledger: ledger.clone(),
            jobs,
            host: Arc::new(host::AppHost(weak.clone())),
        }),
        node_id,
        ownership,
        cert,
        trust,
        started: Instant::now(),
        net,
        ledger,
        adverts: Mutex::new(AdvertTable::new(config.advert.max_table_entries as usize)),
        publisher: Mutex::new(publisher),
        admission: Mutex::new(trust::Admission::default()),
        metrics: Metrics::default(),
        listen_addrs: Mutex::new(Vec::new()),
        notices,
        seen_certs: Mutex::new(HashSet::new()),
        api_token,
        key,
        config,
    });
    let own_cert = shared.cert.clone();
    shared.record_certificate(node_id, &shared.ownership.clone(), own_cert.as_ref());

    let (stop, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(&shared.config.api.listen)
        .await
        .map_err(|e| {
            NodeError::io(
                format!("api listen address {}", shared.config.api.listen),
                e,
            )
        })?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| NodeError::io("api listener", e))?;
    let tasks = vec![
        tokio::spawn(events::run(
            Arc::clone(&shared),
            net_events,
            stop_rx.clone(),
        )),
        tokio::spawn(adverts::publish_loop(Arc::clone(&shared), stop_rx.clone())),
        tokio::spawn(adverts::prune_loop(Arc::clone(&shared), stop_rx.clone())),
        tokio::spawn(crate::idle::monitor::run(
            Arc::clone(&shared.jobs),
            stop_rx.clone(),
        )),
        tokio::spawn(crate::api::serve(Arc::clone(&shared), listener, stop_rx)),
    ];

    // Wait (briefly) for the listeners so the run files name real ports.
    // (A node with no listen address only dials out.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut addrs = Vec::new();
    while addrs.is_empty() && !shared.config.network.listen.is_empty() && Instant::now() < deadline
    {
        addrs = shared.net.listen_addrs().await?;
        if addrs.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if let Ok(mut l) = shared.listen_addrs.lock() {
        *l = addrs.clone();
    }
    write_run_files(&data_dir, api_addr, &addrs, &shared.node_id)?;
    tokio::spawn(crate::jobs::resume(Arc::clone(&shared.jobs)));
    info!(target: "fairgrid::node", node = %shared.node_id, api = %api_addr, "node started");
    Ok(RunningNode {
        shared,
        api_addr,
        data_dir,
        stop,
        tasks,
        net_task,
    })
}

fn write_run_files(
    data_dir: &DataDir,
    api: SocketAddr,
    addrs: &[Multiaddr],
    node: &NodeId,
) -> Result<()> {
    let run = data_dir.run_dir();
    std::fs::create_dir_all(&run).map_err(|e| NodeError::io(&run, e))?;
    datadir::write_atomic(&data_dir.api_addr_path(), format!("{api}\n").as_bytes())?;
    let listen: String = addrs.iter().map(|a| format!("{a}/p2p/{node}\n")).collect();
    datadir::write_atomic(&data_dir.listen_addrs_path(), listen.as_bytes())
}

impl RunningNode {
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// Dialable addresses of this node (`.../p2p/PEERID`).
    pub fn dial_addrs(&self) -> Vec<String> {
        self.shared
            .listen_addrs
            .lock()
            .map(|l| {
                l.iter()
                    .map(|a| format!("{a}/p2p/{}", self.shared.node_id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops every task, closes the network, flushes and closes the ledger,
    /// and removes the run files.
    pub async fn shutdown(self) -> Result<()> {
        info!(target: "fairgrid::node", "shutting down");
        let _ = self.stop.send(true);
        self.shared.jobs.jobs.stop();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let _ = self.shared.net.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.net_task).await;
        // Let background appends already queued reach the writer.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.shared.ledger.close_async().await?;
        let _ = std::fs::remove_file(self.data_dir.api_addr_path());
        let _ = std::fs::remove_file(self.data_dir.listen_addrs_path());
        info!(target: "fairgrid::node", "ledger flushed; stopped");
        Ok(())
    }
}
