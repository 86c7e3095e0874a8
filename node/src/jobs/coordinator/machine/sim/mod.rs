//! Property tests of the coordinator machine: a simulated shell, network,
//! disk, ledger and workers drive one job through random interleavings
//! (late, duplicate, forged and corrupt messages, refusals, lost peers,
//! timer races, failing storage, and the coordinator restarted from
//! whatever its disk holds), and `checks` holds the invariants after
//! every step. Each run is reproducible from its seed.

mod checks;
mod workers;

use std::collections::VecDeque;

use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::market::{self, MarketPolicy};
use fairgrid_protocol::messages::{Allocation, Compression, InputShape, JobSpec, RoundStart};
use fairgrid_protocol::{Hash32, Keypair, Signed, TrustPolicy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::super::round::{AcceptedUpdate, OuterStep, RoundInProgress, aggregate_with};
use super::{AuditVerdict, Coordinator, Input, Output, Stored};
use checks::Checks;
use workers::{Message, SimWorker, Temper};

/// Interleavings per `cargo test` run.
const RUNS: u64 = 10_000;
/// Random steps per run before the run is drained to its end.
const STEPS: usize = 120;
const MAX_BIDS: usize = 64;

/// Work the shell started that answers later, in any order.
#[derive(Debug, Clone)]
enum Pending {
    /// A shell task's answer (clearing, publishing, aggregating, ...).
    Answer(Box<Input>),
    /// A round start on its way to worker `w`.
    Start(usize, RoundStart),
    /// A worker's message on its way to the coordinator.
    Message(Message),
}

pub struct World {
    rng: ChaCha8Rng,
    now: u64,
    id: Hash32,
    spec: JobSpec,
    coordinator: Keypair,
    param_count: usize,
    workers: Vec<SimWorker>,
    machine: Coordinator,
    queue: VecDeque<Output>,
    pending: Vec<Pending>,
    /// The last checkpoint written.
    disk: Stored,
    ledger: Vec<EntryBody>,
    wake: Option<u64>,
    last_start: Option<RoundStart>,
    /// Every round start, for replays.
    starts: Vec<RoundStart>,
    storage_fails: bool,
    storage_ever_failed: bool,
    restarts: u32,
    /// When each restart happened.
    restarted_at: Vec<u64>,
    /// Rounds recorded when the coordinator last restarted with a round open.
    restart_mid_round: Option<usize>,
    ended: bool,
    /// The outer step's momentum, as the node keeps it beside the machine.
    checks: Checks,
    /// What happened, for the report of a failing seed.
    trace: Vec<String>,
}

fn sim_spec(key: &Keypair, rng: &mut ChaCha8Rng) -> JobSpec {
    let shards = rng.random_range(1..=6);
    let mut spec = crate::jobs::testing::spec_with(key, shards, Compression::Fp32);
    spec.model.input = InputShape {
        channels: 1,
        height: 2,
        width: 2,
        values: fairgrid_protocol::messages::ValueKind::U8,
    };
    spec.hyper.rounds = rng.random_range(1..=4);
    spec.hyper.eval_every = rng.random_range(1..=3);
    spec.alpha_ppm = [340_000, 500_000, 1_000_000][rng.random_range(0..3)];
    spec.on_shortfall = if rng.random_bool(0.2) {
        fairgrid_protocol::messages::ShortfallPolicy::Wait
    } else {
        fairgrid_protocol::messages::ShortfallPolicy::RunWithFewer
    };
    spec.submitted_at = 1_000;
    spec.bid_window_ms = 1_000;
    spec.round_timeout_ms = 5_000;
    spec.deadline = spec.submitted_at + rng.random_range(10_000..60_000);
    spec
}

impl Pending {
    fn answer(input: Input) -> Pending {
        Pending::Answer(Box::new(input))
    }
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let coordinator = Keypair::from_seed(b"sim coordinator");
        let spec = sim_spec(&coordinator, &mut rng);
        let id = Hash32::of(&seed.to_le_bytes());
        let param_count = (4 + 1) * 10;
        let params = vec![0.0f32; param_count];
        let now = spec.submitted_at;
        let tempers = [
            Temper::Honest,
            Temper::Silent,
            Temper::Refuser,
            Temper::Corrupt,
            Temper::Cheat,
        ];
        let workers = (0..rng.random_range(1..=5u8))
            .map(|i| SimWorker {
                key: Keypair::from_seed(&[b'w', i]),
                temper: if rng.random_bool(0.7) {
                    Temper::Honest
                } else {
                    tempers[rng.random_range(0..tempers.len())]
                },
                nonce: 0,
            })
            .collect();
        let (mut machine, outputs) =
            Coordinator::submit(id, spec.clone(), params, now, None, MAX_BIDS);
        machine.set_audits(rng.random_bool(0.7));
        let disk = Stored {
            state: machine.state.clone(),
            params: machine.params.to_vec(),
            velocity: Vec::new(),
            unrecorded: Vec::new(),
        };
        World {
            rng,
            now,
            id,
            spec,
            coordinator,
            param_count,
            workers,
            machine,
            queue: outputs.into(),
            pending: Vec::new(),
            disk,
            ledger: Vec::new(),
            wake: None,
            last_start: None,
            starts: Vec::new(),
            storage_fails: false,
            storage_ever_failed: false,
            restarts: 0,
            restarted_at: Vec::new(),
            restart_mid_round: None,
            ended: false,
            checks: Checks::default(),
            trace: Vec::new(),
        }
    }

    fn handle(&mut self, input: Input) -> Result<(), String> {
        let name = format!("{input:?}");
        let name: String = name.chars().take(90).collect();
        let handled = self.machine.handle(self.now, input);
        let outputs: Vec<String> = handled
            .outputs
            .iter()
            .map(|o| format!("{o:?}").chars().take(40).collect())
            .collect();
        self.trace.push(format!(
            "t={} {:?} {name} -> {outputs:?}",
            self.now,
            self.machine.state().phase
        ));
        for output in &handled.outputs {
            if let Output::StartRound { start, .. } = output {
                self.checks.round_started(&self.machine, start);
            }
        }
        self.queue.extend(handled.outputs);
        handled.reply
    }

    /// The shell executing the next output, as `driver` does.
    fn execute_next(&mut self) {
        let Some(output) = self.queue.pop_front() else {
            return;
        };
        match output {
            Output::Persist => {
                self.write_checkpoint();
            }
            Output::WriteAhead {
                entries,
                check_ledger,
            } => {
                let done = self.write_ahead(entries, check_ledger);
                let _ = self.handle(done);
            }
            Output::RecordNow(entry) => self.ledger.push(entry),
            Output::Event(_) => {}
            Output::Clear { market_job, bids } => {
                let policy = MarketPolicy {
                    alpha_ppm: self.spec.alpha_ppm,
                    beta_ppm: 1_000_000,
                    window: Default::default(),
                };
                let trust = TrustPolicy::default();
                let valid = market::validate_bids(&market_job, &bids, &trust, self.now)
                    .valid
                    .len();
                let answer = match market::clear(&market_job, &bids, &trust, &policy, self.now) {
                    Ok(allocation) => Input::Cleared {
                        allocation,
                        valid_bids: valid,
                    },
                    Err(e) => Input::ClearingFailed {
                        reason: e.to_string(),
                    },
                };
                self.pending.push(Pending::answer(answer));
            }
            Output::Publish { allocation, .. } => self.publish(allocation),
            Output::StartRound { start, .. } => {
                for (w, worker) in self.workers.iter().enumerate() {
                    if start.orders.iter().any(|o| o.node == worker.node()) {
                        self.pending.push(Pending::Start(w, start.clone()));
                    }
                }
                self.starts.push(start.clone());
                self.last_start = Some(start);
            }
            Output::SendStart { node, round } => {
                if let Some(start) = self.last_start.clone().filter(|s| s.round == round)
                    && let Some(w) = self.workers.iter().position(|x| x.node() == node)
                {
                    self.pending.push(Pending::Start(w, start));
                }
            }
            Output::Audit {
                round, candidates, ..
            } => {
                // Each update is audited with probability 1/2; a cheat
                // fails, an honest worker passes or (1 in 8) cannot reveal.
                let mut verdicts = Vec::new();
                for c in candidates {
                    if !self.rng.random_bool(0.5) {
                        continue;
                    }
                    let cheat = self
                        .workers
                        .iter()
                        .any(|w| w.node() == c.node && w.temper == Temper::Cheat);
                    let unrevealed = !cheat && self.rng.random_bool(0.125);
                    verdicts.push(AuditVerdict {
                        node: c.node,
                        passed: !cheat && !unrevealed,
                        unrevealed,
                        distance_ppb: if cheat { 1 << 30 } else { 0 },
                        tolerance_ppb: 1,
                        detail: if cheat { "cheat" } else { "honest" }.into(),
                        evidence: Hash32::ZERO,
                        report: None,
                    });
                }
                self.pending
                    .push(Pending::answer(Input::Audited { round, verdicts }));
            }
            Output::Aggregate {
                round,
                evaluate,
                params,
                velocity,
                updates,
            } => {
                let refs: Vec<&AcceptedUpdate> = updates.iter().collect();
                let hyper = &self.spec.hyper;
                let result = aggregate_with(
                    &params,
                    &refs,
                    OuterStep::of(hyper),
                    &velocity,
                    hyper.aggregation,
                    &[],
                )
                .map(|a| (a, evaluate.then_some(0.5)));
                self.pending
                    .push(Pending::answer(Input::Aggregated { round, result }));
            }
            Output::WriteModel { params } => {
                let result = Ok((
                    Hash32::of(&crate::jobs::model::params_to_bytes(&params)),
                    None,
                ));
                self.pending
                    .push(Pending::answer(Input::ModelWritten { result }));
            }
            Output::SyncLedger { .. } => {}
            Output::Wake { at } => self.wake = Some(at),
            Output::Ended => self.ended = true,
        }
    }

    fn write_checkpoint(&mut self) -> bool {
        if self.storage_fails {
            return false;
        }
        let snapshot = self.machine.snapshot();
        self.disk = Stored {
            state: snapshot.state,
            params: snapshot.params.to_vec(),
            velocity: snapshot.velocity.to_vec(),
            unrecorded: snapshot.unrecorded,
        };
        self.checks.persisted(&self.disk);
        true
    }

    fn write_ahead(&mut self, entries: Vec<EntryBody>, check_ledger: bool) -> Input {
        if !self.write_checkpoint() {
            return Input::WriteAheadDone {
                recorded: Vec::new(),
                error: Some("checkpointing: disk full".into()),
            };
        }
        let mut recorded = Vec::new();
        for entry in entries {
            if !(check_ledger && self.ledger.contains(&entry)) {
                self.ledger.push(entry.clone());
            }
            recorded.push(entry);
        }
        self.checks.appended(&self.ledger);
        Input::WriteAheadDone {
            recorded,
            error: None,
        }
    }

    /// Signs and records the allocation; a winner may refuse it or be
    /// unreachable.
    fn publish(&mut self, allocation: Allocation) {
        self.checks.published(&allocation, self.spec.alpha_ppm);
        let signed = Signed::sign(&self.coordinator, &allocation);
        self.ledger.push(EntryBody::AllocationMade {
            job_id: self.id,
            allocation: signed.clone(),
            bids: Vec::new(),
        });
        let mut refusals = Vec::new();
        for a in &allocation.assignments {
            if self.rng.random_bool(0.05) {
                let unreachable = self.rng.random_bool(0.5);
                refusals.push((a.node, "no".to_string(), unreachable));
            }
        }
        self.pending
            .push(Pending::answer(Input::Published { signed, refusals }));
    }

    /// Delivers one pending item, picked at random.
    fn deliver_one(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.pending.len());
        let item = self.pending.swap_remove(i);
        match item {
            Pending::Answer(input) => {
                let _ = self.handle(*input);
            }
            Pending::Start(w, start) => {
                let node = self.workers[w].node();
                if self.rng.random_bool(0.05) {
                    let reason = "refused the round: busy".to_string();
                    let _ = self.handle(Input::StartRefused {
                        node,
                        round: start.round,
                        reason,
                    });
                    return;
                }
                let _ = self.handle(Input::StartDelivered {
                    node,
                    round: start.round,
                    bytes: 200,
                });
                if let Some(message) = self.react(w, &start) {
                    self.pending.push(Pending::Message(message));
                }
            }
            Pending::Message(message) => self.receive(message),
        }
    }

    /// The coordinator receives a worker's message, as `inbound` does.
    fn receive(&mut self, message: Message) {
        match message {
            Message::Update {
                from,
                signed,
                bytes,
            } => {
                let claimed_round = signed
                    .verify_and_decode()
                    .map(|(_, u)| u.round)
                    .unwrap_or(0);
                let checked = self.machine.check_update(from, &signed, &bytes, self.now);
                let decoded = checked.and_then(|(update, count)| {
                    RoundInProgress::decode(&bytes, count).map(|delta| (update, delta))
                });
                match decoded {
                    Ok((update, delta)) => {
                        let accepted =
                            AcceptedUpdate::new(&signed, &update, delta, bytes.len() as u64);
                        let _ = self.handle(Input::Update {
                            from,
                            round: update.round,
                            accepted,
                        });
                    }
                    Err(rejection) => {
                        let _ = self.handle(Input::UpdateRejected {
                            from,
                            round: claimed_round,
                            rejection,
                        });
                    }
                }
            }
            Message::Refusal { from, refusal } => {
                let _ = self.handle(Input::RoundRefused { from, refusal });
            }
        }
    }

    fn bid(&mut self, w: usize) {
        let ask = self.rng.random_range(1..=1_200);
        let (signed, bid) = self.workers[w].bid(self.id, ask, self.now);
        let from = self.workers[w].node();
        if ask > self.spec.limit_price {
            let _ = self.handle(Input::AskAboveLimit { from, ask });
            return;
        }
        let owner = from.as_self_owner();
        let _ = self.handle(Input::Bid {
            from,
            signed,
            bid,
            owner,
            label: String::new(),
        });
    }

    /// Time passes; the timer fires if it is due.
    fn pass_time(&mut self, ms: u64) {
        let until = self.now + ms;
        self.execute_wakes();
        // A timer fires on time, however far the clock moves.
        while let Some(at) = self.wake.filter(|at| *at <= until) {
            self.now = self.now.max(at);
            self.wake = None;
            let _ = self.handle(Input::Tick);
            self.execute_wakes();
        }
        self.now = until;
    }

    /// Takes the timer requests out of the queue at once (the shell's task
    /// would get to them before time moves on).
    fn execute_wakes(&mut self) {
        if let Some(at) = self.queue.iter().rev().find_map(|o| match o {
            Output::Wake { at } => Some(*at),
            _ => None,
        }) {
            self.wake = Some(at);
        }
        self.queue.retain(|o| !matches!(o, Output::Wake { .. }));
    }

    /// The coordinator process dies and starts again from its disk: what
    /// its shell had in flight is lost; the workers' messages are not.
    fn restart(&mut self) {
        self.trace.push(format!("t={} restart", self.now));
        if self.machine.open_round().is_some() {
            self.restart_mid_round = Some(self.machine.state().rounds.len());
        }
        self.restarts += 1;
        self.restarted_at.push(self.now);
        self.queue.clear();
        self.pending.retain(|p| matches!(p, Pending::Message(_)));
        self.wake = None;
        self.last_start = None;
        self.ended = false;
        let (machine, outputs) = Coordinator::resume(
            self.id,
            self.spec.clone(),
            self.disk.clone(),
            self.now,
            MAX_BIDS,
            None,
        );
        self.checks.resumed(&machine);
        self.ended = machine.has_ended();
        self.machine = machine;
        self.queue.extend(outputs);
        let _ = self.handle(Input::Tick);
    }

    /// One random step.
    fn step(&mut self) {
        let n = self.workers.len();
        match self.rng.random_range(0..100) {
            0..35 => self.execute_next(),
            35..65 => self.deliver_one(),
            65..80 => {
                let ms = self.rng.random_range(1..2_500);
                self.pass_time(ms);
            }
            80..88 => {
                let w = self.rng.random_range(0..n);
                self.bid(w);
            }
            88..90 => {
                let node = self.workers[self.rng.random_range(0..n)].node();
                let _ = self.handle(Input::PeerLost { node });
            }
            90..92 => {
                if let Some(start) = self.starts.last().cloned() {
                    let forged = self.forged(&start);
                    self.pending.push(Pending::Message(forged));
                }
            }
            // A replay of an old start's answer (late or duplicate).
            92..94 if !self.starts.is_empty() => {
                let start = self.starts[self.rng.random_range(0..self.starts.len())].clone();
                let w = self.rng.random_range(0..n);
                if let Some(message) = self.react(w, &start) {
                    self.pending.push(Pending::Message(message));
                }
            }
            94..96 => {
                let node = self.workers[self.rng.random_range(0..n)].node();
                let reason = "cannot fetch its shards".to_string();
                let _ = self.handle(Input::Declined { from: node, reason });
            }
            96..98 => {
                self.storage_fails = !self.storage_fails;
                self.storage_ever_failed |= self.storage_fails;
            }
            _ if self.restarts < 3 => self.restart(),
            _ => {}
        }
    }

    /// Runs everything to its end with storage working, and time moving
    /// only as far as the machine's timer.
    fn drain(&mut self) {
        self.storage_fails = false;
        for _ in 0..10_000 {
            if self.ended && self.queue.is_empty() {
                return;
            }
            if !self.queue.is_empty() {
                self.execute_next();
            } else if !self.pending.is_empty() {
                self.deliver_one();
            } else if let Some(at) = self.wake {
                let ms = at.saturating_sub(self.now).max(1);
                self.pass_time(ms);
            } else {
                return;
            }
        }
    }
}

