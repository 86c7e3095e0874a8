//! A node whose storage stops answering does not hang on looking alive:
//! the storage watchdog logs the stuck call and ends the process with
//! status 70 for a supervisor to restart it. The stall is injected (debug
//! builds, `FAIRGRID_TEST_FAULT=stall_ledger`: the ledger never finishes a
//! commit), standing in for sled's `flush_async` deadlock that once hung a
//! node for good.

use crate::common;

use std::time::Duration;

use common::{NodeProc, init_dir, test_env};
use fairgrid_node::watchdog::STALLED_EXIT_CODE;

#[test]
fn a_stuck_ledger_stops_the_node_with_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
    init_dir(&a_dir);
    init_dir(&b_dir);
    let a = NodeProc::start(&a_dir, &[], &test_env(60));
    let mut env = test_env(60);
    env.push(("FAIRGRID_TEST_FAULT".into(), "stall_ledger".into()));
    env.push(("FAIRGRID_STORAGE_STALL_SECS".into(), "2".into()));
    // B records A's advert as soon as it sees it: that commit never ends.
    let mut b = NodeProc::start(&b_dir, &a.listen, &env);
    let status = b.wait_exit(Duration::from_secs(60));
    let log = b.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(STALLED_EXIT_CODE),
        "{status:?}\n{log}"
    );
    assert!(
        log.contains("storage call ledger commit has not returned for"),
        "{log}"
    );
}
