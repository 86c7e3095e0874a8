//! Churn and misbehaviour with real node processes on 127.0.0.1: a worker
//! killed (SIGKILL) mid-job loses its shards to the others and the job
//! completes; a coordinator killed mid-job resumes from its checkpoint;
//! workers that send a corrupted or wrongly signed update are rejected
//! and earn nothing.

use crate::common;
use crate::jobs_common;

use std::time::Duration;

use common::{NodeProc, fairgrid, wait_for};
use fairgrid_sdk::jobs::{JobEventKind, JobState};
use jobs_common::{JobsApi, job_entry_kinds, jobs_env, small_job, start_cluster, wait_mesh};

fn cluster(
    root: &std::path::Path,
    n: usize,
    fault: impl Fn(usize) -> &'static str,
) -> Vec<NodeProc> {
    start_cluster(
        root,
        n,
        |i| match fault(i) {
            "" => jobs_env(&[]),
            f => jobs_env(&[("FAIRGRID_TEST_FAULT", f)]),
        },
        |_, _, _| {},
    )
}

/// A job whose rounds take long enough (an MLP, 100 local steps: some
/// 100 ms of work per worker) that a node can be killed mid-job; the
/// round timeout leaves a wide margin on a loaded machine.
fn slow_job(name: &str, rounds: u32, alpha: f64) -> fairgrid_sdk::jobs::JobRequest {
    let mut request = small_job(name, rounds, alpha);
    request.model.arch = fairgrid_sdk::jobs::ArchName::Mlp;
    request.training.local_steps = 100;
    request.market.round_timeout_secs = 5;
    request
}

fn ledger_ok(node: &mut NodeProc) {
    node.stop();
    let out = fairgrid(&["ledger", "verify", "--data-dir", node.dir.to_str().unwrap()]);
    assert!(out.starts_with("ledger OK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_its_shards_and_the_job_completes() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 4, |_| "");
    wait_mesh(&nodes).await;
    let api = JobsApi::of(&nodes[0]);
    // alpha 0.5: three nodes (each its own owner) can still hold 16 shards,
    // if their bids do: a bid holds only the shards its node's measured
    // speed trains in 60% of the round timeout, and with 5 s four nodes
    // probing at once on two loaded cores measured under the 6,400
    // samples/s that 6 shards of 3,200 samples need (CI: shortfall 1).
    // 15 s needs a third of that.
    let mut request = slow_job("churn", 12, 0.5);
    request.market.round_timeout_secs = 15;
    let id = api.submit(&request).await.unwrap().job_id;
    let victim = nodes[3].peer_id.clone();
    let seen = api
        .follow_until(
            &id,
            Duration::from_secs(120),
            |e| matches!(e.kind, JobEventKind::RoundCompleted { round, .. } if round >= 2),
        )
        .await;
    assert!(
        seen.iter()
            .any(|e| matches!(&e.kind, JobEventKind::Cleared { winners: 4, .. })),
        "every node won shards: {seen:#?}"
    );
    let before = api.allocation(&id).await;
    let victim_shards = before
        .nodes
        .iter()
        .find(|n| n.node == victim)
        .unwrap()
        .shards;
    assert!(victim_shards > 0);
    nodes[3].kill();

    let events = api.follow(&id, Duration::from_secs(120)).await;
    let report = api.report(&id).await;
    assert_eq!(report.state, JobState::Finished, "{events:#?}");
    assert_eq!(report.rounds.len(), 12);
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, JobEventKind::WorkerMissed { node, .. } if *node == victim)),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, JobEventKind::Reallocated { .. })),
        "{events:#?}"
    );
    // The last allocation gives the victim's shards to the others, caps
    // still holding.
    let after = api.allocation(&id).await;
    assert!(after.attempt > before.attempt);
    assert_eq!(after.shortfall, 0);
    assert!(
        after
            .nodes
            .iter()
            .all(|n| n.node != victim || n.shards == 0)
    );
    assert_eq!(after.nodes.iter().map(|n| n.shards).sum::<u32>(), 16);
    assert!(after.owners.iter().all(|o| o.shards <= after.owner_cap));
    let last = report.rounds.last().unwrap();
    assert_eq!(last.participants, 3);
    // Recovery: at most two rounds ran short-handed.
    let short = report.rounds.iter().filter(|r| r.participants == 3).count();
    let full = report.rounds.iter().filter(|r| r.participants == 4).count();
    assert!(full >= 3 && short + full >= 11, "{:?}", report.rounds);
    for node in nodes.iter_mut().take(3) {
        ledger_ok(node);
    }
}

/// When the coordinator is killed.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// In the bid window, once the first bid is in.
    Bidding,
    /// While every worker is training round 2.
    MidRound,
    /// Right after round 2 is recorded.
    AfterRound,
    /// Right after the last round is recorded (while finishing).
    End,
}

