//! `fairgrid-testnet up`: starts a cluster and keeps it running until
//! Ctrl-C, for trying the CLI by hand (`fairgrid job submit ...
//! --data-dir <a node's dir>`). Prints one `node` line per process (index,
//! pid, peer id, owner, API, data dir) and then `ready`.

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::{Cluster, ClusterSpec};
use crate::launcher::Launcher;

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    #[arg(long, default_value_t = 3)]
    pub owners: usize,
    /// Put the data dirs here and keep them (default: a temp dir, removed).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

/// Starts the cluster, prints it, then waits forever: the caller's signal
/// handling ends it, and dropping the cluster stops every node.
pub async fn run(launcher: Launcher, args: &UpArgs) -> anyhow::Result<()> {
    let mut spec = ClusterSpec::new(args.nodes, args.owners)?;
    spec.root = args.keep.clone();
    let cluster = Cluster::start(launcher, &spec).await?;
    cluster.wait_until_meshed(Duration::from_secs(60)).await?;
    for node in &cluster.nodes {
        println!(
            "node {} pid={} peer={} owner={:?} api={} dir={}",
            node.index,
            node.pid,
            node.peer_id,
            cluster.owners[node.owner].label,
            node.api,
            node.dir.display()
        );
    }
    println!(
        "try: fairgrid job submit docs/examples/job.toml --follow --data-dir {}",
        cluster.nodes[0].dir.display()
    );
    println!("ready (Ctrl-C stops every node)");
    std::future::pending::<()>().await;
    drop(cluster);
    Ok(())
}
