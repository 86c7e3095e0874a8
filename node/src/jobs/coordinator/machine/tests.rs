//! Unit tests of the coordinator machine: one behaviour each, driven by
//! hand. The random interleavings are in `sim`.

use fairgrid_protocol::ledger::{EntryBody, ReportOutcome};
use fairgrid_protocol::market::{self, MarketPolicy};
use fairgrid_protocol::messages::{
    Bid, Compression, InputShape, JobSpec, RoundRefusal, RoundStart, RoundUpdate,
};
use fairgrid_protocol::{Hash32, Keypair, NodeId, ResourceVec, Signed, TrustPolicy};
use fairgrid_sdk::jobs::{JobEventKind, JobState};

use super::super::round::{AcceptedUpdate, Aggregate};
use super::rounds::order_samples;
use super::*;

const T0: u64 = 1_000;
const PARAMS: usize = 50;

struct Fixture {
    coordinator: Keypair,
    workers: Vec<Keypair>,
    spec: JobSpec,
    id: Hash32,
    /// The speed every bid claims (0: none).
    speed_milli: u64,
}

fn fixture(workers: u8) -> Fixture {
    let coordinator = Keypair::from_seed(b"coordinator");
    let mut spec = crate::jobs::testing::spec_with(&coordinator, 4, Compression::Fp32);
    spec.model.input = InputShape {
        channels: 1,
        height: 2,
        width: 2,
        values: fairgrid_protocol::messages::ValueKind::U8,
    };
    spec.alpha_ppm = 1_000_000;
    spec.submitted_at = T0;
    spec.deadline = T0 + 60_000;
    Fixture {
        coordinator,
        workers: (0..workers)
            .map(|i| Keypair::from_seed(&[b'w', i]))
            .collect(),
        spec,
        id: Hash32::of(b"job"),
        speed_milli: 0,
    }
}

impl Fixture {
    fn node(&self, w: usize) -> NodeId {
        self.workers[w].node_id()
    }

    /// A submitted job whose `JobSubmitted` is recorded.
    fn submitted(&self) -> Coordinator {
        let params = vec![0.0; PARAMS];
        let (mut m, out) = Coordinator::submit(self.id, self.spec.clone(), params, T0, None, 16);
        let entries = write_ahead_of(&out).expect("a write-ahead");
        m.handle(T0, done(entries));
        m
    }

    fn bid(&self, m: &mut Coordinator, w: usize, now: u64) -> Handled {
        let bid = Bid {
            job_id: self.id,
            node: self.node(w),
            owner_cert: None,
            ask: 10,
            capacity: ResourceVec {
                cpu_milli: 400,
                mem_mib: 64,
                gpu_milli: 0,
                gpu_mem_mib: 0,
            },
            nonce: now,
            issued_at: now,
            speed_milli: self.speed_milli,
        };
        let input = Input::Bid {
            from: self.node(w),
            signed: Signed::sign(&self.workers[w], &bid),
            bid,
            owner: self.node(w).as_self_owner(),
            label: String::new(),
        };
        m.handle(now, input)
    }

    /// Clears as the shell would and publishes; every winner takes it.
    fn clear_and_publish(&self, m: &mut Coordinator, out: &[Output], now: u64) -> Vec<Output> {
        let (market_job, bids) = out
            .iter()
            .find_map(|o| match o {
                Output::Clear { market_job, bids } => Some((market_job.clone(), bids.clone())),
                _ => None,
            })
            .expect("a clearing");
        let policy = MarketPolicy {
            alpha_ppm: self.spec.alpha_ppm,
            beta_ppm: 1_000_000,
            window: Default::default(),
        };
        let allocation =
            market::clear(&market_job, &bids, &TrustPolicy::default(), &policy, now).unwrap();
        let valid_bids = bids.len();
        let published = m.handle(
            now,
            Input::Cleared {
                allocation,
                valid_bids,
            },
        );
        let allocation = published
            .outputs
            .iter()
            .find_map(|o| match o {
                Output::Publish { allocation, .. } => Some(allocation.clone()),
                _ => None,
            })
            .expect("a publish");
        let signed = Signed::sign(&self.coordinator, &allocation);
        let refusals = Vec::new();
        m.handle(now, Input::Published { signed, refusals }).outputs
    }

