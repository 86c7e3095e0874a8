//! Ledger throughput and verification, printed as tables.
//!
//! 1. Durable signed appends through the group-commit writer (many
//!    concurrent appenders, each waiting for its acknowledgement), against
//!    raw sled inserts of records of the same size with the same flush
//!    policy (one `apply_batch` + `flush` per group of the same size), run
//!    alternately in the same process, `RUNS` times each; best and median.
//!    Also signing alone, on one thread and on every core.
//! 2. Verifying a 1M-entry ledger (links + batched signatures), `RUNS`
//!    times, wall and CPU seconds; the read + decode floor; and the
//!    same-signer batch check against ed25519-dalek's `verify_batch` on the
//!    same signatures, one thread.
//!
//! `cargo bench -p fairgrid-node --bench ledger`. Environment:
//! `LEDGER_BENCH_RUNS` (5), `LEDGER_BENCH_APPENDS` (200000),
//! `LEDGER_BENCH_ENTRIES` (1000000; 0 skips part 2).

use std::time::Instant;

use fairgrid_node::ledger::{Ledger, LedgerStore, verify};
use fairgrid_protocol::ledger::{EntryBody, LedgerEntry};
use fairgrid_protocol::{Hash32, Keypair, Signed};
use rayon::prelude::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Appends about `n` entries from `appenders` concurrent tasks to `ledger`.
fn append_many(runtime: &tokio::runtime::Runtime, ledger: &Ledger, n: u64, appenders: u64) -> u64 {
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
    n / appenders * appenders
}

struct Run {
    rate: f64,
    /// Entries per flush, on average.
    group: f64,
    size: usize,
}

