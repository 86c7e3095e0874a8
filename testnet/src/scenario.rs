//! The steps every scenario shares: start the cluster and show it, submit
//! the job through the SDK, and at the end print the allocation, the
//! rounds, the model and the ledger check on every node, then the
//! machine-readable result line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use fairgrid_sdk::jobfile::{DataCheck, JobPlan, validate};
use fairgrid_sdk::jobs::{AllocationView, JobAccepted, JobRequest, TrainingReport};
use fairgrid_sdk::{Client, render};

use crate::cluster::{Cluster, ClusterSpec};
use crate::job::{Model, Tuning, demo_request, describe_data};
use crate::launcher::Launcher;

/// What every scenario is given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ScenarioArgs {
    /// Node processes to start.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Owners; owner 0 runs the nodes beyond one per owner.
    #[arg(long, default_value_t = 3)]
    pub owners: usize,
    #[arg(long, value_enum, default_value_t = Model::Cnn)]
    pub model: Model,
    /// Training and evaluation threads per node.
    #[arg(long, default_value_t = 1)]
    pub node_threads: usize,
    /// "builtin" (compiled in), "system" (/usr/share/datasets/fashion-mnist)
    /// or a directory of Fashion-MNIST IDX files.
    #[arg(long, default_value = "builtin")]
    pub data: String,
    #[command(flatten)]
    pub tuning: Tuning,
    /// Put the data dirs here and keep them (default: a temp dir, removed).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1200)]
    pub timeout_secs: u64,
    /// Where the workers train. `cuda`: the job's shards demand a quarter
    /// of a GPU each, so only nodes offering a GPU win them (the node
    /// processes share this machine's GPUs); on a machine where CUDA is
    /// not usable it stops at once and says why.
    #[arg(long, value_enum, default_value_t = DemoDevice::Cpu)]
    pub device: DemoDevice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoDevice {
    Cpu,
    Cuda,
}

/// A started cluster and the job it will run.
pub struct Prepared {
    pub cluster: Cluster,
    pub request: JobRequest,
    pub plan: JobPlan,
}

pub async fn prepare(launcher: Launcher, args: &ScenarioArgs) -> anyhow::Result<Prepared> {
    let mut spec = ClusterSpec::new(args.nodes, args.owners)?;
    spec.root = args.keep.clone();
    spec.node_threads = args.node_threads;
    let gpu = args.device == DemoDevice::Cuda;
    if gpu {
        use fairgrid_kernels::backend::select::{DevicePreference, choose_device};
        choose_device(DevicePreference::Cuda).map_err(|why| {
            anyhow::anyhow!("--device cuda: this machine cannot train on a GPU: {why}")
        })?;
        spec.owners.gpu = true;
        // The node processes share the GPU with each other; nothing else
        // should use it while the demo runs (and in a container NVML may
        // see processes it cannot name as the nodes').
        spec.env
            .push(("FAIRGRID_OFFER_YIELD_GPUS".into(), "false".into()));
    }
    let data = match args.data.as_str() {
        "builtin" | "system" => args.data.clone(),
        dir => std::path::absolute(dir)
            .with_context(|| format!("--data {dir}"))?
            .display()
            .to_string(),
    };
    let mut request = demo_request(
        args.model,
        &data,
        args.owners,
        spec.owners.small_cpu_milli,
        &args.tuning,
    )?;
    if gpu {
        crate::job::on_gpus(&mut request);
    }
    let plan = validate(&request, "the demo job", DataCheck::Local)?;
    println!(
        "fairgrid testnet: {} node processes, {} owners, {} on {}{}",
        args.nodes,
        args.owners,
        args.model.name(),
        describe_data(&data),
        if gpu { ", workers on the GPU" } else { "" }
    );
    println!(
        "job: {}",
        fairgrid_node::cli::job::describe_plan(&request, &plan)
    );

    let cluster = Cluster::start(launcher, &spec).await?;
    println!("data dirs under {}", cluster.root().display());
    cluster
        .wait_until_meshed(Duration::from_secs(60))
        .await
        .context("waiting for the nodes to see each other")?;
    print_cluster(&cluster, &request).await?;
    Ok(Prepared {
        cluster,
        request,
        plan,
    })
}

