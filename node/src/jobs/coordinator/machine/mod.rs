//! The coordinator of one job as a pure state machine, in the spirit of
//! Psyche's `Coordinator::tick`: [`Coordinator::handle`] takes an
//! [`Input`] and the time, changes the job's state, and returns what the
//! shell must do as [`Output`]s, in order. No clock, lock, task or I/O in
//! here: the same inputs give the same outputs, so the whole job logic is
//! tested by driving it through random interleavings (`sim`).
//!
//! The shell (`driver`) owns the I/O: it signs, sends, clears the market,
//! aggregates, writes checkpoints and ledger entries, and feeds every
//! result back as an input. Ledger entries the job implies are *written
//! ahead*: [`Output::WriteAhead`] carries the checkpoint that holds them,
//! and the shell appends them only once that checkpoint is on disk.
//!
//! - [`bids`]: the bid book, rejoins, resends to restarted workers.
//! - [`clearing`]: when to clear, and what to make of a clearing.
//! - [`rounds`]: opening, settling, closing and recording rounds.
//! - [`ending`]: failing, finishing, credits, and the last checkpoint.

mod audits;
mod bids;
mod claims;
mod clearing;
mod ending;
mod rounds;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::market::MarketJob;
use fairgrid_protocol::messages::{
    Allocation, Bid, JobSpec, RoundRefusal, RoundStart, RoundUpdate,
};
use fairgrid_protocol::{Hash32, NodeId, OwnerId, Signed};
use fairgrid_sdk::jobs::{JobEventKind, JobState, WorkerRoundView};

use super::round::{AcceptedUpdate, Aggregate, Rejection, RoundInProgress};
use super::{CompressionReport, CoordState};

pub use audits::{AuditCandidate, AuditVerdict, AuditorReport};
pub use bids::JOB_ENDED;
pub use clearing::no_supply_message;

/// Rounds in a row without an accepted update before the job fails.
pub const MAX_EMPTY_ROUNDS: u32 = 3;
/// Clearings in a row (winners refusing or unreachable) before giving up.
pub const MAX_CLEARINGS: u32 = 16;

/// Something that happened, as the shell tells it.
#[derive(Debug, Clone)]
pub enum Input {
    /// A timer asked for with [`Output::Wake`] fired (or any nudge).
    Tick,
    /// The job was accepted (its checkpoint and `JobSubmitted` are on
    /// disk) and its spec is about to be gossiped: the bid window gets
    /// its full length from now. A slow disk held a submission for 3.3 s
    /// in a soak, and the window had closed before anyone heard of the job.
    Accepted,
    /// A bid that passed the shell's checks (signature, certificate,
    /// validity at `now`), with the owner its certificate names.
    Bid {
        from: NodeId,
        signed: Signed<Bid>,
        bid: Bid,
        owner: OwnerId,
        label: String,
    },
    /// A bid refused for asking more than the limit: remembered for the
    /// message a job with no supply fails with.
    AskAboveLimit {
        from: NodeId,
        ask: u64,
    },
    /// The market's answer to [`Output::Clear`].
    Cleared {
        allocation: Allocation,
        valid_bids: usize,
    },
    ClearingFailed {
        reason: String,
    },
    /// [`Output::Publish`] done: the allocation is signed, recorded as
    /// `AllocationMade`, and pushed; `refusals` are the winners that did
    /// not take it, with their reason and whether they were unreachable.
    Published {
        signed: Signed<Allocation>,
        refusals: Vec<(NodeId, String, bool)>,
    },
    PublishFailed {
        reason: String,
    },
    /// A round start reached a worker, who took it.
    StartDelivered {
        node: NodeId,
        round: u32,
        bytes: u64,
    },
    /// A worker answered a round start with a refusal (or nonsense).
    StartRefused {
        node: NodeId,
        round: u32,
        reason: String,
    },
    /// An update that passed [`Coordinator::check_update`] and decoded.
    Update {
        from: NodeId,
        round: u32,
        accepted: AcceptedUpdate,
    },
    /// An update that failed its checks or did not decode.
    UpdateRejected {
        from: NodeId,
        round: u32,
        rejection: Rejection,
    },
    /// A signed refusal to train a round, verified by the shell.
    RoundRefused {
        from: NodeId,
        refusal: RoundRefusal,
    },
    /// A worker withdrew from the job.
    Declined {
        from: NodeId,
        reason: String,
    },
    /// The connection to a peer closed.
    PeerLost {
        node: NodeId,
    },
    /// The answer to [`Output::Audit`]: a verdict for each update the
    /// shell drew (none when it drew none).
    Audited {
        round: u32,
        verdicts: Vec<AuditVerdict>,
    },
    /// The answer to [`Output::Aggregate`]: the new parameters, and
    /// their test accuracy when the round was to be evaluated.
    Aggregated {
        round: u32,
        result: Result<(Aggregate, Option<f32>), String>,
    },
    /// The answer to [`Output::WriteModel`]: the model file's hash and,
    /// when the job asked for a compressed result, what it cost.
    ModelWritten {
        result: Result<(Hash32, Option<CompressionReport>), String>,
    },
    /// The answer to [`Output::WriteAhead`]: the entries appended, in
    /// order, and the error that stopped it, if any.
    WriteAheadDone {
        recorded: Vec<EntryBody>,
        error: Option<String>,
    },
    /// Something in the shell broke (a panic, a lost thread): the job fails.
    Fail {
        reason: String,
    },
}

