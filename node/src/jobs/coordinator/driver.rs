//! The task that moves one coordinated job through its phases: bid
//! window, clearing, rounds (step 5), churn (step 6) and finishing
//! (step 7). Each pass looks at the checkpointed state and does the one
//! thing it calls for, so a job resumed from a checkpoint continues where
//! it stood.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fairgrid_protocol::ledger::{EntryBody, RoundParticipant};
use fairgrid_protocol::messages::{RoundStart, WorkOrder};
use fairgrid_protocol::{Hash32, NodeId, Signed};
use fairgrid_sdk::jobs::{JobEventKind, JobState};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::clearing::{self, Cleared};
use super::persist::{self, checkpoint};
use super::round::{AcceptedUpdate, Order, Outcome, RoundInProgress, aggregate};
use super::{CoordJob, RoundRecord};
use crate::app::Shared;
use crate::jobs::{model, transport};
use crate::ledger::now_ms;
use crate::net::{Request, Response};

const TARGET: &str = "fairgrid::jobs";
/// Rounds in a row without an accepted update before the job fails.
const MAX_EMPTY_ROUNDS: u32 = 3;

/// Runs the job's driver under supervision: a driver that panics fails
/// the job (an event and a `JobFailed` entry) instead of leaving it in
/// its phase with nobody moving it on.
pub async fn supervise(shared: Arc<Shared>, job: Arc<CoordJob>) {
    let driver = tokio::spawn(run(Arc::clone(&shared), Arc::clone(&job)));
    let Err(e) = driver.await else { return };
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
    tracing::error!(target: TARGET, job = %job.id, %what, "job driver stopped");
    job.fail(what);
    persist::record_end(&shared, &job).await;
}

pub async fn run(shared: Arc<Shared>, job: Arc<CoordJob>) {
    let mut stop = shared.jobs.stop_signal();
    loop {
        if *stop.borrow() {
            return;
        }
        let now = now_ms();
        let (phase, until, next_round, reclear) = {
            let st = job.state();
            (
                st.phase,
                st.bidding_until,
                st.next_round,
                st.needs_reclear.clone(),
            )
        };
        if !matches!(phase, JobState::Finished | JobState::Failed) && now > job.spec.deadline {
            job.fail(format!(
                "the job's deadline passed after {next_round} of {} rounds",
                job.spec.hyper.rounds
            ));
            continue;
        }
        match phase {
            JobState::Bidding | JobState::Waiting => {
                if now < until {
                    let wait = Duration::from_millis((until - now).min(1000));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
                let reason = if phase == JobState::Waiting {
                    "waited for another bid window".to_string()
                } else {
                    "bid window closed".to_string()
                };
                clear(&shared, &job, reason, phase == JobState::Bidding).await;
            }
            JobState::Training if next_round >= job.spec.hyper.rounds => {
                super::finish::finish(&shared, &job).await;
            }
            JobState::Training => match reclear {
                Some(reason) => clear(&shared, &job, reason, false).await,
                None => run_round(&shared, &job, &mut stop).await,
            },
            JobState::Finished | JobState::Failed => {
                persist::record_end(&shared, &job).await;
                job.data.lock().expect("job data lock").take();
                info!(target: TARGET, job = %job.id, state = ?phase, "job ended");
                return;
            }
        }
    }
}

/// Clears, and moves the job on from the outcome. `first` is the first
/// clearing of the job: a job that no bid can serve then fails, unless it
/// asked to wait.
async fn clear(shared: &Arc<Shared>, job: &Arc<CoordJob>, reason: String, first: bool) {
    match clearing::clear_and_publish(shared, job, reason).await {
        Cleared::Running => {
            job.state().error = None;
        }
        Cleared::Waiting(message)
            if first
                && job.state().allocations.is_empty()
                && job.spec.on_shortfall
                    == fairgrid_protocol::messages::ShortfallPolicy::RunWithFewer =>
        {
            job.fail(message);
        }
        Cleared::Waiting(message) => {
            info!(target: TARGET, job = %job.id, %message, "job waits for bids");
            let mut st = job.state();
            st.phase = JobState::Waiting;
            st.error = Some(message);
            st.bidding_until = now_ms() + job.spec.bid_window_ms;
            st.needs_reclear = None;
        }
        Cleared::Failed(message) => job.fail(message),
    }
    checkpoint(shared, job).await;
}

/// Samples a worker's H local steps process over these shards.
fn order_samples(job: &CoordJob, shards: &[u32]) -> u64 {
    let held: u64 = shards
        .iter()
        .filter_map(|&i| job.spec.dataset.shards.get(i as usize))
        .map(|s| u64::from(s.samples))
        .sum();
    u64::from(job.spec.hyper.local_steps) * held.min(u64::from(job.spec.hyper.batch_size))
}

async fn run_round(shared: &Arc<Shared>, job: &Arc<CoordJob>, stop: &mut watch::Receiver<bool>) {
    let started = now_ms();
    let (round, allocation_index, allocation) = {
        let st = job.state();
        let Some(current) = st.current() else {
            drop(st);
            job.fail("training without an allocation".into());
            return;
        };
        (
            st.next_round,
            st.allocations.len() - 1,
            current.allocation.clone(),
        )
    };
    let params = job.params.lock().expect("params lock").clone();
    let params_bytes = Arc::new(model::params_to_bytes(&params));
    let params_hash = Hash32::of(&params_bytes);
    let deadline = started + job.spec.round_timeout_ms;
    let orders: BTreeMap<NodeId, Order> = allocation
        .assignments
        .iter()
        .map(|a| {
            (
                a.node,
                Order {
                    owner: a.owner,
                    shards: a.shards.clone(),
                    samples: order_samples(job, &a.shards),
                },
            )
        })
        .collect();
    let start = Signed::sign(
        &shared.key,
        &RoundStart {
            job_id: job.id,
            round,
            allocation: allocation.hash(),
            params_hash,
            params_len: params.len() as u64,
            orders: allocation
                .assignments
                .iter()
                .map(|a| WorkOrder {
                    node: a.node,
                    shards: a.shards.clone(),
                })
                .collect(),
            deadline,
            issued_at: started,
        },
    );
    let workers: Vec<NodeId> = orders.keys().copied().collect();
    *job.round.lock().expect("round lock") = Some(RoundInProgress {
        job_id: job.id,
        round,
        allocation: allocation_index,
        params_hash,
        param_count: params.len(),
        started_ms: started,
        deadline,
        orders,
        outcomes: BTreeMap::new(),
        bytes_down: 0,
        start: Some((start.clone(), Arc::clone(&params_bytes))),
    });
    job.event(JobEventKind::RoundStarted {
        round,
        workers: workers.len() as u32,
    });
    debug!(target: TARGET, job = %job.id, round, workers = workers.len(), "round started");
    for node in workers {
        tokio::spawn(send_start(
            Arc::clone(shared),
            Arc::clone(job),
            node,
            start.clone(),
            Arc::clone(&params_bytes),
        ));
    }
    loop {
        if job
            .round
            .lock()
            .expect("round lock")
            .as_ref()
            .is_none_or(|r| r.complete())
        {
            break;
        }
        let now = now_ms();
        if now >= deadline {
            break;
        }
        tokio::select! {
            _ = job.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(deadline - now)) => {}
            _ = stop.changed() => return,
        }
    }
    let Some(mut finished) = job.round.lock().expect("round lock").take() else {
        return;
    };
    for node in finished.close("missed the round deadline") {
        job.event(JobEventKind::WorkerMissed {
            round,
            node: node.to_string(),
        });
    }
    complete_round(shared, job, finished, params).await;
}

