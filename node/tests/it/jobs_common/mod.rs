//! Helpers for the jobs tests: the jobs API over plain HTTP with the
//! SDK's `jobs` types, a small job request, cluster start-up, and offline
//! checks of the ledger entries a node holds for a job.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use fairgrid_protocol::ledger::{EntryBody, LedgerEntry};
use fairgrid_protocol::market::{self, MarketJob};
use fairgrid_protocol::messages::{Allocation, Bid};
use fairgrid_protocol::{Signed, TrustPolicy};
use fairgrid_sdk::jobs::{
    AllocationView, DataChoice, JobAccepted, JobEvent, JobEvents, JobRequest, JobState, JobStatus,
    MarketChoice, ModelChoice, TrainingChoice, TrainingReport,
};
use fairgrid_sdk::{Client, LedgerEntryView};
use serde::de::DeserializeOwned;

use super::common::{NodeProc, init_dir, test_env, wait_for_adverts, wait_for_peers};

/// The jobs API of one node.
#[derive(Clone)]
pub struct JobsApi {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl JobsApi {
    pub fn of(node: &NodeProc) -> JobsApi {
        JobsApi {
            base: node.api.clone(),
            token: node.token.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(40))
                .build()
                .unwrap(),
        }
    }

    /// POST /v1/jobs: the accepted job, or (status, body).
    pub async fn submit(&self, request: &JobRequest) -> Result<JobAccepted, (u16, String)> {
        let response = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(&self.token)
            .json(request)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        if status == 202 {
            Ok(serde_json::from_str(&text).unwrap())
        } else {
            Err((status, text))
        }
    }

    pub async fn raw(&self, path: &str) -> (u16, Vec<u8>) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        let (status, body) = self.raw(path).await;
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    pub async fn status(&self, id: &str) -> JobStatus {
        self.get(&format!("/v1/jobs/{id}")).await
    }

    pub async fn allocation(&self, id: &str) -> AllocationView {
        self.get(&format!("/v1/jobs/{id}/allocation")).await
    }

    pub async fn report(&self, id: &str) -> TrainingReport {
        self.get(&format!("/v1/jobs/{id}/report")).await
    }

    pub async fn events(&self, id: &str, after: u64, wait: u64) -> JobEvents {
        self.get(&format!(
            "/v1/jobs/{id}/events?after={after}&wait_secs={wait}"
        ))
        .await
    }

    /// Follows the job's events (long poll) until it finishes or fails;
    /// returns every event seen.
    pub async fn follow(&self, id: &str, timeout: Duration) -> Vec<JobEvent> {
        self.follow_until(id, timeout, |_| false).await
    }

    /// Follows events until the job ends or `stop` says so for an event.
    pub async fn follow_until(
        &self,
        id: &str,
        timeout: Duration,
        mut stop: impl FnMut(&JobEvent) -> bool,
    ) -> Vec<JobEvent> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "job {id} did not end in time; events so far: {seen:#?}"
            );
            let page = self.events(id, after, 5).await;
            after = page.next;
            for event in page.events {
                let done = stop(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
            if matches!(page.state, JobState::Finished | JobState::Failed) {
                // Drain what is left.
                let rest = self.events(id, after, 0).await;
                seen.extend(rest.events);
                return seen;
            }
        }
    }
}

/// A small logreg job on the built-in data: 16 shards of 625 samples.
pub fn small_job(name: &str, rounds: u32, alpha: f64) -> JobRequest {
    JobRequest {
        name: name.into(),
        model: ModelChoice {
            arch: fairgrid_sdk::jobs::ArchName::Logreg,
            hidden: None,
            layers: None,
        },
        data: DataChoice {
            source: "builtin".into(),
            shard_size: 625,
            max_train_samples: None,
        },
        training: TrainingChoice {
            rounds,
            local_steps: 4,
            batch_size: 32,
            lr: 0.05,
            momentum: 0.9,
            ..TrainingChoice::default()
        },
        market: MarketChoice {
            alpha,
            bid_window_secs: 2,
            round_timeout_secs: 20,
            deadline_secs: 600,
            ..MarketChoice::default()
        },
        result: Default::default(),
    }
}

