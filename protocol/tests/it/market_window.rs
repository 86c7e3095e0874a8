//! The network window: notices prove whose shards they count, the book
//! keeps each job's latest allocation from its first coordinator, and a
//! recorded window that hides usage a node knows is refused.

use fairgrid_protocol::cert::{OwnerCertificate, TrustPolicy};
use fairgrid_protocol::market::window::{Inserted, WindowBook};
use fairgrid_protocol::market::{
    AllocationNotice, MarketJob, MarketPolicy, WindowError, WindowUsage, check_recorded, clear,
    owner_cap,
};
use fairgrid_protocol::messages::{Allocation, Bid};
use fairgrid_protocol::{Hash32, Keypair, OwnerId, ResourceVec, Signed};

const NOW: u64 = 100_000_000;
const HOUR: u64 = 3_600_000;

fn cpu(cores: u64) -> ResourceVec {
    ResourceVec {
        cpu_milli: cores * 1000,
        ..Default::default()
    }
}

fn market_job(name: &str) -> MarketJob {
    MarketJob {
        job_id: Hash32::of(name.as_bytes()),
        shards: (0..8).collect(),
        demand_per_shard: cpu(1),
        limit_price: 100,
        attempt: 0,
        prev_allocation: Hash32::ZERO,
    }
}

fn cert(owner: &Keypair, node: &Keypair) -> Signed<OwnerCertificate> {
    Signed::sign(
        owner,
        &OwnerCertificate {
            node: node.node_id(),
            owner: owner.owner_id(),
            label: "univ".into(),
            max_capacity: cpu(64),
            valid_from: 0,
            valid_until: u64::MAX,
            serial: 1,
        },
    )
}

/// A job cleared among `nodes` (node 0 and 1 certified by `owner`) with
/// alpha 100%: returns the signed allocation, the decoded one, the bids.
fn cleared(
    name: &str,
    coordinator: &Keypair,
    owner: &Keypair,
    nodes: &[Keypair],
) -> (Signed<Allocation>, Allocation, Vec<Signed<Bid>>) {
    let job = market_job(name);
    let bids: Vec<Signed<Bid>> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let bid = Bid {
                job_id: job.job_id,
                node: n.node_id(),
                owner_cert: (i < 2).then(|| cert(owner, n)),
                ask: 10 + i as u64,
                capacity: cpu(4),
                nonce: 0,
                issued_at: NOW,
                speed_milli: 0,
            };
            Signed::sign(n, &bid)
        })
        .collect();
    let policy = MarketPolicy {
        alpha_ppm: 1_000_000,
        beta_ppm: 1_000_000,
        window: WindowUsage::default(),
    };
    let allocation = clear(&job, &bids, &TrustPolicy::default(), &policy, NOW).unwrap();
    (Signed::sign(coordinator, &allocation), allocation, bids)
}

fn setup() -> (Keypair, Keypair, Vec<Keypair>) {
    let coordinator = Keypair::from_seed(b"coordinator");
    let owner = Keypair::from_seed(b"owner");
    let nodes = (0..3u8).map(|i| Keypair::from_seed(&[40 + i])).collect();
    (coordinator, owner, nodes)
}

#[test]
fn a_notice_counts_the_winners_owners_and_survives_the_wire() {
    let (coordinator, owner, nodes) = setup();
    let (signed, allocation, bids) = cleared("a", &coordinator, &owner, &nodes);
    let notice = AllocationNotice::new(signed, &allocation, &bids);
    assert_eq!(notice.winner_bids.len(), allocation.assignments.len());
    let notice = AllocationNotice::from_bytes(&notice.to_bytes()).unwrap();
    let entry = notice.check(&TrustPolicy::default(), NOW).unwrap();
    assert_eq!(entry.job_id, allocation.job_id);
    assert_eq!(entry.coordinator, coordinator.public());
    // The two certified nodes are one owner: the cheapest, they win all 8
    // shards between them (4 each).
    assert_eq!(entry.usage.get(&owner.owner_id()), Some(&8));
    assert_eq!(entry.usage.values().sum::<u64>(), 8);
}

#[test]
fn forged_notices_are_refused_with_the_reason() {
    let (coordinator, owner, nodes) = setup();
    let (signed, allocation, bids) = cleared("a", &coordinator, &owner, &nodes);
    let good = AllocationNotice::new(signed.clone(), &allocation, &bids);
    let trust = TrustPolicy::default();
    let refused = |notice: &AllocationNotice| notice.check(&trust, NOW).unwrap_err().to_string();

    // A winner's bid left out.
    let mut missing = good.clone();
    missing.winner_bids.pop();
    assert!(
        refused(&missing).contains("winner bids for"),
        "{}",
        refused(&missing)
    );

    // A bid from another job, re-signed by the same node.
    let mut other_job = good.clone();
    let (_, mut bid) = other_job.winner_bids[0].verify_and_decode().unwrap();
    bid.job_id = Hash32::of(b"elsewhere");
    let node = nodes.iter().find(|n| n.node_id() == bid.node).unwrap();
    other_job.winner_bids[0] = Signed::sign(node, &bid);
    assert!(refused(&other_job).contains("is not the bid assignment"));

    // Usage moved to another owner by a coordinator that re-signs.
    let mut moved = allocation.clone();
    let stranger = Keypair::from_seed(b"stranger").owner_id();
    moved.assignments[0].owner = stranger;
    let forged = AllocationNotice::new(Signed::sign(&coordinator, &moved), &moved, &bids);
    assert!(refused(&forged).contains("its bid's certificate says"));

    // Payments that do not add up.
    let mut inflated = allocation.clone();
    inflated.payments[0].shards += 5;
    let forged = AllocationNotice::new(Signed::sign(&coordinator, &inflated), &inflated, &bids);
    assert!(refused(&forged).contains("payments do not add up"));

    // A tampered signature, and a clearing from the future.
    let mut tampered = good.clone();
    tampered.allocation.payload[10] ^= 1;
    assert!(tampered.check(&trust, NOW).is_err());
    assert!(
        good.check(&trust, allocation.cleared_at - 60_000)
            .unwrap_err()
            .to_string()
            .contains("ahead of this node's clock")
    );

    // Bytes that are not a notice.
    let mut bytes = good.to_bytes();
    bytes.push(0);
    assert!(AllocationNotice::from_bytes(&bytes).is_err());
    assert!(AllocationNotice::from_bytes(&[0xff; 64]).is_err());
}