    /// A job training its first round with every worker; returns the start.
    fn training(&self, workers: usize) -> (Coordinator, RoundStart) {
        let mut m = self.submitted();
        for w in 0..workers {
            self.bid(&mut m, w, T0 + 10);
        }
        let until = m.state().bidding_until;
        let out = m.handle(until, Input::Tick).outputs;
        let out = self.clear_and_publish(&mut m, &out, until);
        (m, start_of(&out).expect("a round start"))
    }

    fn update(&self, w: usize, start: &RoundStart) -> (Signed<RoundUpdate>, Vec<u8>) {
        let order = start
            .orders
            .iter()
            .find(|o| o.node == self.node(w))
            .unwrap();
        let bytes = fairgrid_kernels::Compressor::new(fairgrid_kernels::Compression::Fp32)
            .unwrap()
            .encode(&[0.01f32; PARAMS])
            .unwrap();
        let update = RoundUpdate {
            job_id: self.id,
            round: start.round,
            worker: self.node(w),
            base_params: start.params_hash,
            shards: order.shards.clone(),
            samples: order_samples(&self.spec, &order.shards),
            loss: 0.5,
            compression: Compression::Fp32,
            update_hash: Hash32::of(&bytes),
            update_len: bytes.len() as u64,
            device_groups: 1,
            residual_in: Hash32::ZERO,
            residual_out: Hash32::ZERO,
            arithmetic: fairgrid_protocol::messages::Arithmetic::X86Avx2Fma,
            compute_ms: 0,
        };
        (Signed::sign(&self.workers[w], &update), bytes)
    }

    /// Sends `w`'s update for `start` as the shell does; the reply.
    fn deliver(
        &self,
        m: &mut Coordinator,
        w: usize,
        start: &RoundStart,
        now: u64,
    ) -> Result<Handled, String> {
        let (signed, bytes) = self.update(w, start);
        let (update, count) = m
            .check_update(self.node(w), &signed, &bytes, now)
            .map_err(|r| r.reason)?;
        let delta = super::super::round::RoundInProgress::decode(&bytes, count).unwrap();
        let accepted = AcceptedUpdate::new(&signed, &update, delta, bytes.len() as u64);
        let input = Input::Update {
            from: self.node(w),
            round: update.round,
            accepted,
        };
        let handled = m.handle(now, input);
        handled.reply.clone()?;
        Ok(handled)
    }
}

fn done(recorded: Vec<EntryBody>) -> Input {
    Input::WriteAheadDone {
        recorded,
        error: None,
    }
}

fn write_ahead_of(out: &[Output]) -> Option<Vec<EntryBody>> {
    out.iter().find_map(|o| match o {
        Output::WriteAhead { entries, .. } => Some(entries.clone()),
        _ => None,
    })
}

fn start_of(out: &[Output]) -> Option<RoundStart> {
    out.iter().find_map(|o| match o {
        Output::StartRound { start, .. } => Some(start.clone()),
        _ => None,
    })
}

fn wake_of(out: &[Output]) -> Option<u64> {
    out.iter().rev().find_map(|o| match o {
        Output::Wake { at } => Some(*at),
        _ => None,
    })
}

fn events(out: &[Output]) -> Vec<&JobEventKind> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn aggregated(round: u32) -> Input {
    let aggregate = Aggregate {
        params: vec![0.1; PARAMS],
        velocity: vec![0.02; PARAMS],
        train_loss: 0.4,
        samples: 10,
    };
    Input::Aggregated {
        round,
        result: Ok((aggregate, Some(0.75))),
    }
}

