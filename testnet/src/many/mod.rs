//! `fairgrid-testnet many`: several submitters, several jobs each, all at
//! once on one cluster with a network cap; then, from the ledgers alone:
//! every job finished, no node ever held more shards than it offers (its
//! own `Verification` entries of the allocations it took, until each job's
//! `JobFinished`), every allocation's recorded network window holds what
//! every other coordinator had recorded and settled before it, and the
//! jobs were placed in DRF order (every submitter's first job before any
//! submitter's second), and each submitter's jobs held, while all of them
//! competed, within one shard of what the weighted-DRF solution gives it
//! ([`drf`]).

mod drf;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fairgrid_protocol::ledger::{EntryBody, LedgerEntry};
use fairgrid_protocol::market::{WindowUsage, check_recorded, owner_cap};
use fairgrid_protocol::messages::Allocation;
use fairgrid_protocol::messages::ShortfallPolicy;
use fairgrid_protocol::{Hash32, NodeId, ResourceVec, Signed};
use fairgrid_sdk::Client;
use fairgrid_sdk::jobs::{JobRequest, JobState};

use crate::cluster::{Cluster, ClusterSpec};
use crate::job::demo_request;
use crate::launcher::Launcher;
use crate::scenario::{ScenarioArgs, dump_logs};

/// How long a worker lets a notice settle before it holds a coordinator to
/// it (the node's default `jobs.window_settle_ms`).
const SETTLE_MS: u64 = 10_000;

#[derive(Debug, Clone, clap::Args)]
pub struct ManyArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Nodes that submit (nodes 0.. of the cluster).
    #[arg(long, default_value_t = 3)]
    pub submitters: usize,
    #[arg(long, default_value_t = 2)]
    pub jobs_per_submitter: usize,
    /// The network cap every node is configured with, parts per million.
    #[arg(long, default_value_t = 500_000)]
    pub beta_ppm: u32,
    /// Every node's `worker.admission_delay_ms`.
    #[arg(long, default_value_t = 1000)]
    pub admission_delay_ms: u64,
}

/// One job as its coordinator's ledger recorded it.
struct JobRecord {
    submitter: usize,
    submitter_id: NodeId,
    allocations: Vec<Allocation>,
    finished_at: Option<u64>,
}

pub async fn run(launcher: Launcher, args: &ManyArgs) -> anyhow::Result<String> {
    let s = &args.scenario;
    if args.submitters == 0 || args.submitters > s.nodes {
        bail!("--submitters must be in 1..=--nodes");
    }
    let mut spec = ClusterSpec::new(s.nodes, s.owners)?;
    spec.root = s.keep.clone();
    spec.node_threads = s.node_threads;
    spec.env
        .push(("FAIRGRID_JOBS_BETA_PPM".into(), args.beta_ppm.to_string()));
    let mut request = demo_request(
        s.model,
        &s.data,
        s.owners,
        // A third of a small owner's share per shard: a small owner's
        // one node holds three times what one job's alpha lets it win, so
        // the pool holds three jobs at once (one per submitter when they
        // are admitted in DRF order), never four.
        spec.owners.small_cpu_milli / 3,
        &s.tuning,
    )?;
    request.market.on_shortfall = ShortfallPolicy::Wait;
    let cluster = Cluster::start(launcher, &spec).await?;
    println!(
        "fairgrid testnet many: {} nodes, {} owners, {} submitters x {} jobs, beta {} ppm; data dirs under {}",
        s.nodes,
        s.owners,
        args.submitters,
        args.jobs_per_submitter,
        args.beta_ppm,
        cluster.root().display()
    );
    let result = many(&cluster, args, &request).await;
    if result.is_err() {
        dump_logs(&cluster);
    }
    result
}

