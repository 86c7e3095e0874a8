//! Whole jobs through the real coordinator and worker shells, in one
//! process: in-memory network, real job stores and ledgers, a node
//! stopped and started again on its data dir.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fairgrid_protocol::ledger::{EntryBody, EntryKind};
use fairgrid_protocol::{Hash32, NodeId};
use fairgrid_sdk::jobs::{
    ArchName, DataChoice, JobRequest, JobState, MarketChoice, ModelChoice, TrainingChoice,
};

use super::cluster::{Cluster, LedgerKind};
use crate::jobs::coordinator::{CoordJob, submit};
use crate::net::Request;

/// A small logreg job on the built-in data: 8 shards of 500 samples.
pub(super) fn small_job(name: &str, rounds: u32) -> JobRequest {
    JobRequest {
        name: name.into(),
        model: ModelChoice {
            arch: ArchName::Logreg,
            hidden: None,
            layers: None,
        },
        data: DataChoice {
            source: "builtin".into(),
            shard_size: 500,
            max_train_samples: Some(4000),
        },
        training: TrainingChoice {
            rounds,
            local_steps: 4,
            batch_size: 32,
            lr: 0.05,
            ..TrainingChoice::default()
        },
        market: MarketChoice {
            alpha: 0.5,
            bid_window_secs: 1,
            round_timeout_secs: 20,
            deadline_secs: 300,
            ..MarketChoice::default()
        },
        result: Default::default(),
    }
}

pub(super) fn submit_to(cluster: &Cluster, node: usize, request: JobRequest) -> Hash32 {
    let ctx = cluster.nodes[node].ctx().clone();
    let accepted = cluster
        .on(node, async move { submit::submit(&ctx, request).await })
        .expect("job accepted");
    Hash32::from_hex(&accepted.job_id).expect("job id")
}

