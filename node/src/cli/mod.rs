//! Command-line interface: one module per subcommand, each with its own
//! clap `Args` struct. Errors are reported once, here, with their context.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::datadir::DataDir;

mod audit;
mod devices;
mod init;
pub mod job;
mod ledger;
mod market;
mod model;
mod owner;
mod query;
mod run;
mod train;
mod ui;

/// fairgrid: pool idle CPUs and GPUs into a fair market for training.
#[derive(Debug, Parser)]
#[command(name = "fairgrid", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the compute devices this node would offer, with measured speed.
    Devices(devices::DevicesArgs),
    /// Clear a market instance offline and explain the allocation.
    Market(market::MarketArgs),
    /// Train a zoo model on this machine alone (no network).
    Train(train::TrainArgs),
    /// Work on model files: prune and quantise (`model compress`).
    Model(model::ModelArgs),
    /// Audits of training work: recompute one offline from its evidence.
    Audit(audit::AuditArgs),
    /// Create a node: key, documented config and API token in the data dir.
    Init(init::InitArgs),
    /// Owner keys and node certificates.
    Owner(owner::OwnerArgs),
    /// Run the node in the foreground.
    Run(run::RunArgs),
    /// Show the running node's status (through its API).
    Status(query::QueryArgs),
    /// List the running node's connected peers.
    Peers(query::QueryArgs),
    /// List the live capacity adverts the running node holds.
    Adverts(query::QueryArgs),
    /// Verify, show or export the ledger (works on a stopped node).
    Ledger(ledger::LedgerArgs),
    /// Submit training jobs to the running node and follow them.
    Job(job::JobArgs),
    /// Print a one-time link that opens the running node's dashboard.
    Ui(query::QueryArgs),
}

/// Where the node's files live.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// Data directory (default: $FAIRGRID_DATA_DIR or ~/.fairgrid).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArgs {
    pub fn dir(&self) -> DataDir {
        DataDir::new(self.data_dir.clone().unwrap_or_else(DataDir::default_path))
    }
}

/// A tokio runtime for commands that talk to the network or the API.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Parses the process's command line and runs it (see [`main_with`]).
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|command| command != "run") {
        default_sigpipe();
    }
    main_with(args)
}

/// A command whose output goes into a closed pipe (`fairgrid market clear
/// ... | head`) ends quietly, as Unix tools do, instead of panicking in
/// `println!`. Rust ignores SIGPIPE by default; sockets are unaffected
/// (their writes use MSG_NOSIGNAL). Not for `run`: the daemon's own log
/// pipe closing must not kill it.
fn default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Parses `args` (the first is the program name), runs the command, and
/// maps errors to a non-zero exit status with the full error chain on
/// stderr. Lets other binaries (the testnet) run the node's CLI.
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version are "errors" that exit 0.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let result = match cli.command {
        Command::Devices(args) => devices::run(args),
        Command::Market(args) => market::run(args),
        Command::Train(args) => train::run(args),
        Command::Model(args) => model::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Init(args) => init::run(args),
        Command::Owner(args) => owner::run(args),
        Command::Run(args) => run::run(args),
        Command::Status(args) => query::status(args),
        Command::Peers(args) => query::peers(args),
        Command::Adverts(args) => query::adverts(args),
        Command::Ledger(args) => ledger::run(args),
        Command::Ui(args) => ui::run(args),
        Command::Job(args) => job::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