#[test]
fn the_book_keeps_each_jobs_latest_attempt_from_its_first_coordinator() {
    let (coordinator, owner, nodes) = setup();
    let trust = TrustPolicy::default();
    let entry = |name: &str, by: &Keypair, attempt: u32, at: u64| {
        let (_, mut allocation, bids) = cleared(name, by, &owner, &nodes);
        allocation.attempt = attempt;
        allocation.cleared_at = at;
        let signed = Signed::sign(by, &allocation);
        AllocationNotice::new(signed, &allocation, &bids)
            .check(&trust, NOW)
            .unwrap()
    };
    let mut book = WindowBook::new(HOUR);
    assert_eq!(
        book.insert(entry("a", &coordinator, 0, NOW - 20_000), NOW),
        Inserted::Recorded
    );
    assert_eq!(
        book.insert(entry("a", &coordinator, 0, NOW - 20_000), NOW),
        Inserted::Stale
    );
    let thief = Keypair::from_seed(b"thief");
    assert_eq!(
        book.insert(entry("a", &thief, 5, NOW - 1_000), NOW),
        Inserted::OtherCoordinator
    );
    assert_eq!(
        book.insert(entry("b", &coordinator, 0, NOW - 2 * HOUR), NOW),
        Inserted::Expired
    );
    assert_eq!(
        book.insert(entry("b", &coordinator, 0, NOW - 15_000), NOW),
        Inserted::Recorded
    );
    let usage = book.window_for(&Hash32::of(b"c"), NOW);
    assert_eq!(usage.total, 16);
    assert_eq!(usage.by_owner[&owner.owner_id()], 16);
    // A job's own allocations never count against it.
    assert_eq!(book.window_for(&Hash32::of(b"a"), NOW).total, 8);

    // Job a cleared again 1 s ago: a worker holding an allocation cleared
    // now to what was settled 10 s before leaves job a out altogether.
    assert_eq!(
        book.insert(entry("a", &coordinator, 1, NOW - 1_000), NOW),
        Inserted::Recorded
    );
    let settled = book.settled_for(&Hash32::of(b"c"), NOW, 10_000);
    assert_eq!(settled.total, 8);
    // An hour on, both have left the window.
    assert_eq!(book.window_for(&Hash32::of(b"c"), NOW + HOUR).total, 0);
    book.prune(NOW + HOUR);
    assert!(book.is_empty());
}

#[test]
fn a_recorded_window_that_hides_usage_is_refused() {
    let big = Keypair::from_seed(b"big").owner_id();
    let small = Keypair::from_seed(b"small").owner_id();
    let usage = |pairs: &[(OwnerId, u64)]| WindowUsage {
        total: pairs.iter().map(|p| p.1).sum(),
        by_owner: pairs.iter().copied().collect(),
    };
    let known = usage(&[(big, 30), (small, 10)]);
    // The same, or more (allocations this node has not heard of): fine.
    check_recorded(&known, &known).unwrap();
    check_recorded(
        &usage(&[
            (big, 31),
            (small, 10),
            (Keypair::from_seed(b"x").owner_id(), 4),
        ]),
        &known,
    )
    .unwrap();
    // The big owner's usage hidden: its room under beta would grow.
    match check_recorded(&usage(&[(big, 12), (small, 10)]), &known) {
        Err(WindowError::Understated {
            owner,
            recorded: 12,
            known: 30,
        }) => assert_eq!(owner, big),
        other => panic!("{other:?}"),
    }
    // Usage nobody owns raises every owner's room.
    let mut inflated = known.clone();
    inflated.total += 100;
    assert!(matches!(
        check_recorded(&inflated, &known),
        Err(WindowError::Unowned {
            total: 140,
            owners: 40
        })
    ));

    // What hiding would have bought: with beta 40% and 8 shards to clear,
    // the big owner's room is 0 under the true window, 7 under the hidden
    // one.
    let policy = |window| MarketPolicy {
        alpha_ppm: 1_000_000,
        beta_ppm: 400_000,
        window,
    };
    assert_eq!(owner_cap(&policy(known.clone()), 8, &big), 0);
    assert_eq!(
        owner_cap(&policy(usage(&[(big, 12), (small, 10)])), 8, &big),
        0
    );
    assert_eq!(owner_cap(&policy(usage(&[(small, 10)])), 8, &big), 7);
}