/// What the shell must do, in order.
#[derive(Debug, Clone)]
pub enum Output {
    /// Write the job's checkpoint, as the machine stands when the shell
    /// gets to it (so checkpoints never go back); a failure is logged and
    /// the next one carries on.
    Persist,
    /// Write the checkpoint (which holds `entries` as unrecorded), then
    /// append `entries` in order, skipping (with `check_ledger`) those the
    /// ledger already holds; answer with [`Input::WriteAheadDone`].
    WriteAhead {
        entries: Vec<EntryBody>,
        check_ledger: bool,
    },
    /// Append now, without writing ahead (evidence, e.g. a failed check).
    RecordNow(EntryBody),
    Event(JobEventKind),
    /// Clear the market over these bids; answer with [`Input::Cleared`].
    Clear {
        market_job: MarketJob,
        bids: Vec<Signed<Bid>>,
    },
    /// Sign, record (`AllocationMade`) and push the allocation to its
    /// winners; answer with [`Input::Published`]. Also push it to
    /// `dropped` (workers it leaves out that held shards before or missed
    /// work; their answers do not count), so that they can bid again.
    Publish {
        allocation: Allocation,
        bids: Vec<Signed<Bid>>,
        dropped: Vec<NodeId>,
    },
    /// Sign the start and send it, with the parameters, to every order.
    StartRound {
        start: RoundStart,
        params: Arc<Vec<u8>>,
    },
    /// Send the open round's start again to one worker (it restarted).
    SendStart {
        node: NodeId,
        round: u32,
    },
    /// Draw which of a closed round's accepted updates to audit, audit
    /// them against `params` (the round's parameters); answer with
    /// [`Input::Audited`].
    Audit {
        round: u32,
        params: Arc<Vec<f32>>,
        candidates: Vec<AuditCandidate>,
        /// The per-owner cap of the allocation in force, for the owners
        /// of the candidates (who may audit how many shards).
        caps: BTreeMap<OwnerId, u32>,
    },
    /// Aggregate (the outer step starting from `velocity`) and, with
    /// `evaluate`, evaluate the result; answer with [`Input::Aggregated`].
    Aggregate {
        round: u32,
        evaluate: bool,
        params: Arc<Vec<f32>>,
        velocity: Arc<Vec<f32>>,
        updates: Vec<AcceptedUpdate>,
    },
    /// Write the trained model; answer with [`Input::ModelWritten`].
    WriteModel {
        params: Arc<Vec<f32>>,
    },
    /// Exchange the job's ledger entries with these participants.
    SyncLedger {
        participants: BTreeSet<NodeId>,
    },
    /// Send [`Input::Tick`] at this time (replaces the previous request).
    Wake {
        at: u64,
    },
    /// The job is over and its last checkpoint is written: stop.
    Ended,
}

/// What a checkpoint holds of the machine.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: CoordState,
    pub params: Arc<Vec<f32>>,
    /// The outer momentum the next round's step starts from.
    pub velocity: Arc<Vec<f32>>,
    pub unrecorded: Vec<EntryBody>,
}

/// What a job resumes from: its checkpoint.
#[derive(Debug, Clone)]
pub struct Stored {
    pub state: CoordState,
    pub params: Vec<f32>,
    /// Empty without outer momentum (or from a checkpoint without it).
    pub velocity: Vec<f32>,
    pub unrecorded: Vec<EntryBody>,
}

/// The result of one input: the answer for the peer that sent it (for
/// requests) and the outputs.
#[derive(Debug)]
pub struct Handled {
    pub reply: Result<(), String>,
    pub outputs: Vec<Output>,
}

