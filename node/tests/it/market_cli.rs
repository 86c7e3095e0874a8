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
