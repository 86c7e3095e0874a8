//! The invariants every interleaving must keep.

use std::collections::BTreeSet;

use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::market::{self, MarketPolicy};
use fairgrid_protocol::messages::{Allocation, RoundStart};
use fairgrid_protocol::{Hash32, NodeId};
use fairgrid_sdk::jobs::JobState;

use super::super::rounds::order_samples;
use super::super::{Coordinator, Stored};
use super::World;

/// What the checks remember between steps.
#[derive(Default)]
pub struct Checks {
    /// (ended, allocations, rounds, next round) of the last checkpoint.
    last_checkpoint: Option<(bool, usize, usize, u32)>,
    published: Vec<Allocation>,
}

impl Checks {
    /// Checkpoints never go back.
    pub fn persisted(&mut self, disk: &Stored) {
        let st = &disk.state;
        let now = (
            st.is_terminal(),
            st.allocations.len(),
            st.rounds.len(),
            st.next_round,
        );
        if let Some(prev) = self.last_checkpoint {
            assert!(
                now.0 >= prev.0 && now.1 >= prev.1 && now.2 >= prev.2 && now.3 >= prev.3,
                "a checkpoint went back: {prev:?} -> {now:?}"
            );
        }
        self.last_checkpoint = Some(now);
    }

    /// A resumed machine stands where its checkpoint stood.
    pub fn resumed(&mut self, machine: &Coordinator) {
        let st = machine.state();
        if let Some(prev) = self.last_checkpoint {
            assert_eq!(st.rounds.len(), prev.2, "resumed from another state");
        }
    }

    /// No owner gets more than its cap of an allocation.
    pub fn published(&mut self, allocation: &Allocation, alpha_ppm: u32) {
        let policy = MarketPolicy {
            alpha_ppm,
            beta_ppm: 1_000_000,
            window: Default::default(),
        };
        let m = allocation.shards.len() as u32;
        for pay in &allocation.payments {
            let cap = market::owner_cap(&policy, m, &pay.owner);
            assert!(
                pay.shards <= cap.max(1),
                "owner {} got {} of {m} shards, cap {cap}",
                pay.owner,
                pay.shards
            );
        }
        self.published.push(allocation.clone());
    }

    /// A round's orders are the allocation in force, to nodes still in the job.
    pub fn round_started(&self, machine: &Coordinator, start: &RoundStart) {
        let st = machine.state();
        let current = st.current().expect("a round without an allocation");
        assert_eq!(start.allocation, current.allocation.hash());
        assert_eq!(start.round, st.next_round, "a round opened out of turn");
        let orders: Vec<_> = start.orders.iter().map(|o| (o.node, &o.shards)).collect();
        let assigned: Vec<_> = current
            .allocation
            .assignments
            .iter()
            .map(|a| (a.node, &a.shards))
            .collect();
        assert_eq!(orders, assigned, "orders differ from the allocation");
        for o in &start.orders {
            assert!(
                !st.banned.contains(&o.node),
                "an order went to {}, who is out",
                o.node
            );
        }
    }

    pub fn appended(&mut self, ledger: &[EntryBody]) {
        recorded_once(ledger);
    }

    /// After every step.
    pub fn check(&mut self, machine: &Coordinator, ledger: &[EntryBody]) {
        recorded_once(ledger);
        let spec = machine.spec();
        // A failed update is never counted. (Its worker may still take
        // part in the round again with another update: one that could not
        // reveal its round is out of the round, not of the job, and the
        // round may be opened again.)
        let failed: BTreeSet<(u32, NodeId, Hash32)> = ledger
            .iter()
            .filter_map(|e| match e {
                EntryBody::Audit {
                    round,
                    worker,
                    update,
                    passed: false,
                    ..
                } => {
                    let (_, update) = update
                        .verify_and_decode()
                        .expect("an audited update decodes");
                    Some((*round, *worker, update.update_hash))
                }
                _ => None,
            })
            .collect();
        for entry in ledger {
            if let EntryBody::RoundCompleted {
                round,
                participants,
                ..
            } = entry
            {
                for p in participants {
                    assert!(
                        !failed.contains(&(*round, p.node, p.update_hash)),
                        "{}'s update counted in round {round} after failing its audit",
                        p.node
                    );
                }
            }
            if let EntryBody::RoundCompleted {
                round,
                test_accuracy_ppm,
                ..
            } = entry
            {
                assert_eq!(
                    test_accuracy_ppm.is_some(),
                    spec.hyper.evaluates_after(*round),
                    "round {round} of {} evaluated every {}",
                    spec.hyper.rounds,
                    spec.hyper.eval_every
                );
            }
            if let EntryBody::RoundCompleted { participants, .. } = entry {
                for p in participants {
                    assert_eq!(p.samples, order_samples(spec, &p.shards), "samples off");
                    let ordered = self
                        .published
                        .iter()
                        .any(|a| a.shards_of(&p.node) == p.shards.as_slice());
                    assert!(
                        ordered,
                        "{} credited for shards it was never allocated",
                        p.node
                    );
                }
            }
        }
    }
}

/// A round recorded once, an owner credited once, one end.
fn recorded_once(ledger: &[EntryBody]) {
    let mut rounds = BTreeSet::new();
    let mut credited = BTreeSet::new();
    let (mut submitted, mut finished, mut failed) = (0, 0, 0);
    for entry in ledger {
        match entry {
            EntryBody::RoundCompleted { round, .. } => {
                assert!(rounds.insert(*round), "round {round} recorded twice")
            }
            EntryBody::Credit { owner, .. } => {
                assert!(credited.insert(*owner), "owner {owner} credited twice")
            }
            EntryBody::JobSubmitted { .. } => submitted += 1,
            EntryBody::JobFinished { .. } => finished += 1,
            EntryBody::JobFailed { .. } => failed += 1,
            _ => {}
        }
    }
    assert!(submitted <= 1, "JobSubmitted {submitted} times");
    assert!(
        finished + failed <= 1,
        "{finished} JobFinished and {failed} JobFailed"
    );
    if finished == 0 {
        assert!(credited.is_empty(), "credits without JobFinished");
    }
}

/// Every job ends (finished, or failed with a reason) by its deadline, or
/// as soon as its coordinator is back if it was down at the deadline.
pub fn ended_in_time(world: &World) {
    assert!(world.ended, "the job did not end");
    let st = world.machine.state();
    let spec = world.machine.spec();
    assert!(st.is_terminal(), "ended in phase {:?}", st.phase);
    assert!(
        st.updated_at <= spec.deadline + 1 || world.restarted_at.contains(&st.updated_at),
        "ended at {} after the deadline {}",
        st.updated_at,
        spec.deadline
    );
    match st.phase {
        JobState::Failed => {
            assert!(
                st.error.as_deref().is_some_and(|e| !e.is_empty()),
                "failed without a reason"
            )
        }
        JobState::Finished => assert_eq!(st.next_round, spec.hyper.rounds),
        _ => unreachable!(),
    }
    if !world.storage_ever_failed {
        let ends = world
            .ledger
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    EntryBody::JobFinished { .. } | EntryBody::JobFailed { .. }
                )
            })
            .count();
        assert_eq!(ends, 1, "the ledger holds {ends} ends of the job");
    }
}
