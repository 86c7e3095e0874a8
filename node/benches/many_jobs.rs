//! Issue 14's scenario in one process: six nodes that each hold four
//! shards, three submitters with two 8-shard jobs each. Runs the six jobs
//! all at once (reservation, waiting jobs taking freed capacity) and then
//! one after another, and prints the wall time and the pool's utilisation
//! (shards held over the 24 the pool offers, sampled every 20 ms).
//!
//! `cargo bench -p fairgrid-node --features test-utils --bench many_jobs`

use std::sync::Arc;
use std::time::{Duration, Instant};

use fairgrid_node::jobs::coordinator::submit;
use fairgrid_node::jobs::testing::cluster::{Cluster, LedgerKind};
use fairgrid_protocol::messages::ShortfallPolicy;
use fairgrid_protocol::{Hash32, ResourceVec};
use fairgrid_sdk::jobs::{
    ArchName, DataChoice, JobRequest, JobState, MarketChoice, ModelChoice, TrainingChoice,
};

const NODES: usize = 6;
const SHARDS_PER_NODE: usize = 4;

fn job(name: &str) -> JobRequest {
    JobRequest {
        name: name.into(),
        model: ModelChoice {
            arch: ArchName::Mlp,
            hidden: None,
            layers: None,
        },
        data: DataChoice {
            source: "builtin".into(),
            shard_size: 500,
            max_train_samples: Some(4000),
        },
        training: TrainingChoice {
            rounds: 3,
            local_steps: 200,
            batch_size: 32,
            lr: 0.05,
            ..TrainingChoice::default()
        },
        market: MarketChoice {
            alpha: 0.5,
            bid_window_secs: 1,
            round_timeout_secs: 60,
            deadline_secs: 600,
            on_shortfall: ShortfallPolicy::Wait,
            ..MarketChoice::default()
        },
        result: Default::default(),
    }
}

fn submit_to(cluster: &Cluster, node: usize, request: JobRequest) -> Hash32 {
    let ctx = Arc::clone(cluster.nodes[node].ctx());
    let accepted = cluster
        .on(node, async move { submit::submit(&ctx, request).await })
        .expect("job accepted");
    Hash32::from_hex(&accepted.job_id).expect("job id")
}

/// Waits for the jobs to end; returns the wall time and the mean share of
/// the pool's shards held meanwhile.
fn run(cluster: &Cluster, jobs: &[(usize, Hash32)]) -> (Duration, f64) {
    let started = Instant::now();
    let (mut sum, mut samples) = (0f64, 0u64);
    loop {
        let states: Vec<_> = jobs
            .iter()
            .map(|(c, j)| cluster.nodes[*c].ctx().jobs.coordinated(j).expect("job"))
            .collect();
        let held: u32 = states
            .iter()
            .map(|j| j.state())
            .filter(|s| !s.is_terminal())
            .filter_map(|s| s.current().map(|a| a.allocation.assigned_shards()))
            .sum();
        sum += held as f64 / (NODES * SHARDS_PER_NODE) as f64;
        samples += 1;
        if states.iter().all(|j| j.state().is_terminal()) {
            for j in &states {
                let s = j.state();
                assert_eq!(s.phase, JobState::Finished, "{:?}", s.error);
            }
            return (started.elapsed(), sum / samples as f64);
        }
        assert!(started.elapsed() < Duration::from_secs(600), "jobs stuck");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let offer = ResourceVec {
        cpu_milli: 100 * SHARDS_PER_NODE as u64,
        mem_mib: 2048,
        gpu_milli: 0,
        gpu_mem_mib: 0,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster =
        Cluster::start_offering(dir.path(), NODES, LedgerKind::InMemory, offer).expect("cluster");
    let names: Vec<(usize, String)> = (0..3)
        .flat_map(|s| (0..2).map(move |n| (s, format!("s{s}-j{n}"))))
        .collect();

    let together: Vec<(usize, Hash32)> = names
        .iter()
        .map(|(s, name)| (*s, submit_to(&cluster, *s, job(name))))
        .collect();
    let (wall, used) = run(&cluster, &together);
    println!(
        "6 jobs at once:        {:>6.1} s, pool utilisation {:>4.1}%",
        wall.as_secs_f64(),
        used * 100.0
    );

    let (mut total, mut weighted) = (Duration::ZERO, 0f64);
    for (s, name) in &names {
        let one = [(*s, submit_to(&cluster, *s, job(&format!("{name}-seq"))))];
        let (wall, used) = run(&cluster, &one);
        total += wall;
        weighted += used * wall.as_secs_f64();
    }
    println!(
        "6 jobs one at a time:  {:>6.1} s, pool utilisation {:>4.1}%",
        total.as_secs_f64(),
        weighted / total.as_secs_f64() * 100.0
    );
}
