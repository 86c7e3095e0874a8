//! `clear` over signed bids: every validation rule, one bid per node,
//! shuffle invariance with real signatures, and `verify` naming the first
//! difference.

use fairgrid_protocol::cert::{OwnerCertificate, TrustPolicy};
use fairgrid_protocol::market::{
    MarketError, MarketJob, MarketPolicy, clear, validate_bids, verify,
};
use fairgrid_protocol::messages::{ALGO_VERSION, Bid};
use fairgrid_protocol::{Hash32, Keypair, ResourceVec, Signed};

const NOW: u64 = 1_000;

fn job() -> MarketJob {
    MarketJob {
        job_id: Hash32::of(b"job"),
        shards: (0..20).collect(),
        demand_per_shard: ResourceVec {
            cpu_milli: 1000,
            ..Default::default()
        },
        limit_price: 100,
        attempt: 0,
        prev_allocation: Hash32::ZERO,
    }
}

fn policy() -> MarketPolicy {
    MarketPolicy {
        alpha_ppm: 500_000,
        beta_ppm: 1_000_000,
        ..Default::default()
    }
}

fn cpu(cores: u64) -> ResourceVec {
    ResourceVec {
        cpu_milli: cores * 1000,
        ..Default::default()
    }
}

fn cert(owner: &Keypair, node: &Keypair, max: ResourceVec, until: u64) -> Signed<OwnerCertificate> {
    Signed::sign(
        owner,
        &OwnerCertificate {
            node: node.node_id(),
            owner: owner.owner_id(),
            label: "univ".into(),
            max_capacity: max,
            valid_from: 0,
            valid_until: until,
            serial: 1,
        },
    )
}

fn bid(
    node: &Keypair,
    cert: Option<Signed<OwnerCertificate>>,
    ask: u64,
    cores: u64,
    nonce: u64,
) -> Bid {
    Bid {
        job_id: job().job_id,
        node: node.node_id(),
        owner_cert: cert,
        ask,
        capacity: cpu(cores),
        nonce,
        issued_at: NOW,
        speed_milli: 0,
    }
}

#[test]
fn each_validation_rule_rejects_with_the_bid_index() {
    let owner = Keypair::from_seed(b"owner");
    let nodes: Vec<Keypair> = (0..8u8).map(|i| Keypair::from_seed(&[i])).collect();
    let good = |i: usize, ask| Signed::sign(&nodes[i], &bid(&nodes[i], None, ask, 4, 0));
    let mut tampered = good(1, 10);
    tampered.payload[40] ^= 1;
    let mut wrong_job = bid(&nodes[3], None, 10, 4, 0);
    wrong_job.job_id = Hash32::of(b"other");
    let bids = vec![
        good(0, 10),
        tampered,
        Signed::sign(&nodes[0], &bid(&nodes[2], None, 10, 4, 0)), // signed by someone else
        Signed::sign(&nodes[3], &wrong_job),
        Signed::sign(
            &nodes[4],
            &bid(
                &nodes[4],
                Some(cert(&owner, &nodes[4], cpu(8), 500)),
                10,
                4,
                0,
            ),
        ), // expired
        good(5, 101),                                             // above the limit
        Signed::sign(&nodes[0], &bid(&nodes[0], None, 20, 4, 1)), // higher nonce replaces bids[0]
    ];
    let checked = validate_bids(&job(), &bids, &TrustPolicy::default(), NOW);
    let reasons: Vec<String> = checked.rejected.iter().map(|e| e.to_string()).collect();
    assert!(
        matches!(
            checked.rejected[0],
            MarketError::Superseded { index: 0, by: 6 }
        ),
        "{reasons:?}"
    );
    assert!(matches!(
        checked.rejected[1],
        MarketError::BidEnvelope { index: 1, .. }
    ));
    assert!(matches!(
        checked.rejected[2],
        MarketError::BidSignerMismatch { index: 2, .. }
    ));
    assert!(matches!(
        checked.rejected[3],
        MarketError::BidWrongJob { index: 3, .. }
    ));
    assert!(matches!(
        checked.rejected[4],
        MarketError::BidCertificate { index: 4, .. }
    ));
    assert!(matches!(
        checked.rejected[5],
        MarketError::AskAboveLimit {
            index: 5,
            ask: 101,
            limit: 100
        }
    ));
    assert_eq!(checked.rejected.len(), 6);
    assert_eq!(checked.valid.len(), 1);
    assert_eq!(checked.valid[0].ask, 20);
    assert_eq!(checked.valid[0].bid_id, bids[6].id());
}

