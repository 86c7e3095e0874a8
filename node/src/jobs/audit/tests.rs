//! The audit against the catalogue of cheats (each caught whenever it is
//! audited) and against honest rounds on other thread counts (never
//! failed).

use std::sync::Arc;

use fairgrid_kernels::data::builtin;
use fairgrid_protocol::messages::{Compression, ModelArch, RoundUpdate};
use fairgrid_protocol::{Hash32, Keypair};

use super::replay::{TOLERANCE_PPB, Verdict};
use crate::jobs::device::Device;
use crate::jobs::testing::rounds::LoadedJob;
use crate::jobs::testing::spec_with;
use crate::jobs::worker::faults::{CHEATS, TestFault};
use crate::jobs::worker::train::Trained;

/// A small MLP job with int8 updates (error feedback: the residual is part
/// of what is audited), four local steps, and eight shards of 50 samples.
type Job = LoadedJob;

fn job(compression: Compression) -> Job {
    let mut spec = spec_with(&Keypair::from_seed(b"c"), 8, compression);
    spec.model.arch = ModelArch::Mlp { hidden: vec![32] };
    spec.hyper.local_steps = 4;
    spec.hyper.momentum = 0.9;
    let data = builtin::fashion_mnist().unwrap();
    let shards = data
        .train
        .take(400)
        .shards(50, 3)
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    Job {
        spec,
        shards,
        id: Hash32::of(b"audited job"),
    }
}

/// One worker's rounds 0..=`last` on `shards` with `threads` threads.
fn work(
    job: &Job,
    shards: &[u32],
    last: u32,
    threads: usize,
    fault: TestFault,
) -> (Trained, Vec<f32>) {
    let (trained, params, _) = job.work(shards, last, Device::Cpu { threads }, fault);
    (trained, params)
}

fn audit(job: &Job, trained: &Trained, params: &[f32]) -> Verdict {
    let (_, update) = trained.update.verify_and_decode().unwrap();
    audit_update(job, &update, trained, params)
}

fn audit_update(job: &Job, update: &RoundUpdate, trained: &Trained, params: &[f32]) -> Verdict {
    job.audit(update, trained, params, Device::Cpu { threads: 1 })
}

#[test]
fn an_honest_round_passes_its_audit_with_the_residual_carried() {
    let job = job(Compression::Int8 { block: 64 });
    let (trained, params) = work(&job, &[0, 1], 2, 1, TestFault::None);
    let (_, update) = trained.update.verify_and_decode().unwrap();
    assert_ne!(
        update.residual_in,
        Hash32::ZERO,
        "round 2 carries a residual"
    );
    let verdict = audit(&job, &trained, &params);
    assert!(verdict.passed, "{verdict:?}");
    assert_eq!(verdict.distance_ppb, Some(0), "same machine, same threads");
}

/// Issue 13's catalogue: each cheat is caught whenever it is audited.
#[test]
fn every_cheat_of_the_catalogue_fails_its_audit() {
    let job = job(Compression::Int8 { block: 64 });
    for fault in CHEATS {
        let (trained, params) = work(&job, &[0, 1], 2, 1, fault);
        let verdict = audit(&job, &trained, &params);
        assert!(!verdict.passed, "{fault:?} passed: {verdict:?}");
        if let Some(d) = verdict.distance_ppb {
            assert!(d > 5 * TOLERANCE_PPB, "{fault:?} only {d} ppb away");
        }
    }
}

/// The exact rule: a cheat within the 1% tolerance (99.9% of the delta)
/// fails when the worker and the auditor are both x86 AVX2+FMA CPUs, and
/// passes when the worker declares other arithmetic (judged within 1%),
/// as it does on an auditor of another class (this test's machine may be
/// either: the verdict is checked against its class).
#[test]
fn a_cheat_within_the_tolerance_fails_the_exact_rule() {
    use crate::jobs::device::cpu_arithmetic;
    use fairgrid_protocol::messages::Arithmetic;
    let job = job(Compression::Fp32);
    let (trained, params) = work(&job, &[0, 1], 1, 2, TestFault::NudgedDelta);
    let (_, update) = trained.update.verify_and_decode().unwrap();
    assert_eq!(update.arithmetic, cpu_arithmetic());
    let exact = cpu_arithmetic() == Arithmetic::X86Avx2Fma;
    eprintln!(
        "this CPU: {:?} (exact rule applies: {exact})",
        cpu_arithmetic()
    );
    let verdict = audit_update(&job, &update, &trained, &params);
    eprintln!("the nudged delta: {}", verdict.detail);
    let distance = verdict.distance_ppb.unwrap();
    assert!(
        (500_000..2_000_000).contains(&distance),
        "a 0.1% nudge: {verdict:?}"
    );
    assert_eq!(verdict.passed, !exact, "{verdict:?}");
    if exact {
        assert_eq!(verdict.tolerance_ppb, 0);
        assert!(verdict.detail.contains("exact"), "{verdict:?}");
    }
    let declared_other = RoundUpdate {
        arithmetic: Arithmetic::OtherCpu,
        ..update.clone()
    };
    let verdict = audit_update(&job, &declared_other, &trained, &params);
    assert!(verdict.passed, "judged within 1%: {verdict:?}");
    assert_eq!(verdict.tolerance_ppb, TOLERANCE_PPB);
    // Honest, the same round passes the exact rule at distance 0.
    let (honest, params) = work(&job, &[0, 1], 1, 2, TestFault::None);
    let verdict = audit(&job, &honest, &params);
    assert!(
        verdict.passed && verdict.distance_ppb == Some(0),
        "{verdict:?}"
    );
}

