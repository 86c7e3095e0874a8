//! The request-response messages and their per-message size limits.
//!
//! Each enum is encoded with bincode; its first byte is the variant index
//! (always one byte below 251 variants), so the codec can look up a
//! variant's limit before reading its body. To add a message: append a
//! variant (never reorder) and its `(name, limit)` to `LIMITS` at the same
//! index; the tests check the two stay in step.

use fairgrid_protocol::ledger::LedgerEntry;
use fairgrid_protocol::messages::{
    Allocation, AuditReport, Bid, Receipt, RoundRefusal, RoundStart, RoundUpdate,
};
use fairgrid_protocol::{Hash32, OwnerCertificate, Signed};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A request-response message enum with per-variant size limits.
pub trait WireEnum: Serialize + DeserializeOwned + Send + 'static {
    /// For errors: "request" or "response".
    const NAME: &'static str;
    /// `(variant name, largest encoded size in bytes)` by variant index.
    const LIMITS: &'static [(&'static str, usize)];
}

/// Most adverts a snapshot carries.
pub const MAX_SNAPSHOT_ADVERTS: usize = 256;

/// Largest fp32 parameter buffer a job may have (8 Mi parameters); the
/// coordinator refuses bigger models at submission.
pub const MAX_PARAM_BYTES: usize = 32 * 1024 * 1024;
/// Most bids an allocation notice carries (the coordinator keeps at most
/// this many per job).
pub const MAX_NOTICE_BIDS: usize = 4096;
/// Most shard bytes one `Shards` answer carries; a worker asks in batches.
pub const MAX_SHARD_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Most shards asked for in one `FetchShards`.
pub const MAX_SHARD_BATCH: usize = 1024;
/// Most ledger bytes one `JobLedger` message carries; larger sets go in
/// several messages.
pub const MAX_LEDGER_BATCH_BYTES: usize = 24 * 1024 * 1024;
/// Largest audit evidence sent to another node to replay (the round's
/// parameters, the revealed delta and residual, the signed job and the
/// order's shards): it must cross within a request's timeout. A
/// coordinator replays bigger evidence itself.
pub const MAX_WIRE_EVIDENCE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Consortium handshake: here is my certificate, show me yours.
    Hello(Hello),
    /// Send me the live adverts you hold (a newcomer's catch-up).
    AdvertSnapshot,
    /// A bid for a job the receiver coordinates.
    JobBid(Signed<Bid>),
    /// The coordinator's allocation and the bids it was cleared from; the
    /// receiver verifies it before taking part.
    JobAllocation {
        allocation: Signed<Allocation>,
        bids: Vec<Signed<Bid>>,
    },
    /// Shard bytes of a job, by index (the receiver coordinates it).
    FetchShards { job_id: Hash32, indices: Vec<u32> },
    /// Opens a round: the signed round and the parameters (fp32 LE).
    RoundStart {
        start: Signed<RoundStart>,
        params: Vec<u8>,
    },
    /// A worker's signed update and its encoded bytes.
    RoundUpdate {
        update: Signed<RoundUpdate>,
        bytes: Vec<u8>,
    },
    /// A worker withdraws from a job (it cannot take part, and says why).
    JobDecline { job_id: Hash32, reason: String },
    /// The sender's ledger entries for an ended job, to be held as foreign
    /// entries; the answer carries the receiver's own entries for the job
    /// (coordinator and participants exchange them both ways).
    JobLedger {
        job_id: Hash32,
        entries: Vec<Signed<LedgerEntry>>,
    },
    /// A worker will not deliver an update for a round it was given, and
    /// says why (signed, for the coordinator's records).
    RoundRefusal(Signed<RoundRefusal>),
    /// The coordinator audits the sender's update for `round`: send the
    /// raw delta and the residual the update was encoded from.
    AuditReveal { job_id: Hash32, round: u32 },
    /// The coordinator of a job the receiver works for asks it to audit
    /// another owner's update: the evidence file's bytes (`jobs::audit::
    /// Evidence`). Answered `Accepted` at once; the verdict follows as an
    /// `AuditReport` request.
    AuditReplay { evidence: Vec<u8> },
    /// An auditor's signed verdict on the evidence it was sent, to the
    /// job's coordinator.
    AuditReport(Signed<AuditReport>),
}

const MIB: usize = 1024 * 1024;

