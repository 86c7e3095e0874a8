//! Market clearing benchmark: prints tables (run with `cargo bench -p
//! fairgrid-protocol --bench market`).
//!
//! 1. Clearing time for N nodes x M shards with 50 and 2000 owners, split
//!    into the digest (bid root, seed, tie keys), the order (capacities,
//!    owners, sort), the sweep, building the allocation with explicit shard
//!    indices, and the VCG payments; plus the naive reference (a re-clear
//!    per winning owner) where it is cheap enough to run, quoted as a ratio
//!    to the fast payments.
//! 2. The cost of caps: one owner holds 30% of the nodes at a quarter of
//!    the price; alpha from 100% down to 5%.
//! 3. With `-- --digest` only: the digest's parts for 100,000 bids beside
//!    the constructions it replaced or was chosen over (the version 1
//!    Merkle bid root, one hash per node, SipHash) in the same run.

use std::time::{Duration, Instant};

/// CPU time of this thread: unlike the wall clock it does not count the
/// time other processes on the shared machine hold the core.
#[derive(Clone, Copy)]
struct Cpu(Duration);

impl Cpu {
    fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
        Cpu(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
}

impl std::ops::Sub for Cpu {
    type Output = Duration;
    fn sub(self, earlier: Cpu) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

use fairgrid_protocol::fairness::FairnessReport;
use fairgrid_protocol::market::{
    Digest, MarketJob, MarketPolicy, OrderBook, ValidBid, clear_valid, social_cost,
};
use fairgrid_protocol::{Hash32, NodeId, OwnerId, PublicKey, ResourceVec};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn key(tag: &[u8], i: u64) -> PublicKey {
    PublicKey(Hash32::of_parts(&[tag, &i.to_le_bytes()]).0)
}

fn bid(i: u64, owner: u64, ask: u64, units: u64) -> ValidBid {
    ValidBid {
        bid_id: Hash32::of_parts(&[b"bench-bid", &i.to_le_bytes()]),
        node: NodeId(key(b"node", i)),
        owner: OwnerId(key(b"owner", owner)),
        ask,
        capacity: ResourceVec {
            cpu_milli: units * 1000,
            mem_mib: units * 512,
            ..Default::default()
        },
        speed_milli: 0,
    }
}

fn job(m: u32, limit: u64) -> MarketJob {
    MarketJob {
        job_id: Hash32::of(b"bench-job"),
        shards: (0..m).collect(),
        demand_per_shard: ResourceVec {
            cpu_milli: 1000,
            mem_mib: 512,
            ..Default::default()
        },
        limit_price: limit,
        attempt: 0,
        prev_allocation: Hash32::ZERO,
    }
}

/// N nodes with 1..=32 shards of capacity each, asks 100..=1100, owners
/// skewed (owner = floor(O u^2)) so the caps of the big ones bind.
fn market(n: u64, owners: u64, seed: u64) -> Vec<ValidBid> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let u = rng.next() as f64 / u64::MAX as f64;
            let owner = ((owners as f64) * u * u) as u64;
            bid(
                i,
                owner.min(owners - 1),
                rng.range(100, 1100),
                rng.range(1, 32),
            )
        })
        .collect()
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn clearing_table(only_largest: bool) {
    println!("## Clearing time (median of the runs, thread CPU time; ms)\n");
    println!(
        "| nodes | shards | owners | winners | digest | order | sweep | allocation | sort+sweep (order+sweep+allocation) | clear w/o payments | payments | total | total, wall clock | naive payments | naive / fast |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let policy = MarketPolicy {
        alpha_ppm: 100_000,
        beta_ppm: 1_000_000,
        ..Default::default()
    };
    let (sizes, shards): (&[u64], &[u32]) = if only_largest {
        (&[100_000], &[1_000_000])
    } else {
        (&[1_000, 10_000, 100_000], &[10_000, 100_000, 1_000_000])
    };
    for &n in sizes {
        for &m in shards {
            for owners in [50u64, 2000] {
                let owners = owners.min(n);
                let bids = market(n, owners, n ^ m as u64 ^ owners);
                let job = job(m, 1100);
                let runs = if n * m as u64 >= 10_000_000_000 {
                    7
                } else {
                    15
                };
                let (mut digest_t, mut book_t, mut sweep_t, mut alloc_t, mut pay_t) =
                    (vec![], vec![], vec![], vec![], vec![]);
                let mut winners = 0;
                let mut wall_t = Vec::new();
                for _ in 0..runs {
                    let wall = Instant::now();
                    let start = Cpu::now();
                    let digest = Digest::new(&job.prev_allocation, &bids);
                    let t0 = Cpu::now();
                    let book = OrderBook::with_digest(&job, &bids, &policy, digest).unwrap();
                    let t1 = Cpu::now();
                    let sweep = book.sweep();
                    let t2 = Cpu::now();
                    let payments = book.payments(&sweep);
                    let t3 = Cpu::now();
                    let allocation = book.allocation(&sweep, payments, 0);
                    let t4 = Cpu::now();
                    wall_t.push(wall.elapsed());
                    winners = allocation.payments.len();
                    digest_t.push(t0 - start);
                    book_t.push(t1 - t0);
                    sweep_t.push(t2 - t1);
                    pay_t.push(t3 - t2);
                    alloc_t.push(t4 - t3);
                    std::hint::black_box(allocation);
                }
                let d = median(digest_t);
                let (b, s, a, p) = (
                    median(book_t),
                    median(sweep_t),
                    median(alloc_t),
                    median(pay_t),
                );
                let (naive, ratio) = if !only_largest {
                    let t = naive_payments(&job, &bids, &policy);
                    (ms(t), format!("{:.0}x", t.as_secs_f64() / p.as_secs_f64()))
                } else {
                    ("not run".into(), "-".into())
                };
                println!(
                    "| {n} | {m} | {owners} | {winners} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {naive} | {ratio} |",
                    ms(d),
                    ms(b),
                    ms(s),
                    ms(a),
                    ms(b + s + a),
                    ms(d + b + s + a),
                    ms(p),
                    ms(d + b + s + a + p),
                    ms(median(wall_t))
                );
            }
        }
    }
}

