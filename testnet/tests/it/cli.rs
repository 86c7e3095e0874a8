//! The testnet's command line: bad arguments fail fast with a clear
//! error (before any process starts), and the hidden `node` subcommand is
//! the node's own CLI.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fairgrid-testnet");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_scenarios_but_not_the_node_shim() {
    let (ok, stdout, _) = run(&["--help"]);
    assert!(ok);
    for scenario in ["demo", "chaos", "up"] {
        assert!(stdout.contains(scenario), "{stdout}");
    }
    assert!(!stdout.contains("\n  node"), "{stdout}");
    let (ok, stdout, _) = run(&["demo", "--help"]);
    assert!(ok);
    for flag in [
        "--nodes", "--owners", "--model", "--data", "--rounds", "--keep",
    ] {
        assert!(stdout.contains(flag), "{flag}: {stdout}");
    }
}

#[test]
fn impossible_scenarios_fail_before_starting_anything() {
    for (args, needle) in [
        (
            vec!["demo", "--nodes", "2", "--owners", "3"],
            "--owners must be in 1..=nodes",
        ),
        (vec!["demo", "--nodes", "0"], "--nodes must be in 1..=64"),
        (
            vec!["demo", "--data", "/nonexistent/fmnist"],
            "does not exist",
        ),
        (vec!["demo", "--alpha", "1.5"], "market.alpha"),
        (vec!["demo", "--rounds", "0"], "training.rounds"),
        (vec!["chaos", "--kill", "0"], "--kill must be at least 1"),
        (vec!["demo", "--model", "resnet"], "invalid value 'resnet'"),
    ] {
        let (ok, stdout, stderr) = run(&args);
        assert!(!ok, "{args:?}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            !stdout.contains("data dirs under"),
            "nothing started: {stdout}"
        );
    }
}

#[test]
fn the_node_subcommand_is_the_fairgrid_cli() {
    let (ok, stdout, _) = run(&["node", "--", "--version"]);
    assert!(ok);
    assert!(stdout.starts_with("fairgrid "), "{stdout}");
    let (ok, stdout, _) = run(&["node", "job", "--help"]);
    assert!(ok, "works without `--` too");
    for command in ["submit", "status", "list", "result", "explain"] {
        assert!(stdout.contains(command), "{stdout}");
    }
    let (ok, _, stderr) = run(&["node", "--", "no-such-command"]);
    assert!(!ok);
    assert!(stderr.contains("no-such-command"), "{stderr}");
}