impl KillAt {
    fn reached(self, kind: &JobEventKind, rounds: u32) -> bool {
        match (self, kind) {
            (KillAt::Bidding, JobEventKind::BidReceived { .. }) => true,
            (KillAt::MidRound, JobEventKind::RoundStarted { round, .. }) => *round >= 2,
            (KillAt::AfterRound, JobEventKind::RoundCompleted { round, .. }) => *round >= 2,
            (KillAt::End, JobEventKind::RoundCompleted { round, .. }) => *round + 1 == rounds,
            _ => false,
        }
    }
}

/// The coordinator (which also works on its own job) of a 3-node job is
/// killed at `at` and restarted at once. The job must finish from its
/// checkpoint with every worker in every round (nobody dropped for the
/// coordinator's crash) and each round in the ledger once. Returns the
/// participants of each round.
async fn restart_coordinator(at: KillAt) -> Vec<u32> {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, |_| "");
    wait_mesh(&nodes).await;
    let api = JobsApi::of(&nodes[0]);
    let rounds = 6;
    let mut request = slow_job("resume", rounds, 1.0);
    // Rounds of a few seconds, so the workers are mid-round when the
    // coordinator comes back; a deadline far beyond that.
    request.training.local_steps = 2500;
    request.market.round_timeout_secs = 90;
    let id = api.submit(&request).await.unwrap().job_id;
    let seen = api
        .follow_until(&id, Duration::from_secs(180), |e| {
            at.reached(&e.kind, rounds)
        })
        .await;
    assert!(
        seen.iter().any(|e| at.reached(&e.kind, rounds)),
        "{at:?} never came: {seen:#?}"
    );
    nodes[0].kill();
    let listen = nodes[1].listen.clone();
    nodes[0] = NodeProc::start(&nodes[0].dir.clone(), &listen, &jobs_env(&[]));
    let api = JobsApi::of(&nodes[0]);
    // The job is back once its checkpoint and data are loaded.
    wait_for(Duration::from_secs(30), "the resumed job", || {
        let api = api.clone();
        let path = format!("/v1/jobs/{id}");
        async move { (api.raw(&path).await.0 == 200).then_some(()) }
    })
    .await;
    let events = api.follow(&id, Duration::from_secs(300)).await;
    let report = api.report(&id).await;
    assert_eq!(
        report.state,
        JobState::Finished,
        "{at:?}: {events:#?}\n{}",
        nodes[0].log()
    );
    let rounds_done: Vec<u32> = report.rounds.iter().map(|r| r.round).collect();
    assert_eq!(
        rounds_done,
        (0..rounds).collect::<Vec<_>>(),
        "each round once"
    );
    let winners = report
        .allocation
        .as_ref()
        .expect("an allocation")
        .nodes
        .iter()
        .filter(|n| n.shards > 0)
        .count() as u32;
    assert_eq!(
        winners,
        3,
        "every node holds shards: {events:#?}\n{}\n{}\n{}",
        nodes[0].log(),
        nodes[1].log(),
        nodes[2].log()
    );
    let participants: Vec<u32> = report.rounds.iter().map(|r| r.participants).collect();
    eprintln!("{at:?}: participants per round: {participants:?}");
    assert!(
        participants.iter().all(|&p| p == winners),
        "{at:?}: a worker was dropped: participants per round {participants:?}\n{events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, JobEventKind::WorkerMissed { .. })),
        "{at:?}: {events:#?}"
    );
    // Each round is in the coordinator's ledger exactly once.
    let coordinator = nodes[0].peer_id.clone();
    let recorded = job_entry_kinds(&nodes[0].client(), &id)
        .await
        .into_iter()
        .filter(|(author, kind)| *author == coordinator && kind == "round_completed")
        .count();
    assert_eq!(recorded, rounds as usize, "{at:?}");
    for node in &mut nodes {
        ledger_ok(node);
    }
    participants
}

