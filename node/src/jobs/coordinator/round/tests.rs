use super::*;
use crate::jobs::testing::spec_with;
use fairgrid_kernels::{Compression as KCompression, Compressor};
use fairgrid_protocol::Keypair;
use fairgrid_protocol::messages::Compression;

const PARAMS: usize = 7850; // logreg on 28x28, 10 classes

struct Fixture {
    coordinator: Keypair,
    worker: Keypair,
    spec: JobSpec,
    round: RoundInProgress,
}

fn fixture(compression: Compression) -> Fixture {
    let coordinator = Keypair::from_seed(b"coordinator");
    let worker = Keypair::from_seed(b"worker");
    let spec = spec_with(&coordinator, 4, compression);
    let mut orders = BTreeMap::new();
    orders.insert(
        worker.node_id(),
        Order {
            owner: worker.node_id().as_self_owner(),
            shards: vec![0, 1],
            samples: 32,
            speed_milli: 0,
        },
    );
    orders.insert(
        Keypair::from_seed(b"other").node_id(),
        Order {
            owner: Keypair::from_seed(b"other").node_id().as_self_owner(),
            shards: vec![2, 3],
            samples: 32,
            speed_milli: 0,
        },
    );
    let round = RoundInProgress {
        job_id: Hash32::of(b"job"),
        round: 4,
        allocation: 0,
        params_hash: Hash32::of(b"params"),
        param_count: PARAMS,
        started_ms: 1000,
        deadline: 2000,
        orders,
        outcomes: BTreeMap::new(),
        arrivals: BTreeMap::new(),
        bytes_down: 0,
        audited: Vec::new(),
    };
    Fixture {
        coordinator,
        worker,
        spec,
        round,
    }
}

fn encoded(compression: Compression, value: f32) -> Vec<u8> {
    let scheme = match compression {
        Compression::Fp32 => KCompression::Fp32,
        Compression::Int8 { block } => KCompression::Int8 { block },
        Compression::TopK { permille } => KCompression::TopK { permille },
    };
    Compressor::new(scheme)
        .unwrap()
        .encode(&vec![value; PARAMS])
        .unwrap()
}

fn update(f: &Fixture, bytes: &[u8], edit: impl FnOnce(&mut RoundUpdate)) -> Signed<RoundUpdate> {
    let mut u = RoundUpdate {
        job_id: f.round.job_id,
        round: f.round.round,
        worker: f.worker.node_id(),
        base_params: f.round.params_hash,
        shards: vec![0, 1],
        samples: 32,
        loss: 0.7,
        compression: f.spec.hyper.compression,
        update_hash: Hash32::of(bytes),
        update_len: bytes.len() as u64,
        device_groups: 1,
        residual_in: Hash32::ZERO,
        residual_out: Hash32::ZERO,
        arithmetic: fairgrid_protocol::messages::Arithmetic::X86Avx2Fma,
        compute_ms: 0,
    };
    edit(&mut u);
    Signed::sign(&f.worker, &u)
}

#[test]
fn an_honest_update_passes_and_decodes() {
    for compression in [Compression::Fp32, Compression::Int8 { block: 256 }] {
        let f = fixture(compression);
        let bytes = encoded(compression, 0.01);
        let signed = update(&f, &bytes, |_| {});
        let u = f
            .round
            .check(f.worker.node_id(), &signed, &bytes, &f.spec, 1500)
            .unwrap();
        assert_eq!(u.samples, 32);
        let delta = RoundInProgress::decode(&bytes, PARAMS).unwrap();
        assert!((delta[0] - 0.01).abs() < 1e-3);
    }
}

