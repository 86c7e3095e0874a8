//! Credits: what each owner earned from a job, from the VCG payments of
//! the allocations in force, pro-rated by the rounds in which its updates
//! were accepted. Integers only, sorted containers, so anyone holding the
//! ledger entries recomputes the same numbers.
//!
//! The rule: the job has `R` rounds. In round `r` the allocation `A_r` is
//! in force; owner `o` holds `q` shards in it and is paid `P` (its VCG
//! payment in `A_r`). If the updates covering `a` of those `q` shards were
//! accepted in round `r`, the owner earns `floor(P * a / (q * R))` for the
//! round. Its credit is the sum over rounds. A round it missed, or whose
//! update was rejected, earns nothing; with one allocation and every update
//! accepted the total is `P` minus at most `R - 1` milli-credits of
//! rounding.
//!
//! An audit another owner's node did, upheld, is paid like the work it
//! repeated: auditing an update over `a` shards of owner `w` in round `r`
//! earns the auditor's owner `floor(P_w * a / (q_w * R))`, what `w` earns
//! for those shards.

use std::collections::BTreeMap;

use fairgrid_protocol::messages::Allocation;
use fairgrid_protocol::{Hash32, OwnerId};
use serde::{Deserialize, Serialize};

/// One round's accepted work: shards covered by accepted updates, per
/// owner, and which allocation was in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundWork {
    pub allocation: usize,
    pub accepted_shards: BTreeMap<OwnerId, u32>,
    /// Upheld audits by other owners' nodes.
    pub audited: Vec<AuditWork>,
}

/// An upheld audit of `shards` of `worker_owner`'s work by a node of
/// `auditor_owner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditWork {
    pub auditor_owner: OwnerId,
    pub worker_owner: OwnerId,
    pub shards: u32,
}

/// An owner's credit for the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerCredit {
    pub owner: OwnerId,
    /// Milli-credits earned.
    pub amount: u64,
    /// Of which for audits of other owners' work.
    pub audits: u64,
    /// Shard-rounds accepted, divided by the rounds (whole shards on
    /// average; audits not counted).
    pub shards: u32,
    /// Highest ask among the winners of the last allocation it held shards in.
    pub clearing_price: u64,
    /// Hash of that allocation.
    pub allocation: Hash32,
}

