//! The Python client (`sdk/python`) tested with pytest against a real
//! `fairgrid-testnet up` (its conftest starts and stops it). Needs
//! python3 (3.11+) with pytest: `.ci/run` installs it; without it this
//! test fails and says how to get it.

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fairgrid-testnet");
/// The whole suite, with room for a slow machine.
const LIMIT: Duration = Duration::from_secs(480);

#[test]
fn the_python_client_passes_its_tests_against_a_real_testnet() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let probe = Command::new("python3")
        .args(["-c", "import sys, pytest, tomllib; print(sys.version)"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => panic!(
            "the Python client's tests need python3 (3.11+) with pytest: \
             python3 -m pip install pytest (.ci/run does); got {other:?}"
        ),
    }
    let mut child = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "sdk/python/tests",
        ])
        .current_dir(&repo)
        .env("FAIRGRID_TESTNET_BIN", BIN)
        .spawn()
        .expect("running pytest");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pytest ran past {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "pytest failed (its output is above)");
}