#[test]
fn a_job_of_exact_audits_takes_no_arithmetic_that_buys_a_tolerance() {
    use fairgrid_protocol::messages::Arithmetic;
    let c = Compression::Int8 { block: 256 };
    let mut f = fixture(c);
    let bytes = encoded(c, 0.01);
    let from = f.worker.node_id();
    let declaring = |f: &Fixture, arithmetic| update(f, &bytes, |u| u.arithmetic = arithmetic);
    // Any declared arithmetic goes in an ordinary job.
    for arithmetic in [
        Arithmetic::X86Avx2Fma,
        Arithmetic::OtherCpu,
        Arithmetic::Gpu,
    ] {
        let signed = declaring(&f, arithmetic);
        assert!(f.round.check(from, &signed, &bytes, &f.spec, 1500).is_ok());
    }
    f.spec.exact_audits = true;
    let signed = declaring(&f, Arithmetic::OtherCpu);
    let r = f
        .round
        .check(from, &signed, &bytes, &f.spec, 1500)
        .unwrap_err();
    assert!(r.misbehaved && r.reason.contains("exact audits"), "{r:?}");
    // A CPU job's `gpu` is judged as x86_avx2_fma: no tolerance to buy.
    for arithmetic in [Arithmetic::X86Avx2Fma, Arithmetic::Gpu] {
        let signed = declaring(&f, arithmetic);
        assert!(f.round.check(from, &signed, &bytes, &f.spec, 1500).is_ok());
    }
}

#[test]
fn tampering_is_misbehaviour_and_lateness_is_not() {
    let c = Compression::Int8 { block: 256 };
    let f = fixture(c);
    let bytes = encoded(c, 0.01);
    let from = f.worker.node_id();
    let check = |signed: &Signed<RoundUpdate>, bytes: &[u8], now: u64| {
        f.round
            .check(from, signed, bytes, &f.spec, now)
            .unwrap_err()
    };

    // Bytes changed after signing: the hash no longer matches.
    let mut flipped = bytes.clone();
    flipped[30] ^= 1;
    let r = check(&update(&f, &bytes, |_| {}), &flipped, 1500);
    assert!(r.misbehaved && r.reason.contains("update_hash"), "{r:?}");

    // Signed by a throwaway key.
    let stranger = Keypair::from_seed(b"stranger");
    let mut u = update(&f, &bytes, |_| {}).verify_and_decode().unwrap().1;
    u.worker = from;
    let forged = Signed::sign(&stranger, &u);
    let r = check(&forged, &bytes, 1500);
    assert!(r.misbehaved && r.reason.contains("sent by"), "{r:?}");

    // A broken signature.
    let mut broken = update(&f, &bytes, |_| {});
    broken.signature.0[0] ^= 1;
    assert!(check(&broken, &bytes, 1500).misbehaved);

    // Wrong sizes, shards, samples, loss, compression.
    let r = check(&update(&f, &bytes[..100], |_| {}), &bytes[..100], 1500);
    assert!(r.misbehaved && r.reason.contains("bytes"), "{r:?}");
    assert!(check(&update(&f, &bytes, |u| u.shards = vec![0]), &bytes, 1500).misbehaved);
    assert!(check(&update(&f, &bytes, |u| u.samples = 1_000_000), &bytes, 1500).misbehaved);
    assert!(check(&update(&f, &bytes, |u| u.loss = f32::NAN), &bytes, 1500).misbehaved);
    assert!(
        check(
            &update(&f, &bytes, |u| u.compression = Compression::Fp32),
            &bytes,
            1500
        )
        .misbehaved
    );

    // Late, stale, wrong round, unknown sender: refused, not misbehaviour.
    let r = check(&update(&f, &bytes, |_| {}), &bytes, 2001);
    assert!(!r.misbehaved && r.reason.contains("deadline"), "{r:?}");
    assert!(
        !check(
            &update(&f, &bytes, |u| u.base_params = Hash32::ZERO),
            &bytes,
            1500
        )
        .misbehaved
    );
    assert!(!check(&update(&f, &bytes, |u| u.round = 3), &bytes, 1500).misbehaved);
    let outsider = Keypair::from_seed(b"outsider");
    let mut u = update(&f, &bytes, |_| {}).verify_and_decode().unwrap().1;
    u.worker = outsider.node_id();
    let r = f
        .round
        .check(
            outsider.node_id(),
            &Signed::sign(&outsider, &u),
            &bytes,
            &f.spec,
            1500,
        )
        .unwrap_err();
    assert!(!r.misbehaved && r.reason.contains("no order"), "{r:?}");
}