/// Credits per owner, sorted by owner; owners that earned nothing and
/// had no accepted work are left out.
pub fn credits(
    allocations: &[Allocation],
    rounds: &[RoundWork],
    total_rounds: u32,
) -> Vec<OwnerCredit> {
    let r = u128::from(total_rounds.max(1));
    // owner -> (amount, of which for audits, shard-rounds, last allocation)
    let mut earned: BTreeMap<OwnerId, (u128, u128, u64, usize)> = BTreeMap::new();
    for work in rounds {
        let Some(allocation) = allocations.get(work.allocation) else {
            continue;
        };
        // (who earns, whose payment prices the shards, how many, audit?)
        let paid = work
            .accepted_shards
            .iter()
            .map(|(owner, &accepted)| (*owner, *owner, accepted, false))
            .chain(
                work.audited
                    .iter()
                    .map(|a| (a.auditor_owner, a.worker_owner, a.shards, true)),
            );
        for (earner, priced_as, shards, audit) in paid {
            let Some(pay) = allocation.payments.iter().find(|p| p.owner == priced_as) else {
                continue;
            };
            if pay.shards == 0 || shards == 0 {
                continue;
            }
            let a = u128::from(shards.min(pay.shards));
            let amount = u128::from(pay.payment) * a / (u128::from(pay.shards) * r);
            let entry = earned.entry(earner).or_insert((0, 0, 0, work.allocation));
            entry.0 += amount;
            if audit {
                entry.1 += amount;
            } else {
                entry.2 += a as u64;
            }
            entry.3 = entry.3.max(work.allocation);
        }
    }
    earned
        .into_iter()
        .map(|(owner, (amount, audits, shard_rounds, last))| {
            let allocation = &allocations[last];
            OwnerCredit {
                owner,
                amount: amount.min(u128::from(u64::MAX)) as u64,
                audits: audits.min(u128::from(u64::MAX)) as u64,
                shards: (u128::from(shard_rounds) / r) as u32,
                clearing_price: allocation
                    .assignments
                    .iter()
                    .map(|a| a.ask)
                    .max()
                    .unwrap_or(0),
                allocation: allocation.hash(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::PublicKey;
    use fairgrid_protocol::messages::{Assignment, OwnerPayment};

    fn owner(b: u8) -> OwnerId {
        OwnerId(PublicKey([b; 32]))
    }

    fn allocation(payments: &[(u8, u32, u64)]) -> Allocation {
        Allocation {
            algo_version: 2,
            job_id: Hash32::ZERO,
            attempt: 0,
            prev_allocation: Hash32::ZERO,
            cleared_at: 0,
            policy: Default::default(),
            shards: vec![],
            bid_root: Hash32::ZERO,
            seed: Hash32::ZERO,
            assignments: payments
                .iter()
                .map(|&(o, q, _)| Assignment {
                    node: fairgrid_protocol::NodeId(PublicKey([o; 32])),
                    owner: owner(o),
                    bid_id: Hash32::ZERO,
                    ask: 7,
                    shards: (0..q).collect(),
                })
                .collect(),
            payments: payments
                .iter()
                .map(|&(o, shards, payment)| OwnerPayment {
                    owner: owner(o),
                    shards,
                    cost: 0,
                    payment,
                })
                .collect(),
            shortfall: 0,
        }
    }

    fn work(allocation: usize, accepted: &[(u8, u32)]) -> RoundWork {
        RoundWork {
            allocation,
            accepted_shards: accepted.iter().map(|&(o, a)| (owner(o), a)).collect(),
            audited: Vec::new(),
        }
    }

    #[test]
    fn an_upheld_audit_earns_what_the_audited_shards_earn() {
        // Owner 3 holds no shards; it audits owner 1's 4 shards in round 0.
        let allocs = [allocation(&[(1, 4, 1000), (2, 6, 900)])];
        let mut rounds: Vec<RoundWork> = (0..2).map(|_| work(0, &[(1, 4), (2, 6)])).collect();
        rounds[0].audited.push(AuditWork {
            auditor_owner: owner(3),
            worker_owner: owner(1),
            shards: 4,
        });
        // And owner 2 audits 2 of owner 1's shards (a part of an update
        // cannot be audited, but the price is per shard).
        rounds[1].audited.push(AuditWork {
            auditor_owner: owner(2),
            worker_owner: owner(1),
            shards: 2,
        });
        let c = credits(&allocs, &rounds, 2);
        let by: BTreeMap<OwnerId, u64> = c.iter().map(|c| (c.owner, c.amount)).collect();
        assert_eq!(by[&owner(1)], 1000, "the audited owner is paid in full");
        assert_eq!(by[&owner(3)], 500, "one round of owner 1's 4 shards");
        let audits: BTreeMap<OwnerId, u64> = c.iter().map(|c| (c.owner, c.audits)).collect();
        assert_eq!(audits[&owner(3)], 500);
        assert_eq!(audits[&owner(2)], 250);
        assert_eq!(audits[&owner(1)], 0);
        assert_eq!(by[&owner(2)], 900 + 250);
        // An owner the allocation does not price earns nothing for an audit.
        rounds[0].audited[0].worker_owner = owner(9);
        let c = credits(&allocs, &rounds, 2);
        assert!(c.iter().all(|c| c.owner != owner(3)), "{c:?}");
    }

    #[test]
    fn full_participation_earns_the_payment_less_rounding() {
        let allocs = [allocation(&[(1, 4, 1000), (2, 6, 999)])];
        let rounds: Vec<RoundWork> = (0..3).map(|_| work(0, &[(1, 4), (2, 6)])).collect();
        let c = credits(&allocs, &rounds, 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].amount, 999, "3 x floor(1000/3)");
        assert_eq!(c[1].amount, 999);
        assert_eq!(c[0].shards, 4);
        assert_eq!(c[0].clearing_price, 7);
    }

    #[test]
    fn missed_and_rejected_rounds_earn_nothing() {
        let allocs = [
            allocation(&[(1, 4, 400), (2, 4, 400)]),
            allocation(&[(1, 8, 1600)]),
        ];
        // Owner 2 worked round 0 only; then owner 1 took over its shards.
        let rounds = vec![
            work(0, &[(1, 4), (2, 4)]),
            work(0, &[(1, 4)]),
            work(1, &[(1, 8)]),
            work(1, &[(1, 8)]),
        ];
        let c = credits(&allocs, &rounds, 4);
        let by: BTreeMap<OwnerId, u64> = c.iter().map(|c| (c.owner, c.amount)).collect();
        assert_eq!(by[&owner(1)], 100 + 100 + 400 + 400);
        assert_eq!(by[&owner(2)], 100);
        assert_eq!(c[0].allocation, allocs[1].hash());
        // Nobody accepted: no credit at all.
        assert!(credits(&allocs, &[work(0, &[])], 4).is_empty());
    }

    #[test]
    fn never_exceeds_the_payment_for_any_split() {
        for q in 1..20u32 {
            for a in 0..=q {
                for rounds in 1..6u32 {
                    let allocs = [allocation(&[(1, q, 12_345)])];
                    let work: Vec<RoundWork> = (0..rounds).map(|_| work(0, &[(1, a)])).collect();
                    let total: u64 = credits(&allocs, &work, rounds)
                        .iter()
                        .map(|c| c.amount)
                        .sum();
                    assert!(total <= 12_345);
                    assert!(total as u128 * q as u128 <= 12_345 * a as u128);
                }
            }
        }
    }
}
