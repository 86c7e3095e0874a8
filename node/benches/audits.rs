//! Audits (issue 13), measured: how far honest recomputations land from
//! the worker's delta (thread counts, and a GPU against the CPU when one
//! is there), how far each cheat lands, how often a cheater is caught at
//! the default rate, and what an audit costs against the round it checks.
//!
//! cargo bench -p fairgrid-node --features test-utils --bench audits -- \
//!     [--model mlp|cnn] [--cases N] [--threads 1,2,4] [--jobs N] [--local-steps H]

use std::sync::Arc;
use std::time::Instant;

use fairgrid_kernels::data::builtin;
use fairgrid_node::jobs::audit::{
    AuditRate, COARSE_TOLERANCE_PPB, TOLERANCE_PPB, draw_seed, is_drawn,
};
use fairgrid_node::jobs::device::Device;
use fairgrid_node::jobs::testing::rounds::LoadedJob;
use fairgrid_node::jobs::testing::spec_with;
use fairgrid_node::jobs::worker::faults::{CHEATS, TestFault};
use fairgrid_node::jobs::worker::train::Trained;
use fairgrid_protocol::messages::{Compression, ModelArch};
use fairgrid_protocol::{Hash32, Keypair};

type Job = LoadedJob;

fn job(arch: &str, local_steps: u32) -> Job {
    let mut spec = spec_with(
        &Keypair::from_seed(b"c"),
        16,
        Compression::Int8 { block: 256 },
    );
    spec.model.arch = match arch {
        "cnn" => ModelArch::Cnn,
        "logreg" => ModelArch::LogReg,
        _ => ModelArch::Mlp { hidden: vec![128] },
    };
    spec.hyper.local_steps = local_steps;
    spec.hyper.batch_size = 32;
    spec.hyper.momentum = 0.9;
    let data = builtin::fashion_mnist().expect("built-in data");
    let shards = data
        .train
        .take(1600)
        .shards(100, 3)
        .expect("shards")
        .into_iter()
        .map(Arc::new)
        .collect();
    Job {
        spec,
        shards,
        id: Hash32::of(b"audit bench"),
    }
}

fn work(
    job: &Job,
    shards: &[u32],
    last: u32,
    device: Device,
    fault: TestFault,
) -> (Trained, Vec<f32>, f64) {
    job.work(shards, last, device, fault)
}

