//! Command-line interface: one module per subcommand, each with its own
//! clap `Args` struct. Errors are reported once, here, with their context.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod devices;
mod market;
mod train;

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
}

/// Parses the command line, runs the command, and maps errors to a
/// non-zero exit status with the full error chain on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(args) => devices::run(args),
        Command::Market(args) => market::run(args),
        Command::Train(args) => train::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