/// Sends the round's start to one worker, retrying until the deadline
/// while it cannot be reached. A worker that refuses misses the round.
pub async fn send_start(
    shared: Arc<Shared>,
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
        let outcome = match transport::call(&shared, node, request).await {
            Ok(Response::Accepted) => {
                if let Some(r) = job.round.lock().expect("round lock").as_mut()
                    && r.round == body.round
                {
                    r.bytes_down += params.len() as u64;
                }
                return;
            }
            Ok(Response::Refused { reason }) => Some(format!("refused the round: {reason}")),
            Ok(_) => Some("unexpected answer to the round start".to_string()),
            Err(e) => {
                debug!(target: TARGET, job = %job.id, %node, error = %e, "round start not delivered; retrying");
                None
            }
        };
        if let Some(reason) = outcome {
            warn!(target: TARGET, job = %job.id, %node, %reason, "worker did not take the round");
            settle_missed(&job, node, body.round, reason);
            return;
        }
        if now_ms() + 500 >= body.deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Marks a worker's order in `round` missed (if still open) and wakes the
/// driver.
pub fn settle_missed(job: &CoordJob, node: NodeId, round: u32, reason: String) {
    let settled = job
        .round
        .lock()
        .expect("round lock")
        .as_mut()
        .filter(|r| r.round == round)
        .is_some_and(|r| r.settle(node, Outcome::Missed(reason)));
    if settled {
        job.event(JobEventKind::WorkerMissed {
            round,
            node: node.to_string(),
        });
        job.wake.notify_one();
    }
}

/// Aggregates, evaluates, records the round and updates who is in the job.
async fn complete_round(
    shared: &Arc<Shared>,
    job: &Arc<CoordJob>,
    finished: RoundInProgress,
    params: Arc<Vec<f32>>,
) {
    let round = finished.round;
    let accepted: Vec<(NodeId, AcceptedUpdate)> =
        finished.accepted().map(|(n, u)| (*n, u.clone())).collect();
    let dropped: Vec<(NodeId, String)> = finished
        .outcomes
        .iter()
        .filter_map(|(n, o)| match o {
            Outcome::Missed(why) => Some((*n, why.clone())),
            _ => None,
        })
        .collect();
    {
        let mut st = job.state();
        for (node, _) in &dropped {
            st.missing.insert(*node);
        }
        if !dropped.is_empty()
            || finished
                .outcomes
                .values()
                .any(|o| matches!(o, Outcome::Rejected(_)))
        {
            let names: Vec<String> = dropped
                .iter()
                .map(|(n, why)| format!("{n} {why}"))
                .collect();
            st.needs_reclear = Some(if names.is_empty() {
                format!("an update was rejected in round {round}")
            } else {
                format!("round {round}: {}", names.join("; "))
            });
        }
    }
    if accepted.is_empty() {
        let empty = {
            let mut st = job.state();
            st.empty_rounds += 1;
            st.empty_rounds
        };
        warn!(target: TARGET, job = %job.id, round, "round ended without an accepted update");
        if empty >= MAX_EMPTY_ROUNDS {
            job.fail(format!(
                "{empty} rounds in a row ended without an accepted update"
            ));
        }
        checkpoint(shared, job).await;
        return;
    }
    let Some(data) = job.data() else {
        job.fail("the job's data is gone".into());
        return;
    };
    let evaluator = Arc::clone(&job.evaluator);
    let (spec, hyper) = (job.spec.model.clone(), job.spec.hyper.clone());
    let threads = model::threads(shared.config.jobs.threads);
    let eval_batch = shared.config.jobs.eval_batch as usize;
    let updates: Vec<AcceptedUpdate> = accepted.iter().map(|(_, u)| u.clone()).collect();
    let computed = tokio::task::spawn_blocking(move || {
        let refs: Vec<&AcceptedUpdate> = updates.iter().collect();
        let next = aggregate(&params, &refs, hyper.outer_lr)?;
        let mut slot = evaluator.lock().expect("evaluator lock");
        if slot.is_none() {
            *slot = Some(
                model::trainer(&spec, &hyper, eval_batch, threads).map_err(|e| e.to_string())?,
            );
        }
        let trainer = slot.as_mut().expect("built above");
        trainer
            .set_params_flat(&next.params)
            .map_err(|e| e.to_string())?;
        let metrics = trainer.evaluate(&data.test).map_err(|e| e.to_string())?;
        Ok::<_, String>((next, metrics.accuracy as f32))
    })
    .await;
    let (next, accuracy) = match computed {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return job.fail(format!("aggregating round {round}: {e}")),
        Err(e) => return job.fail(format!("aggregation thread: {e}")),
    };
    let model_hash = model::params_hash(&next.params);
    let participants: Vec<RoundParticipant> = accepted
        .iter()
        .map(|(node, u)| {
            let order = &finished.orders[node];
            RoundParticipant {
                node: *node,
                owner: order.owner,
                shards: order.shards.clone(),
                samples: u.samples,
                update_hash: u.update_hash,
            }
        })
        .collect();
    let bytes_up: u64 = accepted.iter().map(|(_, u)| u.bytes).sum();
    let entry = EntryBody::RoundCompleted {
        job_id: job.id,
        round,
        participants,
        model_hash,
        train_loss_micro: (f64::from(next.train_loss) * 1e6) as u64,
        test_accuracy_ppm: Some((f64::from(accuracy) * 1e6).round() as u32),
    };
    let duration_ms = now_ms().saturating_sub(finished.started_ms);
    let record = RoundRecord {
        round,
        allocation: finished.allocation,
        accepted: accepted
            .iter()
            .map(|(n, _)| {
                (
                    *n,
                    finished.orders[n].owner,
                    finished.orders[n].shards.len() as u32,
                )
            })
            .collect(),
        train_loss: next.train_loss,
        test_accuracy: Some(accuracy),
        bytes_up,
        bytes_down: finished.bytes_down,
        duration_ms,
    };
    *job.params.lock().expect("params lock") = Arc::new(next.params);
    {
        let mut st = job.state();
        st.next_round = round + 1;
        st.empty_rounds = 0;
        st.bytes_up += bytes_up;
        st.bytes_down += finished.bytes_down;
        st.updated_at = now_ms();
        st.rounds.push(record);
    }
    job.unrecorded.lock().expect("unrecorded lock").push(entry);
    // The round is checkpointed with its entry before the entry is
    // appended: a crash in between appends it on resume, exactly once.
    if let Err(e) = persist::save(shared, job).await {
        return job.fail(format!("checkpointing round {round}: {e}"));
    }
    if let Err(e) = persist::record(shared, job, false).await {
        return job.fail(format!("recording round {round}: {e}"));
    }
    // Announced once the ledger holds it (the next checkpoint keeps the event).
    job.event(JobEventKind::RoundCompleted {
        round,
        train_loss: next.train_loss,
        test_accuracy: Some(accuracy),
        updates_accepted: accepted.len() as u32,
        bytes_up,
        bytes_down: finished.bytes_down,
        duration_ms,
    });
    info!(target: TARGET, job = %job.id, round, loss = next.train_loss, accuracy, accepted = accepted.len(), duration_ms, "round completed");
}
