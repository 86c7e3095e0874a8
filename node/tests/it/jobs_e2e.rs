//! Four real node processes on 127.0.0.1 run training jobs end to end:
//! bids, clearing under owner caps (one owner, with two certified nodes,
//! could take more than its cap), verification of the allocation on every
//! node, rounds, credits, and the job's ledger entries on every node,
//! whose ledgers then verify. A second job checks accuracy parity with
//! single-node training on the same total samples and steps. Bad job
//! requests get specific errors.

use crate::common;
use crate::jobs_common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{NodeProc, fairgrid, wait_for};
use fairgrid_kernels::data::builtin;
use fairgrid_kernels::{Arch, CpuBackend, ModelSpec, OptimizerConfig, ShardSet, Trainer};
use fairgrid_protocol::ledger::EntryBody;
use fairgrid_sdk::jobs::{JobEventKind, JobRequest, JobState};
use jobs_common::{
    JobsApi, jobs_env, signed_entry, small_job, start_cluster, verified_allocations, wait_mesh,
};

/// An edit that spoils a good request.
type Spoil = Box<dyn Fn(&mut JobRequest)>;

async fn bad_requests_get_specific_errors(api: &JobsApi) {
    let cases: Vec<(Spoil, &str)> = vec![
        (Box::new(|r| r.model.hidden = Some(vec![8])), "model.hidden"),
        (Box::new(|r| r.market.alpha = 0.0), "market.alpha"),
        (
            Box::new(|r| r.market.alpha = 0.01),
            "market.alpha: impossible cap",
        ),
        (Box::new(|r| r.data.shard_size = 0), "data.shard_size"),
        (
            Box::new(|r| r.data.source = "/no/such/fashion-mnist".into()),
            "data.source",
        ),
        (Box::new(|r| r.training.lr = -1.0), "training.lr"),
    ];
    for (edit, expected) in cases {
        let mut request = small_job("bad", 1, 0.5);
        edit(&mut request);
        let (status, body) = api.submit(&request).await.unwrap_err();
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(expected), "{expected} not in {body}");
    }
    let (status, body) = api.raw("/v1/jobs/not-a-job").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _) = api.raw(&format!("/v1/jobs/{}", "0".repeat(64))).await;
    assert_eq!(status, 404);
}

