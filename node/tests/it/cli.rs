//! `fairgrid init` and the offline commands, as a user runs them.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{bin, init_dir};

#[test]
fn init_creates_a_private_key_a_documented_config_and_a_token() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    let peer = init_dir(&dir);
    assert!(peer.starts_with("12D3KooW"), "{peer}");
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("node.key"), 0o600);
    assert_eq!(mode("api.token"), 0o600);
    let key = fairgrid_node::datadir::read_secret_key(&dir.join("node.key")).unwrap();
    assert_eq!(
        key.node_id().to_string(),
        peer,
        "printed PeerId is the key's"
    );
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(config.contains("# "), "documented");
    fairgrid_node::config::Config::from_toml_and_env(&config, "t", &Default::default()).unwrap();

    // A second init never replaces the key.
    let again = Command::new(bin())
        .args(["init", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    // An empty ledger verifies; a config typo is a clear error.
    let verify = Command::new(bin())
        .args(["ledger", "verify", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!verify.status.success(), "no ledger yet");
    std::fs::write(dir.join("config.toml"), "[network]\nmdsn = false\n").unwrap();
    let run = Command::new(bin())
        .args(["run", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("mdsn"));
    let status = Command::new(bin())
        .args(["status", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("is the node running"));
}

/// `fairgrid ledger verify` on a stopped node's data dir: a clean chain
/// passes; a tampered entry, a broken link and a bad signature each fail
/// with an error that names the entry and what is wrong with it.
#[test]
fn offline_ledger_verify_names_each_kind_of_damage() {
    use fairgrid_node::ledger::Ledger;
    use fairgrid_protocol::ledger::{EntryBody, LedgerEntry};
    use fairgrid_protocol::{Hash32, Signed};

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    init_dir(&dir);
    let key = fairgrid_node::datadir::read_secret_key(&dir.join("node.key")).unwrap();
    let ledger_dir = dir.join("ledger");
    let body = |i: u64| EntryBody::Credit {
        job_id: Hash32::of(&i.to_le_bytes()),
        owner: key.owner_id(),
        amount: i,
        shards: 1,
        clearing_price: 2,
        allocation: Hash32::ZERO,
    };
    {
        let ledger = Ledger::open(&ledger_dir, key.clone()).unwrap();
        for i in 0..30 {
            ledger.append_blocking(body(i)).unwrap();
        }
        ledger.close().unwrap();
    }
    let verify = || {
        let out = Command::new(bin())
            .args(["ledger", "verify", "--data-dir", dir.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = verify();
    assert!(ok, "{text}");
    assert!(text.contains("ledger OK: 30 own entries"), "{text}");

    let seq_key = 17u64.to_be_bytes();
    // Rewrites entry 17 in the stopped node's database, runs verify, and
    // puts the original back.
    let with_entry_17 = |change: &dyn Fn(Signed<LedgerEntry>) -> Signed<LedgerEntry>| {
        let original = {
            let db = sled::open(&ledger_dir).unwrap();
            let chain = db.open_tree("chain").unwrap();
            let original = chain.get(seq_key).unwrap().unwrap().to_vec();
            let changed = change(Signed::from_bytes(&original).unwrap());
            chain.insert(seq_key, changed.to_bytes()).unwrap();
            db.flush().unwrap();
            original
        };
        let result = verify();
        let db = sled::open(&ledger_dir).unwrap();
        db.open_tree("chain")
            .unwrap()
            .insert(seq_key, original)
            .unwrap();
        db.flush().unwrap();
        result
    };

    // Content changed after signing (the amount, the payload's last byte).
    let (ok, text) = with_entry_17(&|mut signed| {
        let last = signed.payload.len() - 1;
        signed.payload[last] ^= 1;
        signed
    });
    assert!(!ok);
    assert!(text.contains("seq 17"), "{text}");
    assert!(text.contains("signature does not verify"), "{text}");

    // Validly signed by the node's own key, but linked to the wrong entry.
    let (ok, text) = with_entry_17(&|signed| {
        let entry = signed.verify_and_decode().unwrap().1;
        LedgerEntry::sign_next(
            &key,
            Some((16, Hash32::of(b"not entry 16"))),
            entry.timestamp,
            entry.body,
        )
    });
    assert!(!ok);
    assert!(text.contains("seq 17"), "{text}");
    assert!(text.contains("links to"), "{text}");

    // A flipped bit in the signature itself.
    let (ok, text) = with_entry_17(&|mut signed| {
        signed.signature.0[10] ^= 1;
        signed
    });
    assert!(!ok);
    assert!(text.contains("seq 17"), "{text}");
    assert!(text.contains("signature does not verify"), "{text}");

    let (ok, text) = verify();
    assert!(ok, "restored: {text}");
}

/// `fairgrid ui` on a running node prints a link whose code logs in once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_prints_a_link_that_logs_in_once() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("node");
    init_dir(&dir);
    let mut node = common::NodeProc::start(&dir, &[], &common::test_env(60));
    let out = common::fairgrid(&["ui", "--data-dir", dir.to_str().unwrap()]);
    let url = out.lines().next().unwrap();
    let (base, code) = url.split_once("/#code=").unwrap();
    assert_eq!(base, node.api.trim_end_matches('/'), "{out}");
    assert_eq!(code.len(), 32, "{out}");
    assert!(out.contains("works once"), "{out}");
    let http = reqwest::Client::new();
    let redeem = || {
        http.post(format!("{base}/v1/ui/redeem"))
            .json(&serde_json::json!({ "code": code }))
            .send()
    };
    let first = redeem().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let token: fairgrid_sdk::UiToken = first.json().await.unwrap();
    assert_eq!(token.token, node.token);
    assert_eq!(redeem().await.unwrap().status().as_u16(), 401);
    let json = common::fairgrid(&["ui", "--json", "--data-dir", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["url"].as_str().unwrap().contains("/#code="), "{json}");
    assert!(node.stop());
}

/// `fairgrid audit replay` on files that are no evidence: a clear error
/// naming the file, never a verdict or a panic.
#[test]
fn audit_replay_refuses_what_is_not_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.evidence");
    std::fs::write(
        &garbage,
        b"\x05\xff\xff\xff\xff\xff\xff\xff\xff not evidence",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let path = garbage.to_str().unwrap();
    let err = run(&["audit", "replay", path]);
    assert!(
        err.contains("not an audit evidence file") && err.contains("garbage.evidence"),
        "{err}"
    );
    let err = run(&["audit", "replay", path, "--expect-hash", "00"]);
    assert!(err.contains("not the evidence the ledger records"), "{err}");
    let missing = dir.path().join("missing.evidence");
    let err = run(&["audit", "replay", missing.to_str().unwrap()]);
    assert!(
        err.contains("reading") && err.contains("missing.evidence"),
        "{err}"
    );
}