#[test]
fn a_submission_is_written_ahead_and_the_job_then_waits_for_its_bid_window() {
    let f = fixture(1);
    let (mut m, out) = Coordinator::submit(f.id, f.spec.clone(), vec![0.0; PARAMS], T0, None, 16);
    assert!(matches!(
        out[0],
        Output::Event(JobEventKind::Submitted { shards: 4 })
    ));
    let entries = write_ahead_of(&out).unwrap();
    assert!(matches!(
        entries[..],
        [EntryBody::JobSubmitted { shards: 4, .. }]
    ));
    assert_eq!(m.snapshot().unrecorded, entries, "held until recorded");
    let out = m.handle(T0, done(entries)).outputs;
    assert!(m.snapshot().unrecorded.is_empty());
    assert_eq!(wake_of(&out), Some(T0 + f.spec.bid_window_ms));
}

#[test]
fn the_bid_window_runs_in_full_from_when_the_job_was_accepted() {
    let f = fixture(1);
    let (mut m, out) = Coordinator::submit(f.id, f.spec.clone(), vec![0.0; PARAMS], T0, None, 16);
    let entries = write_ahead_of(&out).unwrap();
    // The disk took 5 s to store the submission.
    let accepted = T0 + 5_000;
    m.handle(accepted, Input::Accepted);
    assert_eq!(m.state().bidding_until, accepted + f.spec.bid_window_ms);
    let out = m.handle(accepted, done(entries)).outputs;
    assert_eq!(wake_of(&out), Some(accepted + f.spec.bid_window_ms));
    // Still bidding just before the window's end; then it moves on.
    let out = m
        .handle(accepted + f.spec.bid_window_ms - 1, Input::Tick)
        .outputs;
    assert_eq!(wake_of(&out), Some(accepted + f.spec.bid_window_ms));
    let out = m
        .handle(accepted + f.spec.bid_window_ms, Input::Tick)
        .outputs;
    assert!(out.iter().any(|o| matches!(o, Output::Clear { .. })));
    // Once bidding is over, acceptance changes nothing.
    let until = m.state().bidding_until;
    m.handle(accepted + f.spec.bid_window_ms + 20, Input::Accepted);
    assert_eq!(m.state().bidding_until, until);
}

#[test]
fn the_clearing_leaves_out_a_worker_that_withdrew_until_it_bids_again() {
    let f = fixture(2);
    let mut m = f.submitted();
    f.bid(&mut m, 0, T0 + 1);
    f.bid(&mut m, 1, T0 + 2);
    let reason = "no shards".to_string();
    m.handle(
        T0 + 3,
        Input::Declined {
            from: f.node(1),
            reason,
        },
    );
    let out = m.handle(T0 + f.spec.bid_window_ms, Input::Tick).outputs;
    let bids = out
        .iter()
        .find_map(|o| match o {
            Output::Clear { bids, .. } => Some(bids.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(bids.len(), 1);
    assert_eq!(bids[0].verify_and_decode().unwrap().1.node, f.node(0));
    assert!(m.state().missing.contains(&f.node(1)));
    // Withdrawing is not misbehaving: a later bid brings the node back.
    f.bid(&mut m, 1, T0 + 1_500).reply.unwrap();
    assert!(!m.state().missing.contains(&f.node(1)));
    assert!(!m.state().banned.contains(&f.node(1)));
}

/// The outer momentum is checkpointed with the parameters: a coordinator
/// restarted after a round steps the next one from the velocity that
/// round left, not from zero.
#[test]
fn the_outer_velocity_survives_a_restart() {
    let f = fixture(1);
    let (mut m, start) = f.training(1);
    let now = start.issued_at + 1_000;
    let out = f.deliver(&mut m, 0, &start, now).unwrap().outputs;
    assert!(
        out.iter().any(
            |o| matches!(o, Output::Aggregate { round: 0, velocity, .. } if velocity.is_empty())
        )
    );
    let out = m.handle(now + 1, aggregated(0)).outputs;
    let entries = write_ahead_of(&out).unwrap();
    let out = m.handle(now + 2, done(entries)).outputs;
    let next = start_of(&out).expect("round 1 opens");
    let snapshot = m.snapshot();
    assert_eq!(*snapshot.velocity, vec![0.02; PARAMS]);
    let stored = Stored {
        state: snapshot.state,
        params: snapshot.params.to_vec(),
        velocity: snapshot.velocity.to_vec(),
        unrecorded: snapshot.unrecorded,
    };
    let later = now + 500;
    let (mut resumed, _) = Coordinator::resume(f.id, f.spec.clone(), stored, later, 16, None);
    let out = f
        .deliver(&mut resumed, 0, &next, later + 10)
        .unwrap()
        .outputs;
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Aggregate { round: 1, velocity, .. } if **velocity == vec![0.02; PARAMS]
        )),
        "round 1 steps from the velocity round 0 left"
    );
}

