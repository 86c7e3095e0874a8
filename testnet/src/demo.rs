//! `fairgrid-testnet demo`: the whole story on one machine. Real node
//! processes, a job submitted through the SDK, followed to the end, its
//! allocation against the caps, the rounds, the model, and the ledger
//! check on every node.

use fairgrid_node::cli::job::follow_with_progress;
use fairgrid_sdk::jobs::JobState;

use crate::launcher::Launcher;
use crate::scenario::{self, Outcome, Prepared, ScenarioArgs};

pub async fn run(launcher: Launcher, args: &ScenarioArgs) -> anyhow::Result<Outcome> {
    let mut prepared = scenario::prepare(launcher, args).await?;
    let result = job(&mut prepared).await;
    if result.is_err() {
        scenario::dump_logs(&prepared.cluster);
    }
    result
}

async fn job(prepared: &mut Prepared) -> anyhow::Result<Outcome> {
    let (client, accepted) = scenario::submit(prepared).await?;
    let rounds = prepared.request.training.rounds;
    let followed = follow_with_progress(&client, &accepted.job_id, rounds, |_| {}).await?;
    if followed.state != JobState::Finished {
        anyhow::bail!(
            "job {} failed: {}",
            accepted.job_id,
            followed.failure.as_deref().unwrap_or("no reason given")
        );
    }
    let (outcome, _) = scenario::finish(prepared, &client, &accepted.job_id).await?;
    Ok(outcome)
}