/// Environment of a jobs test node: one training and evaluation thread.
pub fn jobs_env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = test_env(60);
    env.push(("FAIRGRID_WORKER_THREADS".into(), "1".into()));
    env.push(("FAIRGRID_JOBS_THREADS".into(), "1".into()));
    env.push((
        "FAIRGRID_LOG_FILTER".into(),
        "info,fairgrid::jobs=debug".into(),
    ));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Starts `n` nodes on loopback; each bootstraps from every earlier one.
/// `env(i)` adds node i's variables; `before(i, dir)` runs after init.
pub fn start_cluster(
    root: &Path,
    n: usize,
    env: impl Fn(usize) -> Vec<(String, String)>,
    before: impl Fn(usize, &Path, &str),
) -> Vec<NodeProc> {
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 0..n {
        let dir = root.join(format!("n{i}"));
        let peer = init_dir(&dir);
        before(i, &dir, &peer);
        // Every earlier node: the mesh forms by direct dials, not by
        // discovery through node 0 (which once took over 45 s in a loaded
        // CI run; these tests are about jobs, not discovery).
        let bootstrap: Vec<String> = nodes.iter().flat_map(|b| b.listen.clone()).collect();
        nodes.push(NodeProc::start(&dir, &bootstrap, &env(i)));
    }
    nodes
}

/// Waits until every node is connected to every other and holds every
/// node's advert (so gossip reaches everyone).
pub async fn wait_mesh(nodes: &[NodeProc]) {
    let ids: BTreeSet<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    for node in nodes {
        let client = node.client();
        let mut others = ids.clone();
        others.remove(&node.peer_id);
        wait_for_peers(&client, &others).await;
        wait_for_adverts(&client, &ids, "every node's advert").await;
    }
}

pub fn signed_entry(view: &LedgerEntryView) -> (Signed<LedgerEntry>, LedgerEntry) {
    let bytes = hex::decode(&view.signed_hex).unwrap();
    let signed = Signed::<LedgerEntry>::from_bytes(&bytes).unwrap();
    let (_, entry) = signed.verify_and_decode().unwrap();
    (signed, entry)
}

/// The allocations a node holds for a job (from `AllocationMade`
/// entries), each re-verified here with `market::verify` from its bids.
pub async fn verified_allocations(client: &Client, job: &str) -> Vec<Allocation> {
    let mut out = Vec::new();
    for view in client.ledger_job(job).await.unwrap() {
        let (_, entry) = signed_entry(&view);
        if let EntryBody::AllocationMade {
            allocation, bids, ..
        } = entry.body
        {
            let (signer, allocation) = allocation.verify_and_decode().unwrap();
            assert_eq!(signer, entry.author.0, "signed by the coordinator");
            verify_offline(&allocation, &bids);
            out.push(allocation);
        }
    }
    out.sort_by_key(|a| a.attempt);
    out
}

/// The speeds claimed by the bids of the job's recorded allocations.
pub async fn allocation_bid_speeds(client: &Client, job: &str) -> Vec<u64> {
    let mut speeds = Vec::new();
    for view in client.ledger_job(job).await.unwrap() {
        let (_, entry) = signed_entry(&view);
        if let EntryBody::AllocationMade { bids, .. } = entry.body {
            for bid in bids {
                speeds.push(bid.verify_and_decode().unwrap().1.speed_milli);
            }
        }
    }
    speeds
}

pub fn verify_offline(allocation: &Allocation, bids: &[Signed<Bid>]) {
    let job = MarketJob {
        job_id: allocation.job_id,
        shards: allocation.shards.clone(),
        demand_per_shard: fairgrid_protocol::ResourceVec {
            cpu_milli: 100,
            mem_mib: 16,
            gpu_milli: 0,
            gpu_mem_mib: 0,
        },
        limit_price: bid_limit(),
        attempt: allocation.attempt,
        prev_allocation: allocation.prev_allocation,
    };
    market::verify(allocation, &job, bids, &TrustPolicy::default()).unwrap();
}

/// The limit price the jobs tests use (MarketChoice's default).
pub fn bid_limit() -> u64 {
    MarketChoice::default().limit_price
}

/// Kinds of the entries a node holds for a job, as (author, kind).
pub async fn job_entry_kinds(client: &Client, job: &str) -> Vec<(String, String)> {
    client
        .ledger_job(job)
        .await
        .unwrap()
        .iter()
        .map(|v| (v.author.clone(), v.kind.clone()))
        .collect()
}
