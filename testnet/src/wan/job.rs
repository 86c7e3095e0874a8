//! `fairgrid-testnet wan-job`: one job across the testbed. Node 0 is the
//! consortium's relay on the testbed's internet (it does not train), node
//! 1 coordinates from behind its site's NAT, the workers sit behind theirs;
//! links optionally shaped. Reported: how the coordinator reaches each
//! worker (direct after a hole punch, or relayed), the median round time,
//! compute utilisation (the slowest worker's training time over the round
//! time, summed over the rounds after the first), what is not compute in a
//! round (communication, aggregation, evaluation) and the number of local
//! steps that would make it a tenth of the round ([`local_steps_for`]),
//! the bytes the job moved and those that went through the relay's
//! machine.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::testbed::{Nat, Shaping, Testbed};
use crate::cluster::{Cluster, ClusterSpec};
use crate::hetero::round_workers;
use crate::job::{Model, Tuning, demo_request, submit_and_follow};
use crate::launcher::Launcher;
use crate::scenario::dump_logs;

#[derive(Debug, Clone, clap::Args)]
pub struct WanJobArgs {
    /// The coordinator's NAT.
    #[arg(long, value_enum, default_value_t = Nat::PortRestricted)]
    pub coordinator_nat: Nat,
    /// Every worker's NAT (`symmetric`: the job goes through the relay).
    #[arg(long, value_enum, default_value_t = Nat::PortRestricted)]
    pub worker_nat: Nat,
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Each site's link to the internet, Mbit/s each way (0: unshaped).
    #[arg(long, default_value_t = 0)]
    pub rate_mbit: u32,
    /// Added to each direction of each site's link, milliseconds (a
    /// worker behind one site and the coordinator behind another are
    /// `2 × 2 × delay` of round trip apart).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u32,
    #[arg(long, value_enum, default_value_t = Model::Mlp)]
    pub model: Model,
    #[command(flatten)]
    pub tuning: Tuning,
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
}

/// What one job across the testbed measured.
#[derive(Debug, Clone)]
pub struct WanFigures {
    pub accuracy: f32,
    /// Per worker, how the coordinator is connected to it at the end.
    pub transports: Vec<Vec<String>>,
    pub median_round_ms: u64,
    pub utilisation: f64,
    /// Median over the rounds after the first of the round time less the
    /// slowest worker's training time.
    pub overhead_ms: u64,
    /// The slowest worker's training time per local step, milliseconds.
    pub step_ms: f64,
    /// Local steps for 90% compute utilisation at this overhead and step
    /// time.
    pub recommended_local_steps: u32,
    pub job_bytes: u64,
    /// Bytes in and out of the relay's own address during the job.
    pub relay_bytes: u64,
    pub wall: Duration,
}

impl WanFigures {
    pub fn line(&self) -> String {
        let relayed = self
            .transports
            .iter()
            .filter(|t| !t.iter().any(|t| t != "relayed"))
            .count();
        let via: Vec<String> = self
            .transports
            .iter()
            .map(|t| {
                if t.is_empty() {
                    "-".into()
                } else {
                    t.join("+")
                }
            })
            .collect();
        format!(
            "wan-job accuracy={:.4} workers={} relayed_workers={relayed} via={} median_round_ms={} utilisation={:.3} overhead_ms={} step_ms={:.1} local_steps_for_90pct={} job_bytes={} relay_bytes={} wall_s={:.1}",
            self.accuracy,
            self.transports.len(),
            via.join(","),
            self.median_round_ms,
            self.utilisation,
            self.overhead_ms,
            self.step_ms,
            self.recommended_local_steps,
            self.job_bytes,
            self.relay_bytes,
            self.wall.as_secs_f64()
        )
    }
}

pub async fn run(launcher: Launcher, args: &WanJobArgs) -> anyhow::Result<String> {
    Ok(measure(launcher, args).await?.line())
}

pub async fn measure(launcher: Launcher, args: &WanJobArgs) -> anyhow::Result<WanFigures> {
    if let Some(why) = super::netns::unavailable() {
        bail!("{why}");
    }
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let nats: Vec<Nat> = std::iter::once(args.coordinator_nat)
        .chain(std::iter::repeat_n(args.worker_nat, args.workers))
        .collect();
    let shaping = Some(Shaping {
        rate_mbit: args.rate_mbit,
        delay_ms: args.delay_ms,
    });
    let testbed = Testbed::create(&nats, shaping)?;
    let nodes = 2 + args.workers;
    let owners = args.workers.min(3);
    let mut spec = ClusterSpec::new(nodes, owners)?;
    spec.netns = std::iter::once(Some(testbed.internet.name().to_string()))
        .chain(
            testbed
                .sites
                .iter()
                .map(|s| Some(s.host.name().to_string())),
        )
        .collect();
    spec.relay_via_node0 = Some(Testbed::INTERNET_HOST);
    spec.consortium = true;
    for node in [0, 1] {
        spec.node_env
            .push((node, "FAIRGRID_WORKER_ENABLED".into(), "false".into()));
    }
    // The coordinator's audits replay rounds on its CPU, which the workers
    // share on this machine: load the round times should not carry.
    spec.node_env
        .push((1, "FAIRGRID_JOBS_AUDITS".into(), "false".into()));
    let request = demo_request(
        args.model,
        "builtin",
        owners,
        spec.owners.small_cpu_milli,
        &args.tuning,
    )?;
    let cluster = Cluster::start(launcher, &spec).await?;
    let result = run_job(&cluster, &testbed, &request, args.timeout_secs).await;
    if result.is_err() {
        dump_logs(&cluster);
    }
    result
}