impl WireEnum for Request {
    const NAME: &'static str = "request";
    const LIMITS: &'static [(&'static str, usize)] = &[
        ("hello", 2048),
        ("advert-snapshot", 16),
        ("job-bid", 4096),
        ("job-allocation", 16 * MIB + MAX_NOTICE_BIDS * 4096),
        ("fetch-shards", 64 + 5 * MAX_SHARD_BATCH),
        ("round-start", 2 * MIB + MAX_PARAM_BYTES),
        ("round-update", 512 * 1024 + MAX_PARAM_BYTES),
        ("job-decline", 1024),
        ("job-ledger", MAX_LEDGER_BATCH_BYTES + MIB),
        ("round-refusal", 4096 + 256),
        ("audit-reveal", 64),
        ("audit-replay", 64 + MAX_WIRE_EVIDENCE_BYTES),
        ("audit-report", 8192),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Hello(Hello),
    /// Signed advert envelopes (each re-validated by the receiver).
    Adverts(Vec<Vec<u8>>),
    /// The request was refused; the reason is for logs.
    Refused {
        reason: String,
    },
    /// The request was taken (a bid, an allocation, a round start).
    Accepted,
    /// Shard bytes, in the order asked.
    Shards(Vec<Vec<u8>>),
    /// The coordinator's signed receipt for an update.
    Receipt(Signed<Receipt>),
    /// Ledger entries of a job.
    JobLedger(Vec<Signed<LedgerEntry>>),
    /// The sender is over its request rate: try again shortly. Distinct
    /// from `Refused` so that a busy peer is not taken for an unwilling one.
    Busy,
    /// An audited round's raw delta and the residual it was encoded with
    /// (fp32 LE each; the residual is empty when it was zero).
    Revealed {
        delta: Vec<u8>,
        residual: Vec<u8>,
    },
}

impl WireEnum for Response {
    const NAME: &'static str = "response";
    const LIMITS: &'static [(&'static str, usize)] = &[
        ("hello", 2048),
        ("adverts", MAX_SNAPSHOT_ADVERTS * 9 * 1024),
        ("refused", 1024),
        ("accepted", 16),
        ("shards", MAX_SHARD_BATCH_BYTES + 16 * MAX_SHARD_BATCH),
        ("receipt", 8192),
        ("job-ledger", MAX_LEDGER_BATCH_BYTES + MIB),
        ("busy", 16),
        ("revealed", 64 + 2 * MAX_PARAM_BYTES),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub certificate: Option<Signed<OwnerCertificate>>,
}

pub use crate::text::clip;