#[test]
fn a_restarted_coordinator_reopens_the_same_round_and_takes_updates_made_for_it() {
    let f = fixture(2);
    let (m, before) = f.training(2);
    let snapshot = m.snapshot();
    let stored = Stored {
        state: snapshot.state,
        params: snapshot.params.to_vec(),
        velocity: snapshot.velocity.to_vec(),
        unrecorded: snapshot.unrecorded,
    };
    let now = before.issued_at + 2_000;
    let (mut resumed, out) = Coordinator::resume(f.id, f.spec.clone(), stored, now, 16, None);
    let after = start_of(&out).expect("the round is opened again");
    assert_eq!(
        (after.round, after.allocation, after.params_hash),
        (before.round, before.allocation, before.params_hash)
    );
    assert_eq!(after.orders, before.orders);
    // Workers kept training the round they had: their updates count.
    f.deliver(&mut resumed, 0, &before, now + 10).unwrap();
    let last = f.deliver(&mut resumed, 1, &before, now + 20).unwrap();
    assert!(
        last.outputs.iter().any(
            |o| matches!(o, Output::Aggregate { round: 0, updates, .. } if updates.len() == 2)
        ),
        "the round closes with both updates"
    );
}

#[test]
fn a_refusal_settles_the_order_at_once_and_the_worker_is_left_out_of_the_next_clearing() {
    let f = fixture(2);
    let (mut m, start) = f.training(2);
    let refusal = RoundRefusal {
        job_id: f.id,
        round: 0,
        worker: f.node(1),
        base_params: start.params_hash,
        reason: "needs more memory".into(),
        issued_at: start.issued_at,
    };
    let now = start.issued_at + 5;
    let out = m
        .handle(
            now,
            Input::RoundRefused {
                from: f.node(1),
                refusal: refusal.clone(),
            },
        )
        .outputs;
    assert!(matches!(
        events(&out)[..],
        [JobEventKind::WorkerMissed { round: 0, .. }]
    ));
    let again = m.handle(
        now,
        Input::RoundRefused {
            from: f.node(1),
            refusal,
        },
    );
    assert!(again.reply.is_err(), "a second refusal is not news");
    // The round does not wait for its deadline once the other delivers.
    let out = f.deliver(&mut m, 0, &start, now + 1).unwrap().outputs;
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Aggregate { round: 0, .. }))
    );
    let out = m.handle(now + 2, aggregated(0)).outputs;
    let entries = write_ahead_of(&out).unwrap();
    let out = m.handle(now + 3, done(entries)).outputs;
    let bids = out
        .iter()
        .find_map(|o| match o {
            Output::Clear { bids, .. } => Some(bids.clone()),
            _ => None,
        })
        .expect("the shards are cleared again");
    assert_eq!(bids.len(), 1);
    assert!(m.state().missing.contains(&f.node(1)));
}