async fn run_job(
    cluster: &Cluster,
    testbed: &Testbed,
    request: &fairgrid_sdk::jobs::JobRequest,
    timeout_secs: u64,
) -> anyhow::Result<WanFigures> {
    let client = cluster.nodes[1].client()?;
    let workers: Vec<String> = cluster.nodes[2..]
        .iter()
        .map(|n| n.peer_id.clone())
        .collect();
    wait_for_adverts(&client, &workers, Duration::from_secs(90)).await?;
    for node in &cluster.nodes[1..] {
        wait_for_relay_slot(node, Duration::from_secs(60)).await?;
    }
    let relay_before = testbed.relay_bytes()?;
    let (job_id, followed, wall) = submit_and_follow(&client, request, timeout_secs).await?;
    let relay_bytes = testbed.relay_bytes()?.saturating_sub(relay_before);
    let report = client.job_report(&job_id).await?;
    let peers = client.peers().await?;
    let transports = workers
        .iter()
        .map(|w| {
            peers
                .iter()
                .find(|p| &p.peer_id == w)
                .map(|p| p.transports.clone())
                .unwrap_or_default()
        })
        .collect();
    let per_round = round_workers(&followed.events);
    let (mut compute, mut total) = (0u64, 0u64);
    let mut overheads = Vec::new();
    // The first round also carries the workers' start (shards fetched,
    // trainers built): left out.
    for (round, workers) in report.rounds.iter().zip(&per_round).skip(1) {
        let slowest = workers.iter().map(|w| w.compute_millis).max().unwrap_or(0);
        compute += slowest;
        total += round.duration_ms;
        overheads.push(round.duration_ms.saturating_sub(slowest));
    }
    let measured_rounds = overheads.len().max(1) as f64;
    let overhead_ms = median(overheads);
    let step_ms = compute as f64 / measured_rounds / f64::from(request.training.local_steps.max(1));
    let mut durations: Vec<u64> = report.rounds.iter().map(|r| r.duration_ms).collect();
    durations.sort();
    Ok(WanFigures {
        accuracy: report.final_test_accuracy.unwrap_or(0.0),
        transports,
        median_round_ms: durations.get(durations.len() / 2).copied().unwrap_or(0),
        utilisation: compute as f64 / total.max(1) as f64,
        overhead_ms,
        step_ms,
        recommended_local_steps: local_steps_for(0.9, overhead_ms as f64, step_ms),
        job_bytes: report.bytes_up + report.bytes_down,
        relay_bytes,
        wall,
    })
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Local steps per round that make training `target` of the round time,
/// when everything else in a round (sending the parameters, the updates,
/// aggregating) takes `overhead_ms` and one step `step_ms`: training time
/// `H × step` over `H × step + overhead` reaches `target` at
/// `H = target / (1 − target) × overhead / step`. At least 1; 0 when the
/// step time is unknown.
pub fn local_steps_for(target: f64, overhead_ms: f64, step_ms: f64) -> u32 {
    if step_ms.is_nan() || step_ms <= 0.0 || !(0.0..1.0).contains(&target) {
        return 0;
    }
    let steps = target / (1.0 - target) * overhead_ms.max(0.0) / step_ms;
    // 0.9 / 0.1 is 9.000000000000002 in floating point: no extra step
    // for rounding noise.
    ((steps - 1e-9).ceil() as u32).max(1)
}

/// Waits until `node` holds a slot on the relay (so that peers it cannot
/// reach directly can reach it).
async fn wait_for_relay_slot(
    node: &crate::cluster::NodeProcess,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = node.client()?;
    let deadline = Instant::now() + timeout;
    loop {
        if client
            .status()
            .await
            .is_ok_and(|s| !s.relayed_addrs.is_empty())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "node {} holds no relay slot after {timeout:?}; its log ends:\n{}",
                node.index,
                node.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the coordinator holds every worker's advert.
async fn wait_for_adverts(
    client: &fairgrid_sdk::Client,
    workers: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen: Vec<String> = client
            .adverts()
            .await
            .map(|a| a.into_iter().map(|a| a.node_id).collect())
            .unwrap_or_default();
        if workers.iter().all(|w| seen.contains(w)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the coordinator holds {} of {} workers' adverts after {timeout:?}",
                workers.iter().filter(|w| seen.contains(w)).count(),
                workers.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_steps_make_training_the_target_share_of_a_round() {
        // 2 s of overhead, 25 ms a step: 9 x 2000 / 25 = 720 steps, and
        // then 720 x 25 = 18 s of 20 s is training.
        assert_eq!(local_steps_for(0.9, 2000.0, 25.0), 720);
        let h = f64::from(local_steps_for(0.9, 1234.0, 7.0));
        assert!(h * 7.0 / (h * 7.0 + 1234.0) >= 0.9);
        assert_eq!(local_steps_for(0.5, 100.0, 10.0), 10);
        assert_eq!(local_steps_for(0.9, 0.0, 10.0), 1);
        assert_eq!(local_steps_for(0.9, 100.0, 0.0), 0);
        assert_eq!(local_steps_for(1.0, 100.0, 1.0), 0);
    }

    #[test]
    fn the_median_of_nothing_is_zero() {
        assert_eq!(median(vec![]), 0);
        assert_eq!(median(vec![5, 1, 3]), 3);
    }
}
