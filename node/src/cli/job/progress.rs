//! Following a job in a terminal: a progress bar over rounds (round, loss,
//! accuracy, ETA) on stderr, and one line per notable event on stdout, so
//! that a log of the run reads well when stderr is not a terminal (the
//! bar then hides itself). The testnet uses this too.

use std::time::Duration;

use anyhow::Context;
use fairgrid_sdk::jobs::{JobEvent, JobEventKind, JobState};
use fairgrid_sdk::{Client, FollowOptions, JobUpdate, render};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

/// How a followed job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowReport {
    /// Finished or Failed.
    pub state: JobState,
    /// The node's reason when it failed.
    pub failure: Option<String>,
    pub rounds_done: u32,
    pub final_accuracy: Option<f32>,
    /// Every event, in order.
    pub events: Vec<JobEvent>,
}

/// The text printed for an event, or None for events the bar shows.
pub fn event_line(event: &JobEvent, rounds: u32) -> Option<String> {
    Some(match &event.kind {
        JobEventKind::Submitted { shards } => format!("submitted: {shards} shards up for bids"),
        JobEventKind::BidReceived { node, owner, ask } => format!(
            "bid from {} (owner {}), ask {ask}",
            render::short(node),
            render::short(owner)
        ),
        JobEventKind::Cleared {
            attempt,
            winners,
            assigned,
            shortfall,
        } => format!(
            "cleared (attempt {attempt}): {assigned} shards to {winners} nodes, shortfall {shortfall}"
        ),
        JobEventKind::RoundStarted { .. } => return None,
        JobEventKind::RoundCompleted {
            round,
            train_loss,
            test_accuracy,
            updates_accepted,
            bytes_up,
            bytes_down,
            duration_ms,
            ..
        } => format!(
            "round {round:>3}/{rounds}  loss {train_loss:.4}  accuracy {}  {updates_accepted} updates  up {}  down {}  {:.2} s",
            test_accuracy.map_or("-".into(), |a| render::percent(f64::from(a))),
            render::bytes(*bytes_up),
            render::bytes(*bytes_down),
            *duration_ms as f64 / 1000.0
        ),
        JobEventKind::UpdateRejected {
            round,
            node,
            reason,
        } => format!(
            "round {round}: update from {} rejected: {reason}",
            render::short(node)
        ),
        JobEventKind::WorkerMissed { round, node } => format!(
            "round {round}: {} missed the deadline (no credit; its shards are reassigned)",
            render::short(node)
        ),
        JobEventKind::Reallocated { attempt, reason } => {
            format!("reallocated (attempt {attempt}): {reason}")
        }
        JobEventKind::Finished {
            test_accuracy,
            rounds,
        } => format!(
            "finished: test accuracy {} after {rounds} rounds",
            render::percent(f64::from(*test_accuracy))
        ),
        JobEventKind::Failed { reason } => format!("failed: {reason}"),
    })
}

fn bar(rounds: u32) -> ProgressBar {
    let bar = ProgressBar::new(u64::from(rounds.max(1)));
    bar.set_style(
        ProgressStyle::with_template(
            "round {pos}/{len} [{bar:30}] {msg} elapsed {elapsed} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message("bidding");
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

/// Follows `job_id` to its end, drawing the bar and printing event lines;
/// `on_event` sees every event first (the testnet's chaos hooks in here).
pub async fn follow_with_progress(
    client: &Client,
    job_id: &str,
    rounds: u32,
    mut on_event: impl FnMut(&JobEvent),
) -> anyhow::Result<FollowReport> {
    let bar = bar(rounds);
    let mut report = FollowReport {
        state: JobState::Bidding,
        failure: None,
        rounds_done: 0,
        final_accuracy: None,
        events: Vec::new(),
    };
    let mut updates = std::pin::pin!(client.follow_job(job_id, FollowOptions::default()));
    while let Some(update) = updates.next().await {
        let update = match update {
            Ok(update) => update,
            Err(e) => {
                bar.abandon();
                return Err(e).with_context(|| format!("following job {job_id}"));
            }
        };
        match update {
            JobUpdate::State(state) => {
                report.state = state;
                if state == JobState::Waiting {
                    // No event says why; the job's status does.
                    let why = client.job(job_id).await.ok().and_then(|s| s.error);
                    bar.suspend(|| {
                        println!(
                            "waiting for supply: {}",
                            why.as_deref()
                                .unwrap_or("no capped supply can take the shards yet")
                        )
                    });
                    bar.set_message("waiting for supply");
                }
            }
            JobUpdate::Event(event) => {
                on_event(&event);
                match &event.kind {
                    JobEventKind::RoundStarted { round, workers } => {
                        bar.set_message(format!("round {round} on {workers} workers"));
                    }
                    JobEventKind::RoundCompleted {
                        round,
                        train_loss,
                        test_accuracy,
                        ..
                    } => {
                        report.rounds_done = *round;
                        bar.set_position(u64::from(*round));
                        bar.set_message(format!(
                            "loss {train_loss:.4} acc {}",
                            test_accuracy.map_or("-".into(), |a| render::percent(f64::from(a)))
                        ));
                    }
                    JobEventKind::Finished {
                        test_accuracy,
                        rounds,
                    } => {
                        report.state = JobState::Finished;
                        report.final_accuracy = Some(*test_accuracy);
                        report.rounds_done = *rounds;
                    }
                    JobEventKind::Failed { reason } => {
                        report.state = JobState::Failed;
                        report.failure = Some(reason.clone());
                    }
                    _ => {}
                }
                if let Some(line) = event_line(&event, rounds) {
                    bar.suspend(|| println!("{line}"));
                }
                report.events.push(event);
            }
        }
    }
    bar.finish_and_clear();
    if !report.state.is_terminal() {
        anyhow::bail!("the node stopped reporting job {job_id} before it ended");
    }
    Ok(report)
}

/// `--json --follow`: one JSON object per line, events as the API sends
/// them and `{"state": ...}` on each state change.
pub async fn follow_json(client: &Client, job_id: &str) -> anyhow::Result<()> {
    let mut updates = std::pin::pin!(client.follow_job(job_id, FollowOptions::default()));
    let mut failure = None;
    while let Some(update) = updates.next().await {
        match update? {
            JobUpdate::State(state) => {
                println!("{}", serde_json::json!({ "state": state }));
            }
            JobUpdate::Event(event) => {
                if let JobEventKind::Failed { reason } = &event.kind {
                    failure = Some(reason.clone());
                }
                println!("{}", serde_json::to_string(&event)?);
            }
        }
    }
    match failure {
        Some(reason) => anyhow::bail!("job {job_id} failed: {reason}"),
        None => Ok(()),
    }
}
