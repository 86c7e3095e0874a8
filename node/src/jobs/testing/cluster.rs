//! Job nodes in one process: each with its own key, data dir, job store,
//! ledger and tokio runtime, joined by a [`MemoryNet`]. The coordinator
//! and worker shells are the real ones; only the sockets and the rest of
//! the node (adverts, API) are left out. A node can be stopped (its
//! runtime shut down, its tasks dropped) and started again on the same
//! data dir, to test restarts without processes.
//!
//! Tests drive it from a plain thread: [`Cluster::on`] runs a future on
//! one node's runtime.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fairgrid_protocol::{Keypair, NodeId, ResourceVec, TrustPolicy};
use tokio::runtime::Runtime;

use super::host::TestHost;
use super::net::MemoryNet;
use crate::config::Config;
use crate::error::{NodeError, Result};
use crate::jobs::{self, Jobs, JobsContext};
use crate::ledger::Ledger;

/// Where a node keeps its ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    /// In memory: lost when the node stops.
    InMemory,
    /// In the node's data dir: survives a restart.
    OnDisk,
}

/// How long a restarted node waits for the stopped one to let go of its
/// sled files (the last tasks holding them are being dropped).
const RELEASE_WAIT: Duration = Duration::from_secs(20);

pub struct ClusterNode {
    pub key: Keypair,
    pub dir: PathBuf,
    pub ledger_kind: LedgerKind,
    pub offer: ResourceVec,
    /// The lowest ask per shard its bids make, in milli-credits.
    pub price_floor: u64,
    pub config: Config,
    running: Option<(Runtime, Arc<JobsContext>)>,
}

impl ClusterNode {
    pub fn node_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The running node's jobs context.
    pub fn ctx(&self) -> &Arc<JobsContext> {
        &self.running.as_ref().expect("the node is running").1
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

pub struct Cluster {
    pub net: Arc<MemoryNet>,
    pub nodes: Vec<ClusterNode>,
}

/// A node configuration for tests: one training and evaluation thread,
/// a worker that also works on its own node's jobs.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.worker.threads = 1;
    config.jobs.threads = 1;
    config
}

/// What each test node offers: two cores and 2 GiB, no GPU.
pub fn test_offer() -> ResourceVec {
    ResourceVec {
        cpu_milli: 2000,
        mem_mib: 2048,
        gpu_milli: 0,
        gpu_mem_mib: 0,
    }
}

impl Cluster {
    /// Starts `n` nodes under `root` (node i in `root/n<i>`).
    pub fn start(root: &Path, n: usize, ledger_kind: LedgerKind) -> Result<Cluster> {
        Cluster::start_offering(root, n, ledger_kind, test_offer())
    }

    /// [`Cluster::start`] with every node offering `offer`.
    pub fn start_offering(
        root: &Path,
        n: usize,
        ledger_kind: LedgerKind,
        offer: ResourceVec,
    ) -> Result<Cluster> {
        Cluster::start_configured(root, n, ledger_kind, offer, test_config())
    }

    /// [`Cluster::start_offering`] with every node configured as `config`.
    pub fn start_configured(
        root: &Path,
        n: usize,
        ledger_kind: LedgerKind,
        offer: ResourceVec,
        config: Config,
    ) -> Result<Cluster> {
        Cluster::start_priced(root, n, ledger_kind, offer, config, 1)
    }

    /// [`Cluster::start_configured`] with every node asking at least
    /// `price_floor` milli-credits per shard.
    pub fn start_priced(
        root: &Path,
        n: usize,
        ledger_kind: LedgerKind,
        offer: ResourceVec,
        config: Config,
        price_floor: u64,
    ) -> Result<Cluster> {
        let mut cluster = Cluster {
            net: MemoryNet::new(),
            nodes: Vec::new(),
        };
        for i in 0..n {
            cluster.nodes.push(ClusterNode {
                key: Keypair::from_seed(format!("cluster node {i}").as_bytes()),
                dir: root.join(format!("n{i}")),
                ledger_kind,
                offer,
                price_floor,
                config: config.clone(),
                running: None,
            });
            cluster.resume(i)?;
        }
        Ok(cluster)
    }

    /// Runs `future` on node `i`'s runtime and waits for it.
    pub fn on<F: Future>(&self, i: usize, future: F) -> F::Output {
        let (runtime, _) = self.nodes[i].running.as_ref().expect("node running");
        runtime.block_on(future)
    }

    /// Stops node `i`: it leaves the network and every task it runs is
    /// dropped (what it wrote to its job store and ledger stays).
    pub fn stop(&mut self, i: usize) {
        let Some((runtime, ctx)) = self.nodes[i].running.take() else {
            return;
        };
        ctx.jobs.stop();
        self.net.detach(&ctx.net.local_peer_id());
        drop(ctx);
        runtime.shutdown_background();
    }

    /// Starts node `i` again on its data dir: it loads its checkpoints and
    /// worker records and rejoins its jobs, as after a restart.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("cluster-n{i}"))
            .enable_all()
            .build()
            .map_err(|e| NodeError::io(&node.dir, e))?;
        let deadline = Instant::now() + RELEASE_WAIT;
        let ctx = loop {
            let opened = runtime.block_on(open_node(&self.net, node));
            match opened {
                Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        self.net.attach(&ctx, runtime.handle().clone());
        runtime.spawn(jobs::resume(Arc::clone(&ctx)));
        self.nodes[i].running = Some((runtime, ctx));
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}

async fn open_node(net: &Arc<MemoryNet>, node: &ClusterNode) -> Result<Arc<JobsContext>> {
    let ledger = match node.ledger_kind {
        LedgerKind::InMemory => Ledger::in_memory(node.key.clone())?,
        LedgerKind::OnDisk => Ledger::open(&node.dir.join("ledger"), node.key.clone())?,
    };
    let jobs = Jobs::open(&node.dir, &node.config)?;
    let peer = crate::jobs::transport::peer_id(&node.node_id())?;
    Ok(Arc::new(JobsContext {
        key: node.key.clone(),
        node_id: node.node_id(),
        cert: None,
        trust: TrustPolicy::default(),
        config: node.config.clone(),
        net: net.client(peer),
        ledger,
        jobs,
        host: Arc::new(TestHost::new(node.offer, node.price_floor)),
    }))
}
