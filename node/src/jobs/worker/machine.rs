//! A worker's part in one job as a pure state machine: bids and their
//! retries, the allocations it verified, which round it trains, what it
//! sends back and when it leaves. `Worker::handle(now, input)` returns an
//! answer (for inputs that are requests from the coordinator) and outputs
//! for the shell (`worker/mod.rs`, `worker/inbound.rs`) to execute in
//! order. No clock, lock, task or I/O in here: the shell verifies
//! signatures and parameters, trains, and talks to the network.

use std::collections::BTreeMap;

use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::{Hash32, NodeId, ResourceVec};

use super::gate::{Admit, RoundKey, admit};
use crate::jobs::coordinator::machine::JOB_ENDED;

/// Verified allocations remembered per job.
pub const MAX_ALLOCATIONS: usize = 64;
/// Tries of a bid whose coordinator cannot be reached or is busy.
pub const BID_TRIES: u32 = 15;
/// Between two tries of a bid.
pub const BID_RETRY_MS: u64 = 1000;
/// How a refusal that is worth trying again begins.
pub const BUSY: &str = "busy";

/// How a consortium node's refusal to a peer it has not admitted yet
/// starts. Also passing: a bid is often what first connects a worker to
/// the coordinator (through a relay, say), and the certificates cross
/// while it does.
pub const NOT_ADMITTED: &str = "not admitted";

/// What a worker keeps on disk about a job, besides its spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub nonce: u64,
    /// Verified allocations: hash -> this node's shards in it.
    pub allocations: BTreeMap<Hash32, Vec<u32>>,
    pub finished: bool,
}

/// How a bid was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BidAnswer {
    Accepted,
    Refused(String),
    /// Not delivered, or an answer that is not one.
    Failed(String),
}

/// An allocation after the shell checked it (`market::verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub hash: Hash32,
    pub attempt: u32,
    /// This node's shards in it.
    pub mine: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Bid on the job for the first time.
    Bid {
        ask: u64,
        capacity: ResourceVec,
    },
    /// Bid again after a restart, with a higher nonce.
    Rejoin {
        ask: u64,
        capacity: ResourceVec,
    },
    BidAnswered(BidAnswer),
    /// A timer the machine asked for went off.
    Tick,
    /// An allocation from `from`, verified or not (and why).
    Allocation {
        from: NodeId,
        checked: Result<Verified, String>,
    },
    /// A round start from `from` whose signature and parameters the shell
    /// checked; `order` is this node's shards in it, if it has an order.
    RoundStart {
        from: NodeId,
        key: RoundKey,
        deadline: u64,
        order: Option<Vec<u32>>,
    },
    /// The training of a round ended: the update is ready, or why not.
    Trained {
        key: RoundKey,
        outcome: Result<(), String>,
    },
    /// The job's data failed its checks: the worker withdraws for good,
    /// telling the coordinator why.
    Withdraw {
        reason: String,
    },
    /// The owner needs the machine: the worker tells the coordinator why
    /// and steps aside until it bids again (`Rejoin`).
    StepAside {
        reason: String,
    },
    /// The job's ledger entries arrived: it has ended.
    JobEnded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    SendBid {
        nonce: u64,
        ask: u64,
        capacity: ResourceVec,
    },
    /// Write the record.
    Save,
    Record(EntryBody),
    /// Load these shards ahead of the first round.
    FetchShards(Vec<u32>),
    /// Train this round over these shards.
    Train {
        key: RoundKey,
        shards: Vec<u32>,
    },
    /// Send the update of this trained round.
    Deliver {
        key: RoundKey,
    },
    /// Tell the coordinator, signed, that this round brings no update.
    RefuseRound {
        key: RoundKey,
        reason: String,
    },
    /// Withdraw from the job, telling the coordinator why.
    Decline {
        reason: String,
    },
    /// Exchange the job's ledger entries with the coordinator.
    ExchangeLedger,
    /// Free the training state (engine, kept update, loaded shards).
    Release,
    /// The bid was not taken: forget the job.
    Leave,
    /// An allocation dropped this worker (it missed work): bid again (the
    /// shell decides the terms and hands back [`Input::Rejoin`]), so the
    /// next clearing can take it back.
    BidAgain,
    Wake {
        at: u64,
    },
}

/// The answer to a request from the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Accepted,
    Refused(String),
}

/// A bid being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bidding {
    ask: u64,
    capacity: ResourceVec,
    rejoin: bool,
    tries: u32,
    /// Waiting for an answer (false: waiting to try again).
    in_flight: bool,
    retry_at: u64,
}

#[derive(Debug, Clone)]
pub struct Worker {
    job: Hash32,
    coordinator: NodeId,
    record: Record,
    training: Option<RoundKey>,
    trained: Option<RoundKey>,
    bidding: Option<Bidding>,
    /// Withdrawn because the owner needs the machine: no training until
    /// the node bids again (`Input::Rejoin`).
    aside: bool,
}

