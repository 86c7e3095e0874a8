//! Recomputing an audited round and judging the worker's update: a pure,
//! blocking function of the round's inputs and what the worker revealed,
//! so the coordinator, an auditor and `fairgrid audit replay` reach the
//! same verdict.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use fairgrid_kernels::{Compressor, Shard};
use fairgrid_protocol::Hash32;
use fairgrid_protocol::messages::{Arithmetic, JobSpec, RoundUpdate};

use crate::jobs::device::{Device, cpu_arithmetic, wants_gpu};
use crate::jobs::model;
use crate::jobs::worker::train::{Engine, RoundWork, residual_hash, train_work};

/// The largest relative L2 distance between a revealed delta and the
/// auditor's recomputation that passes, in parts per billion, when the
/// round was trained and replayed on the same kind of device but the
/// exact rule does not apply (a GPU against itself, or a CPU outside the
/// x86 AVX2+FMA class on either side). Calibrated on honest rounds (docs/
/// benchmarks.md, "Audits"): CPU thread counts differed by up to 1.4e-3 on
/// the CNN before the convolutions' gradients were summed in fixed chunks
/// (now they agree bit for bit); a GPU repeats itself bit for bit. Within
/// it, one step short of a long round passes (8.3e-4 at H = 1000): only
/// the exact rule catches that.
pub const TOLERANCE_PPB: u64 = 10_000_000;

/// The tolerance when a round trained on a GPU is replayed on a CPU (the
/// auditor has no GPU), or the other way: the two devices' roundings
/// diverge over a round's local steps (up to 6.5e-2 measured after 20
/// steps of the CNN on an H200), so only gross cheats (zero, scaled by
/// half, stale, random data) are judged there.
pub const COARSE_TOLERANCE_PPB: u64 = 250_000_000;

/// The tolerance for replaying a round of `spec`, trained with
/// `trained_with`, on `auditor` whose CPU is of class `auditor_cpu`:
/// - coarse when one side ran on a GPU and the other on a CPU (their
///   roundings diverge over a round);
/// - none (the exact rule) when both ran on x86 AVX2+FMA CPUs, whose
///   rounds are bit-exact;
/// - else as calibrated (a GPU against itself, other CPUs).
///
/// A CPU job never trains on a GPU, so a worker that says it did is
/// judged as the CPU it ran on.
pub fn tolerance_ppb(
    spec: &JobSpec,
    trained_with: Arithmetic,
    auditor: Device,
    auditor_cpu: Arithmetic,
) -> u64 {
    let trained_with = match trained_with {
        Arithmetic::Gpu if !wants_gpu(spec) => Arithmetic::X86Avx2Fma,
        other => other,
    };
    let trained_on_cpu = trained_with != Arithmetic::Gpu;
    let replayed_on_cpu = matches!(auditor, Device::Cpu { .. });
    if trained_on_cpu != replayed_on_cpu {
        COARSE_TOLERANCE_PPB
    } else if replayed_on_cpu
        && trained_with == Arithmetic::X86Avx2Fma
        && auditor_cpu == Arithmetic::X86Avx2Fma
    {
        0
    } else {
        TOLERANCE_PPB
    }
}

/// An audited round, as the auditor has it.
pub struct AuditCase<'a> {
    pub spec: &'a JobSpec,
    pub job_id: Hash32,
    /// The round's parameters (what the round start sent).
    pub params: &'a [f32],
    pub update: &'a RoundUpdate,
    /// The bytes of `update.shards`, in the same order.
    pub loaded: &'a [Arc<Shard>],
    /// What the worker revealed: its raw delta, and the residual it
    /// encoded it with (empty for none).
    pub delta: &'a [f32],
    pub residual: &'a [f32],
}

/// An auditor's judgement of one update.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub passed: bool,
    /// Relative L2 distance from the recomputed delta, in parts per
    /// billion; `None` when an earlier check decided.
    pub distance_ppb: Option<u64>,
    /// The tolerance it was judged by.
    pub tolerance_ppb: u64,
    pub detail: String,
}

impl Verdict {
    fn failed(detail: String) -> Verdict {
        Verdict {
            passed: false,
            distance_ppb: None,
            tolerance_ppb: TOLERANCE_PPB,
            detail,
        }
    }
}

