//! `fairgrid audit replay`: recomputes an audit from its evidence file,
//! offline, with nothing but the file (the job spec, the update, the
//! round's parameters, what the worker revealed and its shards, each
//! checked against the signatures and hashes that pin it).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use fairgrid_protocol::Hash32;

use crate::jobs::audit::Evidence;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute an audited round from its evidence file (kept by the
    /// coordinator under <data dir>/jobs/audits/<job>/) and print the
    /// verdict.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The evidence file.
    pub evidence: PathBuf,
    /// The hash the `Audit` ledger entry records for it (hex), checked
    /// before anything is replayed.
    #[arg(long)]
    pub expect_hash: Option<String>,
    /// Training threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Replay on this node's GPU (as a coordinator with a GPU does for a
    /// GPU job) instead of the CPU.
    #[arg(long)]
    pub gpu: bool,
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    match args.command {
        AuditCommand::Replay(args) => replay(args),
    }
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.evidence)
        .with_context(|| format!("reading {}", args.evidence.display()))?;
    let hash = Hash32::of(&bytes);
    if let Some(expected) = &args.expect_hash
        && hash.to_hex() != expected.to_lowercase()
    {
        bail!(
            "{} hashes to {}, not {expected}: not the evidence the ledger records",
            args.evidence.display(),
            hash.to_hex()
        );
    }
    let evidence = Evidence::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.evidence.display()))?;
    let threads = crate::jobs::model::threads(args.threads as u32);
    let device = crate::jobs::device::evaluator_device(args.gpu, threads);
    if args.gpu && matches!(device, crate::jobs::device::Device::Cpu { .. }) {
        bail!("--gpu: no usable GPU here");
    }
    let (worker, verdict) = evidence
        .replay(device)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.evidence.display()))?;
    let (_, update) = evidence
        .update
        .verify_and_decode()
        .context("the update was checked a moment ago")?;
    println!(
        "audit of {worker}, job {}, round {}: {} ({}; evidence {})",
        update.job_id,
        update.round,
        if verdict.passed { "PASSED" } else { "FAILED" },
        verdict.detail,
        hash.to_hex()
    );
    Ok(())
}
