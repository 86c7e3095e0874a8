//! The worker machine, input by input, and through random interleavings.

use fairgrid_protocol::Keypair;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn node(seed: &[u8]) -> NodeId {
    Keypair::from_seed(seed).node_id()
}

fn capacity() -> ResourceVec {
    ResourceVec {
        cpu_milli: 1000,
        mem_mib: 256,
        gpu_milli: 0,
        gpu_mem_mib: 0,
    }
}

fn key(round: u32, allocation: u8) -> RoundKey {
    RoundKey {
        round,
        allocation: Hash32::of(&[allocation]),
        params_hash: Hash32::of(&round.to_le_bytes()),
    }
}

struct Fixture {
    coordinator: NodeId,
    worker: Worker,
}

impl Fixture {
    fn new() -> Fixture {
        let coordinator = node(b"coordinator");
        Fixture {
            coordinator,
            worker: Worker::new(Hash32::of(b"job"), coordinator, Record::default()),
        }
    }

    /// A worker that bid and verified allocation `a` with shards [0, 1].
    fn allocated(a: u8) -> Fixture {
        let mut f = Fixture::new();
        f.worker.handle(
            10,
            Input::Bid {
                ask: 5,
                capacity: capacity(),
            },
        );
        f.worker.handle(11, Input::BidAnswered(BidAnswer::Accepted));
        f.allocate(a, vec![0, 1]);
        f
    }

    fn allocate(&mut self, a: u8, mine: Vec<u32>) -> Handled {
        self.worker.handle(
            12,
            Input::Allocation {
                from: self.coordinator,
                checked: Ok(Verified {
                    hash: Hash32::of(&[a]),
                    attempt: 0,
                    mine,
                }),
            },
        )
    }

    fn start(&mut self, now: u64, key: RoundKey) -> Handled {
        self.worker.handle(
            now,
            Input::RoundStart {
                from: self.coordinator,
                key,
                deadline: 1_000,
                order: Some(vec![0, 1]),
            },
        )
    }
}