/// What the shell is doing for the machine; nothing else starts meanwhile.
#[derive(Debug, Clone)]
enum Busy {
    Clearing(Clearing),
    Publishing(Clearing),
    Auditing(Box<RoundInProgress>),
    Aggregating(Box<RoundInProgress>),
    WritingModel,
}

/// A clearing in progress: why, over which bids, and how many in a row.
#[derive(Debug, Clone)]
struct Clearing {
    reason: String,
    /// The job's first clearing: no supply then fails a run-with-fewer job.
    first: bool,
    attempt: u32,
    bids: Vec<Signed<Bid>>,
    /// Nodes left out for missed work when the clearing began: one that
    /// bids again before it is published needs another clearing.
    missing: BTreeSet<NodeId>,
}

/// One coordinated job.
#[derive(Debug, Clone)]
pub struct Coordinator {
    id: Hash32,
    spec: JobSpec,
    state: CoordState,
    params: Arc<Vec<f32>>,
    /// The outer step's Nesterov velocity (`hyper.outer_momentum`),
    /// replaced with the parameters and checkpointed with them.
    velocity: Arc<Vec<f32>>,
    round: Option<RoundInProgress>,
    /// Entries the state implies that the ledger may not hold yet.
    unrecorded: Vec<EntryBody>,
    busy: Option<Busy>,
    /// Bids kept (one per node, `jobs.max_bids_per_job`); more nodes are refused.
    max_bids: usize,
    /// Write-aheads the shell has not answered yet.
    recording: u32,
    /// The job finished in this run (its entries go to the participants).
    finished_here: bool,
    /// Each worker's part in the round being recorded, for its event (not
    /// checkpointed: a restart loses only this view).
    round_workers: Option<(u32, Vec<WorkerRoundView>)>,
    /// Workers far slower than their bids claimed.
    slow: claims::SlowWorkers,
    /// Closed rounds go to the shell for audit before aggregation.
    audits: bool,
    ended: bool,
}

impl Coordinator {
    /// A job just submitted at `now`: `JobSubmitted` is written ahead, and
    /// the job is accepted once that write-ahead succeeds.
    pub fn submit(
        id: Hash32,
        spec: JobSpec,
        params: Vec<f32>,
        now: u64,
        cheapest_ask: Option<(u64, NodeId)>,
        max_bids: usize,
    ) -> (Coordinator, Vec<Output>) {
        let mut state = CoordState::new(now, spec.bid_window_ms);
        state.cheapest_ask = cheapest_ask;
        let mut machine = Coordinator::new(id, spec, state, params, Vec::new(), max_bids);
        let mut out = vec![Output::Event(JobEventKind::Submitted {
            shards: machine.spec.shard_count(),
        })];
        let entry = EntryBody::JobSubmitted {
            job_id: id,
            submitter: machine.spec.submitter,
            shards: machine.spec.shard_count(),
            limit_price: machine.spec.limit_price,
            alpha_ppm: machine.spec.alpha_ppm,
        };
        machine.write_ahead(vec![entry], &mut out);
        (machine, out)
    }

    /// A job resumed from its checkpoint at `now`. Entries the checkpoint
    /// held as unrecorded are appended unless the ledger has them; a job
    /// whose data could not be restored (`cannot_resume`) fails.
    pub fn resume(
        id: Hash32,
        spec: JobSpec,
        stored: Stored,
        now: u64,
        max_bids: usize,
        cannot_resume: Option<String>,
    ) -> (Coordinator, Vec<Output>) {
        let Stored {
            state,
            params,
            velocity,
            unrecorded,
        } = stored;
        let mut machine = Coordinator::new(id, spec, state, params, unrecorded, max_bids);
        if velocity.len() == machine.params.len() {
            machine.velocity = Arc::new(velocity);
        }
        let mut out = Vec::new();
        if machine.state.is_terminal() && machine.unrecorded.is_empty() {
            // Ended before the restart and fully recorded: nothing to do.
            machine.ended = true;
            return (machine, out);
        }
        if !machine.unrecorded.is_empty() {
            machine.recording += 1;
            out.push(Output::WriteAhead {
                entries: machine.unrecorded.clone(),
                check_ledger: true,
            });
        }
        if let Some(reason) = cannot_resume {
            machine.fail(now, reason, &mut out);
        }
        // A bid window cut short by the restart gets its full length again.
        if matches!(machine.state.phase, JobState::Bidding | JobState::Waiting) {
            let until = now + machine.spec.bid_window_ms;
            machine.state.bidding_until = machine.state.bidding_until.max(until);
        }
        machine.advance(now, &mut out);
        (machine, out)
    }

