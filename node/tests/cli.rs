//! `fairgrid init` and the offline commands, as a user runs them.

mod common;

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
