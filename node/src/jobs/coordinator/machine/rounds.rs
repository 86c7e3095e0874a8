//! Steps 5 and 6 as decisions: a round opens with one order per winner of
//! the allocation in force; each order ends accepted, rejected or missed
//! (deadline, refusal, withdrawal, disconnect); a closed round with
//! accepted updates is aggregated and recorded once, and whoever missed it
//! is left out of the next clearing until it bids again.

use std::collections::BTreeMap;
use std::sync::Arc;

use fairgrid_protocol::ledger::{EntryBody, RoundParticipant};
use fairgrid_protocol::messages::{JobSpec, RoundRefusal, RoundStart, WorkOrder};
use fairgrid_protocol::{Hash32, NodeId};
use fairgrid_sdk::jobs::{JobEventKind, WorkerRoundView};

use super::super::RoundRecord;
use super::super::round::{AcceptedUpdate, Aggregate, Order, Outcome, Rejection, RoundInProgress};
use super::{Busy, Coordinator, MAX_EMPTY_ROUNDS, Output, claims};
use crate::jobs::model;

/// Samples a worker's H local steps process over these shards: each step
/// takes `batch_size` from every shard (all of a smaller one), so the work
/// and the update's weight follow the shards.
pub fn order_samples(spec: &JobSpec, shards: &[u32]) -> u64 {
    let per_step: u64 = shards
        .iter()
        .filter_map(|&i| spec.dataset.shards.get(i as usize))
        .map(|s| u64::from(s.samples).min(u64::from(spec.hyper.batch_size)))
        .sum();
    u64::from(spec.hyper.local_steps) * per_step
}

impl Coordinator {
    pub(super) fn open_next_round(&mut self, now: u64, out: &mut Vec<Output>) {
        let Some(current) = self.state.current() else {
            return self.fail(now, "training without an allocation".into(), out);
        };
        let allocation = &current.allocation;
        let round = self.state.next_round;
        let params_bytes = Arc::new(model::params_to_bytes(&self.params));
        let params_hash = Hash32::of(&params_bytes);
        let deadline = now + self.spec.round_timeout_ms;
        let winners = allocation.assignments.iter().map(|a| a.node).collect();
        let speeds = claims::claimed_speeds(&current.bids, &winners);
        let orders: BTreeMap<NodeId, Order> = allocation
            .assignments
            .iter()
            .map(|a| {
                let order = Order {
                    owner: a.owner,
                    shards: a.shards.clone(),
                    samples: order_samples(&self.spec, &a.shards),
                    speed_milli: speeds.get(&a.node).copied().unwrap_or(0),
                };
                (a.node, order)
            })
            .collect();
        let start = RoundStart {
            job_id: self.id,
            round,
            allocation: allocation.hash(),
            params_hash,
            params_len: self.params.len() as u64,
            orders: allocation
                .assignments
                .iter()
                .map(|a| WorkOrder {
                    node: a.node,
                    shards: a.shards.clone(),
                })
                .collect(),
            deadline,
            issued_at: now,
        };
        out.push(Output::Event(JobEventKind::RoundStarted {
            round,
            workers: orders.len() as u32,
        }));
        out.push(Output::StartRound {
            start,
            params: params_bytes,
        });
        self.round = Some(RoundInProgress {
            job_id: self.id,
            round,
            allocation: self.state.allocations.len() - 1,
            params_hash,
            param_count: self.params.len(),
            started_ms: now,
            deadline,
            orders,
            outcomes: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            bytes_down: 0,
            audited: Vec::new(),
        });
    }

    /// Marks a worker's order in `round` missed, if it is still open.
    pub(super) fn settle_missed(
        &mut self,
        node: NodeId,
        round: u32,
        reason: String,
        out: &mut Vec<Output>,
    ) {
        let settled = self
            .round
            .as_mut()
            .filter(|r| r.round == round)
            .is_some_and(|r| r.settle(node, Outcome::Missed(reason)));
        if settled {
            out.push(Output::Event(JobEventKind::WorkerMissed {
                round,
                node: node.to_string(),
            }));
        }
    }

    pub(super) fn on_update(
        &mut self,
        now: u64,
        from: NodeId,
        round: u32,
        accepted: AcceptedUpdate,
    ) -> Result<(), String> {
        let residual_out = accepted.residual_out;
        let settled = self
            .round
            .as_mut()
            .filter(|r| r.round == round)
            .is_some_and(|r| {
                let settled = r.settle(from, Outcome::Accepted(accepted));
                if settled {
                    r.arrivals.insert(from, now);
                }
                settled
            });
        if settled {
            // Acknowledged: the worker carries this residual on.
            self.state.residuals.insert(from, residual_out);
            Ok(())
        } else {
            Err("the round closed before the update was taken".into())
        }
    }