/// Durable signed appends into a fresh ledger.
fn group_commit(n: u64, appenders: u64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let ledger = Ledger::open(dir.path(), Keypair::from_seed(b"bench")).unwrap();
    let commits_before = ledger.group_commits();
    let start = Instant::now();
    let done = append_many(&runtime, &ledger, n, appenders);
    let rate = done as f64 / start.elapsed().as_secs_f64();
    let commits = ledger.group_commits() - commits_before;
    let size = ledger
        .store()
        .get(0)
        .unwrap()
        .unwrap()
        .signed
        .to_bytes()
        .len();
    runtime.block_on(ledger.close_async()).unwrap();
    Run {
        rate,
        group: done as f64 / commits.max(1) as f64,
        size,
    }
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

/// Builds and signs a chain without storing it: on one thread, or built
/// in order and signed on every core, as the writer does.
fn signing_only(n: u64, parallel: bool) -> f64 {
    let key = Keypair::from_seed(b"bench");
    let start = Instant::now();
    let mut prev = None;
    let mut unsigned = Vec::with_capacity(n as usize);
    for i in 0..n {
        let entry = LedgerEntry::prepare_next(key.node_id(), prev, 1_700_000_000_000, body(i));
        prev = Some((entry.seq(), entry.link()));
        unsigned.push(entry);
    }
    let sign = |e: fairgrid_protocol::ledger::UnsignedEntry| Hash32::of(&e.sign(&key).to_bytes());
    let ids: Vec<Hash32> = if parallel {
        unsigned.into_par_iter().map(sign).collect()
    } else {
        unsigned.into_iter().map(sign).collect()
    };
    std::hint::black_box(ids);
    n as f64 / start.elapsed().as_secs_f64()
}

fn best_median(values: &mut [f64], higher_is_better: bool) -> (f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    if higher_is_better {
        values.reverse();
    }
    (values[0], values[values.len() / 2])
}

fn appends(runs: usize, n: u64) {
    println!(
        "## ledger appends ({n} entries per row, {runs} runs, load {})",
        load()
    );
    let serial = signing_only(n.min(50_000), false);
    let parallel = signing_only(n.min(50_000), true);
    println!("| sign only (no storage) | entries/s |");
    println!("|---|---:|");
    println!("| built and signed on one thread | {serial:.0} |");
    println!(
        "| built in order, signed on {} threads | {parallel:.0} |",
        rayon::current_num_threads()
    );
    println!();
    println!(
        "| run | ledger, 256 appenders | mean group | raw sled, batch 256 | ratio | ledger, 1024 appenders | mean group | raw sled, batch 1024 | ratio | load |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut rows: Vec<[f64; 4]> = Vec::new();
    let mut size = 0;
    for run in 0..runs {
        let small = group_commit(n, 256);
        size = small.size;
        let raw_small = raw_sled(n, size, 256);
        let large = group_commit(n, 1024);
        let raw_large = raw_sled(n, size, 1024);
        println!(
            "| {} | {:.0} | {:.0} | {raw_small:.0} | {:.2} | {:.0} | {:.0} | {raw_large:.0} | {:.2} | {} |",
            run + 1,
            small.rate,
            small.group,
            small.rate / raw_small,
            large.rate,
            large.group,
            large.rate / raw_large,
            load()
        );
        rows.push([small.rate, raw_small, large.rate, raw_large]);
    }
    let column = |c: usize| rows.iter().map(|r| r[c]).collect::<Vec<_>>();
    let ratio = |a: usize, b: usize| rows.iter().map(|r| r[a] / r[b]).collect::<Vec<_>>();
    println!("\n({size}-byte entries)\n");
    println!("| what | best | median |");
    println!("|---|---:|---:|");
    for (name, mut values) in [
        ("ledger, 256 appenders (entries/s)", column(0)),
        ("raw sled, batch 256 (entries/s)", column(1)),
        ("ratio ledger / raw sled, 256", ratio(0, 1)),
        ("ledger, 1024 appenders (entries/s)", column(2)),
        ("raw sled, batch 1024 (entries/s)", column(3)),
        ("ratio ledger / raw sled, 1024", ratio(2, 3)),
    ] {
        let (best, median) = best_median(&mut values, true);
        let digits = if name.starts_with("ratio") { 2 } else { 0 };
        println!("| {name} | {best:.digits$} | {median:.digits$} |");
    }
    let per_entry = raw_sled(5_000, size, 1);
    println!("| raw sled insert + flush per entry (5000) | {per_entry:.0} | - |");
}

fn verification(runs: usize, total: u64) {
    println!(
        "\n## verifying a {total}-entry ledger ({runs} runs, load {})",
        load()
    );
    let dir = tempfile::tempdir().unwrap();
    {
        let runtime = runtime();
        let ledger = Ledger::open(dir.path(), Keypair::from_seed(b"bench")).unwrap();
        let start = Instant::now();
        let done = append_many(&runtime, &ledger, total, 256);
        eprintln!(
            "built {done} entries in {:.1} s ({:.0} entries/s)",
            start.elapsed().as_secs_f64(),
            done as f64 / start.elapsed().as_secs_f64()
        );
        runtime.block_on(ledger.close_async()).unwrap();
    }
    let store = LedgerStore::open(dir.path()).unwrap();
    println!("| what | entries | wall s | CPU s | load |");
    println!("|---|---:|---:|---:|---|");
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let mut read = 0u64;
    for stored in store.iter_own() {
        std::hint::black_box(stored.unwrap());
        read += 1;
    }
    println!(
        "| read + decode every entry, one thread, no crypto (storage floor) | {read} | {:.2} | {:.2} | {} |",
        start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
        load()
    );
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for run in 0..runs {
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let report = verify::verify_store(&store).unwrap();
        let wall = start.elapsed().as_secs_f64();
        let used = cpu_seconds() - cpu;
        println!(
            "| verify_store, run {} | {} | {wall:.2} | {used:.2} | {} |",
            run + 1,
            report.own_entries,
            load()
        );
        walls.push(wall);
        cpus.push(used);
    }
    let (best, median) = best_median(&mut walls, false);
    let (cpu_best, cpu_median) = best_median(&mut cpus, false);
    println!(
        "| verify_store best / median | | {best:.2} / {median:.2} | {cpu_best:.2} / {cpu_median:.2} | |"
    );

    // The signature check alone, one thread, on the first 100k entries.
    let sample: Vec<Signed<LedgerEntry>> = store
        .iter_own()
        .take(100_000)
        .map(|s| s.unwrap().signed)
        .collect();
    let n = sample.len() as f64;
    let start = Instant::now();
    fairgrid_protocol::ledger::verify_chain(sample.iter().cloned()).unwrap();
    let chain = start.elapsed().as_secs_f64() / n * 1e6;
    let start = Instant::now();
    for chunk in sample.chunks(2048) {
        let inputs: Vec<Vec<u8>> = chunk.iter().map(|s| s.signing_input()).collect();
        let messages: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let signatures: Vec<ed25519_dalek::Signature> = chunk
            .iter()
            .map(|s| ed25519_dalek::Signature::from_bytes(&s.signature.0))
            .collect();
        let keys = vec![chunk[0].signer.verifying_key().unwrap(); chunk.len()];
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).unwrap();
    }
    let dalek = start.elapsed().as_secs_f64() / n * 1e6;
    println!();
    println!("| one thread, {n} entries in memory | us per entry |");
    println!("|---|---:|");
    println!("| verify_chain (decode, links, same-signer batches of 2048) | {chain:.2} |");
    println!("| ed25519-dalek verify_batch, batches of 2048 (signatures only) | {dalek:.2} |");
}

fn main() {
    let runs = env("LEDGER_BENCH_RUNS", 5).max(1) as usize;
    let n = env("LEDGER_BENCH_APPENDS", 200_000);
    let total = env("LEDGER_BENCH_ENTRIES", 1_000_000);
    #[cfg(target_arch = "x86_64")]
    println!(
        "avx2 {}, avx512ifma {}",
        std::arch::is_x86_feature_detected!("avx2"),
        std::arch::is_x86_feature_detected!("avx512ifma"),
    );
    println!(
        "{} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if n > 0 {
        appends(runs, n);
    }
    if total > 0 {
        verification(runs, total);
    }
}
