use std::collections::BTreeMap;

use fairgrid_protocol::messages::Compression;
use fairgrid_protocol::{Keypair, ResourceVec, Signed};
use rand::{Rng, SeedableRng};

use super::super::policy::{self, hold};
use super::super::{WorkerJob, WorkerRecord};
use super::*;
use crate::config::WorkerConfig;
use crate::jobs::testing::spec_with;

/// Room for four shards of the sample spec by CPU (100 milli each).
fn offer() -> ResourceVec {
    ResourceVec {
        cpu_milli: 400,
        mem_mib: 4096,
        gpu_milli: 0,
        gpu_mem_mib: 0,
    }
}

fn job(seed: &str) -> Arc<WorkerJob> {
    let key = Keypair::from_seed(seed.as_bytes());
    let spec = spec_with(&key, 8, Compression::Int8 { block: 256 });
    let record = WorkerRecord {
        spec: Signed::sign(&key, &spec),
        nonce: 0,
        allocations: BTreeMap::new(),
        finished: false,
    };
    Arc::new(WorkerJob::new(record, spec))
}

fn bid(working: &Working, job: &Arc<WorkerJob>) -> Result<Terms, String> {
    let config = WorkerConfig::default();
    working.reserve_new(Arc::clone(job), offer(), |free, active| {
        policy::decide(&config, free, 0, active, false, &job.spec)
    })
}

#[test]
fn a_second_job_bids_only_with_what_the_first_leaves_free() {
    let working = Working::new(4);
    let (a, b) = (job("a"), job("b"));
    let terms = bid(&working, &a).unwrap();
    // The bid can win four shards (CPU): the job holds all four.
    assert_eq!(terms.hold, hold(&a.spec, 4));
    assert_eq!(working.held().cpu_milli, 400);
    let refused = bid(&working, &b).unwrap_err();
    assert!(refused.contains("cannot hold one shard"), "{refused}");
    assert!(working.get(&b.id).is_none());

    // A's allocation gives it one shard: the other three are free again.
    working.hold_for(&a, offer(), hold(&a.spec, 1)).unwrap();
    let terms = bid(&working, &b).unwrap();
    assert_eq!(terms.hold, hold(&b.spec, 3));
    assert_eq!(terms.capacity.units_of(&b.spec.demand_per_shard), 3);
    assert!(fits(working.held(), offer()));

    // A re-clearing that would give A two shards finds no room left.
    let room = working.hold_for(&a, offer(), hold(&a.spec, 2)).unwrap_err();
    assert_eq!(room.cpu_milli, 100);
    assert_eq!(a.hold(), hold(&a.spec, 1));
    // Once B leaves, it can.
    working.remove(&b.id);
    working.hold_for(&a, offer(), hold(&a.spec, 2)).unwrap();
}

#[test]
fn a_job_that_won_nothing_stands_by_without_counting_against_max_jobs() {
    let working = Working::new(1);
    let (a, b) = (job("a"), job("b"));
    bid(&working, &a).unwrap();
    assert!(bid(&working, &b).unwrap_err().contains("worker.max_jobs"));
    working
        .hold_for(&a, offer(), ResourceVec::default())
        .unwrap();
    bid(&working, &b).unwrap();
    assert_eq!(working.active(), 2);
}

#[test]
fn bidding_again_reserves_out_of_its_own_hold_and_the_free_rest() {
    let working = Working::new(4);
    let a = job("a");
    bid(&working, &a).unwrap();
    let config = WorkerConfig::default();
    let terms = working
        .reserve_again(&a, offer(), |free, others| {
            assert_eq!(others, 0);
            policy::decide(&config, free, 0, others, false, &a.spec)
        })
        .unwrap();
    assert_eq!(terms.hold, hold(&a.spec, 4));
}

/// Any interleaving of bids, allocations (more or fewer shards) and jobs
/// leaving keeps the node's holds within its offer.
#[test]
fn holds_never_add_up_to_more_than_the_offer() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for _ in 0..200 {
        let working = Working::new(3);
        let jobs: Vec<Arc<WorkerJob>> = (0..5).map(|i| job(&format!("j{i}"))).collect();
        for _ in 0..40 {
            let j = &jobs[rng.random_range(0..jobs.len())];
            match rng.random_range(0..3) {
                0 => {
                    let _ = bid(&working, j);
                }
                1 if working.get(&j.id).is_some() => {
                    let shards = rng.random_range(0..=8);
                    let _ = working.hold_for(j, offer(), hold(&j.spec, shards));
                }
                _ => working.remove(&j.id),
            }
            assert!(fits(working.held(), offer()), "{:?}", working.held());
        }
    }
}

#[test]
fn waiting_specs_are_kept_once_and_bounded() {
    let working = Working::new(1);
    let a = job("a");
    working.wait_for_capacity(a.signed_spec.clone());
    working.wait_for_capacity(a.signed_spec.clone());
    assert_eq!(working.take_waiting().len(), 1);
    assert!(working.take_waiting().is_empty());
    for i in 0..MAX_WAITING + 5 {
        working.wait_for_capacity(job(&format!("w{i}")).signed_spec.clone());
    }
    let kept = working.take_waiting();
    assert_eq!(kept.len(), MAX_WAITING);
    // The oldest were dropped.
    assert_eq!(kept[0].id(), job("w5").signed_spec.id());
}