    fn new(
        id: Hash32,
        spec: JobSpec,
        state: CoordState,
        params: Vec<f32>,
        unrecorded: Vec<EntryBody>,
        max_bids: usize,
    ) -> Coordinator {
        Coordinator {
            id,
            spec,
            state,
            params: Arc::new(params),
            velocity: Arc::new(Vec::new()),
            round: None,
            unrecorded,
            busy: None,
            max_bids,
            recording: 0,
            finished_here: false,
            round_workers: None,
            slow: claims::SlowWorkers::default(),
            audits: false,
            ended: false,
        }
    }

    pub fn id(&self) -> Hash32 {
        self.id
    }

    /// Whether closed rounds are audited (off until the shell turns it on,
    /// as `jobs.audits` does by default).
    pub fn set_audits(&mut self, on: bool) {
        self.audits = on;
    }

    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    pub fn state(&self) -> &CoordState {
        &self.state
    }

    pub fn params(&self) -> &Arc<Vec<f32>> {
        &self.params
    }

    /// The round open now, if any.
    pub fn open_round(&self) -> Option<&RoundInProgress> {
        self.round.as_ref()
    }

    /// Whether the last checkpoint is written and the shell may stop.
    pub fn has_ended(&self) -> bool {
        self.ended
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state.clone(),
            params: Arc::clone(&self.params),
            velocity: Arc::clone(&self.velocity),
            unrecorded: self.unrecorded.clone(),
        }
    }

    /// Checks an update against the open round before its bytes are
    /// decoded (the decoding is the shell's CPU work).
    pub fn check_update(
        &self,
        from: NodeId,
        signed: &Signed<RoundUpdate>,
        bytes: &[u8],
        now: u64,
    ) -> Result<(RoundUpdate, usize), Rejection> {
        let Some(round) = self.round.as_ref() else {
            return Err(Rejection {
                reason: "no round is open".into(),
                misbehaved: false,
            });
        };
        let update = round.check(from, signed, bytes, &self.spec, now)?;
        // An update starts from no residual, or from the one its worker's
        // last acknowledged update left: an audit can then trust it.
        let known = self.state.residuals.get(&from);
        if update.residual_in != Hash32::ZERO && known != Some(&update.residual_in) {
            return Err(Rejection {
                reason: "the update's residual is not the one its last acknowledged update left; start from none".into(),
                misbehaved: false,
            });
        }
        Ok((update, round.param_count))
    }

    /// Takes one input at `now`.
    pub fn handle(&mut self, now: u64, input: Input) -> Handled {
        let mut out = Vec::new();
        // Nothing that arrives after the deadline counts: the job fails first.
        if now > self.spec.deadline {
            self.step(now, &mut out);
        }
        let reply = self.apply(now, input, &mut out);
        self.advance(now, &mut out);
        Handled {
            reply,
            outputs: out,
        }
    }

    fn apply(&mut self, now: u64, input: Input, out: &mut Vec<Output>) -> Result<(), String> {
        match input {
            Input::Tick => Ok(()),
            Input::Accepted => {
                let st = &mut self.state;
                let bidding = st.phase == JobState::Bidding && self.busy.is_none();
                if bidding && st.allocations.is_empty() {
                    st.bidding_until = st.bidding_until.max(now + self.spec.bid_window_ms);
                }
                Ok(())
            }
            Input::Bid {
                from,
                signed,
                bid,
                owner,
                label,
            } => self.on_bid(now, from, signed, bid, owner, label, out),
            Input::AskAboveLimit { from, ask } => {
                self.note_ask(ask, from);
                Ok(())
            }
            Input::Cleared {
                allocation,
                valid_bids,
            } => {
                self.on_cleared(now, allocation, valid_bids, out);
                Ok(())
            }
            Input::ClearingFailed { reason } => {
                if matches!(self.busy, Some(Busy::Clearing(_))) {
                    self.busy = None;
                    self.fail(now, format!("clearing failed: {reason}"), out);
                }
                Ok(())
            }
            Input::Published { signed, refusals } => {
                self.on_published(now, signed, refusals, out);
                Ok(())
            }
            Input::PublishFailed { reason } => {
                if matches!(self.busy, Some(Busy::Publishing(_))) {
                    self.busy = None;
                    self.fail(now, format!("recording the allocation: {reason}"), out);
                }
                Ok(())
            }
            Input::StartDelivered { node, round, bytes } => {
                if let Some(r) = self.round.as_mut().filter(|r| r.round == round)
                    && r.orders.contains_key(&node)
                {
                    r.bytes_down += bytes;
                }
                Ok(())
            }
            Input::StartRefused {
                node,
                round,
                reason,
            } => {
                self.settle_missed(node, round, reason, out);
                Ok(())
            }
            Input::Update {
                from,
                round,
                accepted,
            } => self.on_update(now, from, round, accepted),
            Input::UpdateRejected {
                from,
                round,
                rejection,
            } => {
                self.on_rejected(now, from, round, rejection, out);
                Ok(())
            }
            Input::RoundRefused { from, refusal } => self.on_round_refusal(from, refusal, out),
            Input::Declined { from, reason } => {
                self.on_decline(from, reason, out);
                Ok(())
            }
            Input::PeerLost { node } => {
                if let Some(round) = self.round.as_ref().map(|r| r.round) {
                    self.settle_missed(node, round, "disconnected".into(), out);
                }
                Ok(())
            }
            Input::Audited { round, verdicts } => {
                self.on_audited(now, round, verdicts, out);
                Ok(())
            }
            Input::Aggregated { round, result } => {
                self.on_aggregated(now, round, result, out);
                Ok(())
            }
            Input::ModelWritten { result } => {
                self.on_model_written(now, result, out);
                Ok(())
            }
            Input::WriteAheadDone { recorded, error } => {
                self.on_write_ahead_done(now, recorded, error, out);
                Ok(())
            }
            Input::Fail { reason } => {
                self.fail(now, reason, out);
                Ok(())
            }
        }
    }

    /// Moves the job on as far as it can go at `now`, and asks to be woken
    /// when it can go further.
    fn advance(&mut self, now: u64, out: &mut Vec<Output>) {
        // Each pass changes the state (or waits), so this ends; the bound
        // turns a bug into a stalled job instead of a hung node.
        for _ in 0..64 {
            match self.step(now, out) {
                Step::Again => continue,
                Step::WaitUntil(at) => {
                    let at = at.min(self.spec.deadline.saturating_add(1));
                    out.push(Output::Wake { at });
                    return;
                }
                Step::Stopped => return,
            }
        }
        out.push(Output::Wake { at: now + 1 });
    }

    fn step(&mut self, now: u64, out: &mut Vec<Output>) -> Step {
        if self.ended {
            return Step::Stopped;
        }
        if self.state.is_terminal() {
            return self.try_end(out);
        }
        if now > self.spec.deadline {
            let reason = format!(
                "the job's deadline passed after {} of {} rounds",
                self.state.next_round, self.spec.hyper.rounds
            );
            self.fail(now, reason, out);
            return Step::Again;
        }
        if self.busy.is_some() {
            return Step::WaitUntil(u64::MAX);
        }
        match self.state.phase {
            JobState::Bidding | JobState::Waiting if now < self.state.bidding_until => {
                Step::WaitUntil(self.state.bidding_until)
            }
            JobState::Bidding | JobState::Waiting => {
                let first = self.state.phase == JobState::Bidding;
                let reason = if first {
                    "bid window closed"
                } else {
                    "waited for another bid window"
                };
                self.start_clearing(reason.to_string(), first, 0, out);
                Step::Again
            }
            // The next round starts once the last one is in the ledger,
            // so its announcement comes first.
            JobState::Training if self.recording > 0 => Step::WaitUntil(u64::MAX),
            JobState::Training => match &self.round {
                Some(r) if !r.complete() && now < r.deadline => Step::WaitUntil(r.deadline),
                Some(_) => {
                    self.close_round(now, out);
                    Step::Again
                }
                None if self.state.next_round >= self.spec.hyper.rounds => {
                    self.busy = Some(Busy::WritingModel);
                    out.push(Output::WriteModel {
                        params: Arc::clone(&self.params),
                    });
                    Step::Again
                }
                None => {
                    if let Some(reason) = self.state.needs_reclear.clone() {
                        self.start_clearing(reason, false, 0, out);
                    } else {
                        self.open_next_round(now, out);
                    }
                    Step::Again
                }
            },
            JobState::Finished | JobState::Failed => Step::Stopped,
        }
    }

    fn persist(&self, out: &mut Vec<Output>) {
        out.push(Output::Persist);
    }
}

enum Step {
    Again,
    WaitUntil(u64),
    Stopped,
}