/// Checks the reveal against the signed update, recomputes the round on
/// `device` (with its threads, if the CPU) and compares. Blocking; the
/// time of one worker's round.
pub fn replay(case: &AuditCase<'_>, device: Device, cancel: &Arc<AtomicBool>) -> Verdict {
    match check_reveal(case) {
        Ok(()) => {}
        Err(detail) => return Verdict::failed(detail),
    }
    let work = RoundWork::honest(
        case.spec,
        case.job_id,
        case.update.round,
        case.params,
        &case.update.shards,
        case.loaded,
    );
    let groups = case.update.device_groups.max(1) as usize;
    let threads = match device {
        Device::Cpu { threads } => threads,
        Device::Cuda { .. } => 1,
    };
    let devices = match device {
        Device::Cpu { threads } => vec![
            Device::Cpu {
                threads: (threads / groups).max(1)
            };
            groups
        ],
        gpu => vec![gpu; groups],
    };
    let mut engine = match Engine::new(case.spec) {
        Ok(engine) => engine,
        Err(e) => return Verdict::failed(format!("the auditor could not train: {e}")),
    };
    let (recomputed, _, ran_on, _) = match train_work(&mut engine, &work, &devices, threads, cancel)
    {
        Ok(done) => done,
        Err(e) => return Verdict::failed(format!("the auditor could not train: {e}")),
    };
    if recomputed.samples != case.update.samples {
        return Verdict::failed(format!(
            "the update claims {} samples; the round trains {}",
            case.update.samples, recomputed.samples
        ));
    }
    let distance = relative_distance(case.delta, &recomputed.delta);
    let distance_ppb = (distance * 1e9).min(u64::MAX as f64) as u64;
    // A GPU that fell back to the CPU replays as the CPU.
    let tolerance = tolerance_ppb(case.spec, case.update.arithmetic, ran_on, cpu_arithmetic());
    let passed = distance_ppb <= tolerance;
    let rule = if tolerance == 0 {
        "exact: both CPUs x86 AVX2+FMA".to_string()
    } else {
        format!("tolerance {:.2e}", tolerance as f64 / 1e9)
    };
    let detail =
        format!("relative distance {distance:.3e} from the delta recomputed on {ran_on} ({rule})");
    Verdict {
        passed,
        distance_ppb: Some(distance_ppb),
        tolerance_ppb: tolerance,
        detail,
    }
}

/// The reveal is what the update was made from: the residual is the one
/// signed, and encoding the delta with it gives the update's bytes and
/// the residual signed as left over.
fn check_reveal(case: &AuditCase<'_>) -> Result<(), String> {
    let update = case.update;
    let n = case.params.len();
    if case.loaded.len() != update.shards.len() {
        return Err(format!(
            "{} shards loaded for an update over {}",
            case.loaded.len(),
            update.shards.len()
        ));
    }
    if update.device_groups == 0 || update.device_groups as usize > update.shards.len().max(1) {
        return Err(format!(
            "{} device groups for {} shards",
            update.device_groups,
            update.shards.len()
        ));
    }
    if case.delta.len() != n {
        return Err(format!(
            "revealed {} values for {n} parameters",
            case.delta.len()
        ));
    }
    if !case.residual.is_empty() && case.residual.len() != n {
        return Err(format!(
            "revealed a residual of {} values for {n} parameters",
            case.residual.len()
        ));
    }
    if residual_hash(case.residual) != update.residual_in {
        return Err("the revealed residual is not the one the update signed".into());
    }
    let scheme = model::kernels_compression(update.compression);
    let residual = if case.residual.is_empty() {
        Vec::new()
    } else {
        case.residual.to_vec()
    };
    let mut compressor =
        Compressor::with_residual(scheme, residual).map_err(|e| format!("compression: {e}"))?;
    let bytes = compressor
        .encode(case.delta)
        .map_err(|e| format!("the revealed delta does not encode: {e}"))?;
    if Hash32::of(&bytes) != update.update_hash {
        return Err("the revealed delta and residual do not encode to the update's bytes".into());
    }
    if residual_hash(compressor.residual()) != update.residual_out {
        return Err("the residual left over is not the one the update signed".into());
    }
    Ok(())
}

/// ||a - b|| / ||b|| (0 when both are zero, infinite when only b is).
pub fn relative_distance(a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        diff += (f64::from(*x) - f64::from(*y)).powi(2);
        norm += f64::from(*y).powi(2);
    }
    if diff == 0.0 {
        0.0
    } else if norm == 0.0 {
        f64::INFINITY
    } else {
        (diff / norm).sqrt()
    }
}