#[test]
fn non_finite_values_fail_to_decode_even_when_correctly_signed() {
    let c = Compression::Fp32;
    let f = fixture(c);
    let mut bytes = encoded(c, 0.01);
    bytes[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
    let signed = update(&f, &bytes, |_| {});
    f.round
        .check(f.worker.node_id(), &signed, &bytes, &f.spec, 1500)
        .unwrap();
    let r = RoundInProgress::decode(&bytes, PARAMS).unwrap_err();
    assert!(r.misbehaved && r.reason.contains("NaN"), "{r:?}");
}

#[test]
fn huge_finite_values_are_misbehaviour() {
    let c = Compression::Fp32;
    let mut bytes = encoded(c, 0.01);
    bytes[20..24].copy_from_slice(&3.0e38f32.to_le_bytes());
    let r = RoundInProgress::decode(&bytes, PARAMS).unwrap_err();
    assert!(
        r.misbehaved && r.reason.contains("beyond the bound"),
        "{r:?}"
    );
}

#[test]
fn outcomes_settle_once_and_close_marks_the_rest_missed() {
    let mut f = fixture(Compression::Fp32);
    let worker = f.worker.node_id();
    assert!(!f.round.complete());
    assert!(
        f.round
            .settle(worker, Outcome::Missed("disconnected".into()))
    );
    assert!(!f.round.settle(worker, Outcome::Rejected("again".into())));
    assert!(
        !f.round
            .settle(f.coordinator.node_id(), Outcome::Missed("x".into()))
    );
    let closed = f.round.close("deadline");
    assert_eq!(closed.len(), 1);
    assert!(f.round.complete());
}

#[test]
fn aggregation_weights_by_samples_and_applies_the_outer_step() {
    let a = accepted(vec![1.0, 0.0], 30, 1.0);
    let b = accepted(vec![0.0, 1.0], 10, 2.0);
    let out = aggregate(&[1.0, 1.0], &[&a, &b], 0.5).unwrap();
    assert_eq!(out.params, vec![1.375, 1.125]);
    assert!((out.train_loss - 1.25).abs() < 1e-6);
    assert_eq!(out.samples, 40);
    assert!(aggregate(&[1.0], &[&a], 1.0).is_err(), "length mismatch");
    assert!(
        aggregate(&[1.0, 1.0], &[], 1.0).is_err(),
        "nothing to average"
    );
}

#[test]
fn a_robust_rule_keeps_one_hostile_update_from_moving_the_model() {
    let update = |delta: Vec<f32>| accepted(delta, 10, 1.0);
    let honest: Vec<AcceptedUpdate> = (0..4)
        .map(|i| update(vec![0.1 + 0.01 * i as f32]))
        .collect();
    let hostile = update(vec![-1e4]);
    let all: Vec<&AcceptedUpdate> = honest.iter().chain([&hostile]).collect();
    let plain = OuterStep::plain(1.0);
    let mean = aggregate_with(&[0.0], &all, plain, &[], Aggregation::Mean, &[]).unwrap();
    assert!(mean.params[0] < -1000.0, "the mean follows the attacker");
    for rule in [
        Aggregation::TrimmedMean { trim: 1 },
        Aggregation::CenteredClip,
    ] {
        let out = aggregate_with(&[0.0], &all, plain, &[], rule, &[]).unwrap();
        assert!((0.09..0.14).contains(&out.params[0]), "{rule:?}: {out:?}");
    }
}

/// DiLoCo's outer step: Nesterov momentum on the round's mean delta,
/// worked by hand over two rounds; without momentum it is plain averaging
/// and carries no velocity.
#[test]
fn the_outer_step_carries_nesterov_momentum_between_rounds() {
    let update = |delta: Vec<f32>| accepted(delta, 1, 1.0);
    let outer = OuterStep {
        lr: 0.5,
        momentum: 0.9,
    };
    let d1 = update(vec![1.0, -2.0]);
    // v = d = [1, -2]; p = 0 + 0.5 (d + 0.9 v) = 0.5 x 1.9 d.
    let one = aggregate_with(&[0.0, 0.0], &[&d1], outer, &[], Aggregation::Mean, &[]).unwrap();
    assert_eq!(one.velocity, vec![1.0, -2.0]);
    assert!((one.params[0] - 0.95).abs() < 1e-6 && (one.params[1] + 1.9).abs() < 1e-6);
    // v = 0.9 [1, -2] + [1, 0] = [1.9, -1.8]; p += 0.5 ([1, 0] + 0.9 v).
    let d2 = update(vec![1.0, 0.0]);
    let two = aggregate_with(
        &one.params,
        &[&d2],
        outer,
        &one.velocity,
        Aggregation::Mean,
        &[],
    )
    .unwrap();
    let v = &two.velocity;
    assert!((v[0] - 1.9).abs() < 1e-6 && (v[1] + 1.8).abs() < 1e-6);
    assert!((two.params[0] - (0.95 + 0.5 * (1.0 + 0.9 * 1.9))).abs() < 1e-5);
    assert!((two.params[1] - (-1.9 + 0.5 * (0.9 * -1.8))).abs() < 1e-5);

    let huge = update(vec![f32::MAX, 0.0]);
    assert!(
        aggregate_with(&two.params, &[&huge], outer, v, Aggregation::Mean, &[]).is_err(),
        "a step that overflows is refused"
    );

    let plain = aggregate_with(
        &[1.0, 1.0],
        &[&d1],
        OuterStep::plain(1.0),
        &[],
        Aggregation::Mean,
        &[],
    )
    .unwrap();
    assert_eq!(plain.params, vec![2.0, -1.0]);
    assert!(plain.velocity.is_empty(), "no momentum, no velocity");
}

#[test]
fn batch_norm_statistics_are_averaged_plainly_whatever_the_outer_step() {
    // Value 1 is a running variance: 1.0 at the round's start, 0.01 in
    // every worker's model (delta -0.99). DiLoCo's outer step would put it
    // at 1 + 0.7 * 1.9 * -0.99 < 0.
    let outer = OuterStep {
        lr: 0.7,
        momentum: 0.9,
    };
    let d = accepted(vec![0.5, -0.99], 1, 1.0);
    let variance = [std::ops::Range { start: 1, end: 2 }];
    let out = aggregate_with(&[0.0, 1.0], &[&d], outer, &[], Aggregation::Mean, &variance).unwrap();
    assert!((out.params[1] - 0.01).abs() < 1e-6, "{:?}", out.params);
    assert_eq!(out.velocity[1], 0.0);
    assert!(
        (out.params[0] - 0.7 * 1.9 * 0.5).abs() < 1e-6,
        "a weight takes the outer step"
    );
    let outside = [std::ops::Range { start: 1, end: 3 }];
    let bad = aggregate_with(&[0.0, 1.0], &[&d], outer, &[], Aggregation::Mean, &outside);
    assert!(bad.is_err(), "statistics outside the parameters");
}

/// An accepted update with this delta, weight and loss.
fn accepted(delta: Vec<f32>, samples: u64, loss: f32) -> AcceptedUpdate {
    AcceptedUpdate {
        delta,
        samples,
        loss,
        update_hash: Hash32::ZERO,
        bytes: 8,
        compute_ms: 0,
        residual_out: Hash32::ZERO,
        signed: Box::new(placeholder_signed()),
    }
}

fn placeholder_signed() -> Signed<RoundUpdate> {
    let key = Keypair::from_seed(b"placeholder");
    Signed::sign(&key, &crate::jobs::testing::samples::round_update(&key))
}