#[test]
fn a_round_is_recorded_once_and_announced_only_once_the_ledger_holds_it() {
    let f = fixture(1);
    let (mut m, start) = f.training(1);
    let now = start.issued_at + 10;
    f.deliver(&mut m, 0, &start, now).unwrap();
    let out = m.handle(now + 1, aggregated(0)).outputs;
    let entries = write_ahead_of(&out).unwrap();
    assert!(matches!(
        entries[..],
        [EntryBody::RoundCompleted { round: 0, .. }]
    ));
    assert!(
        events(&out).is_empty(),
        "not announced before it is recorded"
    );
    assert_eq!(m.state().next_round, 1);
    // A late second answer for the same round changes nothing.
    assert!(
        m.handle(now + 2, aggregated(0))
            .outputs
            .iter()
            .all(|o| !matches!(o, Output::WriteAhead { .. }))
    );
    let out = m.handle(now + 3, done(entries)).outputs;
    assert!(matches!(
        events(&out)[..],
        [
            JobEventKind::RoundCompleted { round: 0, .. },
            JobEventKind::RoundStarted { round: 1, .. }
        ]
    ));
}

#[test]
fn the_deadline_fails_the_job_and_it_ends_once_its_entry_is_recorded() {
    let f = fixture(1);
    let mut m = f.submitted();
    let late = f.spec.deadline + 1;
    let out = m.handle(late, Input::Tick).outputs;
    assert_eq!(m.state().phase, JobState::Failed);
    let entries = write_ahead_of(&out).unwrap();
    assert!(
        matches!(&entries[..], [EntryBody::JobFailed { reason, .. }] if reason.contains("deadline"))
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Ended)));
    let out = m.handle(late, done(entries)).outputs;
    assert!(matches!(out[..], [Output::Persist, Output::Ended]));
    assert!(m.has_ended());
}

#[test]
fn an_answer_that_arrives_after_the_deadline_does_not_finish_the_job() {
    let f = fixture(1);
    let mut f = f;
    f.spec.hyper.rounds = 1;
    let (mut m, start) = f.training(1);
    f.deliver(&mut m, 0, &start, start.issued_at + 1).unwrap();
    let out = m.handle(start.issued_at + 2, aggregated(0)).outputs;
    let out = m
        .handle(start.issued_at + 3, done(write_ahead_of(&out).unwrap()))
        .outputs;
    assert!(out.iter().any(|o| matches!(o, Output::WriteModel { .. })));
    let result = Ok((Hash32::of(b"model"), None));
    m.handle(f.spec.deadline + 5, Input::ModelWritten { result });
    assert_eq!(m.state().phase, JobState::Failed);
}

#[test]
fn a_finished_job_writes_its_credits_and_end_ahead_and_shares_its_entries() {
    let mut f = fixture(2);
    f.spec.hyper.rounds = 1;
    let (mut m, start) = f.training(2);
    f.deliver(&mut m, 0, &start, start.issued_at + 1).unwrap();
    f.deliver(&mut m, 1, &start, start.issued_at + 2).unwrap();
    let out = m.handle(start.issued_at + 3, aggregated(0)).outputs;
    m.handle(start.issued_at + 4, done(write_ahead_of(&out).unwrap()));
    let out = m
        .handle(
            start.issued_at + 5,
            Input::ModelWritten {
                result: Ok((Hash32::of(b"m"), None)),
            },
        )
        .outputs;
    let entries = write_ahead_of(&out).unwrap();
    let credits = entries
        .iter()
        .filter(|e| matches!(e, EntryBody::Credit { .. }))
        .count();
    assert_eq!(credits, 2);
    assert!(matches!(
        entries.last(),
        Some(EntryBody::JobFinished { rounds: 1, .. })
    ));
    assert_eq!(m.state().phase, JobState::Finished);
    let out = m.handle(start.issued_at + 6, done(entries)).outputs;
    assert!(matches!(
        &out[..],
        [Output::Persist, Output::SyncLedger { participants }, Output::Ended] if participants.len() == 2
    ));
}

