//! `fairgrid devices` and `fairgrid train --device` when CUDA is missing or
//! broken: a clear reason, a CPU fallback for `auto`, an error for `cuda`,
//! and never a panic. A fake `libcuda` (a shared library without the
//! driver's symbols, built with the system C compiler) stands in for a
//! broken or too old driver.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fairgrid(lib_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fairgrid"))
        .args(args)
        .env("LD_LIBRARY_PATH", lib_dir)
        .output()
        .expect("fairgrid runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A directory holding a fake libcuda under every name cudarc tries first,
/// or `None` (with the reason printed) when no C compiler is available.
fn fake_driver_dir() -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("fairgrid-fake-cuda-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let source = dir.join("stub.c");
    std::fs::write(&source, "int fairgrid_not_a_driver(void) { return 0; }\n").ok()?;
    let lib = dir.join("libcuda.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&source)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("skipping the fake-driver case: no working C compiler");
        return None;
    }
    for name in ["libcuda.so.1", "libcuda.so.13", "libcuda.so.12"] {
        std::fs::copy(&lib, dir.join(name)).ok()?;
    }
    Some(dir)
}

#[test]
fn devices_explains_why_cuda_is_not_usable() {
    let out = fairgrid(
        Path::new("/nonexistent"),
        &[
            "devices",
            "--gemm-size",
            "0",
            "--budget-ms",
            "20",
            "--threads",
            "1",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("cpu  cores="), "{stdout}");
    // On a machine with a GPU the second line lists it instead.
    assert!(
        stdout.contains("cuda unavailable: ") || stdout.contains("cuda driver="),
        "{stdout}"
    );
}

#[test]
fn a_broken_driver_is_a_wrong_version_and_auto_falls_back() {
    let Some(dir) = fake_driver_dir() else { return };
    let out = fairgrid(&dir, &["devices", "--gemm-size", "0", "--budget-ms", "20"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("cuda unavailable: wrong version:") && stdout.contains("has no cuInit"),
        "{stdout}"
    );

    let train = [
        "train",
        "--model",
        "logreg",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--threads",
        "1",
    ];
    let out = fairgrid(&dir, &[&train[..], &["--device", "auto"]].concat());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("device: cpu (CUDA not used: wrong version"))
            .count(),
        1,
        "one line says why: {stdout}"
    );
    assert!(stdout.contains("result test_accuracy="), "{stdout}");

    let out = fairgrid(&dir, &[&train[..], &["--device", "cuda"]].concat());
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("CUDA is not usable: wrong version"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
