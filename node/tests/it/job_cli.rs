//! `fairgrid job ...` against a mock node API on 127.0.0.1 (the SDK's
//! test mock): argument handling, the job file checked before anything is
//! sent, following to the end, the node's own error for a limit price no
//! bid meets, and the model download.

use crate::mock;

use std::path::Path;
use std::process::{Command, Output};

use mock::{GOOD, MODEL, PRICEY, TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_fairgrid");

/// Runs `fairgrid` off the async runtime (the mock node lives on it).
async fn fairgrid(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("FAIRGRID_API_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `job ARGS --api BASE --token TOKEN`.
fn job_args(base: &str, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = vec!["job".into()];
    all.extend(args.iter().map(|s| s.to_string()));
    all.extend(["--api".into(), base.into(), "--token".into(), TOKEN.into()]);
    all
}

fn write_job(dir: &Path, body: &str) -> String {
    let path = dir.join("job.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

const JOB: &str = "name = \"t\"\n[model]\narch = \"mlp\"\n[data]\nsource = \"builtin\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_follow_status_list_explain_and_result() {
    let (base, state) = mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_job(dir.path(), JOB);

    let out = fairgrid(job_args(&base, &["submit", &file, "--follow"])).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("submitted job {GOOD}")),
        "{stdout}"
    );
    assert!(stdout.contains("40 shards of 250"), "the plan: {stdout}");
    assert!(stdout.contains("round   2/2"), "{stdout}");
    assert!(stdout.contains("finished: test accuracy 75.0%"), "{stdout}");
    assert!(stdout.contains("Univ A"), "the allocation table: {stdout}");
    assert_eq!(state.lock().unwrap().submitted.len(), 1);

    let out = fairgrid(job_args(&base, &["status", GOOD])).await;
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("finished (round 2/2)"), "{stdout}");

    // A unique prefix is enough.
    let out = fairgrid(job_args(&base, &["status", "1111", "--json"])).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["job_id"], GOOD);

    // The mock answers a job per page: `list` shows the first page and
    // says there are more, `--all` follows every page.
    let out = fairgrid(job_args(&base, &["list", "--limit", "5"])).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(GOOD) && !stdout.contains(PRICEY),
        "{stdout}"
    );
    assert!(stdout.contains("--all lists every job"), "{stdout}");
    let out = fairgrid(job_args(&base, &["list", "--all"])).await;
    let (stdout, _) = text(&out);
    assert!(stdout.contains(GOOD) && stdout.contains(PRICEY), "{stdout}");
    assert!(stdout.contains("2 jobs"), "{stdout}");

    let out = fairgrid(job_args(&base, &["explain", GOOD])).await;
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("at most 4 shards per owner"), "{stdout}");
    assert!(stdout.contains("limit price 1000 per shard"), "{stdout}");

    let model = dir.path().join("model.safetensors");
    let out = fairgrid(job_args(
        &base,
        &["result", GOOD, "-o", model.to_str().unwrap()],
    ))
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("matches the job's report"), "{stdout}");
    assert_eq!(std::fs::read(&model).unwrap(), MODEL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_price_no_bid_meets_shows_the_node_s_error() {
    let (base, _) = mock::start().await;
    let out = fairgrid(job_args(&base, &["follow", PRICEY])).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no bid at or below the limit price 100; cheapest ask seen: 250"),
        "{stderr}"
    );
    let out = fairgrid(job_args(&base, &["status", PRICEY])).await;
    let (stdout, _) = text(&out);
    assert!(stdout.contains("cheapest ask seen: 250"), "{stdout}");
    // Explain before clearing says so instead of failing.
    let out = fairgrid(job_args(&base, &["explain", PRICEY])).await;
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("still bidding"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_files_and_ids_fail_before_any_request() {
    let (base, state) = mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (body, needle) in [
        (
            format!("{JOB}[training]\nlr_max = 1.0\n"),
            "unknown field `training.lr_max` (line 7)",
        ),
        (format!("{JOB}[market]\nalpha = 0.0\n"), "market.alpha"),
        (
            JOB.replace("\"builtin\"", "\"/nonexistent/data\""),
            "does not exist",
        ),
        (
            JOB.replace("\"mlp\"", "\"gpt\""),
            "model.arch: unknown variant `gpt`",
        ),
        (format!("{JOB}[market]\nalpha = 0.01\n"), "impossible cap"),
    ] {
        let file = write_job(dir.path(), &body);
        let out = fairgrid(job_args(&base, &["submit", &file])).await;
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(
        state.lock().unwrap().submitted.is_empty(),
        "nothing was sent"
    );

    for (args, needle) in [
        (vec!["status", "xyz"], "is not a job id"),
        (vec!["status", "12"], "is not a job id"),
        (
            vec!["status", "abcd"],
            "no job of this node starts with abcd",
        ),
        (vec!["result", GOOD], "--out"),
        (vec!["submit"], "<FILE>"),
        (vec!["list", "--limit", "0"], "--limit"),
    ] {
        let out = fairgrid(job_args(&base, &args)).await;
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_is_found_through_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    // No node there: a clear error naming what is missing.
    let out = fairgrid(vec![
        "job".into(),
        "list".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ])
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("API token"), "{stderr}");

    // A data dir whose run file points at the (mock) node.
    let (base, _) = mock::start().await;
    std::fs::create_dir_all(data.join("run")).unwrap();
    std::fs::write(data.join("api.token"), format!("{TOKEN}\n")).unwrap();
    let out = fairgrid(vec![
        "job".into(),
        "list".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ])
    .await;
    let (_, stderr) = text(&out);
    assert!(stderr.contains("is the node running?"), "{stderr}");
    std::fs::write(
        data.join("run/api.addr"),
        base.trim_start_matches("http://"),
    )
    .unwrap();
    let out = fairgrid(vec![
        "job".into(),
        "list".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(GOOD), "{stdout}");
}