/// A worker that sends another worker's update under its own name (same
/// bytes, its own shards claimed) fails: the round on its shards differs.
#[test]
fn a_copied_delta_fails_its_audit() {
    let job = job(Compression::Fp32);
    let (other, params) = work(&job, &[2, 3], 0, 1, TestFault::None);
    let (_, mut update) = other.update.verify_and_decode().unwrap();
    update.shards = vec![0, 1];
    let verdict = audit_update(&job, &update, &other, &params);
    assert!(!verdict.passed, "{verdict:?}");
    assert!(verdict.distance_ppb.unwrap() > 5 * TOLERANCE_PPB);
}

/// A reveal that is not what the update was made from fails before any
/// training: another residual, another delta, or a lie about the split.
#[test]
fn a_reveal_that_does_not_match_the_update_fails() {
    let job = job(Compression::Int8 { block: 64 });
    let (trained, params) = work(&job, &[0, 1], 1, 1, TestFault::None);
    let (_, update) = trained.update.verify_and_decode().unwrap();
    let mut other_residual = (*trained.reveal).clone();
    other_residual.residual[0] += 1e-3;
    let mut other_delta = (*trained.reveal).clone();
    other_delta.delta[7] *= 1.5;
    for (reveal, expected) in [
        (other_residual, "residual is not the one the update signed"),
        (other_delta, "do not encode to the update's bytes"),
    ] {
        let tampered = Trained {
            reveal: Arc::new(reveal),
            ..clone_trained(&trained)
        };
        let verdict = audit_update(&job, &update, &tampered, &params);
        assert!(
            !verdict.passed && verdict.detail.contains(expected),
            "{verdict:?}"
        );
    }
    let mut split = update.clone();
    split.device_groups = 3;
    let verdict = audit_update(&job, &split, &trained, &params);
    assert!(
        verdict.detail.contains("3 device groups for 2 shards"),
        "{verdict:?}"
    );
}

fn clone_trained(t: &Trained) -> Trained {
    Trained {
        update: t.update.clone(),
        bytes: t.bytes.clone(),
        samples: t.samples,
        compute_ms: t.compute_ms,
        ran_on: t.ran_on,
        devices_used: t.devices_used,
        reveal: Arc::clone(&t.reveal),
    }
}

/// False positives: honest rounds trained with 1, 2 or 4 threads, on one
/// or several shards, with int8, top-k or fp32 updates, all pass an audit
/// recomputed with one thread. 510 audited rounds.
#[test]
fn honest_rounds_on_any_thread_count_never_fail() {
    let mut audited = 0;
    let mut worst = 0;
    for compression in [
        Compression::Int8 { block: 64 },
        Compression::TopK { permille: 50 },
        Compression::Fp32,
    ] {
        let job = job(compression);
        for case in 0..170u32 {
            let threads = [1, 2, 4][case as usize % 3];
            let first = case % 8;
            let shards: Vec<u32> = (0..1 + case % 3).map(|k| (first + k) % 8).collect();
            let (trained, params) = work(&job, &shards, case % 3, threads, TestFault::None);
            let verdict = audit(&job, &trained, &params);
            assert!(verdict.passed, "{compression:?} case {case}: {verdict:?}");
            worst = worst.max(verdict.distance_ppb.unwrap());
            audited += 1;
        }
    }
    assert_eq!(audited, 510);
    eprintln!("honest rounds: largest distance {worst} ppb (tolerance {TOLERANCE_PPB})");
}

