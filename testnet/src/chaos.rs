//! `fairgrid-testnet chaos --kill N`: the demo, with N randomly chosen
//! workers killed (SIGKILL) in the middle of the job. The coordinator
//! notices the missed deadline, clears the market again over the bids
//! that are left (caps still enforced), and the job still completes. The
//! killed nodes' ledgers are verified offline too: a kill -9 must not
//! corrupt them.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fairgrid_node::cli::job::follow_with_progress;
use fairgrid_sdk::Client;
use fairgrid_sdk::jobs::{AllocationView, JobEventKind, JobState};
use fairgrid_sdk::render;
use rand::SeedableRng;
use rand::seq::IndexedRandom;

use crate::launcher::Launcher;
use crate::scenario::{self, Outcome, Prepared, ScenarioArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Workers to kill (SIGKILL) in the middle of the job.
    #[arg(long, default_value_t = 1)]
    pub kill: usize,
    /// Kill once this round has completed (default: a third of the rounds).
    #[arg(long)]
    pub at_round: Option<u32>,
    /// Seed for choosing the victims (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The demo's outcome plus what chaos did.
#[derive(Debug, Clone, PartialEq)]
pub struct ChaosOutcome {
    pub outcome: Outcome,
    pub killed: Vec<usize>,
    pub reallocations: usize,
}

impl ChaosOutcome {
    pub fn result_line(&self) -> String {
        format!(
            "{} killed={} reallocations={}",
            self.outcome.result_line(),
            self.killed.len(),
            self.reallocations
        )
    }
}

pub async fn run(launcher: Launcher, args: &ChaosArgs) -> anyhow::Result<ChaosOutcome> {
    if args.kill == 0 {
        bail!("--kill must be at least 1");
    }
    let mut prepared = scenario::prepare(launcher, &args.scenario).await?;
    let result = job(&mut prepared, args).await;
    if result.is_err() {
        scenario::dump_logs(&prepared.cluster);
    }
    result
}

async fn job(prepared: &mut Prepared, args: &ChaosArgs) -> anyhow::Result<ChaosOutcome> {
    let rounds = prepared.request.training.rounds;
    let at_round = args.at_round.unwrap_or((rounds / 3).max(1));
    if at_round >= rounds {
        bail!("--at-round {at_round} leaves no round after the kill (the job has {rounds})");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let (client, accepted) = scenario::submit(prepared).await?;
    let job_id = accepted.job_id.clone();
    let first = wait_for_allocation(&client, &job_id, &prepared.request).await?;
    // Workers only: the coordinator (node 0) is not a victim.
    let workers: Vec<usize> = first
        .nodes
        .iter()
        .filter(|n| n.shards > 0)
        .filter_map(|n| {
            prepared
                .cluster
                .nodes
                .iter()
                .position(|p| p.peer_id == n.node)
        })
        .filter(|&i| i != 0)
        .collect();
    if workers.len() < args.kill {
        bail!(
            "--kill {} but only {} workers besides the coordinator hold shards",
            args.kill,
            workers.len()
        );
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let victims: Vec<usize> = workers
        .choose_multiple(&mut rng, args.kill)
        .copied()
        .collect();
    println!(
        "chaos: will SIGKILL node(s) {victims:?} once round {at_round} completes (seed {seed})"
    );

    let cluster = &mut prepared.cluster;
    let mut killed = Vec::new();
    let followed = follow_with_progress(&client, &job_id, rounds, |event| {
        if let JobEventKind::RoundCompleted { round, .. } = event.kind
            && round >= at_round
            && killed.is_empty()
        {
            for &i in &victims {
                cluster.nodes[i].kill();
                println!(
                    "chaos: SIGKILL node {i} ({}, {}) after round {round}",
                    cluster.owners[cluster.nodes[i].owner].label,
                    render::short(&cluster.nodes[i].peer_id)
                );
            }
            killed = victims.clone();
        }
    })
    .await?;
    if followed.state != JobState::Finished {
        bail!(
            "job {job_id} did not survive the kill: {}",
            followed.failure.as_deref().unwrap_or("no reason given")
        );
    }
    let reallocations = followed
        .events
        .iter()
        .filter(|e| matches!(e.kind, JobEventKind::Reallocated { .. }))
        .count();
    let missed = followed
        .events
        .iter()
        .filter(|e| matches!(e.kind, JobEventKind::WorkerMissed { .. }))
        .count();
    let (outcome, report) = scenario::finish(prepared, &client, &job_id).await?;
    let last = report.allocation.context("the report has no allocation")?;
    let still_assigned: Vec<usize> = killed
        .iter()
        .copied()
        .filter(|&i| {
            last.nodes
                .iter()
                .any(|n| n.node == prepared.cluster.nodes[i].peer_id && n.shards > 0)
        })
        .collect();
    println!(
        "chaos: killed {killed:?}; {missed} missed deadlines, {reallocations} reallocations; \
         allocation in force is attempt {} with {} shards placed",
        last.attempt,
        last.shards - last.shortfall
    );
    if !still_assigned.is_empty() {
        bail!("the allocation in force still gives shards to killed node(s) {still_assigned:?}");
    }
    Ok(ChaosOutcome {
        outcome,
        killed,
        reallocations,
    })
}

/// Polls until the market has cleared (409 while bidding).
async fn wait_for_allocation(
    client: &Client,
    job_id: &str,
    request: &fairgrid_sdk::jobs::JobRequest,
) -> anyhow::Result<AllocationView> {
    let deadline = Instant::now() + Duration::from_secs(request.market.bid_window_secs + 60);
    loop {
        match client.job_allocation(job_id).await {
            Ok(allocation) => return Ok(allocation),
            Err(e) if e.status() == Some(409) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("waiting for the job's allocation"),
        }
    }
}
