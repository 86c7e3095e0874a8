//! The shell of a coordinated job: one task per job executes the outputs
//! of its machine in the order the machine produced them (so checkpoints
//! cannot overtake each other and an entry is appended only after the
//! checkpoint that holds it), keeps the machine's timer, and starts the
//! slow work (clearing, sending, aggregating) on other tasks, whose
//! results come back to the machine as inputs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fairgrid_protocol::messages::RoundStart;
use fairgrid_protocol::{NodeId, Signed};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, error, info, warn};

use super::machine::{Input, Output};
use super::{CoordJob, auditing, clearing, finish, persist};
use crate::jobs::JobsContext;
use crate::jobs::{ledger_sync, transport};
use crate::ledger::now_ms;
use crate::net::{Request, Response};

const TARGET: &str = "fairgrid::jobs";
/// Times a job's task is started again after a panic (each failing the job).
const MAX_RESTARTS: usize = 3;

/// Runs the job's task under supervision: a task that panics fails the
/// job (an event and a `JobFailed` entry, through the machine) and is
/// started again to record that, instead of leaving the job in its phase
/// with nobody moving it on.
pub async fn supervise(ctx: Arc<JobsContext>, job: Arc<CoordJob>) {
    for _ in 0..MAX_RESTARTS {
        let task = tokio::spawn(run(Arc::clone(&ctx), Arc::clone(&job)));
        let Err(e) = task.await else { return };
        let what = if e.is_panic() {
            let panic = e.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            format!("the job's driver panicked: {message}")
        } else {
            "the job's driver was cancelled".to_string()
        };
        error!(target: TARGET, job = %job.id, %what, "job driver stopped");
        let _ = job.handle(Input::Fail { reason: what });
    }
    error!(target: TARGET, job = %job.id, "job driver gave up after {MAX_RESTARTS} restarts");
}

/// What the task keeps between outputs.
#[derive(Default)]
struct Shell {
    /// When the machine asked to be ticked.
    wake_at: Option<u64>,
    /// The open round's signed start, for workers that ask again.
    last_start: Option<(Signed<RoundStart>, Arc<Vec<u8>>)>,
    /// Outputs taken from the queue early (to merge checkpoints).
    pending: VecDeque<Output>,
}

/// The checkpoint just taken is on disk, and so are the earlier ones
/// merged into it.
fn written(job: &CoordJob, number: u64) {
    job.checkpoints_written.send_if_modified(|n| {
        let was = *n;
        *n = (*n).max(number);
        *n != was
    });
}

/// Numbers a checkpoint output as the task takes it.
fn take_checkpoint(job: &CoordJob) -> u64 {
    job.checkpoints_taken.fetch_add(1, Ordering::SeqCst) + 1
}

async fn run(ctx: Arc<JobsContext>, job: Arc<CoordJob>) {
    let mut inbox = job.inbox.lock().await;
    let mut stop = ctx.jobs.stop_signal();
    let mut shell = Shell::default();
    // The timer of an earlier run is lost: ask the machine again.
    let _ = job.handle(Input::Tick);
    loop {
        if *stop.borrow() {
            return;
        }
        let output = match shell.pending.pop_front() {
            Some(output) => output,
            None => {
                let sleep = shell.wake_at.map_or(Duration::from_secs(3600), |at| {
                    Duration::from_millis(at.saturating_sub(now_ms()))
                });
                tokio::select! {
                    output = inbox.recv() => match output {
                        Some(output) => output,
                        None => return,
                    },
                    _ = tokio::time::sleep(sleep), if shell.wake_at.is_some() => {
                        shell.wake_at = None;
                        let _ = job.handle(Input::Tick);
                        continue;
                    }
                    _ = stop.changed() => return,
                }
            }
        };
        if !execute(&ctx, &job, output, &mut shell, &mut inbox).await {
            break;
        }
    }
    // The job has ended and its task stops: with its inbox free, it may
    // leave memory now rather than when the next job comes.
    drop(inbox);
    ctx.jobs.archive_ended();
}