/// The node table: owner, certified capacity in shards against the cap.
async fn print_cluster(cluster: &Cluster, request: &JobRequest) -> anyhow::Result<()> {
    let adverts = cluster.nodes[0].client()?.adverts().await?;
    let demand = &request.market.demand_per_shard;
    println!(
        "{:<5} {:<20} {:<8} {:>6} {:>10} {:>9}  api",
        "node", "peer", "owner", "ask", "cpu_milli", "capacity"
    );
    let mut per_owner = vec![0u64; cluster.owners.len()];
    for node in &cluster.nodes {
        let advert = adverts.iter().find(|a| a.node_id == node.peer_id);
        let (cpu, capacity) = advert.map_or((0, 0), |a| {
            let by_cpu = a
                .offered
                .cpu_milli
                .checked_div(demand.cpu_milli)
                .unwrap_or(u64::MAX);
            let by_mem = a
                .offered
                .mem_mib
                .checked_div(demand.mem_mib)
                .unwrap_or(u64::MAX);
            (a.offered.cpu_milli, by_cpu.min(by_mem))
        });
        per_owner[node.owner] += capacity;
        let role = if node.index == 0 {
            " (coordinator, bootstrap)"
        } else {
            ""
        };
        println!(
            "{:<5} {:<20} {:<8} {:>6} {:>10} {:>9}  {}{role}",
            node.index,
            render::short(&node.peer_id),
            cluster.owners[node.owner].label,
            cluster.owners[node.owner].price,
            cpu,
            capacity,
            node.api
        );
    }
    let plan = validate(request, "the demo job", DataCheck::Local)?;
    let cap = plan.owner_cap.unwrap_or(0);
    for (owner, capacity) in cluster.owners.iter().zip(&per_owner) {
        let note = if *capacity > cap {
            "  <- more capacity than the cap lets it use"
        } else {
            ""
        };
        println!(
            "owner {:<8} capacity {capacity:>3} shards, cap {cap}{note}",
            owner.label
        );
    }
    Ok(())
}

/// Submits the job to node 0, its coordinator, through the SDK.
pub async fn submit(prepared: &Prepared) -> anyhow::Result<(Client, JobAccepted)> {
    let client = prepared.cluster.nodes[0].client()?;
    let accepted = client
        .submit_job(&prepared.request)
        .await
        .context("submitting the demo job to node 0")?;
    println!(
        "submitted job {} ({} shards of {})",
        accepted.job_id, accepted.shards, accepted.dataset
    );
    Ok((client, accepted))
}

/// The machine-readable summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub test_accuracy: f32,
    pub rounds: u32,
    pub max_owner_share: f64,
    pub cap: f64,
    pub verified: usize,
    pub nodes: usize,
    /// Samples trained per second of the rounds' wall time (start to
    /// aggregation, all rounds): the placed shards x the samples a step
    /// takes from each x the local steps, per round. It counts every
    /// placed shard in every round, so a round with a missing update
    /// (a killed worker) makes it an overestimate: it is a figure for runs
    /// whose rounds all had every update, as the benchmarks check.
    pub samples_per_sec: f64,
}

impl Outcome {
    pub fn result_line(&self) -> String {
        format!(
            "result test_accuracy={:.4} rounds={} max_owner_share={:.3} cap={:.3} ledger_verified={}/{} samples_per_sec={:.0}",
            self.test_accuracy,
            self.rounds,
            self.max_owner_share,
            self.cap,
            self.verified,
            self.nodes,
            self.samples_per_sec
        )
    }
}

/// After the job: tables, the model, the ledgers; stops the cluster.
pub async fn finish(
    prepared: &mut Prepared,
    client: &Client,
    job_id: &str,
) -> anyhow::Result<(Outcome, TrainingReport)> {
    let report = client.job_report(job_id).await?;
    let allocation: AllocationView = match &report.allocation {
        Some(a) => a.clone(),
        None => client.job_allocation(job_id).await?,
    };
    println!();
    print!("{}", render::allocation_table(&allocation));
    match client.job_explain(job_id).await {
        Ok(text) => {
            println!();
            print!("{text}");
        }
        Err(e) => println!("(no explanation: {e})"),
    }
    println!();
    print!("{}", render::rounds_table(&report.rounds));
    if !report.credits.is_empty() {
        println!();
        print!("{}", render::credits_table(&report.credits));
    }
    let accuracy = report
        .final_test_accuracy
        .context("the finished job reports no test accuracy")?;
    println!(
        "final test accuracy {}; bytes moved: {} of parameters down, {} of updates up",
        render::percent(f64::from(accuracy)),
        render::bytes(report.bytes_down),
        render::bytes(report.bytes_up)
    );
    let model = prepared.cluster.root().join("model.safetensors");
    let got = client.download_result_verified(job_id, &model).await?;
    println!(
        "model: {} at {} (BLAKE3 {}, matches the report)",
        render::bytes(got.bytes),
        got.path.display(),
        render::short(&got.blake3)
    );
    let verified = check_ledgers(&mut prepared.cluster, job_id).await;
    // The cap is a share of the job's shards (alpha x M), whether or not
    // every shard was placed: after a kill with a shortfall, an owner may
    // hold more of what was placed while still within its cap.
    let largest = allocation
        .owners
        .iter()
        .map(|o| o.shards)
        .max()
        .unwrap_or(0);
    let training = &prepared.request.training;
    let per_shard = u64::from(training.batch_size.min(prepared.request.data.shard_size));
    let samples = u64::from(allocation.shards)
        * per_shard
        * u64::from(training.local_steps)
        * report.rounds.len() as u64;
    let round_ms: u64 = report.rounds.iter().map(|r| r.duration_ms).sum();
    let outcome = Outcome {
        samples_per_sec: samples as f64 * 1000.0 / round_ms.max(1) as f64,
        test_accuracy: accuracy,
        rounds: report.rounds.len() as u32,
        max_owner_share: f64::from(largest) / f64::from(allocation.shards.max(1)),
        cap: prepared.request.market.alpha,
        verified,
        nodes: prepared.cluster.nodes.len(),
    };
    if let Some(over) = allocation.owners.iter().find(|o| o.shards > o.cap) {
        bail!(
            "owner {} holds {} shards, above its cap of {}",
            over.label,
            over.shards,
            over.cap
        );
    }
    Ok((outcome, report))
}