fn refused(handled: &Handled) -> String {
    match &handled.reply {
        Some(Reply::Refused(reason)) => reason.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_first_bid_saves_its_nonce_before_sending_it() {
    let mut f = Fixture::new();
    let h = f.worker.handle(
        500,
        Input::Bid {
            ask: 7,
            capacity: capacity(),
        },
    );
    assert_eq!(
        h.outputs,
        vec![
            Output::Save,
            Output::SendBid {
                nonce: 500,
                ask: 7,
                capacity: capacity()
            }
        ]
    );
    assert_eq!(f.worker.record().nonce, 500);
    let h = f
        .worker
        .handle(501, Input::BidAnswered(BidAnswer::Accepted));
    assert!(h.outputs.is_empty());
    // A late second answer changes nothing.
    let h = f
        .worker
        .handle(502, Input::BidAnswered(BidAnswer::Accepted));
    assert!(h.outputs.is_empty());
}

#[test]
fn a_busy_or_unreachable_coordinator_is_tried_again_then_given_up() {
    let mut f = Fixture::new();
    f.worker.handle(
        0,
        Input::Bid {
            ask: 1,
            capacity: capacity(),
        },
    );
    let mut now = 0;
    let mut sends = 1;
    loop {
        let answer = if sends % 3 == 0 {
            BidAnswer::Refused(format!("{BUSY}: this node is still loading its jobs"))
        } else if sends % 3 == 1 {
            // The coordinator has not seen our certificate yet.
            BidAnswer::Refused(format!("{NOT_ADMITTED}: present a certificate first"))
        } else {
            BidAnswer::Failed("connection refused".into())
        };
        let h = f.worker.handle(now, Input::BidAnswered(answer));
        if sends == BID_TRIES {
            assert_eq!(h.outputs, vec![Output::Leave]);
            break;
        }
        assert_eq!(
            h.outputs,
            vec![Output::Wake {
                at: now + BID_RETRY_MS
            }]
        );
        // An early tick only asks again for the same time.
        let early = f.worker.handle(now + 1, Input::Tick);
        assert_eq!(
            early.outputs,
            vec![Output::Wake {
                at: now + BID_RETRY_MS
            }]
        );
        now += BID_RETRY_MS;
        let h = f.worker.handle(now, Input::Tick);
        assert!(matches!(h.outputs[..], [Output::SendBid { nonce: 1, .. }]));
        sends += 1;
    }
}

#[test]
fn a_refused_first_bid_forgets_the_job() {
    let mut f = Fixture::new();
    f.worker.handle(
        3,
        Input::Bid {
            ask: 1,
            capacity: capacity(),
        },
    );
    let h = f.worker.handle(
        4,
        Input::BidAnswered(BidAnswer::Refused("ask above the limit".into())),
    );
    assert_eq!(h.outputs, vec![Output::Leave]);
}

#[test]
fn a_rejoin_raises_the_nonce_saves_it_first_and_ends_on_job_ended() {
    let mut f = Fixture::allocated(1);
    let before = f.worker.record().nonce;
    let h = f.worker.handle(
        5,
        Input::Rejoin {
            ask: 1,
            capacity: capacity(),
        },
    );
    let nonce = f.worker.record().nonce;
    assert!(nonce > before);
    assert_eq!(
        h.outputs,
        vec![
            Output::Save,
            Output::SendBid {
                nonce,
                ask: 1,
                capacity: capacity()
            }
        ]
    );
    let h = f.worker.handle(
        6,
        Input::BidAnswered(BidAnswer::Refused(format!("{JOB_ENDED}: Finished"))),
    );
    assert_eq!(
        h.outputs,
        vec![Output::ExchangeLedger, Output::Release, Output::Save]
    );
    assert!(f.worker.is_finished());
    assert!(f.start(7, key(0, 1)).reply != Some(Reply::Accepted));
}

#[test]
fn a_rejoin_that_cannot_reach_the_coordinator_keeps_the_job_for_the_next_start() {
    let mut f = Fixture::allocated(1);
    f.worker.handle(
        0,
        Input::Rejoin {
            ask: 1,
            capacity: capacity(),
        },
    );
    for i in 1..=BID_TRIES {
        let now = u64::from(i) * BID_RETRY_MS;
        let h = f
            .worker
            .handle(now, Input::BidAnswered(BidAnswer::Failed("down".into())));
        if i < BID_TRIES {
            f.worker.handle(now + BID_RETRY_MS, Input::Tick);
        } else {
            assert!(h.outputs.is_empty(), "{:?}", h.outputs);
        }
    }
    assert!(!f.worker.is_finished());
}

#[test]
fn allocations_are_checked_recorded_saved_and_their_shards_fetched() {
    let mut f = Fixture::new();
    let stranger = node(b"stranger");
    let h = f.worker.handle(
        1,
        Input::Allocation {
            from: stranger,
            checked: Ok(Verified {
                hash: Hash32::ZERO,
                attempt: 0,
                mine: vec![0],
            }),
        },
    );
    assert!(refused(&h).contains("only the job's coordinator"));
    assert!(h.outputs.is_empty());

    let h = f.worker.handle(
        1,
        Input::Allocation {
            from: f.coordinator,
            checked: Err("bids do not clear to it".into()),
        },
    );
    assert!(refused(&h).contains("bids do not clear to it"));
    assert!(matches!(
        &h.outputs[..],
        [Output::Record(EntryBody::Verification {
            passed: false,
            ..
        })]
    ));

    let h = f.allocate(2, vec![3, 4]);
    assert_eq!(h.reply, Some(Reply::Accepted));
    assert!(matches!(
        &h.outputs[..],
        [
            Output::Record(EntryBody::Verification { passed: true, .. }),
            Output::Save,
            Output::FetchShards(s)
        ] if s == &vec![3, 4]
    ));
    // No shards for this node any more (it missed work): nothing to
    // fetch, and it bids again to be taken back.
    let h = f.allocate(3, vec![]);
    assert!(matches!(
        &h.outputs[..],
        [
            Output::Record(EntryBody::Verification { passed: true, .. }),
            Output::Save,
            Output::BidAgain
        ]
    ));
}

#[test]
fn a_worker_never_given_shards_does_not_bid_again() {
    let mut f = Fixture::new();
    let h = f.allocate(1, vec![]);
    assert_eq!(h.reply, Some(Reply::Accepted));
    assert!(matches!(
        &h.outputs[..],
        [
            Output::Record(EntryBody::Verification { passed: true, .. }),
            Output::Save
        ]
    ));
}

#[test]
fn only_the_latest_allocations_are_remembered() {
    let mut f = Fixture::new();
    for a in 0..=MAX_ALLOCATIONS as u8 + 3 {
        f.allocate(a, vec![0]);
    }
    assert_eq!(f.worker.record().allocations.len(), MAX_ALLOCATIONS);
}

#[test]
fn a_round_start_is_checked_against_the_verified_allocation() {
    let mut f = Fixture::allocated(1);
    assert!(refused(&f.start(5, key(0, 9))).contains("not one this node verified"));
    let h = f.worker.handle(
        5,
        Input::RoundStart {
            from: f.coordinator,
            key: key(0, 1),
            deadline: 1_000,
            order: Some(vec![0]),
        },
    );
    assert!(refused(&h).contains("differs from the verified allocation"));
    assert!(refused(&f.start(1_001, key(0, 1))).contains("deadline has passed"));
    let h = f.start(5, key(0, 1));
    assert_eq!(h.reply, Some(Reply::Accepted));
    assert_eq!(
        h.outputs,
        vec![Output::Train {
            key: key(0, 1),
            shards: vec![0, 1]
        }]
    );
}

#[test]
fn a_round_sent_again_after_a_coordinator_restart_is_kept_not_refused() {
    let mut f = Fixture::allocated(1);
    f.start(5, key(0, 1));
    // Re-sent while training: accepted, and nothing new starts.
    let h = f.start(6, key(0, 1));
    assert_eq!(h.reply, Some(Reply::Accepted));
    assert!(h.outputs.is_empty());
    // Another round meanwhile is refused, naming both.
    assert!(refused(&f.start(6, key(1, 1))).contains("still training round 0"));
    let h = f.worker.handle(
        7,
        Input::Trained {
            key: key(0, 1),
            outcome: Ok(()),
        },
    );
    assert_eq!(h.outputs, vec![Output::Deliver { key: key(0, 1) }]);
    // Re-sent after training: the same update goes again.
    let h = f.start(8, key(0, 1));
    assert_eq!(h.reply, Some(Reply::Accepted));
    assert_eq!(h.outputs, vec![Output::Deliver { key: key(0, 1) }]);
}

#[test]
fn a_round_that_cannot_be_trained_is_refused_to_the_coordinator_at_once() {
    let mut f = Fixture::allocated(1);
    f.start(5, key(0, 1));
    let h = f.worker.handle(
        6,
        Input::Trained {
            key: key(0, 1),
            outcome: Err("training failed: out of memory".into()),
        },
    );
    assert_eq!(
        h.outputs,
        vec![Output::RefuseRound {
            key: key(0, 1),
            reason: "training failed: out of memory".into()
        }]
    );
    // The next round can be trained.
    assert!(matches!(
        f.start(7, key(1, 1)).outputs[..],
        [Output::Train { .. }]
    ));
}

#[test]
fn a_worker_whose_owner_needs_the_machine_steps_aside_and_comes_back() {
    let mut f = Fixture::allocated(1);
    f.start(5, key(0, 1));
    let reason = "the owner needs the machine: keyboard".to_string();
    let h = f.worker.handle(
        6,
        Input::StepAside {
            reason: reason.clone(),
        },
    );
    assert_eq!(h.outputs, vec![Output::Decline { reason }, Output::Release]);
    assert!(f.worker.is_aside() && !f.worker.is_finished());
    assert!(!f.worker.awaits_allocation());
    // Aside, it takes no round; told twice, it tells the coordinator once.
    assert!(refused(&f.start(7, key(1, 1))).contains("stepped aside"));
    let h = f.worker.handle(8, Input::StepAside { reason: "x".into() });
    assert!(h.outputs.is_empty());
    // Idle again: it bids with a higher nonce and trains once allocated.
    let nonce = f.worker.record().nonce;
    let h = f.worker.handle(
        9,
        Input::Rejoin {
            ask: 1,
            capacity: ResourceVec::default(),
        },
    );
    assert!(!f.worker.is_aside());
    assert!(
        h.outputs
            .iter()
            .any(|o| matches!(o, Output::SendBid { nonce: n, .. } if *n > nonce))
    );
}

#[test]
fn corrupt_data_withdraws_from_the_job_for_good() {
    let mut f = Fixture::allocated(1);
    f.start(5, key(0, 1));
    let h = f.worker.handle(
        6,
        Input::Withdraw {
            reason: "shard 1 failed its check twice".into(),
        },
    );
    assert_eq!(
        h.outputs,
        vec![
            Output::Decline {
                reason: "shard 1 failed its check twice".into()
            },
            Output::Release,
            Output::Save
        ]
    );
    // The training that was running brings nothing.
    let h = f.worker.handle(
        7,
        Input::Trained {
            key: key(0, 1),
            outcome: Ok(()),
        },
    );
    assert!(h.outputs.is_empty());
    assert!(refused(&f.start(8, key(1, 1))).contains("has ended"));
    // Told twice, withdraws once.
    let h = f.worker.handle(9, Input::Withdraw { reason: "x".into() });
    assert!(h.outputs.is_empty());
}

/// Random interleavings: bids and their answers, allocations (some
/// forged or failing verification), round starts sent, re-sent and late,
/// training results in any order, corrupt data, the job ending, and the
/// worker restarted from its saved record. Invariants after every step.
#[test]
fn random_interleavings_keep_the_worker_invariants() {
    const RUNS: u64 = 10_000;
    let mut coverage = Coverage::default();
    for seed in 0..RUNS {
        run(seed, &mut coverage);
    }
    eprintln!("worker interleavings: {coverage:?}");
    // The runs reached what they are meant to test.
    assert!(coverage.delivered > RUNS, "{coverage:?}");
    assert!(coverage.resent_kept > RUNS / 4, "{coverage:?}");
    assert!(coverage.restarts > RUNS / 2, "{coverage:?}");
    assert!(coverage.refused_rounds > RUNS / 10, "{coverage:?}");
    assert!(coverage.left > RUNS / 20, "{coverage:?}");
    assert!(coverage.finished > RUNS / 10, "{coverage:?}");
}

#[derive(Debug, Default)]
struct Coverage {
    delivered: u64,
    resent_kept: u64,
    restarts: u64,
    refused_rounds: u64,
    left: u64,
    finished: u64,
}

/// What the simulated shell tracks to check the machine against.
struct World {
    rng: ChaCha8Rng,
    now: u64,
    coordinator: NodeId,
    worker: Worker,
    /// The record as last saved.
    disk: Record,
    /// Trainings running: their keys.
    running: Vec<RoundKey>,
    /// Keys whose training finished well (the shell keeps the update).
    trained_ok: Vec<RoundKey>,
    bid_in_flight: bool,
    sends_this_bid: u32,
    highest_nonce: u64,
    left: bool,
}

fn run(seed: u64, coverage: &mut Coverage) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let coordinator = node(b"coordinator");
    let mut w = World {
        now: rng.random_range(1..100),
        rng,
        coordinator,
        worker: Worker::new(Hash32::of(b"job"), coordinator, Record::default()),
        disk: Record::default(),
        running: Vec::new(),
        trained_ok: Vec::new(),
        bid_in_flight: false,
        sends_this_bid: 0,
        highest_nonce: 0,
        left: false,
    };
    let first = Input::Bid {
        ask: 1,
        capacity: capacity(),
    };
    w.step(first, coverage);
    for _ in 0..60 {
        if w.left {
            coverage.left += 1;
            return;
        }
        w.now += w.rng.random_range(0..700);
        let input = w.random_input(coverage);
        w.step(input, coverage);
    }
    if w.worker.is_finished() {
        coverage.finished += 1;
    }
}

impl World {
    fn random_input(&mut self, coverage: &mut Coverage) -> Input {
        let rng = &mut self.rng;
        let allocation = rng.random_range(0..3u8);
        let round = rng.random_range(0..4u32);
        let pick = rng.random_range(0..100);
        match pick {
            0..=9 if self.bid_in_flight => {
                let answer = match rng.random_range(0..6) {
                    0 | 1 => BidAnswer::Accepted,
                    2 => BidAnswer::Refused(format!("{BUSY}: loading")),
                    3 => BidAnswer::Refused(format!("{JOB_ENDED}: Finished")),
                    4 => BidAnswer::Refused("ask above the limit".into()),
                    _ => BidAnswer::Failed("timeout".into()),
                };
                Input::BidAnswered(answer)
            }
            0..=14 => Input::Tick,
            15..=29 => Input::Allocation {
                from: if rng.random_range(0..8) == 0 {
                    node(b"forger")
                } else {
                    self.coordinator
                },
                checked: if rng.random_range(0..6) == 0 {
                    Err("does not clear".into())
                } else {
                    Ok(Verified {
                        hash: Hash32::of(&[allocation]),
                        attempt: u32::from(allocation),
                        mine: vec![u32::from(allocation), 7],
                    })
                },
            },
            30..=59 => {
                // Often the round in training or last trained again, as a
                // restarted coordinator sends it.
                let again = self
                    .running
                    .last()
                    .or(self.trained_ok.last())
                    .copied()
                    .filter(|_| rng.random_range(0..2) == 0);
                let key = again.unwrap_or(RoundKey {
                    round,
                    allocation: Hash32::of(&[allocation]),
                    params_hash: Hash32::of(&round.to_le_bytes()),
                });
                let order = if rng.random_range(0..10) == 0 {
                    Some(vec![9])
                } else {
                    self.worker
                        .record()
                        .allocations
                        .get(&key.allocation)
                        .cloned()
                };
                let deadline = self.now + rng.random_range(0..3000) - 200.min(self.now);
                Input::RoundStart {
                    from: self.coordinator,
                    key,
                    deadline,
                    order,
                }
            }
            60..=84 if !self.running.is_empty() => {
                let i = rng.random_range(0..self.running.len());
                let key = self.running.remove(i);
                let outcome = if rng.random_range(0..5) == 0 {
                    Err("training failed".into())
                } else {
                    Ok(())
                };
                if outcome.is_ok() {
                    self.trained_ok.push(key);
                }
                Input::Trained { key, outcome }
            }
            85 => Input::Withdraw {
                reason: "bad shard".into(),
            },
            86 => Input::JobEnded,
            87 => Input::StepAside {
                reason: "owner active".into(),
            },
            89..=93 => {
                // The worker's node restarts: its machine is rebuilt from
                // the record on disk, trainings and kept updates are lost.
                coverage.restarts += 1;
                self.worker = Worker::new(Hash32::of(b"job"), self.coordinator, self.disk.clone());
                self.running.clear();
                self.trained_ok.clear();
                self.bid_in_flight = false;
                Input::Rejoin {
                    ask: 1,
                    capacity: capacity(),
                }
            }
            _ => Input::Tick,
        }
    }

    fn step(&mut self, input: Input, coverage: &mut Coverage) {
        let was_finished = self.worker.is_finished();
        let training_before = self.worker.training();
        let resend_of_kept = match &input {
            Input::RoundStart {
                key,
                deadline,
                order,
                from,
            } => {
                *from == self.coordinator
                    && !was_finished
                    && *deadline >= self.now
                    && order.as_ref() == self.worker.record().allocations.get(&key.allocation)
                    && (training_before == Some(*key)
                        || (training_before.is_none() && self.trained_ok.last() == Some(key)))
            }
            _ => false,
        };
        let is_rejoin = matches!(input, Input::Rejoin { .. });
        if matches!(input, Input::BidAnswered(_)) {
            self.bid_in_flight = false;
        }
        // Same inputs, same outputs.
        let mut twin = self.worker.clone();
        let handled = self.worker.handle(self.now, input.clone());
        let again = twin.handle(self.now, input);
        assert_eq!(handled.outputs, again.outputs);
        assert_eq!(handled.reply, again.reply);

        if resend_of_kept {
            assert_eq!(
                handled.reply,
                Some(Reply::Accepted),
                "a re-sent round was refused"
            );
            coverage.resent_kept += 1;
        }
        for output in &handled.outputs {
            assert!(
                !(was_finished
                    && matches!(
                        output,
                        Output::Train { .. } | Output::Deliver { .. } | Output::SendBid { .. }
                    )),
                "{output:?} after the job ended"
            );
            match output {
                Output::SendBid { nonce, .. } => {
                    assert!(!self.bid_in_flight, "two bids in flight");
                    self.bid_in_flight = true;
                    if is_rejoin {
                        assert!(*nonce > self.highest_nonce, "a rejoin reused a nonce");
                        self.sends_this_bid = 0;
                    }
                    assert!(*nonce >= self.highest_nonce);
                    self.highest_nonce = *nonce;
                    self.sends_this_bid += 1;
                    assert!(self.sends_this_bid <= BID_TRIES);
                }
                Output::Train { key, .. } => {
                    assert!(training_before.is_none(), "two rounds trained at once");
                    assert!(self.running.is_empty());
                    self.running.push(*key);
                }
                Output::Deliver { key } => {
                    assert!(
                        self.trained_ok.contains(key),
                        "delivered an untrained round"
                    );
                    coverage.delivered += 1;
                }
                Output::RefuseRound { .. } => coverage.refused_rounds += 1,
                Output::Save => self.disk = self.worker.record().clone(),
                Output::Leave => self.left = true,
                Output::Release => {
                    self.bid_in_flight = false;
                    self.running.clear();
                    self.trained_ok.clear();
                }
                _ => {}
            }
        }
        if let Some(reply) = &handled.reply
            && was_finished
        {
            assert_ne!(*reply, Reply::Accepted, "accepted work after the job ended");
        }
        if self.worker.is_finished() {
            assert!(self.worker.training().is_none());
        }
    }
}
