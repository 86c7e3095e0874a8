//! What this coordinator knows of each node's and owner's audits: a
//! node's streak of clean audits sets how often it is audited; an owner's
//! failed audits decide whether its bids are taken at all. Rebuilt from
//! the node's own `Audit` entries (and the reports and silences of its
//! auditors) when it starts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use fairgrid_protocol::ledger::{EntryBody, EntryKind, ReportOutcome};
use fairgrid_protocol::{NodeId, OwnerId};

use crate::ledger::Ledger;

#[derive(Debug, Default)]
pub struct Standing {
    inner: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    streaks: BTreeMap<NodeId, u32>,
    failed_owners: BTreeMap<OwnerId, u32>,
}

impl Standing {
    /// Replays the ledger's `Audit` entries, overruled auditors' reports
    /// (`AuditReported`) and silent auditors (`Verification`), oldest
    /// first.
    pub fn replay_ledger(&self, ledger: &Ledger) -> crate::Result<()> {
        let store = ledger.store();
        let mut seqs = Vec::new();
        for kind in [
            EntryKind::Audit,
            EntryKind::AuditReported,
            EntryKind::Verification,
        ] {
            let mut after = None;
            loop {
                let batch = store.seqs_of_kind(kind, after, 1024)?;
                let Some(&last) = batch.last() else {
                    break;
                };
                seqs.extend(batch);
                after = Some(last);
            }
        }
        seqs.sort_unstable();
        for seq in seqs {
            let Some(stored) = store.get(seq)? else {
                continue;
            };
            match stored.entry()?.body {
                EntryBody::Audit {
                    worker,
                    owner,
                    passed,
                    detail,
                    ..
                } => {
                    let unrevealed = detail.starts_with(UNREVEALED);
                    self.record(worker, owner, passed, unrevealed);
                }
                EntryBody::AuditReported {
                    report,
                    auditor_owner,
                    outcome: ReportOutcome::Overruled,
                    ..
                } => {
                    if let Ok((_, r)) = report.verify_and_decode() {
                        self.record(r.auditor, auditor_owner, false, false);
                    }
                }
                EntryBody::Verification {
                    node,
                    passed: false,
                    detail,
                    ..
                } if detail.starts_with(SILENT_AUDITOR) => self.end_streak(node),
                _ => {}
            }
        }
        Ok(())
    }

    /// Clean audits in a row of `node`.
    pub fn streak(&self, node: &NodeId) -> u32 {
        let records = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        records.streaks.get(node).copied().unwrap_or(0)
    }

    /// Failed audits of nodes of `owner` (a round not revealed is not a
    /// failure: it only ends the streak).
    pub fn failures(&self, owner: &OwnerId) -> u32 {
        let records = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        records.failed_owners.get(owner).copied().unwrap_or(0)
    }

    /// `node`'s clean record ends, with no failure counted (as a round it
    /// did not reveal).
    pub fn end_streak(&self, node: NodeId) {
        let mut records = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        records.streaks.insert(node, 0);
    }

    pub fn record(&self, node: NodeId, owner: OwnerId, passed: bool, unrevealed: bool) {
        let mut records = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let streak = records.streaks.entry(node).or_insert(0);
        *streak = if passed { streak.saturating_add(1) } else { 0 };
        if !passed && !unrevealed {
            *records.failed_owners.entry(owner).or_insert(0) += 1;
        }
    }
}

/// How the detail of an audit the worker did not answer begins.
pub const UNREVEALED: &str = "not revealed";

/// How the detail of a `Verification` entry begins when an auditor took
/// the evidence and sent no report.
pub const SILENT_AUDITOR: &str = "silent auditor";

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::{Hash32, Keypair, Signed};

    #[test]
    fn streaks_and_failures_come_back_from_the_ledger() {
        let key = Keypair::from_seed(b"coordinator");
        let ledger = Ledger::in_memory(key).unwrap();
        let (a, b, c) = (
            Keypair::from_seed(b"a"),
            Keypair::from_seed(b"b"),
            Keypair::from_seed(b"c"),
        );
        let update = Signed::sign(&a, &crate::jobs::testing::samples::round_update(&a));
        let audit = |worker: &Keypair, passed: bool, detail: &str| EntryBody::Audit {
            job_id: Hash32::ZERO,
            round: 0,
            worker: worker.node_id(),
            owner: worker.owner_id(),
            update: Box::new(update.clone()),
            passed,
            distance_ppb: 0,
            tolerance_ppb: 1,
            detail: detail.into(),
            evidence: Hash32::ZERO,
        };
        let reported = |outcome: ReportOutcome| EntryBody::AuditReported {
            job_id: Hash32::ZERO,
            round: 0,
            report: Box::new(Signed::sign(
                &c,
                &fairgrid_protocol::messages::AuditReport {
                    job_id: Hash32::ZERO,
                    round: 0,
                    worker: a.node_id(),
                    auditor: c.node_id(),
                    evidence: Hash32::ZERO,
                    passed: false,
                    distance_ppb: 1,
                    tolerance_ppb: 0,
                    detail: String::new(),
                    issued_at: 0,
                },
            )),
            auditor_owner: c.owner_id(),
            worker_owner: a.owner_id(),
            shards: 1,
            outcome,
        };
        let silence = |node: &Keypair, detail: &str| EntryBody::Verification {
            job_id: Hash32::ZERO,
            round: 0,
            node: node.node_id(),
            passed: false,
            detail: detail.into(),
        };
        for body in [
            audit(&c, true, ""),
            audit(&c, true, ""),
            reported(ReportOutcome::Upheld),
            reported(ReportOutcome::Unconfirmed),
            audit(&a, true, ""),
            audit(&a, true, ""),
            audit(&b, false, "relative distance 1"),
            audit(&b, true, ""),
            audit(&a, false, "not revealed: gone"),
            audit(&a, true, ""),
            silence(&b, "slower than its bid claimed: 9 ms"),
        ] {
            ledger.append_blocking(body).unwrap();
        }
        let standing = Standing::default();
        standing.replay_ledger(&ledger).unwrap();
        assert_eq!(standing.streak(&a.node_id()), 1);
        assert_eq!(standing.streak(&b.node_id()), 1);
        assert_eq!(
            standing.failures(&a.owner_id()),
            0,
            "not revealed is no failure"
        );
        assert_eq!(standing.failures(&b.owner_id()), 1);
        // An upheld or unconfirmed report is no failure of its auditor's.
        assert_eq!(standing.streak(&c.node_id()), 2);
        assert_eq!(standing.failures(&c.owner_id()), 0);
        // An overruled one is.
        ledger
            .append_blocking(reported(ReportOutcome::Overruled))
            .unwrap();
        let standing = Standing::default();
        standing.replay_ledger(&ledger).unwrap();
        assert_eq!(standing.streak(&c.node_id()), 0);
        assert_eq!(standing.failures(&c.owner_id()), 1);
        assert_eq!(standing.streak(&a.node_id()), 1);
        // An auditor's silence ends its streak, and counts no failure; a
        // slow round (another verification) does neither.
        assert_eq!(standing.streak(&b.node_id()), 1);
        let detail = format!("{SILENT_AUDITOR}: no report in 31 s");
        ledger.append_blocking(silence(&a, &detail)).unwrap();
        let standing = Standing::default();
        standing.replay_ledger(&ledger).unwrap();
        assert_eq!(standing.streak(&a.node_id()), 0);
        assert_eq!(standing.failures(&a.owner_id()), 0);
    }
}
