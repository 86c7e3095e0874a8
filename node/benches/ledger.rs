//! Ledger throughput and verification, printed as tables.
//!
//! 1. Signed, chained, durable appends through the group-commit writer,
//!    from many concurrent appenders, against raw sled inserts of records
//!    of the same size with the same flush policy (one flush per batch of
//!    the same size), in the same run. Also the signing cost alone.
//! 2. Verifying a 1M-entry ledger (links + batched signatures).
//!
//! `cargo bench -p fairgrid-node --bench ledger` (env LEDGER_BENCH_ENTRIES
//! overrides the 1M).

use std::time::Instant;

use fairgrid_node::ledger::{Ledger, LedgerStore, verify};
use fairgrid_protocol::ledger::{EntryBody, LedgerEntry};
use fairgrid_protocol::{Hash32, Keypair};

fn body(i: u64) -> EntryBody {
    static OWNERS: std::sync::LazyLock<Vec<fairgrid_protocol::OwnerId>> =
        std::sync::LazyLock::new(|| {
            (0u64..16)
                .map(|o| Keypair::from_seed(&o.to_le_bytes()).owner_id())
                .collect()
        });
    EntryBody::Credit {
        job_id: Hash32::of(&(i % 64).to_le_bytes()),
        owner: OWNERS[(i % 16) as usize],
        amount: i,
        shards: 3,
        clearing_price: 7,
        allocation: Hash32::ZERO,
    }
}

/// Appends `n` entries from `appenders` concurrent tasks; entries/s.
fn group_commit(n: u64, appenders: u64) -> (f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ledger = Ledger::open(dir.path(), Keypair::from_seed(b"bench")).unwrap();
    let start = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..appenders {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..n / appenders {
                    ledger
                        .append_at(body(t * n + i), 1_700_000_000_000)
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let rate = (n / appenders * appenders) as f64 / start.elapsed().as_secs_f64();
    let size = ledger
        .store()
        .get(0)
        .unwrap()
        .unwrap()
        .signed
        .to_bytes()
        .len();
    runtime.block_on(ledger.close_async()).unwrap();
    (rate, size)
}

/// Raw sled: `n` records of `size` bytes, `batch` per `apply_batch`, one
/// flush per batch.
fn raw_sled(n: u64, size: usize, batch: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .mode(sled::Mode::HighThroughput)
        .open()
        .unwrap();
    let tree = db.open_tree("chain").unwrap();
    let value = vec![0xa5u8; size];
    let start = Instant::now();
    let mut i = 0u64;
    while i < n {
        let mut b = sled::Batch::default();
        for _ in 0..batch.min(n - i) {
            b.insert(&i.to_be_bytes(), value.as_slice());
            i += 1;
        }
        tree.apply_batch(b).unwrap();
        db.flush().unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn signing_only(n: u64) -> f64 {
    let key = Keypair::from_seed(b"bench");
    let start = Instant::now();
    let mut prev = None;
    for i in 0..n {
        let signed = LedgerEntry::sign_next(&key, prev, 1_700_000_000_000, body(i));
        prev = Some((i, Hash32::of(&signed.to_bytes())));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n = 200_000;
    println!("## ledger appends ({n} entries each)");
    println!("| method | appenders | batch | entries/s |");
    println!("|---|---:|---:|---:|");
    let sign = signing_only(n);
    println!("| sign + hash only (no storage, the chain's serial floor) | 1 | - | {sign:.0} |");
    let mut size = 0;
    for appenders in [64u64, 256, 1024] {
        let (rate, s) = group_commit(n, appenders);
        size = s;
        println!(
            "| fairgrid ledger, signed + chained + flushed (group commit) | {appenders} | <= 4096 | {rate:.0} |"
        );
    }
    for batch in [64u64, 256] {
        let rate = raw_sled(n, size, batch);
        println!("| raw sled apply_batch + flush, {size}-byte values | - | {batch} | {rate:.0} |");
    }
    let per_entry = raw_sled(5_000, size, 1);
    println!(
        "| raw sled insert + flush per entry, {size}-byte values (5000) | - | 1 | {per_entry:.0} |"
    );

    let total: u64 = std::env::var("LEDGER_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!("\n## verifying a {total}-entry ledger");
    let dir = tempfile::tempdir().unwrap();
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let ledger = Ledger::open(dir.path(), Keypair::from_seed(b"bench")).unwrap();
        let start = Instant::now();
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..256u64 {
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..total / 256 {
                        ledger
                            .append_at(body(t + i), 1_700_000_000_000)
                            .await
                            .unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        eprintln!("built in {:.1} s", start.elapsed().as_secs_f64());
        runtime.block_on(ledger.close_async()).unwrap();
    }
    let store = LedgerStore::open(dir.path()).unwrap();
    println!("| what | entries | seconds |");
    println!("|---|---:|---:|");
    let start = Instant::now();
    let mut read = 0u64;
    for stored in store.iter_own() {
        std::hint::black_box(stored.unwrap());
        read += 1;
    }
    println!(
        "| read + decode every entry, no crypto (the storage floor) | {read} | {:.2} |",
        start.elapsed().as_secs_f64()
    );
    for run in 0..2 {
        let start = Instant::now();
        let report = verify::verify_store(&store).unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "| verify_store (links + batched ed25519), run {} | {} | {secs:.2} |",
            run + 1,
            report.own_entries
        );
    }
}