/// The reference: Cost(without o) by a re-clear (digest, book, sweep) per
/// winning owner; returns the time for all owners.
fn naive_payments(job: &MarketJob, bids: &[ValidBid], policy: &MarketPolicy) -> Duration {
    let allocation = clear_valid(job, bids, policy, 0).unwrap();
    let start = Instant::now();
    for p in &allocation.payments {
        let others: Vec<ValidBid> = bids
            .iter()
            .filter(|b| b.owner != p.owner)
            .cloned()
            .collect();
        let book = OrderBook::new(job, &others, policy).unwrap();
        std::hint::black_box(book.sweep());
    }
    start.elapsed()
}

fn cost_of_caps_table() {
    // 10,000 nodes of 8 shards; owner 0 holds 30% of them and asks ~100;
    // 70% belong to 100 other owners asking ~400. 40,000 shards.
    let mut rng = Rng(42);
    let n = 10_000u64;
    let bids: Vec<ValidBid> = (0..n)
        .map(|i| {
            if i < n * 3 / 10 {
                bid(i, 0, rng.range(90, 110), 8)
            } else {
                bid(i, 1 + rng.range(0, 99), rng.range(360, 440), 8)
            }
        })
        .collect();
    let job = job(40_000, 1000);
    println!(
        "\n## Cost of caps (10,000 nodes x 8 shards, 40,000 shards; owner A: 30% of nodes at ~1/4 of the price)\n"
    );
    println!(
        "| alpha | A's shards | A's share | total cost | cost vs alpha=1 | payments | HHI | Nakamoto 50% | Nakamoto 33% | shortfall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut base = None;
    for alpha_ppm in [1_000_000u32, 300_000, 200_000, 100_000, 50_000] {
        let policy = MarketPolicy {
            alpha_ppm,
            beta_ppm: 1_000_000,
            ..Default::default()
        };
        let allocation = clear_valid(&job, &bids, &policy, 0).unwrap();
        let a = OwnerId(key(b"owner", 0));
        let a_shards = allocation
            .payments
            .iter()
            .find(|p| p.owner == a)
            .map_or(0, |p| p.shards);
        let cost = social_cost(&allocation, job.limit_price);
        let base_cost = *base.get_or_insert(cost);
        let fairness = FairnessReport::of_allocation(&allocation);
        println!(
            "| {:.2} | {a_shards} | {:.1}% | {cost} | {:+.1}% | {} | {} | {} | {} | {} |",
            alpha_ppm as f64 / 1e6,
            a_shards as f64 * 100.0 / allocation.assigned_shards().max(1) as f64,
            (cost as f64 / base_cost as f64 - 1.0) * 100.0,
            allocation.total_payment(),
            fairness.hhi,
            fairness.nakamoto_50,
            fairness.nakamoto_33,
            allocation.shortfall
        );
    }
}

/// Where the digest's time goes for 100k nodes, and the constructions it
/// replaced or was chosen over (`-- --digest`). One full clearing runs
/// first: fresh memory costs a page fault per 4 KiB on this VM, and glibc
/// keeps freed memory for reuse only once larger blocks have been freed,
/// as they are in the clearing table's loop.
fn digest_breakdown() {
    use fairgrid_protocol::market::{bid_root_of, hash_pair, node_ranks, tie_keys};
    let bids = market(100_000, 2000, 1);
    let root = bid_root_of(&bids);
    let seed = hash_pair(&Hash32::ZERO.0, &root.0);
    let policy = MarketPolicy {
        alpha_ppm: 100_000,
        beta_ppm: 1_000_000,
        ..Default::default()
    };
    std::hint::black_box(clear_valid(&job(1_000_000, 1100), &bids, &policy, 0).unwrap());
    let time = |f: &mut dyn FnMut()| {
        median(
            (0..15)
                .map(|_| {
                    let t = Cpu::now();
                    f();
                    Cpu::now() - t
                })
                .collect(),
        )
    };
    println!("\n## Digest of 100,000 bids (median of 15, thread CPU time; ms)\n");
    println!("| part | ms |");
    println!("|---|---|");
    let t = time(&mut || {
        std::hint::black_box(Digest::new(&Hash32::ZERO, &bids));
    });
    println!("| whole digest (`Digest::new`) | {} |", ms(t));
    let t = time(&mut || {
        std::hint::black_box(bid_root_of(&bids));
    });
    println!(
        "| bid root: sort + BLAKE3 over the concatenated ids | {} |",
        ms(t)
    );
    let t = time(&mut || {
        std::hint::black_box(merkle_root_v1(&bids));
    });
    println!(
        "| bid root, before (version 1): sort + Merkle tree of one hash per leaf and inner node | {} |",
        ms(t)
    );
    let t = time(&mut || {
        let (ranks, distinct) = node_ranks(&bids);
        let keys = tie_keys(&seed, distinct);
        let ties: Vec<u64> = ranks.iter().map(|&r| keys[r as usize]).collect();
        std::hint::black_box(ties);
    });
    println!(
        "| tie keys, chosen: sort by node key + one seed-keyed XOF, 8 bytes at the rank | {} |",
        ms(t)
    );
    let t = time(&mut || {
        std::hint::black_box(node_ranks(&bids));
    });
    println!(
        "| (of which the sort by node key, also needed to find a node that bid twice) | {} |",
        ms(t)
    );
    let t = time(&mut || {
        let ties: Vec<Hash32> = bids
            .iter()
            .map(|b| hash_pair(&seed.0, &b.node.0.0))
            .collect();
        std::hint::black_box(ties);
    });
    println!(
        "| tie keys, before: BLAKE3(seed \\|\\| node key) per node | {} |",
        ms(t)
    );
    let t = time(&mut || {
        let ties: Vec<u64> = bids
            .iter()
            .map(|b| {
                let h = blake3::keyed_hash(&seed.0, &b.node.0.0);
                u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap())
            })
            .collect();
        std::hint::black_box(ties);
    });
    println!(
        "| tie keys, alternative: BLAKE3 keyed by the seed, per node | {} |",
        ms(t)
    );
    let t = time(&mut || {
        #[allow(deprecated)]
        let ties: Vec<u64> = bids
            .iter()
            .map(|b| {
                use std::hash::Hasher;
                let k =
                    |r: std::ops::Range<usize>| u64::from_le_bytes(seed.0[r].try_into().unwrap());
                let mut h = std::hash::SipHasher::new_with_keys(k(0..8), k(8..16));
                h.write(&b.node.0.0);
                h.finish()
            })
            .collect();
        std::hint::black_box(ties);
    });
    println!(
        "| tie keys, alternative: SipHash-2-4 keyed by the seed, per node (64-bit PRF) | {} |",
        ms(t)
    );
}

/// The version 1 bid root, for comparison: a binary Merkle tree over the
/// sorted ids, leaves `of_parts(["leaf", id])`, inner nodes
/// `of_parts(["node", left, right])`, an odd node carried up.
fn merkle_root_v1(bids: &[ValidBid]) -> Hash32 {
    let mut ids: Vec<Hash32> = bids.iter().map(|b| b.bid_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut level: Vec<Hash32> = ids
        .iter()
        .map(|id| Hash32::of_parts(&[b"leaf", &id.0]))
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => Hash32::of_parts(&[b"node", &left.0, &right.0]),
                _ => pair[0],
            })
            .collect();
    }
    level.first().copied().unwrap_or(Hash32::ZERO)
}

fn main() {
    if std::env::args().any(|a| a == "--digest") {
        digest_breakdown();
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // an unoptimised run of these tables would take minutes: skip it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("market bench: run with `cargo bench -p fairgrid-protocol --bench market`");
        return;
    }
    if std::env::args().any(|a| a == "--caps-only") {
        cost_of_caps_table();
        return;
    }
    if std::env::args().any(|a| a == "--largest") {
        clearing_table(true);
        return;
    }
    clearing_table(false);
    cost_of_caps_table();
}