#[test]
fn a_resumed_job_appends_what_its_checkpoint_held_unless_the_ledger_has_it() {
    let f = fixture(1);
    let (m, _) = Coordinator::submit(f.id, f.spec.clone(), vec![0.0; PARAMS], T0, None, 16);
    let snapshot = m.snapshot();
    let stored = Stored {
        state: snapshot.state,
        params: snapshot.params.to_vec(),
        velocity: snapshot.velocity.to_vec(),
        unrecorded: snapshot.unrecorded.clone(),
    };
    let (_, out) = Coordinator::resume(f.id, f.spec.clone(), stored, T0 + 5, 16, None);
    assert!(matches!(
        &out[0],
        Output::WriteAhead { entries, check_ledger: true } if *entries == snapshot.unrecorded
    ));
}

/// Issue 12: a worker that claimed a speed and is far slower than it in
/// three rounds is recorded once, with the figures; one within the claim's
/// slack never is.
#[test]
fn a_worker_far_slower_than_its_claim_is_recorded_once() {
    let mut f = fixture(1);
    // 1,000 samples per second: each round's samples take well under 1 s.
    f.speed_milli = 1_000_000;
    f.spec.round_timeout_ms = 60_000;
    f.spec.hyper.rounds = 10;
    f.spec.deadline = T0 + 3_600_000;
    let (mut m, mut start) = f.training(1);
    let samples = order_samples(&f.spec, &start.orders[0].shards);
    let expected = samples * 1_000 / 1_000;
    let mut recorded = Vec::new();
    for round in 0..4u32 {
        assert_eq!(start.round, round);
        // On time in round 0, then 10 s late (far beyond 3x + 2 s).
        let took = if round == 0 {
            expected + 500
        } else {
            3 * expected + 10_000
        };
        let now = start.issued_at + took;
        f.deliver(&mut m, 0, &start, now).unwrap();
        let out = m.handle(now + 1, aggregated(round)).outputs;
        recorded.extend(out.iter().filter_map(|o| match o {
            Output::RecordNow(EntryBody::Verification {
                passed: false,
                detail,
                round,
                ..
            }) => Some((*round, detail.clone())),
            _ => None,
        }));
        let entries = write_ahead_of(&out).unwrap();
        let out = m.handle(now + 2, done(entries)).outputs;
        let JobEventKind::RoundCompleted { workers, .. } = events(&out)[0] else {
            panic!("the round is announced");
        };
        assert_eq!(workers[0].expected_millis, Some(expected));
        assert_eq!(workers[0].millis, took);
        start = start_of(&out).expect("the next round");
    }
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (round, detail) = &recorded[0];
    assert_eq!(*round, 3, "the third slow round");
    assert!(detail.contains("slower than its bid claimed"), "{detail}");
}

/// A machine with audits on whose round 0 has every update of `f`'s
/// workers, and the outputs of the last.
fn round_closed_for_audit(f: &Fixture) -> (Coordinator, Vec<Output>) {
    let workers = f.workers.len();
    let (mut m, start) = f.training(workers);
    m.set_audits(true);
    let mut out = Vec::new();
    for w in 0..workers {
        out = f.deliver(&mut m, w, &start, T0 + 2_000).unwrap().outputs;
    }
    (m, out)
}

/// The round-0 audit the outputs hand the shell.
fn audit_output(out: &[Output]) -> (Vec<AuditCandidate>, BTreeMap<OwnerId, u32>) {
    out.iter()
        .find_map(|o| match o {
            Output::Audit {
                round: 0,
                candidates,
                caps,
                ..
            } => Some((candidates.clone(), caps.clone())),
            _ => None,
        })
        .expect("the round closes with its last update, and goes to audit")
}

