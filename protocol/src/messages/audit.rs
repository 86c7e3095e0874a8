use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::identity::NodeId;
use crate::signed::SignedMessage;

/// An auditor's verdict on one worker's update, signed by the auditor: a
/// node of another owner that the coordinator asked to recompute the
/// round from the evidence it sent (docs/protocol.md, "Audits").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub job_id: Hash32,
    pub round: u32,
    /// The audited worker.
    pub worker: NodeId,
    pub auditor: NodeId,
    /// BLAKE3 of the evidence bytes the auditor judged (the coordinator
    /// keeps the same file, so a third party replays what was judged).
    pub evidence: Hash32,
    pub passed: bool,
    /// Relative L2 distance in parts per billion (`u64::MAX`: decided by
    /// an earlier check).
    pub distance_ppb: u64,
    pub tolerance_ppb: u64,
    pub detail: String,
    /// Unix milliseconds, by the auditor's clock.
    pub issued_at: u64,
}

impl SignedMessage for AuditReport {
    const KIND: &'static str = "audit-report";
    const MAX_BYTES: usize = 4096;
}
