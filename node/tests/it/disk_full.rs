//! A full disk, then space freed: the job store refuses the write while
//! the disk is full and takes writes again once space is back, without a
//! restart (sled refuses every write after one failed until reopened).
//! The test mounts a small tmpfs, so it needs root; without root it
//! fails and says so rather than pass.

use std::process::Command;

use fairgrid_node::jobs::store::JobStore;
use fairgrid_protocol::Hash32;

/// Unmounts the tmpfs however the test ends.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &std::path::Path, size: &str) -> Mount {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test mounts a {size} tmpfs and needs root; run it as root or skip it (--skip disk_full)"
    );
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .expect("running mount");
    assert!(status.success(), "mount -t tmpfs failed");
    Mount(at.to_path_buf())
}

/// Fills the file system holding `dir` (the write stops at ENOSPC).
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 1 << 20];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_checkpoints_and_freed_space_takes_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let _mount = mount_tmpfs(dir.path(), "16m");
    let root = dir.path().join("jobs");
    let store = JobStore::open(&root, 1 << 20).unwrap();
    let (a, b) = (Hash32::of(b"a"), Hash32::of(b"b"));
    store
        .put_coordinator(&a, &"first".to_string(), Some(&[1, 2]), &[])
        .await
        .unwrap();

    let filler = fill(dir.path());
    let big = vec![7u8; 64 << 10];
    let err = store
        .put_coordinator(&b, &"second".to_string(), Some(&big), &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("job store: checkpoint of job"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");

    std::fs::remove_file(filler).unwrap();
    store
        .put_coordinator(&b, &"second".to_string(), Some(&big), &[])
        .await
        .expect("space is back: the store takes writes again without a restart");
    drop(store);

    let reopened = JobStore::open(&root, 1 << 20).unwrap();
    let stored: Vec<(Hash32, String)> = reopened
        .coordinator_ids()
        .unwrap()
        .iter()
        .map(|id| {
            let c = reopened.coordinator::<String>(id).unwrap().unwrap();
            (c.job, c.record)
        })
        .collect();
    assert!(stored.contains(&(a, "first".to_string())), "{stored:?}");
    assert!(stored.contains(&(b, "second".to_string())), "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_ledger_appends_and_freed_space_takes_them_again() {
    use fairgrid_node::ledger::Ledger;
    use fairgrid_protocol::Keypair;
    use fairgrid_protocol::ledger::EntryBody;

    let dir = tempfile::tempdir().unwrap();
    let _mount = mount_tmpfs(dir.path(), "16m");
    let path = dir.path().join("ledger");
    let key = Keypair::from_seed(b"disk full ledger");
    let ledger = Ledger::open(&path, key.clone()).unwrap();
    let entry = |i: u32| EntryBody::Verification {
        job_id: Hash32::ZERO,
        round: i,
        node: key.node_id(),
        passed: true,
        detail: "x".repeat(32 << 10),
    };
    ledger.append(entry(0)).await.unwrap();

    let filler = fill(dir.path());
    let mut refused = 0;
    for i in 1..40 {
        if ledger.append(entry(i)).await.is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0, "a full disk took every append");

    std::fs::remove_file(filler).unwrap();
    ledger
        .append(entry(100))
        .await
        .expect("space is back: the ledger takes appends again without a restart");
    ledger.close_async().await.unwrap();
    drop(ledger);
    let report = fairgrid_node::ledger::verify::verify_store(
        &fairgrid_node::ledger::LedgerStore::open(&path).unwrap(),
    )
    .unwrap();
    assert!(report.own_entries >= 2, "{report:?}");
}
