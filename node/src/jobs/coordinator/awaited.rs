//! Audit reports a coordinator waits for. An auditor takes the evidence
//! at once (`Accepted`) and sends its signed report later as a request of
//! its own, as a worker sends its update: a replay takes a round's
//! compute, far longer than a request may stay open. A report is taken
//! only from the auditor it was asked of, for the update it was asked
//! about, once. A node that took evidence and sent no report in time is
//! not asked again in this job (a crash looks the same; either way a
//! round should not wait on it twice).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use fairgrid_protocol::messages::AuditReport;
use fairgrid_protocol::{NodeId, Signed};
use tokio::sync::oneshot;

type Waiting = (NodeId, oneshot::Sender<Signed<AuditReport>>);

#[derive(Debug, Default)]
pub struct AwaitedReports {
    /// By (round, audited worker): the auditor asked and where its report goes.
    waiting: Mutex<BTreeMap<(u32, NodeId), Waiting>>,
    /// Auditors that took evidence and never reported.
    silent: Mutex<BTreeSet<NodeId>>,
}

impl AwaitedReports {
    /// Waits for `auditor`'s report on `worker`'s update of `round`.
    pub fn expect(
        &self,
        round: u32,
        worker: NodeId,
        auditor: NodeId,
    ) -> oneshot::Receiver<Signed<AuditReport>> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert((round, worker), (auditor, tx));
        rx
    }

    /// Stops waiting (the report came, or the wait is over).
    pub fn forget(&self, round: u32, worker: &NodeId) {
        self.lock().remove(&(round, *worker));
    }

    /// `auditor` took evidence and sent no report in time.
    pub fn silenced(&self, auditor: NodeId) {
        self.silent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(auditor);
    }

    pub fn went_silent(&self, node: &NodeId) -> bool {
        self.silent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(node)
    }

    /// A report `from` a peer: handed to the audit waiting for it.
    pub fn deliver(&self, from: NodeId, signed: Signed<AuditReport>) -> Result<(), String> {
        let (signer, report) = signed
            .verify_and_decode()
            .map_err(|e| format!("audit report: {e}"))?;
        if signer != from.0 || report.auditor != from {
            return Err("an audit report must be signed and sent by the auditor it names".into());
        }
        let mut waiting = self.lock();
        let key = (report.round, report.worker);
        match waiting.get(&key) {
            Some((auditor, _)) if *auditor == from => {}
            _ => {
                return Err(format!(
                    "no audit of {}'s round {} is awaited from {from}",
                    report.worker, report.round
                ));
            }
        }
        let (_, tx) = waiting.remove(&key).expect("checked above");
        // The audit may have stopped waiting just now: then it is too late.
        tx.send(signed)
            .map_err(|_| "the audit no longer waits".to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u32, NodeId), Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::{Hash32, Keypair};

    fn report(auditor: &Keypair, worker: NodeId, round: u32) -> Signed<AuditReport> {
        Signed::sign(
            auditor,
            &AuditReport {
                job_id: Hash32::ZERO,
                round,
                worker,
                auditor: auditor.node_id(),
                evidence: Hash32::ZERO,
                passed: true,
                distance_ppb: 0,
                tolerance_ppb: 0,
                detail: String::new(),
                issued_at: 0,
            },
        )
    }

    #[test]
    fn a_report_is_taken_once_only_from_the_auditor_asked() {
        let awaited = AwaitedReports::default();
        let (a, b) = (Keypair::from_seed(b"a"), Keypair::from_seed(b"b"));
        let worker = Keypair::from_seed(b"w").node_id();
        let mut rx = awaited.expect(3, worker, a.node_id());
        // Another node, a report it signed for someone else, another round.
        assert!(awaited.deliver(b.node_id(), report(&b, worker, 3)).is_err());
        assert!(awaited.deliver(b.node_id(), report(&a, worker, 3)).is_err());
        assert!(awaited.deliver(a.node_id(), report(&a, worker, 4)).is_err());
        assert!(rx.try_recv().is_err(), "nothing delivered yet");
        awaited.deliver(a.node_id(), report(&a, worker, 3)).unwrap();
        assert!(rx.try_recv().is_ok());
        // Once.
        assert!(awaited.deliver(a.node_id(), report(&a, worker, 3)).is_err());
        // Forgotten: refused.
        let _rx = awaited.expect(5, worker, a.node_id());
        awaited.forget(5, &worker);
        assert!(awaited.deliver(a.node_id(), report(&a, worker, 5)).is_err());
        assert!(!awaited.went_silent(&a.node_id()));
        awaited.silenced(a.node_id());
        assert!(awaited.went_silent(&a.node_id()));
    }
}