    /// A refused update. Misbehaviour (bad signature, hash, size, values)
    /// also settles the worker's order as rejected, puts it out of the job,
    /// and is recorded as a failed `Verification`.
    pub(super) fn on_rejected(
        &mut self,
        now: u64,
        from: NodeId,
        round: u32,
        rejection: Rejection,
        out: &mut Vec<Output>,
    ) {
        if !rejection.misbehaved || self.state.is_terminal() {
            return;
        }
        if let Some(r) = self.round.as_mut().filter(|r| r.round == round) {
            r.settle(from, Outcome::Rejected(rejection.reason.clone()));
        }
        let st = &mut self.state;
        st.banned.insert(from);
        st.needs_reclear = Some(format!("{from} sent a bad update: {}", rejection.reason));
        st.updated_at = now;
        out.push(Output::Event(JobEventKind::UpdateRejected {
            round,
            node: from.to_string(),
            reason: rejection.reason.clone(),
        }));
        out.push(Output::RecordNow(EntryBody::Verification {
            job_id: self.id,
            round,
            node: from,
            passed: false,
            detail: format!("update rejected: {}", rejection.reason),
        }));
    }

    /// A worker will not deliver this round: its order is settled as
    /// missed now, so the round does not wait for the deadline.
    pub(super) fn on_round_refusal(
        &mut self,
        from: NodeId,
        refusal: RoundRefusal,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let open = self.round.as_ref().is_some_and(|r| {
            r.round == refusal.round
                && r.params_hash == refusal.base_params
                && r.orders.contains_key(&from)
                && !r.outcomes.contains_key(&from)
        });
        if !open {
            return Err(format!(
                "{from} owes no update in an open round {}",
                refusal.round
            ));
        }
        let reason = format!("refused the round: {}", refusal.reason);
        self.settle_missed(from, refusal.round, reason, out);
        Ok(())
    }

    /// A worker withdraws (it cannot take part, or its owner needs the
    /// machine): it is out of the job's next clearing, like a worker that
    /// missed a round, and a bid from it later brings it back.
    pub(super) fn on_decline(&mut self, from: NodeId, reason: String, out: &mut Vec<Output>) {
        let st = &mut self.state;
        st.missing.insert(from);
        if st
            .current()
            .is_some_and(|a| !a.allocation.shards_of(&from).is_empty())
        {
            st.needs_reclear = Some(format!("{from} withdrew: {reason}"));
        }
        if let Some(round) = self.round.as_ref().map(|r| r.round) {
            self.settle_missed(from, round, format!("withdrew: {reason}"), out);
        }
    }

    /// Closes the open round: open orders are missed; who missed is out of
    /// the next clearing; accepted updates go to aggregation.
    pub(super) fn close_round(&mut self, now: u64, out: &mut Vec<Output>) {
        let Some(mut finished) = self.round.take() else {
            return;
        };
        let round = finished.round;
        for node in finished.close("missed the round deadline") {
            out.push(Output::Event(JobEventKind::WorkerMissed {
                round,
                node: node.to_string(),
            }));
        }
        let dropped: Vec<String> = finished
            .outcomes
            .iter()
            .filter_map(|(n, o)| match o {
                Outcome::Missed(why) => Some(format!("{n} {why}")),
                _ => None,
            })
            .collect();
        let rejected = finished
            .outcomes
            .values()
            .any(|o| matches!(o, Outcome::Rejected(_)));
        let st = &mut self.state;
        for (node, outcome) in &finished.outcomes {
            if matches!(outcome, Outcome::Missed(_)) {
                st.missing.insert(*node);
            }
        }
        if !dropped.is_empty() {
            st.needs_reclear = Some(format!("round {round}: {}", dropped.join("; ")));
        } else if rejected {
            st.needs_reclear = Some(format!("an update was rejected in round {round}"));
        }
        if self.audits && finished.accepted().next().is_some() {
            return self.start_audit(finished, out);
        }
        self.aggregate_or_skip(now, finished, out);
    }

    /// Aggregates a closed (and audited) round's accepted updates, or
    /// counts it empty when none are left.
    pub(super) fn aggregate_or_skip(
        &mut self,
        now: u64,
        finished: RoundInProgress,
        out: &mut Vec<Output>,
    ) {
        let round = finished.round;
        let st = &mut self.state;
        let updates: Vec<AcceptedUpdate> = finished.accepted().map(|(_, u)| u.clone()).collect();
        if updates.is_empty() {
            st.empty_rounds += 1;
            st.updated_at = now;
            let empty = st.empty_rounds;
            if empty >= MAX_EMPTY_ROUNDS {
                let reason = format!("{empty} rounds in a row ended without an accepted update");
                return self.fail(now, reason, out);
            }
            return self.persist(out);
        }
        out.push(Output::Aggregate {
            round,
            evaluate: self.spec.hyper.evaluates_after(round),
            params: Arc::clone(&self.params),
            velocity: Arc::clone(&self.velocity),
            updates,
        });
        self.busy = Some(Busy::Aggregating(Box::new(finished)));
    }

