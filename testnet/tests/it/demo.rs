//! The scenarios end to end, with tiny settings: `demo` and `chaos` as a
//! user runs them, checked on their machine-readable last line. They need
//! the node's jobs API (coordinator, workers, `/v1/jobs`).

use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_fairgrid-testnet");

/// `key=value` fields of the `result ...` line.
fn fields(line: &str) -> std::collections::BTreeMap<String, String> {
    assert!(line.starts_with("result "), "{line}");
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(args: &[&str], limit: Duration) -> String {
    let mut all = args.to_vec();
    let secs = limit.as_secs().to_string();
    all.extend(["--timeout-secs", &secs]);
    let out = Command::new(BIN).args(&all).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fairgrid-testnet {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap_or_default().to_string()
}

#[test]
fn demo_runs_a_job_to_the_end_within_the_caps() {
    let last = run(
        &[
            "demo",
            "--nodes",
            "3",
            "--owners",
            "2",
            "--model",
            "mlp",
            "--rounds",
            "3",
            "--local-steps",
            "10",
            "--max-train-samples",
            "2000",
        ],
        Duration::from_secs(240),
    );
    let f = fields(&last);
    assert_eq!(f["rounds"], "3");
    assert_eq!(f["ledger_verified"], "3/3");
    let share: f64 = f["max_owner_share"].parse().unwrap();
    let cap: f64 = f["cap"].parse().unwrap();
    assert!(share <= cap + 1e-9, "{last}");
    let accuracy: f64 = f["test_accuracy"].parse().unwrap();
    assert!(
        accuracy > 0.5,
        "an mlp learns something in 3 rounds: {last}"
    );
}

#[test]
fn chaos_kills_a_worker_and_the_job_still_completes() {
    let last = run(
        &[
            "chaos",
            "--kill",
            "1",
            "--seed",
            "7",
            "--nodes",
            "4",
            "--owners",
            "3",
            "--model",
            "mlp",
            "--rounds",
            "6",
            "--at-round",
            "2",
            "--local-steps",
            "5",
            "--max-train-samples",
            "2000",
            "--round-timeout-secs",
            "5",
        ],
        Duration::from_secs(300),
    );
    let f = fields(&last);
    assert_eq!(f["killed"], "1");
    assert!(f["reallocations"].parse::<u32>().unwrap() >= 1, "{last}");
    assert_eq!(f["ledger_verified"], "4/4", "the killed node's ledger too");
}

/// Issue 14: eight node processes, three owners, three submitters with two
/// jobs each at once under a 50% network cap. The scenario itself checks,
/// from the ledgers alone, that no node ever held more shards than it
/// offers, that every recorded window holds what all ledgers had settled
/// before it, that no owner passed its cap, that every submitter's first
/// job was placed before any second one, and that while the jobs competed
/// each submitter held within one shard of the weighted-DRF solution
/// (`market::admit_epoch`); it fails otherwise. The pool holds three of
/// the jobs at once, so that solution is one job (12 shards) each.
#[test]
fn many_jobs_from_three_submitters_keep_offers_caps_and_drf_order() {
    let last = run(
        &[
            "many",
            "--nodes",
            "8",
            "--owners",
            "3",
            "--model",
            "mlp",
            "--rounds",
            "10",
            "--local-steps",
            "10",
            "--max-train-samples",
            "2000",
            // DRF orders the jobs a node hears within its admission
            // delay; on a loaded machine a submitter's job once reached
            // the nodes more than the default second after the others
            // and was placed after another submitter's second job.
            "--admission-delay-ms",
            "4000",
            "--bid-window-secs",
            "6",
        ],
        Duration::from_secs(300),
    );
    let f = fields(&last);
    assert_eq!(f["jobs_finished"], "6", "{last}");
    assert_eq!(f["drf_order"], "ok", "{last}");
    assert_eq!(f["drf_shares"], "12/12/12", "{last}");
    assert!(f["windows_checked"].parse::<u32>().unwrap() >= 6, "{last}");
    let (held, offered) = f["fullest_node"].split_once('/').unwrap();
    let (held, offered): (u32, u32) = (held.parse().unwrap(), offered.parse().unwrap());
    assert!(held > 0 && held <= offered, "{last}");
}

/// The seed paper's network (the zoo's CNN) trained as a job on colour
/// images in the CIFAR-10 binary format: files written here record by
/// record (CIFAR itself cannot be downloaded on these machines), with a
/// class-dependent colour plus noise, so a few rounds learn it.
#[test]
fn demo_trains_the_cnn_on_cifar_10_format_data() {
    use fairgrid_kernels::data::cifar::{Cifar, encode_cifar};
    let dir = tempfile::tempdir().unwrap();
    let mut state = 1u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as i32 % 41 - 20
    };
    let mut record = |i: usize| {
        let label = (i * 7 % 10) as u8;
        let colour = [label * 25, label.wrapping_mul(71), label.wrapping_mul(133)];
        let pixels: Vec<u8> = (0..32 * 32 * 3)
            .map(|p| (i32::from(colour[p % 3]) + noise()).clamp(0, 255) as u8)
            .collect();
        (label, pixels)
    };
    for b in 1..=5 {
        let samples: Vec<_> = (0..200).map(|i| record(b * 200 + i)).collect();
        std::fs::write(
            dir.path().join(format!("data_batch_{b}.bin")),
            encode_cifar(Cifar::Ten, &samples),
        )
        .unwrap();
    }
    let test: Vec<_> = (0..300).map(&mut record).collect();
    std::fs::write(
        dir.path().join("test_batch.bin"),
        encode_cifar(Cifar::Ten, &test),
    )
    .unwrap();
    let data = dir.path().display().to_string();
    let last = run(
        &[
            "demo",
            "--nodes",
            "3",
            "--owners",
            "2",
            "--model",
            "cnn",
            "--data",
            &data,
            "--rounds",
            "4",
            "--local-steps",
            "4",
        ],
        Duration::from_secs(240),
    );
    let f = fields(&last);
    assert_eq!(f["rounds"], "4");
    assert_eq!(f["ledger_verified"], "3/3");
    let accuracy: f64 = f["test_accuracy"].parse().unwrap();
    assert!(accuracy > 0.3, "colour tells the class: {last}");
}

/// Issue 12: two workers, one held to 30% of a core by a cgroup quota,
/// train the same job with shards by offered capacity and then by
/// measured speed. By speed, the slow worker stops holding the round back
/// and each worker's shards follow its observed throughput.
#[test]
#[ignore = "needs root for a cgroup CPU quota; .ci/run runs it (as root) with --ignored"]
fn hetero_workers_split_shards_by_measured_speed() {
    let last = run(
        &["hetero", "--rounds", "3", "--quota-percent", "30"],
        Duration::from_secs(400),
    );
    let f = fields(&last);
    let number = |k: &str| f[k].parse::<f64>().unwrap();
    assert!(number("straggler_before") > 2.0, "{last}");
    assert!(number("straggler_after") < 1.6, "{last}");
    assert!(number("off_share_after") <= 1.0, "{last}");
}

/// `demo --device cuda` on a machine without a usable GPU stops before
/// starting anything and says why; where CUDA is usable it would run the
/// whole demo on the GPU (bench/gpu-jobs.sh does that), so this test says
/// so and checks nothing there.
#[test]
fn demo_on_cuda_without_a_gpu_says_why() {
    use fairgrid_kernels::backend::select::{DevicePreference, choose_device};
    if choose_device(DevicePreference::Cuda).is_ok() {
        eprintln!("SKIPPED: CUDA is usable here; bench/gpu-jobs.sh runs the GPU demo");
        return;
    }
    let out = Command::new(BIN)
        .args(["demo", "--device", "cuda", "--timeout-secs", "30"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--device cuda: this machine cannot train on a GPU: CUDA is not usable"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("node processes"),
        "no node was started"
    );
}