/// Waits (at most `limit`) until every running node holds another node's
/// entries of the job: the coordinator and its workers exchange them just
/// after the job ends.
async fn wait_for_exchange(cluster: &mut Cluster, job_id: &str, limit: Duration) {
    let until = std::time::Instant::now() + limit;
    for node in &mut cluster.nodes {
        if !node.is_running() {
            continue;
        }
        let Ok(client) = node.client() else { continue };
        while std::time::Instant::now() < until {
            let foreign = client
                .ledger_job(job_id)
                .await
                .map(|e| e.iter().filter(|x| !x.own).count())
                .unwrap_or(0);
            if foreign > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every node's ledger: through its API while it runs (with the job's
/// entries it holds), then offline with `fairgrid ledger verify` once all
/// are stopped. A node counts as verified when every check it could take
/// passed (a killed node only has the offline one).
async fn check_ledgers(cluster: &mut Cluster, job_id: &str) -> usize {
    wait_for_exchange(cluster, job_id, Duration::from_secs(20)).await;
    println!();
    println!("ledgers:");
    let mut online_ok = vec![true; cluster.nodes.len()];
    for node in &mut cluster.nodes {
        if !node.is_running() {
            println!("  node {}: not running (killed)", node.index);
            continue;
        }
        let Ok(client) = node.client() else {
            online_ok[node.index] = false;
            continue;
        };
        let verify = client.verify_ledger().await;
        let held = client.ledger_job(job_id).await.map(|e| {
            let own = e.iter().filter(|x| x.own).count();
            (own, e.len() - own)
        });
        match (&verify, &held) {
            (Ok(v), Ok((own, foreign))) if v.ok => println!(
                "  node {}: API verify OK ({} own, {} foreign entries); holds {own} own + {foreign} foreign entries of the job",
                node.index, v.own_entries, v.foreign_entries
            ),
            (Ok(v), Err(e)) if v.ok => println!(
                "  node {}: API verify OK ({} own entries); no job entries ({e})",
                node.index, v.own_entries
            ),
            (Ok(v), _) => {
                online_ok[node.index] = false;
                println!(
                    "  node {}: API verify FAILED: {}",
                    node.index,
                    v.error.as_deref().unwrap_or("?")
                );
            }
            (Err(e), _) => {
                online_ok[node.index] = false;
                println!("  node {}: API verify unavailable: {e}", node.index);
            }
        }
    }
    let clean = cluster.stop_all(Duration::from_secs(20));
    let mut verified = 0;
    for (i, online) in online_ok.iter().enumerate() {
        let offline = cluster.verify_ledger_offline(i);
        let ok = *online && offline.is_ok();
        verified += usize::from(ok);
        let stop = if clean.contains(&i) {
            "stopped cleanly"
        } else {
            "was killed"
        };
        match offline {
            Ok(line) => println!("  node {i} ({stop}): {line}"),
            Err(e) => println!("  node {i} ({stop}): offline verify FAILED: {e:#}"),
        }
    }
    verified
}

/// The end of every node's log on stderr, for a run that went wrong (the
/// temp dir goes away with the cluster).
pub fn dump_logs(cluster: &Cluster) {
    for node in &cluster.nodes {
        eprintln!(
            "--- node {} ({}) log, last lines:\n{}",
            node.index,
            node.log_path().display(),
            node.log_tail(15)
        );
    }
}
