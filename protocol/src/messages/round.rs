use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::identity::NodeId;
use crate::messages::Compression;
use crate::signed::SignedMessage;

/// Which shards one worker trains in a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkOrder {
    pub node: NodeId,
    pub shards: Vec<u32>,
}

/// The coordinator opens a round: the parameters to start from (by hash;
/// workers fetch the bytes by request-response) and who trains what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundStart {
    pub job_id: Hash32,
    pub round: u32,
    /// Hash of the allocation in force.
    pub allocation: Hash32,
    /// BLAKE3 of the fp32 parameter buffer (little-endian bytes).
    pub params_hash: Hash32,
    pub params_len: u64,
    pub orders: Vec<WorkOrder>,
    /// Unix milliseconds; updates after this get no credit.
    pub deadline: u64,
    pub issued_at: u64,
}

impl SignedMessage for RoundStart {
    const KIND: &'static str = "round-start";
    const MAX_BYTES: usize = 1024 * 1024;
}

/// A worker's update for one round: metadata, signed. The update bytes
/// travel beside it and must hash to `update_hash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundUpdate {
    pub job_id: Hash32,
    pub round: u32,
    pub worker: NodeId,
    /// The parameters the worker started from.
    pub base_params: Hash32,
    pub shards: Vec<u32>,
    pub samples: u64,
    /// Mean training loss over the worker's local steps.
    pub loss: f32,
    /// How long the round's training took by the worker's own clock, in
    /// milliseconds. Self-reported: the coordinator judges a claimed speed
    /// by the time it observes, and shows this beside it.
    pub compute_ms: u64,
    pub compression: Compression,
    pub update_hash: Hash32,
    pub update_len: u64,
    /// How many groups the shards were split into, each trained from the
    /// round's parameters on its own device, the deltas then averaged by
    /// samples (1: all on one device). An auditor replays the same split.
    pub device_groups: u32,
    /// Hash of the error-feedback residual the worker's compressor held
    /// before this round ([`crate::Hash32::ZERO`] for none): it must be
    /// the `residual_out` of the worker's last acknowledged update, or
    /// zero. Pins the state an audit needs to recompute the bytes.
    pub residual_in: Hash32,
    /// Hash of the residual left after encoding this round's update.
    pub residual_out: Hash32,
    /// What arithmetic the round was trained with: an auditor of the
    /// same CPU class replays it exactly (docs/protocol.md, "Audits").
    pub arithmetic: Arithmetic,
}

/// The arithmetic a round was trained with, as its worker declares it.
/// fairgrid's CPU kernels give the same bits on every CPU of one class,
/// whatever the thread count, so a CPU job's round trained and replayed
/// in the class [`Arithmetic::X86Avx2Fma`] must match exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arithmetic {
    /// x86-64 with AVX2 and FMA, AVX-512 included (the GEMM's AVX-512 and
    /// AVX2 kernels give the same bits, whatever the L1 cache).
    X86Avx2Fma,
    /// Any other CPU: x86-64 without AVX2+FMA (baseline SSE2 kernels), or
    /// another architecture.
    OtherCpu,
    /// At least one of the round's device groups trained on a GPU.
    Gpu,
}

impl SignedMessage for RoundUpdate {
    const KIND: &'static str = "round-update";
    const MAX_BYTES: usize = 256 * 1024;
}

/// The coordinator's signed answer to an update: accepted (and counted for
/// credit) or rejected with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub job_id: Hash32,
    pub round: u32,
    pub worker: NodeId,
    pub update_hash: Hash32,
    pub accepted: bool,
    pub reason: String,
    pub issued_at: u64,
}

impl SignedMessage for Receipt {
    const KIND: &'static str = "receipt";
    const MAX_BYTES: usize = 4096;
}

/// A worker says it will not deliver an update for a round it was given
/// (its shards could not be had, training failed), so the coordinator
/// settles its order at once instead of waiting for the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRefusal {
    pub job_id: Hash32,
    pub round: u32,
    pub worker: NodeId,
    /// The parameters of the round refused (ties it to one round start).
    pub base_params: Hash32,
    pub reason: String,
    pub issued_at: u64,
}

impl SignedMessage for RoundRefusal {
    const KIND: &'static str = "round-refusal";
    const MAX_BYTES: usize = 4096;
}