    /// Records an aggregated round: the new parameters, the round's record,
    /// and its `RoundCompleted` entry, written ahead.
    pub(super) fn on_aggregated(
        &mut self,
        now: u64,
        round: u32,
        result: Result<(Aggregate, Option<f32>), String>,
        out: &mut Vec<Output>,
    ) {
        let finished = match self.busy.take() {
            Some(Busy::Aggregating(f)) if f.round == round => f,
            other => {
                self.busy = other;
                return;
            }
        };
        let (next, accuracy) = match result {
            Ok(v) => v,
            Err(e) => return self.fail(now, format!("aggregating round {round}: {e}"), out),
        };
        let accepted: Vec<(&NodeId, &AcceptedUpdate)> = finished.accepted().collect();
        let participants: Vec<RoundParticipant> = accepted
            .iter()
            .map(|(node, u)| {
                let order = &finished.orders[*node];
                RoundParticipant {
                    node: **node,
                    owner: order.owner,
                    shards: order.shards.clone(),
                    samples: u.samples,
                    update_hash: u.update_hash,
                }
            })
            .collect();
        let bytes_up: u64 = accepted.iter().map(|(_, u)| u.bytes).sum();
        let mut workers = Vec::with_capacity(accepted.len());
        for (node, u) in &accepted {
            let order = &finished.orders[*node];
            let millis = finished
                .arrivals
                .get(*node)
                .map_or(0, |at| at.saturating_sub(finished.started_ms));
            let expected = claims::expected_ms(u.samples, order.speed_milli);
            if let Some(expected) = expected
                && self.slow.observe(**node, millis, expected)
            {
                out.push(Output::RecordNow(EntryBody::Verification {
                    job_id: self.id,
                    round,
                    node: **node,
                    passed: false,
                    detail: format!(
                        "slower than its bid claimed: {millis} ms for {} samples, where its claimed {:.1} samples/s gives {expected} ms ({} rounds over {}x + {} ms)",
                        u.samples,
                        order.speed_milli as f64 / 1000.0,
                        claims::SLOW_ROUNDS,
                        claims::SLOW_FACTOR,
                        claims::SLOW_SLACK_MS
                    ),
                }));
            }
            workers.push(WorkerRoundView {
                node: node.to_string(),
                owner: order.owner.to_string(),
                shards: order.shards.len() as u32,
                samples: u.samples,
                bytes_up: u.bytes,
                millis,
                compute_millis: u.compute_ms,
                expected_millis: expected,
            });
        }
        self.round_workers = Some((round, workers));
        let model_hash = model::params_hash(&next.params);
        let entry = EntryBody::RoundCompleted {
            job_id: self.id,
            round,
            participants,
            model_hash,
            train_loss_micro: (f64::from(next.train_loss) * 1e6) as u64,
            test_accuracy_ppm: accuracy.map(|a| (f64::from(a) * 1e6).round() as u32),
        };
        let record = RoundRecord {
            round,
            allocation: finished.allocation,
            accepted: accepted
                .iter()
                .map(|(n, _)| {
                    let order = &finished.orders[*n];
                    (**n, order.owner, order.shards.len() as u32)
                })
                .collect(),
            audited: finished.audited.clone(),
            train_loss: next.train_loss,
            test_accuracy: accuracy,
            bytes_up,
            bytes_down: finished.bytes_down,
            duration_ms: now.saturating_sub(finished.started_ms),
        };
        self.params = Arc::new(next.params);
        self.velocity = Arc::new(next.velocity);
        let st = &mut self.state;
        st.next_round = round + 1;
        st.empty_rounds = 0;
        st.bytes_up += bytes_up;
        st.bytes_down += finished.bytes_down;
        st.updated_at = now;
        st.rounds.push(record);
        self.write_ahead(vec![entry], out);
    }

    /// Announces a round once the ledger holds it.
    pub(super) fn announce_round(&mut self, round: u32, out: &mut Vec<Output>) {
        let Some(r) = self.state.rounds.iter().find(|r| r.round == round) else {
            return;
        };
        out.push(Output::Event(JobEventKind::RoundCompleted {
            round,
            train_loss: r.train_loss,
            test_accuracy: r.test_accuracy,
            updates_accepted: r.accepted.len() as u32,
            bytes_up: r.bytes_up,
            bytes_down: r.bytes_down,
            duration_ms: r.duration_ms,
            workers: self
                .round_workers
                .take_if(|(r, _)| *r == round)
                .map(|(_, w)| w)
                .unwrap_or_default(),
        }));
    }
}
