//! Audits as decisions (issue 13): a closed round's accepted updates go to
//! the shell, which draws some, has them revealed and recomputed, and
//! answers with verdicts; a failed update leaves the round (and its
//! credit) before aggregation, its worker leaves the job, and every
//! verdict is recorded, written ahead, as an `Audit` entry.

use std::collections::BTreeMap;
use std::sync::Arc;

use fairgrid_protocol::ledger::{EntryBody, ReportOutcome};
use fairgrid_protocol::market::owner_cap;
use fairgrid_protocol::messages::{AuditReport, RoundUpdate};
use fairgrid_protocol::{Hash32, NodeId, OwnerId, Signed};
use fairgrid_sdk::jobs::JobEventKind;

use super::super::round::{Outcome, RoundInProgress};
use super::{Busy, Coordinator, Output};
use crate::jobs::credits::AuditWork;

/// An accepted update the shell may audit.
#[derive(Debug, Clone)]
pub struct AuditCandidate {
    pub node: NodeId,
    pub owner: OwnerId,
    pub signed: Box<Signed<RoundUpdate>>,
    pub update_hash: Hash32,
    /// Shards of its order.
    pub shards: u32,
    /// From the round's start to the update's arrival, as this node saw
    /// it (bounds how long an auditor is given: the worker's own
    /// `compute_ms` is self-reported).
    pub observed_ms: u64,
}

/// The shell's answer for one audited update.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditVerdict {
    pub node: NodeId,
    pub passed: bool,
    /// The worker did not reveal its round (unreachable, or no longer has
    /// it): the update is dropped from the round like a missed one, but
    /// the worker is not put out of the job.
    pub unrevealed: bool,
    /// Relative L2 distance in ppb (`u64::MAX`: not computed).
    pub distance_ppb: u64,
    pub tolerance_ppb: u64,
    pub detail: String,
    /// Hash of the evidence file the shell kept.
    pub evidence: Hash32,
    /// Another owner's node audited the update: its signed report.
    pub report: Option<AuditorReport>,
}

/// A report an auditor signed, and what the coordinator made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditorReport {
    pub signed: Box<Signed<AuditReport>>,
    pub auditor: NodeId,
    pub auditor_owner: OwnerId,
    /// Upheld: paid. Overruled: the auditor leaves the job.
    pub outcome: ReportOutcome,
}

impl Coordinator {
    /// Hands a closed round's accepted updates to the shell for audit.
    pub(super) fn start_audit(&mut self, finished: RoundInProgress, out: &mut Vec<Output>) {
        let candidates = finished
            .accepted()
            .map(|(node, u)| AuditCandidate {
                node: *node,
                owner: finished.orders[node].owner,
                signed: u.signed.clone(),
                update_hash: u.update_hash,
                shards: finished.orders[node].shards.len() as u32,
                observed_ms: finished
                    .arrivals
                    .get(node)
                    .map_or(0, |at| at.saturating_sub(finished.started_ms)),
            })
            .collect::<Vec<_>>();
        // Each owner audits at most what the allocation's cap lets it train.
        let caps = match self.state.allocations.get(finished.allocation) {
            Some(record) => {
                let allocation = &record.allocation;
                let m = allocation.shards.len() as u32;
                candidates
                    .iter()
                    .map(|c| (c.owner, owner_cap(&allocation.policy, m, &c.owner)))
                    .collect()
            }
            None => BTreeMap::new(),
        };
        out.push(Output::Audit {
            round: finished.round,
            params: Arc::clone(&self.params),
            candidates,
            caps,
        });
        self.busy = Some(Busy::Auditing(Box::new(finished)));
    }

    /// Applies the verdicts, records them, and aggregates what passed.
    pub(super) fn on_audited(
        &mut self,
        now: u64,
        round: u32,
        verdicts: Vec<AuditVerdict>,
        out: &mut Vec<Output>,
    ) {
        let mut finished = match self.busy.take() {
            Some(Busy::Auditing(f)) if f.round == round => f,
            other => {
                self.busy = other;
                return;
            }
        };
        let mut entries = Vec::new();
        for verdict in verdicts {
            let Some(Outcome::Accepted(update)) = finished.outcomes.get(&verdict.node) else {
                continue;
            };
            let order = &finished.orders[&verdict.node];
            if let Some(report) = &verdict.report {
                let shards = order.shards.len() as u32;
                entries.push(EntryBody::AuditReported {
                    job_id: self.id,
                    round,
                    report: report.signed.clone(),
                    auditor_owner: report.auditor_owner,
                    worker_owner: order.owner,
                    shards,
                    outcome: report.outcome,
                });
                if report.outcome == ReportOutcome::Upheld {
                    finished.audited.push(AuditWork {
                        auditor_owner: report.auditor_owner,
                        worker_owner: order.owner,
                        shards,
                    });
                } else if report.outcome == ReportOutcome::Overruled {
                    // The coordinator's replay contradicted it.
                    let st = &mut self.state;
                    st.banned.insert(report.auditor);
                    st.needs_reclear = Some(format!(
                        "{}: its audit report was overruled",
                        report.auditor
                    ));
                    st.updated_at = now;
                }
            }
            entries.push(EntryBody::Audit {
                job_id: self.id,
                round,
                worker: verdict.node,
                owner: order.owner,
                update: update.signed.clone(),
                passed: verdict.passed,
                distance_ppb: verdict.distance_ppb,
                tolerance_ppb: verdict.tolerance_ppb,
                detail: verdict.detail.clone(),
                evidence: verdict.evidence,
            });
            if verdict.passed {
                continue;
            }
            let reason = format!("audit failed: {}", verdict.detail);
            let st = &mut self.state;
            if verdict.unrevealed {
                finished
                    .outcomes
                    .insert(verdict.node, Outcome::Missed(reason.clone()));
                st.missing.insert(verdict.node);
            } else {
                finished
                    .outcomes
                    .insert(verdict.node, Outcome::Rejected(reason.clone()));
                st.banned.insert(verdict.node);
                out.push(Output::Event(JobEventKind::UpdateRejected {
                    round,
                    node: verdict.node.to_string(),
                    reason: reason.clone(),
                }));
            }
            st.needs_reclear = Some(format!("{}: {reason}", verdict.node));
            st.updated_at = now;
        }
        // Written ahead: a restart never forgets a failed audit's
        // consequences (the worker out of the job) once it is recorded.
        if !entries.is_empty() {
            self.write_ahead(entries, out);
        }
        self.aggregate_or_skip(now, *finished, out);
    }
}