/// The kill-and-restart experiment with real processes and SIGKILL
/// (about 40 s per moment). Mid-round is the case that dropped workers
/// before restarts kept them: the coordinator comes back while they are
/// still training its open round. Every `cargo test` run covers it in
/// process instead (`jobs::testing::tests`, a coordinator stopped with
/// every round-1 update in flight; `worker::machine` tests for a start
/// re-sent while training). Run: `cargo test -p fairgrid-node --test it
/// -- --ignored restarted_at_every_moment --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "kill-and-restart experiment, 3 min: bidding, mid-round, after a round, at the end (issue 10 note); CI covers it in process"]
async fn a_coordinator_restarted_at_every_moment_keeps_every_worker() {
    for at in [
        KillAt::Bidding,
        KillAt::MidRound,
        KillAt::AfterRound,
        KillAt::End,
    ] {
        restart_coordinator(at).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_and_wrongly_signed_updates_are_rejected_without_credit() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, |i| match i {
        1 => "corrupt_update",
        2 => "wrong_signer",
        _ => "",
    });
    wait_mesh(&nodes).await;
    let api = JobsApi::of(&nodes[0]);
    let mut request = small_job("liars", 4, 1.0);
    request.market.round_timeout_secs = 4;
    let id = api.submit(&request).await.unwrap().job_id;
    let events = api.follow(&id, Duration::from_secs(120)).await;
    let report = api.report(&id).await;
    assert_eq!(report.state, JobState::Finished, "{events:#?}");
    for liar in [&nodes[1].peer_id, &nodes[2].peer_id] {
        let rejected: Vec<&String> = events
            .iter()
            .filter_map(|e| match &e.kind {
                JobEventKind::UpdateRejected { node, reason, .. } if node == liar => Some(reason),
                _ => None,
            })
            .collect();
        assert!(!rejected.is_empty(), "{liar} was not rejected: {events:#?}");
    }
    // Only the honest node (the coordinator, its own owner) is credited,
    // and every round counted its update alone.
    assert_eq!(report.credits.len(), 1, "{:?}", report.credits);
    assert!(report.credits[0].amount > 0);
    assert!(
        report.rounds.iter().all(|r| r.participants == 1),
        "{:?}",
        report.rounds
    );
    for node in &mut nodes {
        ledger_ok(node);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_price_no_bid_meets_fails_naming_the_cheapest_ask() {
    let root = tempfile::tempdir().unwrap();
    let floors = ["300", "250"];
    let mut nodes = start_cluster(
        root.path(),
        2,
        |i| jobs_env(&[("FAIRGRID_OFFER_PRICE_FLOOR", floors[i])]),
        |_, _, _| {},
    );
    wait_mesh(&nodes).await;
    let api = JobsApi::of(&nodes[0]);
    let mut request = small_job("cheap", 2, 1.0);
    request.market.limit_price = 100;
    let id = api.submit(&request).await.unwrap().job_id;
    let events = api.follow(&id, Duration::from_secs(60)).await;
    let status = api.status(&id).await;
    assert_eq!(status.state, JobState::Failed, "{events:#?}");
    let error = status.error.unwrap_or_default();
    assert!(
        error.contains("limit price 100") && error.contains("cheapest ask seen: 250"),
        "{error}"
    );
    // The failure is in the coordinator's ledger, once.
    let coordinator = nodes[0].peer_id.clone();
    let client = nodes[0].client();
    let failed = wait_for(Duration::from_secs(20), "the JobFailed entry", || {
        let (client, id, coordinator) = (client.clone(), id.clone(), coordinator.clone());
        async move {
            let n = job_entry_kinds(&client, &id)
                .await
                .into_iter()
                .filter(|(author, kind)| *author == coordinator && kind == "job_failed")
                .count();
            (n > 0).then_some(n)
        }
    })
    .await;
    assert_eq!(failed, 1);
    for node in &mut nodes {
        ledger_ok(node);
    }
}

/// Issue 13 end to end: two workers that cheat (a zero update; half the
/// delta), well formed and signed, are audited in their first round (new
/// nodes always are), fail, leave the job and earn nothing; the job
/// finishes on the honest node; each verdict's evidence file replays
/// offline to the same verdict with `fairgrid audit replay`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheating_workers_fail_their_first_audit_and_earn_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3, |i| match i {
        1 => "zero_update",
        2 => "scaled_delta",
        _ => "",
    });
    wait_mesh(&nodes).await;
    let api = JobsApi::of(&nodes[0]);
    let mut request = small_job("cheats", 4, 1.0);
    request.market.round_timeout_secs = 6;
    let id = api.submit(&request).await.unwrap().job_id;
    let events = api.follow(&id, Duration::from_secs(120)).await;
    let report = api.report(&id).await;
    assert_eq!(report.state, JobState::Finished, "{events:#?}");
    for cheat in [&nodes[1].peer_id, &nodes[2].peer_id] {
        let caught = events.iter().any(|e| {
            matches!(&e.kind, JobEventKind::UpdateRejected { node, reason, .. }
                if node == cheat && reason.starts_with("audit failed"))
        });
        assert!(caught, "{cheat} was not caught: {events:#?}");
    }
    assert_eq!(report.credits.len(), 1, "{:?}", report.credits);
    assert!(
        report.rounds.iter().all(|r| r.participants == 1),
        "{:?}",
        report.rounds
    );
    for node in &mut nodes {
        ledger_ok(node);
    }
    // The evidence kept by the coordinator replays to the same verdicts.
    let dir = nodes[0].dir.join("jobs").join("audits").join(&id);
    let mut verdicts = Vec::new();
    for file in std::fs::read_dir(&dir).unwrap() {
        let path = file.unwrap().path();
        let out = fairgrid(&["audit", "replay", path.to_str().unwrap(), "--threads", "1"]);
        let worker = path.file_name().unwrap().to_str().unwrap().to_string();
        verdicts.push((worker, out));
    }
    for (i, expected) in [(0, "PASSED"), (1, "FAILED"), (2, "FAILED")] {
        let peer = &nodes[i].peer_id;
        let replayed = verdicts
            .iter()
            .find(|(file, _)| file.starts_with("0-") && file.contains(peer.as_str()));
        let (_, out) =
            replayed.unwrap_or_else(|| panic!("no round-0 evidence of {peer}: {verdicts:?}"));
        assert!(out.contains(expected), "{peer}: {out}");
    }
}
