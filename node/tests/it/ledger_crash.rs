//! The ledger under SIGKILL: a child process appends in a loop (several
//! concurrent appenders, so group commit is exercised) and prints each
//! acknowledged entry; the parent kills it at random moments, 24 times,
//! reopening and verifying after each kill. No acknowledged entry may be
//! lost and the chain must always verify.
//!
//! The child is this same test binary, re-run with an environment variable
//! naming the data dir.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fairgrid_node::ledger::{Ledger, LedgerStore, verify};
use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::{Hash32, Keypair};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "FAIRGRID_CRASH_CHILD_DIR";
const KILLS: usize = 24;

fn key() -> Keypair {
    Keypair::from_seed(b"crash-test-node")
}

/// The child: append forever, printing `ack <seq> <id>` after each flush.
fn child(dir: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ledger = Ledger::open(std::path::Path::new(dir), key()).unwrap();
        println!("ready");
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
        for writer in 0..8u64 {
            let ledger = ledger.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let body = EntryBody::Verification {
                        job_id: Hash32::of(&writer.to_le_bytes()),
                        round: i,
                        node: key().node_id(),
                        passed: true,
                        detail: "x".repeat((i % 64) as usize),
                    };
                    let done = ledger.append(body).await.unwrap();
                    if tx
                        .send(format!("ack {} {}", done.seq, done.id))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(tx);
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn acknowledged_entries_survive_sigkill_and_the_chain_never_breaks() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut acked: Vec<(u64, String)> = Vec::new();
    let started = Instant::now();
    for round in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "ledger_crash::acknowledged_entries_survive_sigkill_and_the_chain_never_breaks",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        // Kill at a random moment after it opened the ledger (the open
        // itself is also killed now and then: the first wait can be 0).
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in lines {
            let mut parts = line.split(' ');
            if parts.next() == Some("ack") {
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                acked.push((seq, parts.next().unwrap().to_string()));
            }
        }
        // Reopen: every acknowledged entry is there, unchanged, and the
        // whole chain verifies.
        let store = LedgerStore::open(dir.path()).unwrap();
        let report = verify::verify_store(&store)
            .unwrap_or_else(|e| panic!("round {round}: chain corrupted: {e}"));
        for (seq, id) in &acked {
            let stored = store
                .get(*seq)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged entry {seq} lost"));
            assert_eq!(
                &stored.id.to_hex(),
                id,
                "round {round}: entry {seq} changed"
            );
        }
        assert!(report.own_entries >= acked.len() as u64);
        drop(store);
    }
    assert!(
        acked.len() > 1000,
        "the child should have appended plenty ({} acks in {:?})",
        acked.len(),
        started.elapsed()
    );
}
