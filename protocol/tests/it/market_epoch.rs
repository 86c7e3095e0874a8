//! Several jobs in one epoch: weighted-DRF admission order, shared node
//! capacity, determinism and verification.

use crate::common;

use common::{bid, job, node};
use fairgrid_protocol::Hash32;
use fairgrid_protocol::market::{EpochJob, EpochPolicy, MarketError, admit_epoch, verify_epoch};
use fairgrid_protocol::messages::{Allocation, ShortfallPolicy};

fn epoch_job(
    name: &[u8],
    submitter: u64,
    weight: u32,
    shards: u32,
    nodes: std::ops::Range<u64>,
) -> EpochJob {
    let mut j = job(shards, 100);
    j.job_id = Hash32::of(name);
    EpochJob {
        job: j,
        submitter: node(1_000_000 + submitter),
        weight,
        alpha_ppm: 1_000_000,
        on_shortfall: ShortfallPolicy::RunWithFewer,
        bids: nodes.map(|i| bid(i, i % 3, 10, 8)).collect(),
    }
}

fn placed(a: &Allocation) -> u32 {
    a.assigned_shards()
}

#[test]
fn capacity_is_shared_across_admissions() {
    // Ten nodes of 8 shards: 80 in all. Two jobs of 60 each.
    let jobs = vec![
        epoch_job(b"a", 1, 1, 60, 0..10),
        epoch_job(b"b", 2, 1, 60, 0..10),
    ];
    let allocations = admit_epoch(
        &jobs,
        &EpochPolicy {
            beta_ppm: 1_000_000,
            ..Default::default()
        },
        7,
    )
    .unwrap();
    assert_eq!(allocations.len(), 2);
    assert_eq!(placed(&allocations[0]), 60);
    assert_eq!(placed(&allocations[1]), 20);
    assert_eq!(allocations[1].shortfall, 40);
    // No node holds more than its 8 shards over the epoch.
    for i in 0..10 {
        let n = node(i);
        let total: usize = allocations.iter().map(|a| a.shards_of(&n).len()).sum();
        assert!(total <= 8);
    }
    verify_epoch(
        &allocations,
        &jobs,
        &EpochPolicy {
            beta_ppm: 1_000_000,
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn the_smallest_weighted_dominant_share_goes_next() {
    // Submitter 1 has two jobs; submitter 2 one. After 1's first job, 2 has
    // the smaller share and goes before 1's second job.
    let jobs = vec![
        epoch_job(b"1a", 1, 1, 10, 0..20),
        epoch_job(b"1b", 1, 1, 10, 0..20),
        epoch_job(b"2a", 2, 1, 10, 0..20),
    ];
    let policy = EpochPolicy {
        beta_ppm: 1_000_000,
        ..Default::default()
    };
    let order: Vec<Hash32> = admit_epoch(&jobs, &policy, 0)
        .unwrap()
        .iter()
        .map(|a| a.job_id)
        .collect();
    let first = order[0];
    assert!(first == Hash32::of(b"1a") || first == Hash32::of(b"2a"));
    let second = if first == Hash32::of(b"1a") {
        Hash32::of(b"2a")
    } else {
        Hash32::of(b"1a")
    };
    assert_eq!(order, vec![first, second, Hash32::of(b"1b")]);
}

#[test]
fn weights_scale_the_share_exactly_like_a_reference_model() {
    // Submitter 1 (weight 3) has four jobs, submitter 2 (weight 1) three;
    // every job places 10 one-core shards, so a share is 10 * jobs / weight
    // (over the same total), compared exactly; ties by H(seed || submitter).
    let mut jobs = Vec::new();
    for i in 0..4u8 {
        jobs.push(epoch_job(&[b'a', i], 1, 3, 10, 0..40));
    }
    for i in 0..3u8 {
        jobs.push(epoch_job(&[b'b', i], 2, 1, 10, 0..40));
    }
    let policy = EpochPolicy {
        beta_ppm: 1_000_000,
        seed: Hash32::of(b"epoch"),
        ..Default::default()
    };
    let got: Vec<Hash32> = admit_epoch(&jobs, &policy, 0)
        .unwrap()
        .iter()
        .map(|a| a.job_id)
        .collect();

    let tie =
        |s: u64| fairgrid_protocol::market::hash_pair(&policy.seed.0, &node(1_000_000 + s).0.0);
    let (mut done, mut expected) = ([0u64; 2], Vec::new());
    let (weight, count) = ([3u64, 1], [4u64, 3]);
    while expected.len() < 7 {
        let open: Vec<usize> = (0..2).filter(|&s| done[s] < count[s]).collect();
        let pick = *open
            .iter()
            .min_by(|&&a, &&b| {
                (done[a] * weight[b])
                    .cmp(&(done[b] * weight[a]))
                    .then(tie(a as u64 + 1).cmp(&tie(b as u64 + 1)))
            })
            .unwrap();
        expected.push(Hash32::of(&[
            if pick == 0 { b'a' } else { b'b' },
            done[pick] as u8,
        ]));
        done[pick] += 1;
    }
    assert_eq!(got, expected);
}

#[test]
fn ties_follow_the_seed_and_the_result_is_deterministic() {
    let jobs = vec![
        epoch_job(b"x", 1, 1, 5, 0..6),
        epoch_job(b"y", 2, 1, 5, 0..6),
    ];
    let mut firsts = std::collections::BTreeSet::new();
    for s in 0..16u8 {
        let policy = EpochPolicy {
            beta_ppm: 1_000_000,
            seed: Hash32::of(&[s]),
            ..Default::default()
        };
        let once = admit_epoch(&jobs, &policy, 0).unwrap();
        assert_eq!(once, admit_epoch(&jobs, &policy, 0).unwrap());
        firsts.insert(once[0].job_id);
    }
    // Both submitters win the tie under some seed.
    assert_eq!(firsts.len(), 2);
}

#[test]
fn the_network_cap_holds_across_the_epoch() {
    let mut a = epoch_job(b"a", 1, 1, 30, 0..10);
    let mut b = epoch_job(b"b", 2, 1, 30, 0..10);
    // One owner holds every node.
    for j in [&mut a, &mut b] {
        for bid in &mut j.bids {
            bid.owner = common::owner(0);
        }
    }
    let policy = EpochPolicy {
        beta_ppm: 500_000,
        window: Default::default(),
        seed: Hash32::ZERO,
    };
    let allocations = admit_epoch(&[a, b], &policy, 0).unwrap();
    // beta = 50%: the first job gives the owner floor(0.5 * 30) = 15; the
    // window then holds 15 (all the owner's), so the second allows
    // floor(0.5 * (15 + 30)) - 15 = 7.
    assert_eq!(placed(&allocations[0]), 15);
    assert_eq!(placed(&allocations[1]), 7);
    assert_eq!(allocations[1].policy.window.total, 15);
    let mut bad = allocations.clone();
    bad[1].shortfall += 1;
    assert!(matches!(
        verify_epoch(
            &bad,
            &[
                epoch_job(b"a", 1, 1, 30, 0..10),
                epoch_job(b"b", 2, 1, 30, 0..10)
            ],
            &policy
        ),
        Err(MarketError::Mismatch { .. })
    ));
}

#[test]
fn a_zero_weight_is_refused() {
    let jobs = vec![epoch_job(b"z", 1, 0, 5, 0..3)];
    assert!(admit_epoch(&jobs, &EpochPolicy::default(), 0).is_err());
}

#[test]
fn a_job_that_waits_for_all_its_shards_takes_nothing_when_they_do_not_fit() {
    // Ten nodes of 8 shards: 80 in all. 50 + 40 do not fit; 50 + 20 do.
    let mut jobs = vec![
        epoch_job(b"a", 1, 1, 50, 0..10),
        epoch_job(b"b", 2, 1, 40, 0..10),
        epoch_job(b"c", 2, 1, 20, 0..10),
    ];
    for j in &mut jobs {
        j.on_shortfall = ShortfallPolicy::Wait;
    }
    // A tie-break seed under which submitter 1 goes first.
    let policy = (0u8..64)
        .map(|i| EpochPolicy {
            beta_ppm: 1_000_000,
            seed: Hash32::of(&[i]),
            ..Default::default()
        })
        .find(|p| admit_epoch(&jobs, p, 0).unwrap()[0].job_id == Hash32::of(b"a"))
        .unwrap();
    let allocations = admit_epoch(&jobs, &policy, 0).unwrap();
    let admitted: Vec<(Hash32, u32)> = allocations.iter().map(|a| (a.job_id, placed(a))).collect();
    // b waits; its capacity goes to c, submitter 2's next job.
    assert_eq!(
        admitted,
        vec![(Hash32::of(b"a"), 50), (Hash32::of(b"c"), 20)]
    );
    verify_epoch(&allocations, &jobs, &policy).unwrap();
    // Running with fewer, b takes the 30 left and c nothing.
    jobs[1].on_shortfall = ShortfallPolicy::RunWithFewer;
    let allocations = admit_epoch(&jobs, &policy, 0).unwrap();
    assert_eq!(placed(&allocations[1]), 30);
    assert_eq!(allocations[1].shortfall, 10);
}
