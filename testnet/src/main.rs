//! `fairgrid-testnet`: runs fairgrid nodes on loopback and drives
//! scenarios (see the crate docs). `fairgrid-testnet node -- ARGS` is the
//! node's own CLI (`fairgrid ARGS`), used to start the node processes.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fairgrid_testnet::launcher::{Launcher, NODE_SUBCOMMAND};
use fairgrid_testnet::{bench, chaos, demo, hetero, many, scenario, soak, up, wan};
use tokio::signal::unix::{SignalKind, signal};

/// Launch fairgrid nodes on 127.0.0.1 and run scenarios.
#[derive(Debug, Parser)]
#[command(name = "fairgrid-testnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole demo: nodes, owners, a job through the SDK, the
    /// allocation against the caps, the rounds, the ledgers.
    Demo(scenario::ScenarioArgs),
    /// The demo with workers killed (SIGKILL) mid-job.
    Chaos(chaos::ChaosArgs),
    /// The job benchmarks: communication overhead, bytes per round,
    /// recovery after a kill, or (--accuracy) parity with one node.
    Bench(bench::BenchArgs),
    /// Start a cluster and keep it up until Ctrl-C.
    Up(up::UpArgs),
    /// Jobs back to back for a while, workers and the coordinator killed
    /// and started again; memory, descriptors and ledgers reported.
    Soak(soak::SoakArgs),
    /// Several submitters with several jobs each at once under a network
    /// cap; offers, windows and DRF order checked from the ledgers.
    Many(many::ManyArgs),
    /// Workers of different speed (one held to a CPU quota, as root): the
    /// same job with shards by offered capacity, then by measured speed;
    /// straggler ratio, wall time and shares.
    Hetero(hetero::HeteroArgs),
    /// Nodes behind pairs of NAT types in network namespaces (as root),
    /// a relay between them: directly connected, relayed, or not at all.
    NatMatrix(wan::matrix::MatrixArgs),
    /// One job across NATs in network namespaces (as root): the relay on
    /// the testbed's internet, the coordinator and workers behind NATs.
    WanJob(wan::job::WanJobArgs),
}

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == NODE_SUBCOMMAND) {
        // fairgrid-testnet node [--] ARGS  ==  fairgrid ARGS
        let skip = if args.get(2).is_some_and(|a| a == "--") {
            3
        } else {
            2
        };
        let rest = args.split_off(skip);
        return fairgrid_node::cli::main_with(
            std::iter::once(std::ffi::OsString::from("fairgrid")).chain(rest),
        );
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let launcher = Launcher::current()?;
    if let Command::NatMatrix(args) = &cli.command {
        // Blocking and on this thread (the nodes die with it). A Ctrl-C
        // kills the process: the nodes die with it and the next testbed
        // sweeps its namespaces.
        let trials = wan::matrix::run(&launcher, args)?;
        print!("{}", wan::matrix::report(&trials));
        return Ok(ExitCode::SUCCESS);
    }
    // One thread: the node processes die with the thread that spawned them
    // (see launcher.rs), and this one lives as long as the testnet.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => {
                let timeout = args.timeout_secs;
                interruptible(Some(timeout), demo::run(launcher, &args), |o| {
                    o.result_line()
                })
                .await
            }
            Command::Chaos(args) => {
                let timeout = args.scenario.timeout_secs;
                interruptible(Some(timeout), chaos::run(launcher, &args), |o| {
                    o.result_line()
                })
                .await
            }
            Command::Bench(args) => {
                let timeout = args.scenario.timeout_secs;
                interruptible(Some(timeout), bench::run(launcher, &args), |line| line).await
            }
            Command::Soak(args) => {
                let limit = args.minutes * 60 + args.scenario.timeout_secs;
                interruptible(Some(limit), soak::run(launcher, &args), |line| line).await
            }
            Command::Many(args) => {
                let timeout = args.scenario.timeout_secs;
                interruptible(Some(timeout), many::run(launcher, &args), |line| line).await
            }
            Command::Hetero(args) => {
                let timeout = args.timeout_secs;
                interruptible(Some(timeout), hetero::run(launcher, &args), |line| line).await
            }
            Command::NatMatrix(_) => unreachable!("run above"),
            Command::WanJob(args) => {
                let timeout = args.timeout_secs + 120;
                interruptible(Some(timeout), wan::job::run(launcher, &args), |line| line).await
            }
            Command::Up(args) => {
                interruptible(None, up::run(launcher, &args), |()| "stopped".to_string()).await
            }
        }
    })
}

/// Runs `scenario` until it ends, times out, or a signal arrives. Leaving
/// early drops the scenario, and with it the cluster guard that kills
/// every node.
async fn interruptible<T>(
    timeout_secs: Option<u64>,
    scenario: impl Future<Output = anyhow::Result<T>>,
    last_line: impl FnOnce(T) -> String,
) -> anyhow::Result<ExitCode> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let bounded = async {
        match timeout_secs {
            Some(secs) => tokio::time::timeout(Duration::from_secs(secs), scenario)
                .await
                .map_err(|_| anyhow::anyhow!("gave up after {secs} s (--timeout-secs)"))?,
            None => scenario.await,
        }
    };
    // The scenario (and its cluster) is dropped when select! returns,
    // before anything below runs.
    let ended = tokio::select! {
        result = bounded => Ok(result),
        _ = tokio::signal::ctrl_c() => Err(("interrupted", 130)),
        _ = term.recv() => Err(("terminated", 143)),
        _ = hangup.recv() => Err(("hung up", 129)),
    };
    match ended {
        Ok(result) => {
            println!("{}", last_line(result?));
            Ok(ExitCode::SUCCESS)
        }
        Err((what, code)) => {
            eprintln!("{what}: every node process was stopped");
            Ok(ExitCode::from(code))
        }
    }
}