/// Waits (bounded) until `done` holds for the coordinator's job state.
fn wait_for(
    cluster: &Cluster,
    node: usize,
    job: Hash32,
    limit: Duration,
    what: &str,
    done: impl Fn(&crate::jobs::coordinator::CoordState) -> bool,
) {
    let until = Instant::now() + limit;
    loop {
        if let Some(coordinated) = cluster.nodes[node].ctx().jobs.coordinated(&job) {
            let state = coordinated.state();
            if done(&state) {
                return;
            }
            assert!(
                Instant::now() < until,
                "{what} not reached in {limit:?}: {:?} {:?}, {} rounds",
                state.phase,
                state.error,
                state.rounds.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) for the coordinator's job to end and checks it
/// finished.
pub(super) fn wait_finished(cluster: &Cluster, job: Hash32, limit: Duration) -> Arc<CoordJob> {
    wait_for(cluster, 0, job, limit, "finished", |s| s.is_terminal());
    let coordinated = cluster.nodes[0].ctx().jobs.coordinated(&job).unwrap();
    {
        let state = coordinated.state();
        assert_eq!(state.phase, JobState::Finished, "{:?}", state.error);
    }
    coordinated
}

/// Waits (bounded) until the network holds `count` messages back.
pub(super) fn wait_held(cluster: &Cluster, count: usize, what: &str) {
    let until = Instant::now() + Duration::from_secs(120);
    while cluster.net.held() < count {
        assert!(Instant::now() < until, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn own_entries(cluster: &Cluster, node: usize, job: &Hash32) -> Vec<EntryBody> {
    let store = cluster.nodes[node].ctx().ledger.store();
    store
        .entries_for_job(job)
        .expect("ledger read")
        .into_iter()
        .filter(|e| e.own)
        .map(|e| e.signed.verify_and_decode().expect("entry verifies").1.body)
        .collect()
}

pub(super) fn count(entries: &[EntryBody], kind: EntryKind) -> usize {
    entries.iter().filter(|e| e.kind() == kind).count()
}

/// The coordinator's entries for the job, once its `JobFinished` is
/// appended (entries written ahead into the last checkpoint are appended
/// just after it).
pub(super) fn entries_once_finished(
    cluster: &Cluster,
    node: usize,
    job: &Hash32,
) -> Vec<EntryBody> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let entries = own_entries(cluster, node, job);
        if count(&entries, EntryKind::JobFinished) > 0 {
            return entries;
        }
        assert!(Instant::now() < until, "JobFinished never appended");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_in_process_nodes_train_a_job_within_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, LedgerKind::InMemory).unwrap();
    let job = submit_to(&cluster, 0, small_job("in-process", 3));
    let coordinated = wait_finished(&cluster, job, Duration::from_secs(120));
    let state = coordinated.state();
    assert_eq!(state.rounds.len(), 3);
    let everyone: BTreeSet<NodeId> = cluster.nodes.iter().map(|n| n.node_id()).collect();
    assert_eq!(state.participants(), everyone);
    // alpha = 0.5 of 8 shards: no owner (each node its own) above 4.
    for record in &state.allocations {
        for assignment in &record.allocation.assignments {
            assert!(assignment.shards.len() <= 4, "{assignment:?}");
        }
    }
    for round in &state.rounds {
        let shards: u32 = round.accepted.iter().map(|(_, _, s)| s).sum();
        assert_eq!(
            shards, 8,
            "round {} trained {shards} of 8 shards",
            round.round
        );
    }
    drop(state);
    let entries = entries_once_finished(&cluster, 0, &job);
    assert_eq!(count(&entries, EntryKind::JobFinished), 1);
    assert_eq!(count(&entries, EntryKind::RoundCompleted), 3);
    assert_eq!(count(&entries, EntryKind::JobSubmitted), 1);
    // Every worker receives the job's entries and ends its part; the
    // coordinator's own worker ends its part too (it has the entries).
    let until = Instant::now() + Duration::from_secs(30);
    for (i, node) in cluster.nodes.iter().enumerate() {
        loop {
            let worker = node.ctx().jobs.worker(&job).expect("worked on the job");
            let foreign = node.ctx().ledger.store().entries_for_job(&job).unwrap();
            if worker.is_finished() && (i == 0 || foreign.iter().any(|e| !e.own)) {
                break;
            }
            assert!(
                Instant::now() < until,
                "a worker never learnt the job ended"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_coordinator_stopped_mid_round_and_started_again_keeps_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 4, LedgerKind::OnDisk).unwrap();
    // Node 0 only coordinates: stopping it takes no worker with it.
    cluster.stop(0);
    cluster.nodes[0].config.worker.work_own_jobs = false;
    cluster.resume(0).unwrap();
    // The updates of round 1 are held back on their way: the coordinator
    // is stopped with every worker's round-1 update in flight, and
    // started again, as if it had crashed in the middle of the round.
    let coordinator = crate::jobs::transport::peer_id(&cluster.nodes[0].node_id()).unwrap();
    cluster.net.hold(Box::new(move |to, request| {
        *to == coordinator
            && matches!(request, Request::RoundUpdate { update, .. }
                if update.verify_and_decode().is_ok_and(|(_, u)| u.round == 1))
    }));
    let mut request = small_job("restart", 4);
    // With outer momentum: round 0's velocity must come back from the
    // checkpoint with the parameters.
    request.training.outer_momentum = 0.5;
    let job = submit_to(&cluster, 0, request);
    wait_held(&cluster, 3, "round 1 updates never came");
    let coordinated = cluster.nodes[0].ctx().jobs.coordinated(&job).unwrap();
    let open = coordinated.machine().open_round().map(|r| r.round);
    assert_eq!(open, Some(1));
    drop(coordinated);
    cluster.stop(0);
    // The held updates find the coordinator gone.
    cluster.net.release();
    cluster.resume(0).unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while !cluster.nodes[0].ctx().jobs.resumed() {
        assert!(Instant::now() < until, "jobs never resumed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let resumed = cluster.nodes[0].ctx().jobs.coordinated(&job).unwrap();
    let snapshot = resumed.machine().snapshot();
    assert_eq!(
        snapshot.velocity.len(),
        snapshot.params.len(),
        "the outer velocity of round 0 is back"
    );
    assert!(snapshot.velocity.iter().any(|v| *v != 0.0));
    drop(resumed);
    let coordinated = wait_finished(&cluster, job, Duration::from_secs(180));
    let state = coordinated.state();
    let per_round: Vec<(u32, u32)> = state
        .rounds
        .iter()
        .map(|r| (r.round, r.accepted.iter().map(|(_, _, s)| s).sum()))
        .collect();
    assert_eq!(
        per_round,
        vec![(0, 8), (1, 8), (2, 8), (3, 8)],
        "shards trained per round (stopped while round 1 was open)"
    );
    assert!(state.missing.is_empty() && state.banned.is_empty());
    drop(state);
    let entries = entries_once_finished(&cluster, 0, &job);
    assert_eq!(count(&entries, EntryKind::RoundCompleted), 4);
    assert_eq!(count(&entries, EntryKind::JobFinished), 1);
}

#[test]
fn a_worker_that_goes_away_mid_round_loses_its_shards_and_rejoins_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3, LedgerKind::OnDisk).unwrap();
    let leaving = cluster.nodes[2].node_id();
    // Its round-1 update never arrives: it goes away with it.
    cluster.net.hold(Box::new(move |_, request| {
        matches!(request, Request::RoundUpdate { update, .. }
            if update.verify_and_decode().is_ok_and(|(_, u)| u.round == 1 && u.worker == leaving))
    }));
    let job = submit_to(&cluster, 0, small_job("churn", 5));
    wait_held(&cluster, 1, "the round-1 update never came");
    cluster.stop(2);
    cluster.net.release();
    // Rounds from 3 on wait until it is back (however slowly it starts on
    // a loaded machine), so that the last round can have it again.
    cluster.net.hold(Box::new(|_, request| {
        matches!(request, Request::RoundStart { start, .. }
            if start.verify_and_decode().is_ok_and(|(_, s)| s.round >= 3))
    }));
    wait_for(
        &cluster,
        0,
        job,
        Duration::from_secs(60),
        "round 1 recorded",
        |s| s.rounds.len() >= 2 && s.missing.contains(&leaving),
    );
    cluster.resume(2).unwrap();
    wait_for(
        &cluster,
        0,
        job,
        Duration::from_secs(60),
        "the worker bid again",
        |s| !s.missing.contains(&leaving),
    );
    cluster.net.release();
    let coordinated = wait_finished(&cluster, job, Duration::from_secs(120));
    let state = coordinated.state();
    let trained = |round: usize| -> (u32, u32) {
        let accepted = &state.rounds[round].accepted;
        let shards = accepted.iter().map(|(_, _, s)| s).sum();
        let its = accepted.iter().filter(|(n, _, _)| *n == leaving);
        (shards, its.map(|(_, _, s)| s).sum())
    };
    assert_eq!(state.rounds.len(), 5);
    let its_shards = trained(0).1;
    assert!(its_shards > 0, "the leaving worker trained round 0");
    // Round 1 goes on without its shards; from round 2 the others hold
    // them, until it is back.
    assert_eq!(trained(1), (8 - its_shards, 0));
    for round in 2..5 {
        assert_eq!(trained(round).0, 8, "round {round}");
    }
    assert!(trained(4).1 > 0, "the worker did not rejoin");
    assert!(
        state.allocations.len() >= 3,
        "cleared again when it left and came back"
    );
}

#[test]
fn ended_jobs_leave_memory_and_are_read_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 2, LedgerKind::OnDisk).unwrap();
    cluster.stop(0);
    cluster.nodes[0].config.jobs.ended_in_memory = 1;
    cluster.resume(0).unwrap();
    let mut jobs = Vec::new();
    for i in 0..3 {
        let job = submit_to(&cluster, 0, small_job(&format!("archived {i}"), 1));
        wait_finished(&cluster, job, Duration::from_secs(120));
        entries_once_finished(&cluster, 0, &job);
        jobs.push(job);
    }
    let check = |cluster: &Cluster, in_memory: &[Hash32]| {
        let jobs_of = &cluster.nodes[0].ctx().jobs;
        let listed: Vec<String> = jobs_of.statuses().into_iter().map(|s| s.job_id).collect();
        let expected: Vec<String> = jobs.iter().map(Hash32::to_hex).collect();
        assert_eq!(listed, expected, "every job listed, oldest first");
        for job in &jobs {
            let kept = in_memory.contains(job);
            assert_eq!(jobs_of.coordinated(job).is_some(), kept, "{job} in memory");
            assert_eq!(jobs_of.archived(job).is_some(), !kept, "{job} archived");
            let found = cluster
                .on(0, jobs_of.find_coordinated(job))
                .expect("read back")
                .expect("found");
            let state = found.state();
            assert_eq!(state.phase, JobState::Finished);
            assert_eq!(state.rounds.len(), 1);
            assert!(state.result.is_some());
        }
        // A worker's late message about an archived job hears it ended.
        let worker = cluster.nodes[1].node_id();
        let answer = crate::jobs::coordinator::inbound::on_decline(
            cluster.nodes[0].ctx(),
            worker,
            jobs[0],
            "late".into(),
        );
        assert!(
            matches!(&answer, crate::net::Response::Refused { reason } if reason.starts_with(crate::jobs::coordinator::inbound::JOB_ENDED)),
            "{answer:?}"
        );
    };
    // Each job's task, as it stops, leaves at most one ended job in
    // memory: the last.
    let until = Instant::now() + Duration::from_secs(30);
    while cluster.nodes[0].ctx().jobs.coordinated(&jobs[1]).is_some() {
        assert!(Instant::now() < until, "the second job never left memory");
        std::thread::sleep(Duration::from_millis(20));
    }
    check(&cluster, &jobs[2..]);
    // After a restart every settled job stays on disk.
    cluster.stop(0);
    cluster.resume(0).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while !cluster.nodes[0].ctx().jobs.resumed() {
        assert!(Instant::now() < until, "jobs never resumed");
        std::thread::sleep(Duration::from_millis(20));
    }
    check(&cluster, &[]);
}

/// Issue 14: a worker whose update never arrives (it is not restarted:
/// the update is lost on the way) is dropped from the next allocation, is
/// told so, bids again, and trains again from the clearing after.
#[test]
fn a_worker_dropped_for_a_lost_update_is_told_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, LedgerKind::InMemory).unwrap();
    let lost = cluster.nodes[2].node_id();
    cluster.net.hold(Box::new(move |_, request| {
        matches!(request, Request::RoundUpdate { update, .. }
            if update.verify_and_decode().is_ok_and(|(_, u)| u.round == 1 && u.worker == lost))
    }));
    let mut request = small_job("lost update", 6);
    request.market.round_timeout_secs = 3;
    let job = submit_to(&cluster, 0, request);
    let coordinated = wait_finished(&cluster, job, Duration::from_secs(180));
    let state = coordinated.state();
    let its = |round: usize| -> u32 {
        let accepted = &state.rounds[round].accepted;
        accepted
            .iter()
            .filter(|(n, _, _)| *n == lost)
            .map(|(_, _, s)| s)
            .sum()
    };
    assert!(state.allocations.len() >= 3, "dropped, then taken back");
    assert!(its(0) > 0, "it trained round 0");
    assert_eq!(its(1), 0, "its round-1 update was lost");
    let back = (2..state.rounds.len()).find(|&r| its(r) > 0);
    assert!(
        back.is_some(),
        "the dropped worker never trained again: {:?}",
        (0..state.rounds.len()).map(its).collect::<Vec<_>>()
    );
    assert!(!state.banned.contains(&lost));
    drop(state);
    cluster.net.release();
}

/// Waits (bounded) for every job (its coordinator's index, its id) to end,
/// checking all along that no node holds more than `most` shards over the
/// jobs still running (the coordinators' current allocations). Returns the
/// most any node held.
fn watch_shards_per_node(cluster: &Cluster, jobs: &[(usize, Hash32)], most: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(300);
    let mut seen = 0;
    loop {
        let states: Vec<_> = jobs
            .iter()
            .map(|(c, j)| {
                cluster.nodes[*c]
                    .ctx()
                    .jobs
                    .coordinated(j)
                    .expect("coordinated")
            })
            .collect();
        for node in &cluster.nodes {
            let held: usize = states
                .iter()
                .map(|j| j.state())
                .filter(|s| !s.is_terminal())
                .filter_map(|s| {
                    s.current()
                        .map(|a| a.allocation.shards_of(&node.node_id()).len())
                })
                .sum();
            seen = seen.max(held);
            assert!(held <= most, "node {} holds {held} shards", node.node_id());
        }
        if states.iter().all(|j| j.state().is_terminal()) {
            return seen;
        }
        assert!(Instant::now() < until, "the jobs did not end in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every job finished, each round training all of its shards.
fn assert_all_finished(cluster: &Cluster, jobs: &[(usize, Hash32)], shards: u32) {
    for (c, job) in jobs {
        let coordinated = cluster.nodes[*c].ctx().jobs.coordinated(job).unwrap();
        let state = coordinated.state();
        assert_eq!(state.phase, JobState::Finished, "{:?}", state.error);
        for round in &state.rounds {
            let trained: u32 = round.accepted.iter().map(|(_, _, s)| s).sum();
            assert_eq!(trained, shards, "round {}", round.round);
        }
    }
}

/// Nodes that hold four shards of the small job (CPU).
fn four_shard_offer() -> fairgrid_protocol::ResourceVec {
    fairgrid_protocol::ResourceVec {
        cpu_milli: 400,
        mem_mib: 2048,
        gpu_milli: 0,
        gpu_mem_mib: 0,
    }
}

fn waiting_job(name: &str) -> JobRequest {
    let mut r = small_job(name, 2);
    r.market.on_shortfall = fairgrid_protocol::messages::ShortfallPolicy::Wait;
    r
}

/// Issue 14, reservation: two jobs submitted at once to nodes that can
/// each hold four shards, 16 shards wanted. Each bid is made out of what
/// the other job leaves free, so no node ever holds more shards than its
/// offer (without reservation a node held 5); the job that could not be
/// placed whole waits and takes the capacity the first frees (its
/// workers bid again, larger).
#[test]
fn two_jobs_at_once_never_put_more_shards_on_a_node_than_it_offers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster =
        Cluster::start_offering(dir.path(), 3, LedgerKind::InMemory, four_shard_offer()).unwrap();
    let jobs = [
        (0, submit_to(&cluster, 0, waiting_job("first"))),
        (0, submit_to(&cluster, 0, waiting_job("second"))),
    ];
    let most = watch_shards_per_node(&cluster, &jobs, 4);
    assert!(most >= 3, "the nodes held at most {most} shards");
    assert_all_finished(&cluster, &jobs, 8);
}

/// Three submitters (three of six nodes coordinate), two jobs each, all
/// at once: 48 shards wanted from 24 shards of capacity. Every job
/// finishes with all its shards, no node is ever over its offer, and the
/// jobs are admitted in DRF order of their submitters.
#[test]
fn six_jobs_from_three_submitters_share_six_nodes_within_their_offers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster =
        Cluster::start_offering(dir.path(), 6, LedgerKind::InMemory, four_shard_offer()).unwrap();
    let mut jobs = Vec::new();
    for submitter in 0..3 {
        for n in 0..2 {
            let name = format!("s{submitter}-j{n}");
            jobs.push((
                submitter,
                submit_to(&cluster, submitter, waiting_job(&name)),
            ));
        }
    }
    watch_shards_per_node(&cluster, &jobs, 4);
    assert_all_finished(&cluster, &jobs, 8);
    assert_nothing_held(&cluster);
    // Admission by DRF: the pool holds three of the jobs at once, and the
    // first three placed are one of each submitter's (first come, first
    // served placed both of submitter 0's before anyone else's).
    let mut placed: Vec<(u64, usize)> = jobs
        .iter()
        .map(|(c, j)| {
            let job = cluster.nodes[*c].ctx().jobs.coordinated(j).unwrap();
            let first = job.state().allocations[0].allocation.cleared_at;
            (first, *c)
        })
        .collect();
    placed.sort();
    let firsts: BTreeSet<usize> = placed[..3].iter().map(|(_, c)| *c).collect();
    assert_eq!(firsts.len(), 3, "placed in this order: {placed:?}");
}

/// Once every job has ended, no node holds any of its offer: a node that
/// bid and lost gave its capacity back.
fn assert_nothing_held(cluster: &Cluster) {
    let until = Instant::now() + Duration::from_secs(30);
    for node in &cluster.nodes {
        let working = &node.ctx().jobs.working;
        while !working.held().is_zero() {
            if Instant::now() >= until {
                let jobs: Vec<String> = working
                    .active_jobs()
                    .iter()
                    .map(|w| {
                        let (allocations, awaits) = {
                            let machine = w.machine();
                            (machine.record().allocations.len(), machine.awaits_allocation())
                        };
                        let coordinated = cluster
                            .nodes
                            .iter()
                            .find_map(|n| n.ctx().jobs.coordinated(&w.id));
                        format!(
                            "job {} hold {:?} passed_over {} allocations {} window {} participant {:?} awaits {}",
                            w.id,
                            w.hold(),
                            w.passed_over(),
                            allocations,
                            node.ctx().jobs.window.has_allocation(&w.id),
                            coordinated.map(|c| c.state().participants().contains(&node.node_id())),
                            awaits,
                        )
                    })
                    .collect();
                panic!(
                    "node {} still holds {:?} with every job ended: {jobs:#?}",
                    node.node_id(),
                    working.held()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Issue 14, idle-only: a worker whose owner needs the machine mid-round
/// stops training before its next step, tells the coordinator, signed, and
/// the job goes on without it at once (its shards re-cleared, not waiting
/// for the round's deadline); it bids on nothing until it is idle again.
#[test]
fn a_worker_whose_owner_needs_the_machine_withdraws_mid_round() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, LedgerKind::InMemory).unwrap();
    let mut request = small_job("withdrawn", 4);
    // Long rounds (seconds), and a deadline far beyond them: the job must
    // not wait for it.
    request.training.local_steps = 400;
    request.market.round_timeout_secs = 120;
    let job = submit_to(&cluster, 0, request);
    let worker = {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(w) = cluster.nodes[2].ctx().jobs.worker(&job)
                && w.machine().training().is_some()
            {
                break w;
            }
            assert!(Instant::now() < until, "node 2 never trained");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let ctx = cluster.nodes[2].ctx().clone();
    let started = Instant::now();
    cluster.on(
        2,
        crate::jobs::worker::withdraw_all(&ctx, "test: user active".into()),
    );
    // withdraw_all returns once the training thread has let go.
    let stopped = started.elapsed();
    eprintln!("withdrawal to training stopped: {stopped:?}");
    assert!(worker.machine().is_aside() && !worker.is_finished());
    assert!(
        worker.engine.try_lock().unwrap().is_none(),
        "training state freed"
    );
    assert!(ctx.jobs.working.paused().is_some());

    let coordinated = wait_finished(&cluster, job, Duration::from_secs(240));
    let state = coordinated.state();
    let gone = cluster.nodes[2].node_id();
    assert!(state.missing.contains(&gone), "the coordinator was told");
    assert!(
        !state.banned.contains(&gone),
        "stepping aside is no misbehaviour"
    );
    let last = state.rounds.last().unwrap();
    assert!(last.accepted.iter().all(|(n, _, _)| *n != gone));
    let trained: u32 = last.accepted.iter().map(|(_, _, s)| s).sum();
    assert_eq!(trained, 8, "its shards went to the others");
    drop(state);

    // Paused, it bids on nothing; idle again, it does.
    let second = submit_to(&cluster, 0, small_job("while busy", 1));
    wait_finished(&cluster, second, Duration::from_secs(120));
    assert!(ctx.jobs.worker(&second).is_none());
    cluster.on(2, async { crate::jobs::worker::offer_again(&ctx) });
    assert!(ctx.jobs.working.paused().is_none());
    let third = submit_to(&cluster, 0, small_job("idle again", 1));
    wait_finished(&cluster, third, Duration::from_secs(120));
    assert!(ctx.jobs.worker(&third).is_some());
}

/// A configuration with a network cap of 40% and a short settle time.
fn capped_config() -> crate::config::Config {
    let mut config = super::cluster::test_config();
    config.jobs.beta_ppm = 400_000;
    config.jobs.window_settle_ms = 200;
    config
}

/// Waits (bounded) for `node`'s job to have an allocation and returns it.
fn first_allocation(
    cluster: &Cluster,
    node: usize,
    job: Hash32,
) -> fairgrid_protocol::messages::Allocation {
    wait_for(
        cluster,
        node,
        job,
        Duration::from_secs(60),
        "allocated",
        |s| s.current().is_some(),
    );
    let coordinated = cluster.nodes[node].ctx().jobs.coordinated(&job).unwrap();
    let state = coordinated.state();
    state.allocations[0].allocation.clone()
}

fn usage_of(
    allocation: &fairgrid_protocol::messages::Allocation,
) -> fairgrid_protocol::market::WindowUsage {
    let mut usage = fairgrid_protocol::market::WindowUsage::default();
    for pay in &allocation.payments {
        usage.total += u64::from(pay.shards);
        usage.by_owner.insert(pay.owner, u64::from(pay.shards));
    }
    usage
}

/// Issue 14, network-wide caps: job A is cleared by node 0, job B by
/// node 1 while A runs. B's window counts A's allocation, which node 1
/// only heard of by gossip (before, the window came from the coordinator's
/// own ledger and B's was empty), and no owner's usage over both jobs
/// passes beta. Then node 2, made to forget what it heard (a node that
/// missed the gossip), clears job C under a window without A and B: the
/// winners that know them refuse it, and say why.
#[test]
fn the_network_cap_counts_other_coordinators_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_configured(
        dir.path(),
        4,
        LedgerKind::InMemory,
        super::cluster::test_offer(),
        capped_config(),
    )
    .unwrap();
    let mut long = small_job("A", 200);
    long.market.deadline_secs = 600;
    let a = submit_to(&cluster, 0, long);
    let a_allocation = first_allocation(&cluster, 0, a);
    let b = submit_to(&cluster, 1, small_job("B", 200));
    let b_allocation = first_allocation(&cluster, 1, b);

    assert_eq!(b_allocation.policy.window, usage_of(&a_allocation));
    let both = {
        let mut u = usage_of(&a_allocation);
        for (owner, shards) in usage_of(&b_allocation).by_owner {
            *u.by_owner.entry(owner).or_default() += shards;
        }
        u
    };
    // floor(40% of the 16 shards of both jobs)
    for (owner, used) in &both.by_owner {
        assert!(*used <= 6, "owner {owner} holds {used} of 16 shards");
    }
    {
        let state = cluster.nodes[1].ctx().jobs.coordinated(&b).unwrap();
        let state = state.state();
        assert!(
            state
                .allocations
                .iter()
                .all(|r| !r.reason.contains("network window")),
            "B's winners accepted its window"
        );
    }

    std::thread::sleep(Duration::from_millis(300));
    cluster.nodes[2].ctx().jobs.window.forget_all();
    let c = submit_to(&cluster, 2, small_job("C", 200));
    wait_for(
        &cluster,
        2,
        c,
        Duration::from_secs(60),
        "a winner refused the window",
        |s| {
            s.allocations.iter().any(|r| {
                r.reason
                    .contains("network window: the recorded window counts")
            })
        },
    );
    let state = cluster.nodes[2].ctx().jobs.coordinated(&c).unwrap();
    let first = state.state().allocations[0].allocation.clone();
    assert_eq!(first.policy.window.total, 0, "node 2 cleared blind");
}

/// A node that bid on a job and lost its auction holds nothing for it
/// while the job trains without it: the gossiped allocation told it.
#[test]
fn a_node_that_loses_the_auction_gives_its_capacity_back() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, LedgerKind::InMemory).unwrap();
    // 2 shards, alpha 0.5: two owners take one each, the third loses.
    let mut request = small_job("two winners", 100);
    request.data.max_train_samples = Some(1000);
    let job = submit_to(&cluster, 0, request);
    let allocation = first_allocation(&cluster, 0, job);
    assert_eq!(allocation.assignments.len(), 2);
    let loser = cluster
        .nodes
        .iter()
        .position(|n| allocation.shards_of(&n.node_id()).is_empty())
        .unwrap();
    let working = &cluster.nodes[loser].ctx().jobs.working;
    let until = Instant::now() + Duration::from_secs(20);
    while !working.held().is_zero() {
        assert!(
            Instant::now() < until,
            "the loser still holds {:?}",
            working.held()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let coordinated = cluster.nodes[0].ctx().jobs.coordinated(&job).unwrap();
    assert!(
        !coordinated.state().is_terminal(),
        "released while the job ran"
    );
}

/// Issue 14, idle-only: the owner of one of three workers is active and
/// idle in turns during a job. Each time, the worker stops training and
/// steps aside; each time it is idle again it bids and rejoins the same
/// job. The job converges within a point of the same job undisturbed
/// (test accuracy, the mean of the last ten rounds).
/// Prints the withdrawal latencies (p50, p99: event to training stopped).
#[test]
fn a_worker_whose_owner_comes_and_goes_rejoins_and_the_job_converges() {
    let request = || {
        let mut r = small_job("idle in turns", 80);
        r.training.local_steps = 40;
        r.market.deadline_secs = 600;
        r
    };
    let final_accuracy = |cluster: &Cluster, job: Hash32| -> f32 {
        let coordinated = wait_finished(cluster, job, Duration::from_secs(300));
        let state = coordinated.state();
        // The mean of the last ten evaluations: one evaluation of the small
        // test set moves by about a point from round to round.
        let last: Vec<f32> = state
            .rounds
            .iter()
            .rev()
            .filter_map(|r| r.test_accuracy)
            .take(10)
            .collect();
        assert!(!last.is_empty(), "evaluated");
        last.iter().sum::<f32>() / last.len() as f32
    };

    let dir = tempfile::tempdir().unwrap();
    let calm = {
        let cluster =
            Cluster::start(dir.path().join("calm").as_path(), 3, LedgerKind::InMemory).unwrap();
        let job = submit_to(&cluster, 0, request());
        final_accuracy(&cluster, job)
    };

    let cluster =
        Cluster::start(dir.path().join("busy").as_path(), 3, LedgerKind::InMemory).unwrap();
    let job = submit_to(&cluster, 0, request());
    let ctx = cluster.nodes[2].ctx().clone();
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        let coordinated = cluster.nodes[0].ctx().jobs.coordinated(&job).unwrap();
        if coordinated.state().is_terminal() {
            break;
        }
        assert!(Instant::now() < until, "the job did not end");
        // Wait until node 2 trains in the job, then its owner sits down.
        let training = ctx
            .jobs
            .worker(&job)
            .is_some_and(|w| w.machine().training().is_some());
        if !training {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let started = Instant::now();
        cluster.on(
            2,
            crate::jobs::worker::withdraw_all(&ctx, "test: user active".into()),
        );
        latencies.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        cluster.on(2, async { crate::jobs::worker::offer_again(&ctx) });
    }
    let busy = final_accuracy(&cluster, job);
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "{} withdrawals, to training stopped: p50 {:?}, p99 {:?}; accuracy {busy:.4} against {calm:.4} undisturbed",
        latencies.len(),
        at(0.5),
        at(0.99)
    );
    // Each withdrawal after the first found node 2 training again in the
    // job it had stepped aside from.
    assert!(
        latencies.len() >= 3,
        "node 2 trained in the job only {} times",
        latencies.len()
    );
    assert!(
        (busy - calm).abs() <= 0.01,
        "accuracy {busy} against {calm} undisturbed"
    );
}

/// Issue 16: a job with `market.relayed_workers = false` takes no bids
/// from a node its coordinator reaches only through a relay; the same job
/// with the default takes that node's bid.
#[test]
fn a_job_that_refuses_relayed_workers_is_trained_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, LedgerKind::InMemory).unwrap();
    let relayed = cluster.nodes[2].node_id();
    cluster
        .net
        .relay_only(crate::jobs::transport::peer_id(&relayed).unwrap());
    let participants = |refuse: bool| {
        let mut request = small_job(if refuse { "direct-only" } else { "any" }, 1);
        request.market.relayed_workers = !refuse;
        let job = submit_to(&cluster, 0, request);
        let state = wait_finished(&cluster, job, Duration::from_secs(120));
        let state = state.state();
        state.participants()
    };
    let direct_only = participants(true);
    assert!(
        !direct_only.contains(&relayed),
        "the relayed node took part: {direct_only:?}"
    );
    assert!(direct_only.contains(&cluster.nodes[1].node_id()));
    let any = participants(false);
    assert!(
        any.contains(&relayed),
        "the relayed node was left out by default: {any:?}"
    );
}