/// The single-node reference: one trainer on all shards, the workers'
/// combined batch, the same number of steps per round and rounds.
fn single_node_accuracy(request: &JobRequest) -> f32 {
    let data = builtin::fashion_mnist().unwrap();
    let t = &request.training;
    let shards = data
        .train
        .shards(request.data.shard_size as usize, t.seed)
        .unwrap();
    let all = ShardSet::new(shards.iter().collect()).unwrap();
    let spec = ModelSpec::fashion_mnist(Arch::LogReg);
    // Every worker's step takes batch_size samples from each of its shards.
    let batch = t.batch_size as usize * shards.len();
    let mut trainer = Trainer::new(
        CpuBackend::new(1).unwrap(),
        &spec,
        OptimizerConfig::sgd(t.lr, t.momentum),
        batch,
        t.seed,
    )
    .unwrap();
    let mut params = trainer.params_flat().unwrap();
    for round in 0..t.rounds {
        let update = trainer
            .train_local(&params, &all, t.local_steps, t.lr, 1000 + u64::from(round))
            .unwrap();
        for (p, d) in params.iter_mut().zip(&update.delta) {
            *p += t.outer_lr * d;
        }
    }
    trainer.set_params_flat(&params).unwrap();
    trainer.evaluate(&data.test).unwrap().accuracy as f32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_train_within_the_caps_and_agree_on_the_ledger() {
    let root = tempfile::tempdir().unwrap();
    let owner_dir = root.path().join("owner-a");
    let owner_dir_s = owner_dir.to_str().unwrap().to_string();
    fairgrid(&["owner", "new", "--owner-dir", &owner_dir_s]);
    // Nodes 1 and 2 belong to owner "Univ A"; 0 and 3 are their own owners.
    let mut nodes = start_cluster(
        root.path(),
        4,
        |_| jobs_env(&[]),
        |i, dir, peer| {
            if i == 1 || i == 2 {
                fairgrid(&[
                    "owner",
                    "certify",
                    "--owner-dir",
                    &owner_dir_s,
                    "--node",
                    peer,
                    "--label",
                    "Univ A",
                    "--max-capacity",
                    "cpu_milli=1000000,mem_mib=100000000",
                    "--valid-days",
                    "1",
                    "--out",
                    dir.join("node.cert").to_str().unwrap(),
                ]);
            }
        },
    );
    wait_mesh(&nodes).await;
    let api = JobsApi::of(&nodes[0]);
    bad_requests_get_specific_errors(&api).await;

    // Job 1: 16 shards, alpha 0.4: at most 6 shards per owner.
    let request = small_job("caps", 6, 0.4);
    let accepted = api.submit(&request).await.unwrap();
    assert_eq!(accepted.shards, 16);
    assert_eq!(accepted.coordinator, nodes[0].peer_id);
    let id = accepted.job_id.clone();
    let events = api.follow(&id, Duration::from_secs(120)).await;
    let status = api.status(&id).await;
    assert_eq!(status.state, JobState::Finished, "{status:?}\n{events:#?}");
    assert_eq!(status.round, 6);
    let bids = events
        .iter()
        .filter(|e| matches!(e.kind, JobEventKind::BidReceived { .. }))
        .count();
    assert_eq!(bids, 4, "every node bid (the coordinator too)");

    let view = api.allocation(&id).await;
    assert_eq!(view.owner_cap, 6);
    assert_eq!(view.nodes.len(), 4);
    assert_eq!(view.shortfall, 0);
    for owner in &view.owners {
        assert!(owner.shards <= view.owner_cap, "{owner:?}");
    }
    let univ_a = view.owners.iter().find(|o| o.label == "Univ A").unwrap();
    assert_eq!(univ_a.shards, 6, "the two-node owner is held to its cap");
    assert!(view.max_owner_share <= 0.4);
    let (status_code, explain) = api.raw(&format!("/v1/jobs/{id}/explain")).await;
    assert_eq!(status_code, 200);
    let explain = String::from_utf8(explain).unwrap();
    assert!(
        explain.contains("Univ A") && explain.contains("cap"),
        "{explain}"
    );

    let report = api.report(&id).await;
    assert_eq!(report.rounds.len(), 6);
    assert!(report.rounds.iter().all(|r| r.participants == 4));
    assert!(report.bytes_up > 0 && report.bytes_down > 0);
    let accuracy = report.final_test_accuracy.unwrap();
    assert!(accuracy > 0.55, "accuracy {accuracy}");
    assert_eq!(report.credits.len(), 3, "{:?}", report.credits);
    let paid: u64 = view.owners.iter().map(|o| o.payment).sum();
    // Audits other owners' nodes did are paid on top of the allocation.
    let credited: u64 = report
        .credits
        .iter()
        .map(|c| c.amount - c.audit_amount)
        .sum();
    assert!(
        credited <= paid && credited + 6 * 3 >= paid,
        "{credited} vs {paid}"
    );
    let (code, model) = api.raw(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(code, 200);
    assert_eq!(
        fairgrid_protocol::Hash32::of(&model).to_hex(),
        report.model_hash.unwrap()
    );

    // Every node holds the job's record: the coordinator's entries, and it
    // re-verifies the allocation from the bids in its own copy.
    let coordinator = nodes[0].peer_id.clone();
    for node in &nodes {
        let client = node.client();
        let job = id.clone();
        let coordinator = coordinator.clone();
        wait_for(Duration::from_secs(30), "the job's ledger entries", || {
            let client = client.clone();
            let job = job.clone();
            let coordinator = coordinator.clone();
            async move {
                let kinds = jobs_common::job_entry_kinds(&client, &job).await;
                kinds
                    .iter()
                    .any(|(a, k)| *a == coordinator && k == "job_finished")
                    .then_some(())
            }
        })
        .await;
        let allocations = verified_allocations(&client, &id).await;
        assert_eq!(allocations.len(), 1);
        // Every node measured its speed on the model and bid it.
        let speeds = jobs_common::allocation_bid_speeds(&client, &id).await;
        assert!(
            speeds.len() >= 4 && speeds.iter().all(|&s| s > 0),
            "{speeds:?}"
        );
        let mut verified_here = false;
        for view in client.ledger_job(&id).await.unwrap() {
            let (_, entry) = signed_entry(&view);
            if let EntryBody::Verification { passed, detail, .. } = &entry.body
                && entry.author.to_string() == node.peer_id
            {
                assert!(passed, "{detail}");
                verified_here |= detail.contains("verified");
            }
        }
        assert!(
            verified_here,
            "node {} verified the allocation",
            node.peer_id
        );
        let report = client.verify_ledger().await.unwrap();
        assert!(report.ok, "{report:?}");
    }
    // The coordinator holds every worker's verification.
    let held: BTreeMap<String, usize> = jobs_common::job_entry_kinds(&nodes[0].client(), &id)
        .await
        .into_iter()
        .filter(|(_, k)| k == "verification")
        .fold(BTreeMap::new(), |mut m, (a, _)| {
            *m.entry(a).or_insert(0) += 1;
            m
        });
    assert_eq!(held.len(), 4, "{held:?}");

    // Job 2: accuracy parity. alpha 1 and equal nodes: four shards each.
    let mut parity = small_job("parity", 60, 1.0);
    parity.training.local_steps = 8;
    parity.training.lr = 0.02;
    let id2 = api.submit(&parity).await.unwrap().job_id;
    api.follow(&id2, Duration::from_secs(180)).await;
    let report = api.report(&id2).await;
    assert_eq!(report.state, JobState::Finished);
    let short: Vec<_> = report
        .rounds
        .iter()
        .filter(|r| r.participants != 4)
        .collect();
    assert!(
        short.is_empty(),
        "rounds without all 4 workers: {short:?}\n{}",
        nodes[0].log()
    );
    let distributed = report.final_test_accuracy.unwrap();
    let single = single_node_accuracy(&parity);
    eprintln!("parity: 4 nodes {distributed:.4}, single node {single:.4}");
    // The job's round seeds come from its id (a random nonce), so the
    // distributed accuracy differs from run to run: 0.7895 to 0.8165 over
    // nine runs against 0.8115 single-node (2026-12-03, this code and the
    // code before it alike). The bound holds that spread and still fails
    // a broken aggregation.
    assert!(
        (distributed - single).abs() <= 0.03,
        "4 nodes {distributed} vs single node {single}"
    );

    for node in &mut nodes {
        assert!(node.stop(), "clean exit:\n{}", node.log());
        let out = fairgrid(&["ledger", "verify", "--data-dir", node.dir.to_str().unwrap()]);
        assert!(out.starts_with("ledger OK"), "{out}");
    }
    let _: Vec<NodeProc> = nodes;
}