impl Response {
    pub fn refused(reason: impl Into<String>) -> Response {
        let mut reason: String = reason.into();
        clip(&mut reason, 900);
        Response::Refused { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::codec::encode;
    use fairgrid_protocol::ledger::EntryBody;
    use fairgrid_protocol::{Keypair, ResourceVec};

    fn bid() -> Signed<Bid> {
        let key = Keypair::from_seed(b"wire");
        Signed::sign(
            &key,
            &Bid {
                job_id: Hash32::of(b"job"),
                node: key.node_id(),
                owner_cert: None,
                ask: 1,
                capacity: ResourceVec::default(),
                nonce: 0,
                issued_at: 0,
                speed_milli: 0,
            },
        )
    }

    fn entry() -> Signed<LedgerEntry> {
        let key = Keypair::from_seed(b"wire");
        LedgerEntry::sign_next(
            &key,
            None,
            0,
            EntryBody::Verification {
                job_id: Hash32::of(b"job"),
                round: 0,
                node: key.node_id(),
                passed: true,
                detail: String::new(),
            },
        )
    }

    /// One sample of every variant, in declaration order.
    fn requests() -> Vec<Request> {
        let job_id = Hash32::of(b"job");
        let key = Keypair::from_seed(b"wire");
        vec![
            Request::Hello(Hello {
                protocol_version: 1,
                certificate: None,
            }),
            Request::AdvertSnapshot,
            Request::JobBid(bid()),
            Request::JobAllocation {
                allocation: Signed::sign(
                    &key,
                    &Allocation {
                        algo_version: 2,
                        job_id,
                        attempt: 0,
                        prev_allocation: Hash32::ZERO,
                        cleared_at: 0,
                        policy: Default::default(),
                        shards: vec![0],
                        bid_root: Hash32::ZERO,
                        seed: Hash32::ZERO,
                        assignments: Vec::new(),
                        payments: Vec::new(),
                        shortfall: 1,
                    },
                ),
                bids: vec![bid()],
            },
            Request::FetchShards {
                job_id,
                indices: vec![0, 1],
            },
            Request::RoundStart {
                start: Signed::sign(
                    &key,
                    &RoundStart {
                        job_id,
                        round: 0,
                        allocation: Hash32::ZERO,
                        params_hash: Hash32::ZERO,
                        params_len: 4,
                        orders: Vec::new(),
                        deadline: 0,
                        issued_at: 0,
                    },
                ),
                params: vec![0; 4],
            },
            Request::RoundUpdate {
                update: Signed::sign(
                    &key,
                    &RoundUpdate {
                        job_id,
                        round: 0,
                        worker: key.node_id(),
                        base_params: Hash32::ZERO,
                        shards: vec![0],
                        samples: 1,
                        loss: 0.5,
                        compression: fairgrid_protocol::messages::Compression::Fp32,
                        update_hash: Hash32::ZERO,
                        update_len: 4,
                        compute_ms: 0,
                        device_groups: 1,
                        residual_in: Hash32::ZERO,
                        residual_out: Hash32::ZERO,
                        arithmetic: fairgrid_protocol::messages::Arithmetic::X86Avx2Fma,
                    },
                ),
                bytes: vec![0; 4],
            },
            Request::JobDecline {
                job_id,
                reason: "no".into(),
            },
            Request::JobLedger {
                job_id,
                entries: vec![entry()],
            },
            Request::RoundRefusal(Signed::sign(
                &key,
                &RoundRefusal {
                    job_id,
                    round: 0,
                    worker: key.node_id(),
                    base_params: Hash32::ZERO,
                    reason: "x".repeat(900),
                    issued_at: 0,
                },
            )),
            Request::AuditReveal { job_id, round: 3 },
            Request::AuditReplay {
                evidence: vec![7; 32],
            },
            Request::AuditReport(Signed::sign(
                &key,
                &fairgrid_protocol::messages::AuditReport {
                    job_id,
                    round: 0,
                    worker: key.node_id(),
                    auditor: key.node_id(),
                    evidence: Hash32::ZERO,
                    passed: false,
                    distance_ppb: u64::MAX,
                    tolerance_ppb: 0,
                    detail: "x".repeat(1024),
                    issued_at: 0,
                },
            )),
        ]
    }

    fn responses() -> Vec<Response> {
        let key = Keypair::from_seed(b"wire");
        vec![
            Response::Hello(Hello {
                protocol_version: 1,
                certificate: None,
            }),
            Response::Adverts(vec![vec![1, 2, 3]]),
            Response::refused("no"),
            Response::Accepted,
            Response::Shards(vec![vec![1; 10]]),
            Response::Receipt(Signed::sign(
                &key,
                &Receipt {
                    job_id: Hash32::ZERO,
                    round: 0,
                    worker: key.node_id(),
                    update_hash: Hash32::ZERO,
                    accepted: true,
                    reason: String::new(),
                    issued_at: 0,
                },
            )),
            Response::JobLedger(vec![entry()]),
            Response::Busy,
            Response::Revealed {
                delta: vec![0; 8],
                residual: Vec::new(),
            },
        ]
    }

    /// Exhaustive: adding a variant without updating this (and `LIMITS`)
    /// does not compile.
    fn request_index(r: &Request) -> usize {
        match r {
            Request::Hello(_) => 0,
            Request::AdvertSnapshot => 1,
            Request::JobBid(_) => 2,
            Request::JobAllocation { .. } => 3,
            Request::FetchShards { .. } => 4,
            Request::RoundStart { .. } => 5,
            Request::RoundUpdate { .. } => 6,
            Request::JobDecline { .. } => 7,
            Request::JobLedger { .. } => 8,
            Request::RoundRefusal(_) => 9,
            Request::AuditReveal { .. } => 10,
            Request::AuditReplay { .. } => 11,
            Request::AuditReport(_) => 12,
        }
    }

    fn response_index(r: &Response) -> usize {
        match r {
            Response::Hello(_) => 0,
            Response::Adverts(_) => 1,
            Response::Refused { .. } => 2,
            Response::Accepted => 3,
            Response::Shards(_) => 4,
            Response::Receipt(_) => 5,
            Response::JobLedger(_) => 6,
            Response::Busy => 7,
            Response::Revealed { .. } => 8,
        }
    }

    #[test]
    fn first_byte_is_the_variant_index_and_limits_cover_each_variant() {
        let reqs = requests();
        assert_eq!(reqs.len(), Request::LIMITS.len());
        for (i, r) in reqs.iter().enumerate() {
            assert_eq!(encode(r)[0] as usize, i);
            assert_eq!(request_index(r), i);
        }
        let resps = responses();
        assert_eq!(resps.len(), Response::LIMITS.len());
        for (i, r) in resps.iter().enumerate() {
            assert_eq!(encode(r)[0] as usize, i);
            assert_eq!(response_index(r), i);
        }
        // Each sample fits its own limit (the codec would refuse to send it).
        for r in &reqs {
            let n = encode(r).len();
            assert!(n <= Request::LIMITS[request_index(r)].1, "{n}");
        }
        for r in &resps {
            let n = encode(r).len();
            assert!(n <= Response::LIMITS[response_index(r)].1, "{n}");
        }
    }

    #[test]
    fn job_limits_cover_the_largest_legal_payloads() {
        use fairgrid_protocol::SignedMessage;
        // A round start with the largest parameter buffer a job may have.
        let round_start = Request::LIMITS[5].1;
        assert!(round_start >= RoundStart::MAX_BYTES + 256 + MAX_PARAM_BYTES + 16);
        // An fp32 update of that model, beside its signed metadata.
        let update = Request::LIMITS[6].1;
        assert!(update >= RoundUpdate::MAX_BYTES + 256 + MAX_PARAM_BYTES + 20 + 16);
        // A notice with as many bids as a job keeps.
        let notice = Request::LIMITS[3].1;
        assert!(notice >= Allocation::MAX_BYTES + 256 + MAX_NOTICE_BIDS * (Bid::MAX_BYTES + 256));
    }

    #[test]
    fn refusal_reasons_are_clipped_at_a_character_boundary() {
        // 899 ASCII bytes then a 4-byte character straddling byte 900.
        let reason = format!("{}{}", "a".repeat(899), "\u{1F600}".repeat(10));
        let Response::Refused { reason } = Response::refused(reason) else {
            unreachable!()
        };
        assert_eq!(reason, "a".repeat(899));
    }
}