/// What the runs went through, so the test fails if the interleavings
/// stop reaching the cases they exist for.
#[derive(Debug, Default)]
struct Coverage {
    finished: u32,
    failed: u32,
    rounds_recorded: u32,
    restarts_mid_round: u32,
    rounds_after_restart_mid_round: u32,
    updates_rejected: u32,
    audits_failed: u32,
}

fn run(seed: u64, coverage: &mut Coverage) {
    let mut world = World::new(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for w in 0..world.workers.len() {
            if world.rng.random_bool(0.8) {
                world.bid(w);
            }
        }
        for _ in 0..STEPS {
            world.step();
            world.checks.check(&world.machine, &world.ledger);
        }
        world.drain();
        world.checks.check(&world.machine, &world.ledger);
        checks::ended_in_time(&world);
    }));
    let st = world.machine.state();
    match st.phase {
        fairgrid_sdk::jobs::JobState::Finished => coverage.finished += 1,
        _ => coverage.failed += 1,
    }
    coverage.rounds_recorded += st.rounds.len() as u32;
    if let Some(before) = world.restart_mid_round {
        coverage.restarts_mid_round += 1;
        if st.rounds.len() > before {
            coverage.rounds_after_restart_mid_round += 1;
        }
    }
    coverage.updates_rejected += world
        .ledger
        .iter()
        .filter(|e| matches!(e, EntryBody::Verification { passed: false, .. }))
        .count() as u32;
    coverage.audits_failed += world
        .ledger
        .iter()
        .filter(|e| matches!(e, EntryBody::Audit { passed: false, .. }))
        .count() as u32;
    if let Err(panic) = outcome {
        let from = world.trace.len().saturating_sub(60);
        eprintln!("seed {seed}, deadline {}:", world.spec.deadline);
        for line in &world.trace[from..] {
            eprintln!("  {line}");
        }
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn every_interleaving_keeps_the_invariants() {
    let mut coverage = Coverage::default();
    for seed in 0..RUNS {
        run(seed, &mut coverage);
    }
    eprintln!("{RUNS} interleavings: {coverage:?}");
    let runs = RUNS as u32;
    assert!(coverage.finished > runs / 10, "{coverage:?}");
    assert!(coverage.failed > runs / 10, "{coverage:?}");
    assert!(coverage.rounds_recorded > runs / 2, "{coverage:?}");
    assert!(coverage.restarts_mid_round > runs / 20, "{coverage:?}");
    assert!(
        coverage.rounds_after_restart_mid_round > runs / 40,
        "{coverage:?}"
    );
    assert!(coverage.updates_rejected > runs / 20, "{coverage:?}");
    assert!(coverage.audits_failed > runs / 1000, "{coverage:?}");
}