/// A round trained on a GPU and replayed on a CPU (or the other way) is
/// judged coarsely (the devices' roundings diverge over a round); on the
/// same kind of device strictly; trained and replayed on x86 AVX2+FMA
/// CPUs, exactly.
#[test]
fn the_tolerance_follows_the_job_the_worker_and_the_auditor() {
    use super::replay::{COARSE_TOLERANCE_PPB, tolerance_ppb};
    use fairgrid_protocol::messages::Arithmetic::{Gpu, OtherCpu, X86Avx2Fma};
    let cpu_job = job(Compression::Fp32).spec;
    let mut gpu_job = cpu_job.clone();
    gpu_job.demand_per_shard.gpu_milli = 250;
    let (cpu, gpu) = (Device::Cpu { threads: 4 }, Device::Cuda { ordinal: 0 });
    // (job, trained with, replayed on, the auditor's CPU) -> tolerance
    let cases = [
        (&cpu_job, X86Avx2Fma, cpu, X86Avx2Fma, 0),
        (&cpu_job, OtherCpu, cpu, X86Avx2Fma, TOLERANCE_PPB),
        (&cpu_job, X86Avx2Fma, cpu, OtherCpu, TOLERANCE_PPB),
        (&cpu_job, OtherCpu, cpu, OtherCpu, TOLERANCE_PPB),
        // A CPU job never trains on a GPU: judged as the CPU it ran on.
        (&cpu_job, Gpu, cpu, X86Avx2Fma, 0),
        (&gpu_job, Gpu, gpu, X86Avx2Fma, TOLERANCE_PPB),
        (&gpu_job, Gpu, cpu, X86Avx2Fma, COARSE_TOLERANCE_PPB),
        // A GPU job's worker that fell back to its CPU.
        (&gpu_job, X86Avx2Fma, gpu, X86Avx2Fma, COARSE_TOLERANCE_PPB),
        (&gpu_job, OtherCpu, gpu, X86Avx2Fma, COARSE_TOLERANCE_PPB),
        (&gpu_job, X86Avx2Fma, cpu, X86Avx2Fma, 0),
    ];
    for (spec, trained, replayed, auditor, expected) in cases {
        assert_eq!(
            tolerance_ppb(spec, trained, replayed, auditor),
            expected,
            "{trained:?} replayed on {replayed} ({auditor:?})"
        );
    }
}

/// Evidence as the coordinator keeps it, from a worker's round.
fn evidence(job: &Job, trained: &Trained, params: &[f32]) -> super::Evidence {
    let coordinator = Keypair::from_seed(b"c");
    let mut spec = job.spec.clone();
    spec.dataset.shards = job
        .shards
        .iter()
        .map(|s| fairgrid_protocol::messages::ShardInfo {
            hash: Hash32(s.hash()),
            samples: 50,
        })
        .collect();
    let signed_spec = fairgrid_protocol::Signed::sign(&coordinator, &spec);
    // The update must name the signed spec's id as its job.
    let (_, mut update) = trained.update.verify_and_decode().unwrap();
    update.job_id = signed_spec.id();
    let worker = Keypair::from_seed(b"worker");
    super::Evidence {
        spec: signed_spec,
        update: fairgrid_protocol::Signed::sign(&worker, &update),
        params: params.to_vec(),
        delta: trained.reveal.delta.clone(),
        residual: trained.reveal.residual.clone(),
        shards: update
            .shards
            .iter()
            .map(|&s| job.shards[s as usize].to_bytes())
            .collect(),
    }
}

/// An evidence file replays to the auditor's verdict; one whose parts do
/// not hold together (other parameters, another shard, a forged update,
/// bytes that are no evidence at all) is an error that says which part,
/// never a verdict.
#[test]
fn evidence_replays_offline_and_tampered_evidence_is_refused() {
    let job = job(Compression::Int8 { block: 64 });
    // The job id is part of the shard seeds: train under the signed spec's id.
    let probe = evidence(&job, &work(&job, &[0, 1], 0, 1, TestFault::None).0, &[]);
    let job = Job {
        id: probe.spec.id(),
        ..job
    };
    let cpu = Device::Cpu { threads: 1 };
    for (fault, passes) in [(TestFault::None, true), (TestFault::ScaledDelta, false)] {
        let (trained, params) = work(&job, &[0, 1], 1, 1, fault);
        let kept = evidence(&job, &trained, &params);
        let read = super::Evidence::from_bytes(&kept.to_bytes()).unwrap();
        let (_, verdict) = read.replay(cpu).unwrap();
        assert_eq!(verdict.passed, passes, "{fault:?}: {verdict:?}");
    }
    let (trained, params) = work(&job, &[0, 1], 1, 1, TestFault::None);
    let good = evidence(&job, &trained, &params);
    let refused = |e: super::Evidence, expected: &str| {
        let err = e.replay(cpu).unwrap_err();
        assert!(err.contains(expected), "{err}");
    };
    let mut other_params = good.clone();
    other_params.params[0] += 1.0;
    refused(other_params, "not the ones the update started from");
    let mut other_shard = good.clone();
    other_shard.shards[1] = job.shards[5].to_bytes();
    refused(other_shard, "shard 1 is not the job's");
    let mut forged = good.clone();
    forged.update.payload[10] ^= 1;
    refused(forged, "the update");
    let mut fewer = good.clone();
    fewer.shards.pop();
    refused(fewer, "1 shards for an update over 2");
    let bytes = good.to_bytes();
    for bad in [
        &b"not evidence"[..],
        &bytes[..bytes.len() - 1],
        &[bytes.as_slice(), &[0]].concat(),
    ] {
        let err = super::Evidence::from_bytes(bad).unwrap_err();
        assert!(err.starts_with("not an audit evidence file"), "{err}");
    }
}