#[test]
fn certificates_group_nodes_by_owner_and_bound_capacity() {
    let owner = Keypair::from_seed(b"big owner");
    let nodes: Vec<Keypair> = (0..4u8).map(|i| Keypair::from_seed(&[100 + i])).collect();
    let mut bids: Vec<Signed<Bid>> = nodes[..3]
        .iter()
        .map(|n| Signed::sign(n, &bid(n, Some(cert(&owner, n, cpu(3), 10_000)), 1, 16, 0)))
        .collect();
    bids.push(Signed::sign(&nodes[3], &bid(&nodes[3], None, 50, 16, 0)));
    let allocation = clear(&job(), &bids, &TrustPolicy::default(), &policy(), NOW).unwrap();
    // The owner's three nodes hold 3 shards each (certificate bound), and
    // together the owner is capped at alpha * 20 = 10, though cheapest.
    let owned: usize = allocation
        .assignments
        .iter()
        .filter(|a| a.owner == owner.owner_id())
        .map(|a| a.shards.len())
        .sum();
    assert_eq!(owned, 9);
    assert!(
        allocation
            .assignments
            .iter()
            .all(|a| a.owner != owner.owner_id() || a.shards.len() <= 3)
    );
    assert_eq!(allocation.shards_of(&nodes[3].node_id()).len(), 10);
    assert_eq!(allocation.shortfall, 1);

    // Consortium mode without the owner on the allowlist: its nodes are out.
    let trust = TrustPolicy {
        consortium: true,
        ..Default::default()
    };
    let closed = clear(&job(), &bids, &trust, &policy(), NOW).unwrap();
    assert!(closed.assignments.is_empty());
    assert_eq!(closed.shortfall, 20);
}

#[test]
fn signed_clearing_ignores_order_and_verify_names_differences() {
    let nodes: Vec<Keypair> = (0..6u8).map(|i| Keypair::from_seed(&[200 + i])).collect();
    let bids: Vec<Signed<Bid>> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Signed::sign(n, &bid(n, None, 10 + (i as u64 % 2), 3 + i as u64, 0)))
        .collect();
    let trust = TrustPolicy::default();
    let allocation = clear(&job(), &bids, &trust, &policy(), NOW).unwrap();
    let mut reversed = bids.clone();
    reversed.reverse();
    assert_eq!(
        clear(&job(), &reversed, &trust, &policy(), NOW).unwrap(),
        allocation
    );
    verify(&allocation, &job(), &bids, &trust).unwrap();

    let expect_field = |forged: &fairgrid_protocol::messages::Allocation, field: &str| match verify(
        forged,
        &job(),
        &bids,
        &trust,
    ) {
        Err(MarketError::Mismatch { field: got, .. }) => assert_eq!(got, field),
        other => panic!("expected a mismatch at {field}, got {other:?}"),
    };
    let mut forged = allocation.clone();
    forged.assignments[1].shards.push(999);
    expect_field(&forged, "assignments[1].shards");
    let mut forged = allocation.clone();
    forged.assignments.swap(0, 1);
    expect_field(&forged, "assignments[0].node");
    let mut forged = allocation.clone();
    forged.shortfall += 1;
    expect_field(&forged, "shortfall");
    let mut forged = allocation.clone();
    forged.seed = Hash32::of(b"grind");
    expect_field(&forged, "seed");
    let mut forged = allocation.clone();
    forged.payments.pop();
    expect_field(&forged, "payments.len");
    // Recorded policy is what verify recomputes with: a forged alpha changes
    // the outcome and is caught.
    let mut forged = allocation.clone();
    forged.policy.alpha_ppm = 100_000;
    assert!(verify(&forged, &job(), &bids, &trust).is_err());
    // Dropping a bid from the set changes the bid root.
    match verify(&allocation, &job(), &bids[1..], &trust) {
        Err(MarketError::Mismatch { field, .. }) => assert_eq!(field, "bid_root"),
        other => panic!("{other:?}"),
    }
    let mut future = allocation.clone();
    future.algo_version = ALGO_VERSION + 1;
    assert!(matches!(
        verify(&future, &job(), &bids, &trust),
        Err(MarketError::UnsupportedAlgo { .. })
    ));
}

#[test]
fn bad_jobs_and_policies_are_refused_by_field() {
    let trust = TrustPolicy::default();
    let mut unsorted = job();
    unsorted.shards = vec![3, 1, 2];
    assert!(matches!(
        clear(&unsorted, &[], &trust, &policy(), NOW),
        Err(MarketError::InvalidJob {
            field: "shards",
            ..
        })
    ));
    let mut empty = job();
    empty.shards.clear();
    assert!(matches!(
        clear(&empty, &[], &trust, &policy(), NOW),
        Err(MarketError::InvalidJob {
            field: "shards",
            ..
        })
    ));
    let mut rich = job();
    rich.limit_price = u64::MAX;
    assert!(matches!(
        clear(&rich, &[], &trust, &policy(), NOW),
        Err(MarketError::InvalidJob {
            field: "limit_price",
            ..
        })
    ));
    let mut no_alpha = policy();
    no_alpha.alpha_ppm = 0;
    assert!(matches!(
        clear(&job(), &[], &trust, &no_alpha, NOW),
        Err(MarketError::InvalidPolicy {
            field: "alpha_ppm",
            ..
        })
    ));
    let mut window = policy();
    window
        .window
        .by_owner
        .insert(Keypair::from_seed(b"o").owner_id(), 5);
    assert!(matches!(
        clear(&job(), &[], &trust, &window, NOW),
        Err(MarketError::InvalidPolicy {
            field: "window.total",
            ..
        })
    ));
    // No bids at all: everything is shortfall, nothing is an error.
    let none = clear(&job(), &[], &trust, &policy(), NOW).unwrap();
    assert_eq!(none.shortfall, 20);
}