async fn many(cluster: &Cluster, args: &ManyArgs, request: &JobRequest) -> anyhow::Result<String> {
    cluster
        .wait_until_meshed(Duration::from_secs(60))
        .await
        .context("waiting for the nodes to see each other")?;
    // Every job submitted at once (submitter 0's first): first come,
    // first served would place both of submitter 0's jobs first.
    let mut submissions = Vec::new();
    for submitter in 0..args.submitters {
        for n in 0..args.jobs_per_submitter {
            let client = cluster.nodes[submitter].client()?;
            let mut r = request.clone();
            r.name = format!("s{submitter}-j{n}");
            submissions.push(async move {
                let accepted = client.submit_job(&r).await.context("submitting")?;
                anyhow::Ok((submitter, accepted.job_id))
            });
        }
    }
    let jobs: Vec<(usize, String)> = futures::future::join_all(submissions)
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let until = Instant::now() + Duration::from_secs(args.scenario.timeout_secs);
    for (submitter, job) in &jobs {
        let client = cluster.nodes[*submitter].client()?;
        loop {
            let status = client.job(job).await?;
            match status.state {
                JobState::Finished => break,
                JobState::Failed => bail!("job {job} failed: {:?}", status.error),
                _ if Instant::now() > until => bail!("job {job} did not finish in time"),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    // The end-of-job ledger exchange runs in the background.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut records: BTreeMap<Hash32, JobRecord> = BTreeMap::new();
    for (submitter, job) in &jobs {
        let entries = decoded(&cluster.nodes[*submitter].client()?, job).await?;
        let mut record = JobRecord {
            submitter: *submitter,
            submitter_id: cluster.nodes[*submitter].peer_id.parse()?,
            allocations: Vec::new(),
            finished_at: None,
        };
        for entry in entries
            .iter()
            .filter(|e| e.author.to_string() == cluster.nodes[*submitter].peer_id)
        {
            match &entry.body {
                EntryBody::AllocationMade { allocation, .. } => {
                    record.allocations.push(allocation.verify_and_decode()?.1)
                }
                EntryBody::JobFinished { .. } => record.finished_at = Some(entry.timestamp),
                _ => {}
            }
        }
        records.insert(Hash32::from_hex(job).context("job id")?, record);
    }
    let (held, offered) = offers_held(cluster, &records, request).await?;
    let window = windows_hold(&records, args.beta_ppm)?;
    drf_order_held(&records, args.submitters)?;
    let shares = drf_shares_held(cluster, &records, request, args.beta_ppm).await?;
    Ok(format!(
        "result jobs_finished={} fullest_node={held}/{offered} windows_checked={window} drf_order=ok drf_shares={shares}",
        records.len()
    ))
}

async fn decoded(client: &Client, job: &str) -> anyhow::Result<Vec<LedgerEntry>> {
    let mut out = Vec::new();
    for view in client.ledger_job(job).await? {
        let bytes = hex::decode(&view.signed_hex).context("entry hex")?;
        let signed = Signed::<LedgerEntry>::from_bytes(&bytes)?;
        out.push(signed.verify_and_decode()?.1);
    }
    Ok(out)
}

/// Per node, from its own `Verification` entries: the shards it took of
/// each job, from the entry's time until the job's `JobFinished`. Fails
/// if the sum ever passes what its advert offers; returns the fullest a
/// node was, as (shards held, shards offered).
async fn offers_held(
    cluster: &Cluster,
    records: &BTreeMap<Hash32, JobRecord>,
    request: &JobRequest,
) -> anyhow::Result<(u64, u64)> {
    let adverts = cluster.nodes[0].client()?.adverts().await?;
    let mut fullest = (0, 1);
    let per_shard = request.market.demand_per_shard.cpu_milli.max(1);
    for node in &cluster.nodes {
        let offer = adverts
            .iter()
            .find(|a| a.node_id == node.peer_id)
            .map(|a| a.offered.cpu_milli / per_shard)
            .context("a node's advert")?;
        // (time, job, shards taken from then on), from the node's chain.
        let mut takes: Vec<(u64, Hash32, u64)> = Vec::new();
        let client = node.client()?;
        let mut after = None;
        loop {
            let page = client.ledger_page(after, 500).await?;
            for view in &page.entries {
                let bytes = hex::decode(&view.signed_hex).context("entry hex")?;
                let entry = Signed::<LedgerEntry>::from_bytes(&bytes)?
                    .verify_and_decode()?
                    .1;
                if let EntryBody::Verification {
                    job_id,
                    passed: true,
                    detail,
                    ..
                } = &entry.body
                    && records.contains_key(job_id)
                    && let Some(shards) = taken_shards(detail)
                {
                    takes.push((entry.timestamp, *job_id, shards));
                }
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        takes.sort();
        let mut held: BTreeMap<Hash32, u64> = BTreeMap::new();
        for (at, job, shards) in &takes {
            held.insert(*job, *shards);
            held.retain(|j, _| records[j].finished_at.is_none_or(|end| end > *at));
            let total: u64 = held.values().sum();
            if total * fullest.1 > fullest.0 * offer {
                fullest = (total, offer);
            }
            if total > offer {
                bail!(
                    "node {} held {total} shards at {at} (offer {offer}): {held:?}",
                    node.index
                );
            }
        }
    }
    Ok(fullest)
}

/// "allocation H (attempt n) verified: k shards for this node" -> k.
fn taken_shards(detail: &str) -> Option<u64> {
    let rest = detail.split_once("verified: ")?.1;
    rest.split_whitespace().next()?.parse().ok()
}

/// Every allocation's recorded window against all coordinators' records
/// settled before it, as a winner checks it. Returns how many were checked.
fn windows_hold(records: &BTreeMap<Hash32, JobRecord>, beta_ppm: u32) -> anyhow::Result<usize> {
    let all: Vec<&Allocation> = records.values().flat_map(|r| &r.allocations).collect();
    let mut checked = 0;
    for a in &all {
        if a.policy.beta_ppm != beta_ppm {
            bail!(
                "job {} was cleared with beta {}",
                a.job_id,
                a.policy.beta_ppm
            );
        }
        let until = a.cleared_at.saturating_sub(SETTLE_MS);
        // The latest allocation of each other job as of `until`; a job
        // cleared again between `until` and `a` is left out, as a worker
        // leaves it out.
        let mut latest: BTreeMap<Hash32, &Allocation> = BTreeMap::new();
        for b in all
            .iter()
            .filter(|b| b.job_id != a.job_id && b.cleared_at <= a.cleared_at)
        {
            let keep = latest
                .get(&b.job_id)
                .is_none_or(|held| held.attempt < b.attempt);
            if keep {
                latest.insert(b.job_id, b);
            }
        }
        let mut known = WindowUsage::default();
        for b in latest.values().filter(|b| b.cleared_at <= until) {
            for pay in &b.payments {
                known.total += u64::from(pay.shards);
                *known.by_owner.entry(pay.owner).or_default() += u64::from(pay.shards);
            }
        }
        check_recorded(&a.policy.window, &known)
            .with_context(|| format!("job {} attempt {}", a.job_id, a.attempt))?;
        let m = a.shards.len() as u32;
        for pay in &a.payments {
            let cap = owner_cap(&a.policy, m, &pay.owner);
            if pay.shards > cap {
                bail!(
                    "job {} gave owner {} {} shards, over its cap of {cap}",
                    a.job_id,
                    pay.owner,
                    pay.shards
                );
            }
        }
        println!(
            "  job {} attempt {}: window {} shards recorded, {} settled in all ledgers; largest owner {} of {m}",
            &a.job_id.to_hex()[..8],
            a.attempt,
            a.policy.window.total,
            known.total,
            a.payments.iter().map(|p| p.shards).max().unwrap_or(0),
        );
        checked += 1;
    }
    Ok(checked)
}

/// Every submitter's first job was placed (its first allocation) before
/// any submitter's second.
fn drf_order_held(records: &BTreeMap<Hash32, JobRecord>, submitters: usize) -> anyhow::Result<()> {
    let mut placed: Vec<(u64, usize)> = records
        .values()
        .filter_map(|r| r.allocations.first().map(|a| (a.cleared_at, r.submitter)))
        .collect();
    placed.sort();
    let firsts: BTreeSet<usize> = placed.iter().take(submitters).map(|(_, s)| *s).collect();
    if firsts.len() != submitters {
        bail!("placed in this order (time, submitter): {placed:?}");
    }
    Ok(())
}

/// The shards each submitter's jobs were given before the first job
/// finished (the contended epoch), against the DRF solutions for the same
/// jobs over the nodes' offers. Returns the observed shares, "12/24/12"
/// in the order of the submitters' node indices.
async fn drf_shares_held(
    cluster: &Cluster,
    records: &BTreeMap<Hash32, JobRecord>,
    request: &JobRequest,
    beta_ppm: u32,
) -> anyhow::Result<String> {
    let first_end = records
        .values()
        .filter_map(|r| r.finished_at)
        .min()
        .context("no job recorded its end")?;
    let mut pool = Vec::new();
    for a in cluster.nodes[0].client()?.adverts().await? {
        let o = &a.offered;
        pool.push(drf::PoolNode {
            node: a.node_id.parse()?,
            owner: a.owner.parse()?,
            offer: ResourceVec {
                cpu_milli: o.cpu_milli,
                mem_mib: o.mem_mib,
                gpu_milli: o.gpu_milli,
                gpu_mem_mib: o.gpu_mem_mib,
            },
            ask: a.price_floor,
        });
    }
    let d = &request.market.demand_per_shard;
    let mut jobs: Vec<(usize, drf::Contender)> = Vec::new();
    let mut observed = drf::Shares::new();
    for (job_id, r) in records {
        let first = r.allocations.first().context("a job without allocation")?;
        jobs.push((
            r.submitter,
            drf::Contender {
                job_id: *job_id,
                submitter: r.submitter_id,
                shards: first.shards.len() as u32,
                demand_per_shard: ResourceVec {
                    cpu_milli: d.cpu_milli,
                    mem_mib: d.mem_mib,
                    gpu_milli: d.gpu_milli,
                    gpu_mem_mib: d.gpu_mem_mib,
                },
                limit_price: request.market.limit_price,
                alpha_ppm: first.policy.alpha_ppm,
                on_shortfall: request.market.on_shortfall,
            },
        ));
        let held = r
            .allocations
            .iter()
            .filter(|a| a.cleared_at < first_end)
            .max_by_key(|a| a.attempt)
            .map_or(0, |a| u64::from(a.assigned_shards()));
        *observed.entry(r.submitter_id).or_default() += held;
    }
    // Each submitter's jobs in submission order (its jobs are alike).
    jobs.sort_by_key(|(submitter, _)| *submitter);
    let jobs: Vec<drf::Contender> = jobs.into_iter().map(|(_, j)| j).collect();
    let solutions = drf::solutions(&jobs, &pool, beta_ppm)?;
    let matched = drf::check(&observed, &solutions)?;
    println!(
        "  contended epoch: shards per submitter {}; DRF solution {}",
        drf::shares_text(&observed.clone().into_iter().collect::<Vec<_>>()),
        drf::shares_text(&matched)
    );
    let by_index: BTreeMap<usize, u64> = records
        .values()
        .map(|r| (r.submitter, observed[&r.submitter_id]))
        .collect();
    Ok(by_index
        .values()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("/"))
}