/// What `handle` returns.
#[derive(Debug, Default)]
pub struct Handled {
    pub reply: Option<Reply>,
    pub outputs: Vec<Output>,
}

impl Worker {
    pub fn new(job: Hash32, coordinator: NodeId, record: Record) -> Worker {
        Worker {
            job,
            coordinator,
            record,
            training: None,
            trained: None,
            bidding: None,
            aside: false,
        }
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    pub fn is_finished(&self) -> bool {
        self.record.finished
    }

    /// Whether the job has not ended and has sent no allocation yet (it is
    /// in its bid window, or waiting for supply), with no bid in flight: a
    /// larger bid can still make a difference to its clearing. A job that
    /// was allocated without this node does not get one (its hold stays
    /// free for other jobs).
    pub fn awaits_allocation(&self) -> bool {
        !self.record.finished
            && !self.aside
            && self.bidding.is_none()
            && self.training.is_none()
            && self.record.allocations.is_empty()
    }

    /// The round in training, if any.
    pub fn training(&self) -> Option<RoundKey> {
        self.training
    }

    /// Whether `from` may send this job's allocations and rounds, checked
    /// before the shell spends time verifying what it sent.
    pub fn accepts_from(&self, from: NodeId) -> Result<(), String> {
        if from != self.coordinator {
            return Err("only the job's coordinator sends its allocations and rounds".into());
        }
        if self.record.finished {
            return Err("this node's part in the job has ended".into());
        }
        if self.aside {
            return Err("this node stepped aside (its owner needs the machine)".into());
        }
        Ok(())
    }

    pub fn handle(&mut self, now: u64, input: Input) -> Handled {
        let mut out = Handled::default();
        match input {
            Input::Bid { ask, capacity } => self.start_bid(now, ask, capacity, false, &mut out),
            Input::Rejoin { ask, capacity } => {
                self.aside = false;
                self.record.nonce = self.record.nonce.saturating_add(1).max(now);
                out.outputs.push(Output::Save);
                self.start_bid(now, ask, capacity, true, &mut out)
            }
            Input::BidAnswered(answer) => self.on_bid_answer(now, answer, &mut out),
            Input::Tick => self.on_tick(now, &mut out),
            Input::Allocation { from, checked } => {
                out.reply = Some(self.on_allocation(from, checked, &mut out.outputs))
            }
            Input::RoundStart {
                from,
                key,
                deadline,
                order,
            } => {
                let reply = self.on_round_start(now, from, key, deadline, order, &mut out.outputs);
                out.reply = Some(reply);
            }
            Input::Trained { key, outcome } => self.on_trained(key, outcome, &mut out.outputs),
            Input::Withdraw { reason } => {
                if !self.record.finished {
                    out.outputs.push(Output::Decline { reason });
                    self.finish(&mut out.outputs);
                }
            }
            Input::StepAside { reason } => {
                if !self.record.finished && !self.aside {
                    out.outputs.push(Output::Decline { reason });
                    self.step_aside(&mut out.outputs);
                }
            }
            Input::JobEnded => {
                if !self.record.finished {
                    self.finish(&mut out.outputs);
                }
            }
        }
        out
    }

    fn start_bid(
        &mut self,
        now: u64,
        ask: u64,
        capacity: ResourceVec,
        rejoin: bool,
        out: &mut Handled,
    ) {
        if self.record.finished || self.bidding.as_ref().is_some_and(|b| b.in_flight) {
            return;
        }
        if !rejoin && self.record.nonce == 0 {
            // On disk before it is used: a restarted worker bids higher.
            self.record.nonce = now.max(1);
            out.outputs.push(Output::Save);
        }
        self.bidding = Some(Bidding {
            ask,
            capacity,
            rejoin,
            tries: 1,
            in_flight: true,
            retry_at: now,
        });
        out.outputs.push(Output::SendBid {
            nonce: self.record.nonce,
            ask,
            capacity,
        });
    }

    fn on_bid_answer(&mut self, now: u64, answer: BidAnswer, out: &mut Handled) {
        let Some(bidding) = self.bidding.as_mut().filter(|b| b.in_flight) else {
            return;
        };
        let rejoin = bidding.rejoin;
        match answer {
            BidAnswer::Accepted => self.bidding = None,
            BidAnswer::Refused(reason) if rejoin && reason.contains(JOB_ENDED) => {
                self.bidding = None;
                out.outputs.push(Output::ExchangeLedger);
                self.finish(&mut out.outputs);
            }
            BidAnswer::Refused(reason)
                if !reason.starts_with(BUSY) && !reason.starts_with(NOT_ADMITTED) =>
            {
                self.bidding = None;
                if rejoin {
                    self.finish(&mut out.outputs);
                } else {
                    out.outputs.push(Output::Leave);
                }
            }
            BidAnswer::Refused(_) | BidAnswer::Failed(_) => {
                if bidding.tries >= BID_TRIES {
                    // A first bid gives the job up; a rejoin is tried again
                    // on the next start.
                    self.bidding = None;
                    if !rejoin {
                        out.outputs.push(Output::Leave);
                    }
                } else {
                    bidding.in_flight = false;
                    bidding.retry_at = now + BID_RETRY_MS;
                    out.outputs.push(Output::Wake {
                        at: bidding.retry_at,
                    });
                }
            }
        }
    }

    fn on_tick(&mut self, now: u64, out: &mut Handled) {
        if self.record.finished {
            self.bidding = None;
            return;
        }
        let Some(bidding) = self.bidding.as_mut() else {
            return;
        };
        if bidding.in_flight {
            return;
        }
        if now < bidding.retry_at {
            out.outputs.push(Output::Wake {
                at: bidding.retry_at,
            });
            return;
        }
        bidding.tries += 1;
        bidding.in_flight = true;
        out.outputs.push(Output::SendBid {
            nonce: self.record.nonce,
            ask: bidding.ask,
            capacity: bidding.capacity,
        });
    }

    fn on_allocation(
        &mut self,
        from: NodeId,
        checked: Result<Verified, String>,
        outputs: &mut Vec<Output>,
    ) -> Reply {
        if let Err(reason) = self.accepts_from(from) {
            return Reply::Refused(reason);
        }
        let verified = match checked {
            Ok(v) => v,
            Err(reason) => {
                outputs.push(Output::Record(EntryBody::Verification {
                    job_id: self.job,
                    round: 0,
                    node: from,
                    passed: false,
                    detail: format!("allocation refused: {reason}"),
                }));
                return Reply::Refused(format!("allocation does not verify: {reason}"));
            }
        };
        outputs.push(Output::Record(EntryBody::Verification {
            job_id: self.job,
            round: 0,
            node: from,
            passed: true,
            detail: format!(
                "allocation {} (attempt {}) verified: {} shards for this node",
                verified.hash,
                verified.attempt,
                verified.mine.len()
            ),
        }));
        let allocations = &mut self.record.allocations;
        let held_shards = allocations.values().any(|mine| !mine.is_empty());
        allocations.insert(verified.hash, verified.mine.clone());
        while allocations.len() > MAX_ALLOCATIONS {
            allocations.pop_first();
        }
        outputs.push(Output::Save);
        if !verified.mine.is_empty() {
            outputs.push(Output::FetchShards(verified.mine));
        } else if held_shards && self.bidding.is_none() {
            outputs.push(Output::BidAgain);
        }
        Reply::Accepted
    }

    fn on_round_start(
        &mut self,
        now: u64,
        from: NodeId,
        key: RoundKey,
        deadline: u64,
        order: Option<Vec<u32>>,
        outputs: &mut Vec<Output>,
    ) -> Reply {
        if let Err(reason) = self.accepts_from(from) {
            return Reply::Refused(reason);
        }
        let Some(mine) = self.record.allocations.get(&key.allocation) else {
            return Reply::Refused(format!(
                "allocation {} is not one this node verified",
                key.allocation
            ));
        };
        if order.as_ref() != Some(mine) || mine.is_empty() {
            return Reply::Refused(
                "the round's order for this node differs from the verified allocation".into(),
            );
        }
        if now > deadline {
            return Reply::Refused("the round's deadline has passed".into());
        }
        match admit(self.training, self.trained, key) {
            Admit::Train => {
                self.training = Some(key);
                outputs.push(Output::Train {
                    key,
                    shards: mine.clone(),
                });
            }
            // The running training delivers its update.
            Admit::AlreadyTraining => {}
            Admit::Resend => outputs.push(Output::Deliver { key }),
            Admit::Refuse(reason) => return Reply::Refused(reason),
        }
        Reply::Accepted
    }

    fn on_trained(
        &mut self,
        key: RoundKey,
        outcome: Result<(), String>,
        outputs: &mut Vec<Output>,
    ) {
        if self.training != Some(key) {
            // Withdrew meanwhile, or a stray result: nothing to send.
            return;
        }
        self.training = None;
        match outcome {
            Ok(()) => {
                self.trained = Some(key);
                outputs.push(Output::Deliver { key });
            }
            Err(reason) => outputs.push(Output::RefuseRound { key, reason }),
        }
    }

    /// Stops work on the job without ending this node's part: the
    /// training state is freed, and the node comes back by bidding again.
    fn step_aside(&mut self, outputs: &mut Vec<Output>) {
        self.aside = true;
        self.training = None;
        self.trained = None;
        self.bidding = None;
        outputs.push(Output::Release);
    }

    /// Whether the node stepped aside and has not bid again.
    pub fn is_aside(&self) -> bool {
        self.aside && !self.record.finished
    }

    fn finish(&mut self, outputs: &mut Vec<Output>) {
        self.record.finished = true;
        self.training = None;
        self.trained = None;
        self.bidding = None;
        outputs.push(Output::Release);
        outputs.push(Output::Save);
    }
}

#[cfg(test)]
mod tests;