/// The audit's verdict, distance (ppb) and time.
fn audit(job: &Job, trained: &Trained, params: &[f32], device: Device) -> (bool, u64, f64) {
    let (_, update) = trained.update.verify_and_decode().unwrap();
    let started = Instant::now();
    let verdict = job.audit(&update, trained, params, device);
    let secs = started.elapsed().as_secs_f64();
    (
        verdict.passed,
        verdict.distance_ppb.unwrap_or(u64::MAX),
        secs,
    )
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arch = arg(&args, "--model", "mlp");
    let cases: u32 = arg(&args, "--cases", "12").parse().expect("--cases N");
    let jobs: u32 = arg(&args, "--jobs", "1000").parse().expect("--jobs N");
    let threads: Vec<usize> = arg(&args, "--threads", "1,2,4")
        .split(',')
        .map(|t| t.parse().expect("--threads 1,2,4"))
        .collect();
    let local_steps: u32 = arg(&args, "--local-steps", "8")
        .parse()
        .expect("--local-steps H");
    let job = job(&arch, local_steps);
    println!(
        "model {arch}, int8 updates, H={} batch {} per shard, tolerance {TOLERANCE_PPB} ppb",
        job.spec.hyper.local_steps, job.spec.hyper.batch_size
    );
    // Honest rounds, each audited on the CPU with one thread.
    let mut devices: Vec<Device> = threads
        .iter()
        .map(|&t| Device::Cpu { threads: t })
        .collect();
    if fairgrid_kernels::probe::cuda_libraries().is_ok() {
        devices.push(Device::Cuda { ordinal: 0 });
    } else {
        println!("no usable GPU: CPU against CPU only");
    }
    let (mut train_secs, mut audit_secs) = (0.0, 0.0);
    let cpu1 = Device::Cpu { threads: 1 };
    for device in &devices {
        // Audited on one CPU thread, and on the GPU when it trained there.
        let mut auditors = vec![cpu1];
        if matches!(device, Device::Cuda { .. }) {
            auditors.push(*device);
        }
        for auditor in auditors {
            let mut distances = Vec::new();
            let mut ran_on = *device;
            for case in 0..cases {
                let first = case % 16;
                let shards: Vec<u32> = (0..1 + case % 2).map(|k| (first + k) % 16).collect();
                let (trained, params, t) = work(&job, &shards, case % 3, *device, TestFault::None);
                ran_on = trained.ran_on;
                let (_, d, a) = audit(&job, &trained, &params, auditor);
                if *device == cpu1 {
                    train_secs += t;
                    audit_secs += a;
                }
                distances.push(d);
            }
            distances.sort();
            let over = |t: u64| distances.iter().filter(|&&d| d > t).count();
            println!(
                "honest on {ran_on:<12} audited on {auditor}: {cases} rounds, distance ppb median {} max {}; over {TOLERANCE_PPB}: {}, over {COARSE_TOLERANCE_PPB}: {}",
                distances[distances.len() / 2],
                distances[distances.len() - 1],
                over(TOLERANCE_PPB),
                over(COARSE_TOLERANCE_PPB)
            );
        }
    }
    println!(
        "audit cost: replay {:.3} s for {:.3} s of training (ratio {:.2}), same device and threads",
        audit_secs,
        train_secs,
        audit_secs / train_secs.max(1e-9)
    );
    // The catalogue, and a nudge within the 1% tolerance that only the
    // exact rule catches.
    for fault in CHEATS.into_iter().chain([TestFault::NudgedDelta]) {
        let (trained, params, _) = work(&job, &[0, 1], 2, Device::Cpu { threads: 1 }, fault);
        let (passed, d, _) = audit(&job, &trained, &params, Device::Cpu { threads: 1 });
        let shown = if d == u64::MAX {
            "n/a (reveal check)".to_string()
        } else {
            d.to_string()
        };
        println!(
            "cheat {fault:?}: {} distance ppb {shown}",
            if passed { "PASSED (missed!)" } else { "caught" }
        );
    }
    detection(jobs);
}

/// Issue 13's detection target, measured with the real draw: a cheater
/// in every round of a 60-round job among 4 honest workers, with a long
/// clean record (audited at the floor) and as a new node.
fn detection(jobs: u32) {
    let rate = AuditRate::default();
    let coordinator = Keypair::from_seed(b"coordinator");
    let workers: Vec<_> = (0..5u8)
        .map(|i| Keypair::from_seed(&[b'n', i]).node_id())
        .collect();
    let cheater = workers[0];
    for (label, streak) in [("trusted (streak 1000)", 1000u32), ("new (streak 0)", 0)] {
        let mut caught = 0;
        let mut audits = 0u64;
        let mut first_round_sum = 0u64;
        for j in 0..jobs {
            let job = Hash32::of(&j.to_le_bytes());
            let mut first = None;
            for round in 0..60u32 {
                let updates: Vec<_> = workers
                    .iter()
                    .map(|w| {
                        (
                            *w,
                            Hash32::of_parts(&[&job.0, &round.to_le_bytes(), w.0.as_bytes()]),
                        )
                    })
                    .collect();
                let seed = draw_seed(&coordinator, &job, round, &updates);
                // A cheater never passes, so its streak stays where it was.
                if first.is_none() && is_drawn(&seed, &cheater, rate.rate_ppm(streak)) {
                    first = Some(round);
                }
                // Honest workers at the floor, for the audit load.
                audits += workers[1..]
                    .iter()
                    .filter(|w| is_drawn(&seed, w, rate.rate_ppm(1000)))
                    .count() as u64;
            }
            if let Some(round) = first {
                caught += 1;
                first_round_sum += u64::from(round);
            }
        }
        println!(
            "detection, cheater {label}, every round of a 60-round job: caught in {caught} of {jobs} jobs ({:.1}%), mean first catch at round {:.1}; honest workers at the floor audited in {:.2}% of their rounds",
            100.0 * f64::from(caught) / f64::from(jobs),
            first_round_sum as f64 / f64::from(caught.max(1)),
            100.0 * audits as f64 / (4.0 * 60.0 * f64::from(jobs))
        );
    }
}