/// Executes one output; false once the job has ended.
async fn execute(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    output: Output,
    shell: &mut Shell,
    inbox: &mut UnboundedReceiver<Output>,
) -> bool {
    match output {
        Output::Persist => {
            let number = take_checkpoint(job);
            // A checkpoint queued behind this one writes a newer state.
            while let Ok(next) = inbox.try_recv() {
                shell.pending.push_back(next);
            }
            let superseded = shell
                .pending
                .iter()
                .any(|o| matches!(o, Output::Persist | Output::WriteAhead { .. }));
            if !superseded {
                match persist::save(ctx, job).await {
                    Ok(()) => written(job, number),
                    Err(e) => warn!(target: TARGET, job = %job.id, error = %e, "checkpoint failed"),
                }
            }
        }
        Output::WriteAhead {
            entries,
            check_ledger,
        } => {
            let number = take_checkpoint(job);
            let done = persist::write_ahead(ctx, job, entries, check_ledger).await;
            match &done {
                Input::WriteAheadDone { error: Some(e), .. } => {
                    warn!(target: TARGET, job = %job.id, error = %e, "recording the job's entries failed");
                }
                _ => written(job, number),
            }
            let _ = job.handle(done);
        }
        Output::RecordNow(entry) => ctx.record(entry),
        Output::Event(kind) => {
            job.events.push(now_ms(), kind);
        }
        Output::Clear { market_job, bids } => {
            let (s, j) = (Arc::clone(ctx), Arc::clone(job));
            tokio::spawn(async move { clearing::clear(&s, &j, market_job, bids).await });
        }
        Output::Publish {
            allocation,
            bids,
            dropped,
        } => {
            let (s, j) = (Arc::clone(ctx), Arc::clone(job));
            tokio::spawn(async move { clearing::publish(&s, &j, allocation, bids, dropped).await });
        }
        Output::StartRound { start, params } => {
            let nodes: Vec<NodeId> = start.orders.iter().map(|o| o.node).collect();
            debug!(target: TARGET, job = %job.id, round = start.round, workers = nodes.len(), "round started");
            let signed = Signed::sign(&ctx.key, &start);
            for node in nodes {
                spawn_send_start(ctx, job, node, &signed, &params);
            }
            shell.last_start = Some((signed, params));
        }
        Output::SendStart { node, round } => {
            if let Some((signed, params)) = &shell.last_start
                && signed
                    .verify_and_decode()
                    .is_ok_and(|(_, s)| s.round == round)
            {
                debug!(target: TARGET, job = %job.id, %node, "sending the open round to a restarted worker");
                spawn_send_start(ctx, job, node, signed, params);
            }
        }
        Output::Audit {
            round,
            params,
            candidates,
            caps,
        } => {
            let (s, j) = (Arc::clone(ctx), Arc::clone(job));
            tokio::spawn(async move {
                auditing::audit_round(&s, &j, round, params, candidates, caps).await
            });
        }
        Output::Aggregate {
            round,
            evaluate,
            params,
            velocity,
            updates,
        } => {
            let (s, j) = (Arc::clone(ctx), Arc::clone(job));
            let step = finish::Step {
                round,
                evaluate,
                params,
                velocity,
            };
            tokio::spawn(async move { finish::aggregate(&s, &j, step, updates).await });
        }
        Output::WriteModel { params } => {
            let (s, j) = (Arc::clone(ctx), Arc::clone(job));
            tokio::spawn(async move { finish::write_model(&s, &j, params).await });
        }
        Output::SyncLedger { participants } => {
            tokio::spawn(ledger_sync::push_to_participants(
                Arc::clone(ctx),
                job.id,
                participants,
            ));
        }
        Output::Wake { at } => shell.wake_at = Some(at),
        Output::Ended => {
            // An ended job stays in memory for the API (up to 256 of
            // them): without its data and its evaluator's buffers.
            job.data.lock().expect("job data lock").take();
            job.evaluator.lock().expect("evaluator lock").take();
            let phase = job.state().phase;
            info!(target: TARGET, job = %job.id, state = ?phase, "job ended");
            return false;
        }
    }
    true
}

fn spawn_send_start(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    node: NodeId,
    start: &Signed<RoundStart>,
    params: &Arc<Vec<u8>>,
) {
    tokio::spawn(send_start(
        Arc::clone(ctx),
        Arc::clone(job),
        node,
        start.clone(),
        Arc::clone(params),
    ));
}

/// Sends the round's start to one worker, retrying until the deadline
/// while it cannot be reached, and tells the machine how it went.
async fn send_start(
    ctx: Arc<JobsContext>,
    job: Arc<CoordJob>,
    node: NodeId,
    start: Signed<RoundStart>,
    params: Arc<Vec<u8>>,
) {
    let Ok((_, body)) = start.verify_and_decode() else {
        return;
    };
    loop {
        let request = Request::RoundStart {
            start: start.clone(),
            params: params.as_ref().clone(),
        };
        let refusal = match transport::call(&ctx, node, request).await {
            Ok(Response::Accepted) => {
                let bytes = params.len() as u64;
                let _ = job.handle(Input::StartDelivered {
                    node,
                    round: body.round,
                    bytes,
                });
                return;
            }
            Ok(Response::Refused { reason }) => format!("refused the round: {reason}"),
            Ok(_) => "unexpected answer to the round start".to_string(),
            Err(e) => {
                debug!(target: TARGET, job = %job.id, %node, error = %e, "round start not delivered; retrying");
                if now_ms() + 500 >= body.deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        warn!(target: TARGET, job = %job.id, %node, reason = %refusal, "worker did not take the round");
        let _ = job.handle(Input::StartRefused {
            node,
            round: body.round,
            reason: refusal,
        });
        return;
    }
}
