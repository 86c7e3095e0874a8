//! `fairgrid-testnet soak`: jobs back to back for a while (30 minutes by
//! default), a random worker killed (SIGKILL) and started again every few
//! minutes, the coordinator killed and started again once half-way. Every
//! node's resident memory and open files are sampled as it goes; at the
//! end every ledger is verified offline. What it reports: jobs finished
//! and failed, and per node the memory and descriptors at the start, the
//! end and their peak (growth over a long run is a leak).

use std::time::{Duration, Instant};

use anyhow::Context;
use fairgrid_sdk::jobs::JobState;
use rand::SeedableRng;
use rand::seq::IndexedRandom;

use crate::launcher::Launcher;
use crate::scenario::{self, Prepared, ScenarioArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// How long to keep submitting jobs.
    #[arg(long, default_value_t = 30)]
    pub minutes: u64,
    /// Kill a random worker (and start it again) this often.
    #[arg(long, default_value_t = 180)]
    pub kill_every_secs: u64,
    /// Sample memory and descriptors this often.
    #[arg(long, default_value_t = 30)]
    pub sample_every_secs: u64,
    /// Seed for choosing the victims.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Do not kill the coordinator half-way, to watch its memory over the
    /// whole run.
    #[arg(long)]
    pub keep_coordinator: bool,
}

/// One sample of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub rss_kib: u64,
    pub fds: u64,
}

/// Reads a live process's resident memory and open descriptors.
pub fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Usage { rss_kib, fds })
}

/// Per node: the first and last sample of its current process, and peaks.
#[derive(Debug, Clone, Default)]
struct Track {
    first: Option<Usage>,
    last: Option<Usage>,
    peak: Usage,
    restarts: u32,
}

impl Track {
    fn record(&mut self, u: Usage) {
        self.first.get_or_insert(u);
        self.last = Some(u);
        self.peak.rss_kib = self.peak.rss_kib.max(u.rss_kib);
        self.peak.fds = self.peak.fds.max(u.fds);
    }
}

#[derive(Debug, Default)]
pub struct SoakReport {
    pub finished: u32,
    pub failed: u32,
    pub kills: u32,
    pub lines: Vec<String>,
}

pub async fn run(launcher: Launcher, args: &SoakArgs) -> anyhow::Result<String> {
    let mut prepared = scenario::prepare(launcher, &args.scenario).await?;
    let result = soak(&mut prepared, args).await;
    if result.is_err() {
        scenario::dump_logs(&prepared.cluster);
    }
    let report = result?;
    for line in &report.lines {
        println!("{line}");
    }
    Ok(format!(
        "soak: jobs_finished={} jobs_failed={} kills={}",
        report.finished, report.failed, report.kills
    ))
}

async fn soak(prepared: &mut Prepared, args: &SoakArgs) -> anyhow::Result<SoakReport> {
    let started = Instant::now();
    let until = started + Duration::from_secs(args.minutes * 60);
    let half = started + Duration::from_secs(args.minutes * 30);
    let kill_every = Duration::from_secs(args.kill_every_secs.max(10));
    let sample_every = Duration::from_secs(args.sample_every_secs.max(1));
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let nodes = prepared.cluster.nodes.len();
    let mut tracks = vec![Track::default(); nodes];
    let mut report = SoakReport::default();
    let mut next_kill = started + kill_every;
    let mut next_sample = started;
    let mut coordinator_killed = args.keep_coordinator;
    let mut samples: Vec<String> = Vec::new();
    while Instant::now() < until {
        let client = prepared.cluster.nodes[0].client()?;
        let accepted = client
            .submit_job(&prepared.request)
            .await
            .context("submitting a soak job")?;
        let job = accepted.job_id;
        let job_started = Instant::now();
        let state = loop {
            let now = Instant::now();
            if now >= next_sample {
                next_sample = now + sample_every;
                let mut line = format!("t={:>5}s", started.elapsed().as_secs());
                for (i, track) in tracks.iter_mut().enumerate() {
                    if let Some(u) = usage(prepared.cluster.nodes[i].pid) {
                        track.record(u);
                        line.push_str(&format!(" n{i}:{}MiB/{}fd", u.rss_kib / 1024, u.fds));
                    }
                }
                println!("{line}");
                samples.push(line);
            }
            if now >= next_kill {
                next_kill = now + kill_every;
                let workers: Vec<usize> = (1..nodes).collect();
                if let Some(&victim) = workers.choose(&mut rng) {
                    kill_and_restart(prepared, &mut tracks, victim, &mut report).await?;
                }
            }
            if !coordinator_killed && now >= half {
                coordinator_killed = true;
                kill_and_restart(prepared, &mut tracks, 0, &mut report).await?;
            }
            // The coordinator's address changes when it restarts.
            let client = prepared.cluster.nodes[0].client()?;
            match client.job(&job).await {
                Ok(status) if matches!(status.state, JobState::Finished | JobState::Failed) => {
                    break (status.state, status.error);
                }
                _ => {}
            }
            if job_started.elapsed() > Duration::from_secs(args.scenario.timeout_secs) {
                break (JobState::Failed, Some("soak: the job timed out".into()));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        match state {
            (JobState::Finished, _) => report.finished += 1,
            (_, error) => {
                report.failed += 1;
                println!("soak: job {job} failed: {}", error.unwrap_or_default());
            }
        }
        println!(
            "soak: job {} {:?} in {} s ({} finished, {} failed so far)",
            &job[..16.min(job.len())],
            state.0,
            job_started.elapsed().as_secs(),
            report.finished,
            report.failed
        );
    }
    let clean = prepared.cluster.stop_all(Duration::from_secs(20));
    report.lines.extend(samples);
    report.lines.push(format!(
        "soak: {} min, {} jobs finished, {} failed, {} kills; {} of {nodes} nodes stopped cleanly",
        args.minutes,
        report.finished,
        report.failed,
        report.kills,
        clean.len()
    ));
    for (i, t) in tracks.iter().enumerate() {
        let show = |u: Option<Usage>| {
            u.map_or("-".to_string(), |u| {
                format!("{} MiB, {} fds", u.rss_kib / 1024, u.fds)
            })
        };
        report.lines.push(format!(
            "node {i}: first {} | last {} | peak {} MiB, {} fds | restarts {}",
            show(t.first),
            show(t.last),
            t.peak.rss_kib / 1024,
            t.peak.fds,
            t.restarts
        ));
        let verdict = prepared
            .cluster
            .verify_ledger_offline(i)
            .unwrap_or_else(|e| format!("FAILED: {e:#}"));
        report.lines.push(format!("node {i}: ledger {verdict}"));
    }
    Ok(report)
}

async fn kill_and_restart(
    prepared: &mut Prepared,
    tracks: &mut [Track],
    victim: usize,
    report: &mut SoakReport,
) -> anyhow::Result<()> {
    prepared.cluster.nodes[victim].kill();
    report.kills += 1;
    println!("soak: SIGKILL node {victim}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    prepared
        .cluster
        .restart(victim, Duration::from_secs(60))
        .await
        .with_context(|| format!("starting node {victim} again"))?;
    // A new process: its memory counts afresh.
    let track = &mut tracks[victim];
    track.first = None;
    track.restarts += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_s_memory_and_descriptors() {
        let u = usage(std::process::id()).expect("/proc is readable");
        assert!(u.rss_kib > 0 && u.fds >= 3, "{u:?}");
        assert!(usage(u32::MAX).is_none());
    }
}
