//! `fairgrid market clear`: the documented example works in both output
//! modes; bad input exits non-zero naming the offending field.

use std::io::Write;
use std::process::{Command, Output};

fn fairgrid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fairgrid"))
        .args(args)
        .output()
        .expect("the fairgrid binary runs")
}

fn example() -> String {
    format!(
        "{}/../docs/examples/market-instance.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn clears_the_example_as_json_and_explains_it() {
    let out = fairgrid(&["market", "clear", "--input", &example()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(
        json["assigned"].as_u64().unwrap() + json["shortfall"].as_u64().unwrap(),
        60
    );
    let owners = json["owners"].as_array().unwrap();
    let univ_a = owners.iter().find(|o| o["owner"] == "univ-a").unwrap();
    assert_eq!(univ_a["shards"], 18);
    assert_eq!(univ_a["binding"], "owner_cap");
    assert!(json["fairness"]["hhi"].as_u64().unwrap() <= 10_000);
    assert!(json["assignments"][0]["shards"].is_array());

    let out = fairgrid(&["market", "clear", "--input", &example(), "--explain"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Owner cap binding"), "{text}");
    assert!(text.contains("Price levels"), "{text}");
}

#[test]
fn bad_input_names_the_field_and_exits_non_zero() {
    let path =
        std::env::temp_dir().join(format!("fairgrid-bad-instance-{}.json", std::process::id()));
    let mut text = std::fs::read_to_string(example()).unwrap();
    text = text.replacen("\"ask\": 100", "\"ask\": 5000", 1);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = fairgrid(&["market", "clear", "--input", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bids[0].ask"), "{stderr}");
    std::fs::remove_file(&path).unwrap();

    let out = fairgrid(&["market", "clear", "--input", "/nonexistent/instance.json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    // The reader goes away before the output is written, as `| head -0`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fairgrid"))
        .args(["market", "clear", "--input", &example(), "--explain"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}

#[test]
fn a_byte_order_mark_is_read_past_and_names_must_be_printable() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example()).unwrap();
    let bom = dir.path().join("bom.json");
    std::fs::write(&bom, format!("\u{feff}{text}")).unwrap();
    let out = fairgrid(&["market", "clear", "--input", bom.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let name = json["job"]["name"].as_str().unwrap().to_string();
    let forged = text.replacen(
        &format!("\"name\": \"{name}\""),
        "\"name\": \"x\\r\\nERROR forged log line\"",
        1,
    );
    assert_ne!(forged, text, "the example names its job");
    let bad = dir.path().join("forged.json");
    std::fs::write(&bad, forged).unwrap();
    let out = fairgrid(&["market", "clear", "--input", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job.name") && stderr.contains("printable"),
        "{stderr}"
    );
}
