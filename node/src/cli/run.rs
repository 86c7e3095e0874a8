//! `fairgrid run`: the daemon in the foreground until SIGINT or SIGTERM,
//! then a graceful stop that flushes the ledger.

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};

use super::DataDirArgs;
use crate::app::{self, NodeSetup};
use crate::config::Config;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Listen multiaddr (repeatable; replaces network.listen).
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Bootstrap peer multiaddr with /p2p/PEERID (repeatable; added to
    /// network.bootstrap).
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// HTTP API address (replaces api.listen).
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,
    /// Turn mDNS discovery off.
    #[arg(long)]
    pub no_mdns: bool,
    /// Log format (replaces log.format).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Advert lifetime in seconds (replaces advert.lifetime_secs).
    #[arg(long, value_name = "SECS")]
    pub advert_lifetime_secs: Option<u64>,
}

/// Config file < `FAIRGRID_*` environment < flags.
pub fn effective_config(args: &RunArgs) -> anyhow::Result<Config> {
    let dir = args.data.dir();
    let mut config = Config::load(&dir.config_path(), &Config::process_env())?;
    if !args.listen.is_empty() {
        config.network.listen = args.listen.clone();
    }
    config
        .network
        .bootstrap
        .extend(args.bootstrap.iter().cloned());
    if let Some(api) = &args.api_listen {
        config.api.listen = api.clone();
    }
    if args.no_mdns {
        config.network.mdns = false;
    }
    if let Some(format) = args.log_format {
        config.log.format = match format {
            LogFormat::Human => "human".into(),
            LogFormat::Json => "json".into(),
        };
    }
    if let Some(secs) = args.advert_lifetime_secs {
        config.advert.lifetime_secs = secs;
    }
    config.validate("command-line flags")?;
    Ok(config)
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let dir = args.data.dir();
    if !dir.is_initialised() {
        anyhow::bail!(
            "{} is not a node data dir (run `fairgrid init --data-dir {}` first)",
            dir.root().display(),
            dir.root().display()
        );
    }
    crate::allocator::tune_for_node();
    let config = effective_config(&args)?;
    crate::logging::init(&config.log.format, &config.log.filter)?;
    let key = dir.load_key()?;
    let api_token = dir.load_token()?;
    let stall = std::time::Duration::from_secs(config.storage.stall_secs);
    crate::watchdog::start_monitor(stall).context("starting the storage watchdog")?;
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let node = app::start(NodeSetup {
            data_dir: dir,
            config,
            key,
            api_token,
            hardware: None,
        })
        .await
        .context("starting the node")?;
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        node.shutdown().await.context("shutting down")?;
        Ok(())
    })
}