/// A closed round goes to audit before aggregation; an update that fails
/// leaves the round and its worker the job, one that could not be
/// revealed only leaves the round, and every verdict is written ahead as
/// an `Audit` entry.
#[test]
fn a_failed_audit_drops_the_update_and_its_worker_and_is_written_ahead() {
    let f = fixture(3);
    let (mut m, out) = round_closed_for_audit(&f);
    let (candidates, _) = audit_output(&out);
    assert_eq!(candidates.len(), 3);
    assert!(!out.iter().any(|o| matches!(o, Output::Aggregate { .. })));
    let verdict = |w: usize, passed: bool, unrevealed: bool| AuditVerdict {
        node: f.node(w),
        passed,
        unrevealed,
        distance_ppb: if passed { 0 } else { u64::MAX },
        tolerance_ppb: 10,
        detail: "x".into(),
        evidence: Hash32::ZERO,
        report: None,
    };
    let verdicts = vec![
        verdict(0, true, false),
        verdict(1, false, false),
        verdict(2, false, true),
    ];
    let out = m
        .handle(T0 + 3_000, Input::Audited { round: 0, verdicts })
        .outputs;
    let entries = write_ahead_of(&out).expect("the verdicts are written ahead");
    let recorded: Vec<(NodeId, bool)> = entries
        .iter()
        .filter_map(|e| match e {
            EntryBody::Audit { worker, passed, .. } => Some((*worker, *passed)),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded,
        vec![(f.node(0), true), (f.node(1), false), (f.node(2), false)]
    );
    let updates = out
        .iter()
        .find_map(|o| match o {
            Output::Aggregate { updates, .. } => Some(updates.clone()),
            _ => None,
        })
        .expect("what passed is aggregated");
    assert_eq!(updates.len(), 1, "only the update that passed");
    let st = m.state();
    assert!(
        st.banned.contains(&f.node(1)),
        "a failed audit is out of the job"
    );
    assert!(
        !st.banned.contains(&f.node(2)),
        "not revealing is not cheating"
    );
    assert!(st.missing.contains(&f.node(2)), "but it left the round");
}

/// An auditor's report is recorded as `AuditReported`; an upheld one
/// pays its owner (the round record carries the audit work), an
/// overruled one puts the auditor out of the job.
#[test]
fn an_auditors_report_is_paid_when_upheld_and_its_auditor_out_when_overruled() {
    let f = fixture(3);
    let (mut m, out) = round_closed_for_audit(&f);
    let (candidates, caps) = audit_output(&out);
    // The caps of the allocation in force, for every candidate's owner.
    assert!(
        candidates
            .iter()
            .all(|c| caps.contains_key(&c.owner) && c.shards > 0)
    );
    let owner = |w: usize| {
        candidates
            .iter()
            .find(|c| c.node == f.node(w))
            .unwrap()
            .owner
    };
    let report = |auditor: usize, worker: usize, outcome: ReportOutcome| AuditorReport {
        signed: Box::new(Signed::sign(
            &f.workers[auditor],
            &fairgrid_protocol::messages::AuditReport {
                job_id: f.id,
                round: 0,
                worker: f.node(worker),
                auditor: f.node(auditor),
                evidence: Hash32::ZERO,
                passed: outcome == ReportOutcome::Upheld,
                distance_ppb: 0,
                tolerance_ppb: 0,
                detail: String::new(),
                issued_at: 0,
            },
        )),
        auditor: f.node(auditor),
        auditor_owner: owner(auditor),
        outcome,
    };
    let verdict = |w: usize, report: AuditorReport| AuditVerdict {
        node: f.node(w),
        passed: true,
        unrevealed: false,
        distance_ppb: 0,
        tolerance_ppb: 0,
        detail: "x".into(),
        evidence: Hash32::ZERO,
        report: Some(report),
    };
    // Node 1 audited node 0 (upheld); node 2 failed node 1, overruled;
    // node 0 failed node 2, unconfirmed.
    let verdicts = vec![
        verdict(0, report(1, 0, ReportOutcome::Upheld)),
        verdict(1, report(2, 1, ReportOutcome::Overruled)),
        verdict(2, report(0, 2, ReportOutcome::Unconfirmed)),
    ];
    let out = m
        .handle(T0 + 3_000, Input::Audited { round: 0, verdicts })
        .outputs;
    let entries = write_ahead_of(&out).expect("the verdicts are written ahead");
    let reported: Vec<(NodeId, ReportOutcome)> = entries
        .iter()
        .filter_map(|e| match e {
            EntryBody::AuditReported {
                report,
                outcome,
                auditor_owner,
                worker_owner,
                ..
            } => {
                let (_, r) = report.verify_and_decode().unwrap();
                let w = (0..3).find(|&w| f.node(w) == r.auditor).unwrap();
                assert_eq!(*auditor_owner, owner(w));
                assert_ne!(auditor_owner, worker_owner);
                Some((r.auditor, *outcome))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        reported,
        vec![
            (f.node(1), ReportOutcome::Upheld),
            (f.node(2), ReportOutcome::Overruled),
            (f.node(0), ReportOutcome::Unconfirmed)
        ]
    );
    assert!(
        m.state().banned.contains(&f.node(2)),
        "the overruled auditor"
    );
    assert!(!m.state().banned.contains(&f.node(1)));
    assert!(
        !m.state().banned.contains(&f.node(0)),
        "unconfirmed is no fault"
    );
    // Both audited updates passed: all three are aggregated.
    let updates = out
        .iter()
        .find_map(|o| match o {
            Output::Aggregate { updates, .. } => Some(updates.len()),
            _ => None,
        })
        .expect("aggregated");
    assert_eq!(updates, 3);
    let Some(Busy::Aggregating(finished)) = &m.busy else {
        panic!("aggregating");
    };
    assert_eq!(
        finished.audited,
        vec![crate::jobs::credits::AuditWork {
            auditor_owner: owner(1),
            worker_owner: owner(0),
            shards: candidates
                .iter()
                .find(|c| c.node == f.node(0))
                .unwrap()
                .shards,
        }],
        "only the upheld audit is paid"
    );
}

/// A worker's update may start from no residual, or from the one its
/// last acknowledged update left; any other is refused (not as
/// misbehaviour: the worker starts again from none).
#[test]
fn an_update_must_start_from_its_last_acknowledged_residual_or_none() {
    let f = fixture(1);
    let (mut m, start) = f.training(1);
    let (signed, bytes) = f.update(0, &start);
    let (_, mut update) = signed.verify_and_decode().unwrap();
    update.residual_in = Hash32::of(b"made up");
    let forged = Signed::sign(&f.workers[0], &update);
    let refused = m
        .check_update(f.node(0), &forged, &bytes, T0 + 100)
        .unwrap_err();
    assert!(
        !refused.misbehaved && refused.reason.contains("residual"),
        "{refused:?}"
    );
    update.residual_in = Hash32::ZERO;
    update.residual_out = Hash32::of(b"left over");
    let signed = Signed::sign(&f.workers[0], &update);
    let (_, count) = m
        .check_update(f.node(0), &signed, &bytes, T0 + 100)
        .unwrap();
    let delta = super::super::round::RoundInProgress::decode(&bytes, count).unwrap();
    let accepted = AcceptedUpdate::new(&signed, &update, delta, bytes.len() as u64);
    let input = Input::Update {
        from: f.node(0),
        round: 0,
        accepted,
    };
    m.handle(T0 + 100, input).reply.unwrap();
    assert_eq!(m.state().residuals[&f.node(0)], Hash32::of(b"left over"));
}
