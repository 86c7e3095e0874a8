//! The demo's training job. The defaults are chosen so that the whole
//! demo (4 node processes sharing 2 cores, one training thread each)
//! finishes in a few minutes on the built-in data and still reaches a
//! sensible accuracy; `docs/benchmarks.md` ("Testnet demo") has the
//! measured figures.
//!
//! The job is cut into 4 shards per owner and alpha is just above
//! 1/owners, so the cap is 4 shards per owner and the owners' capped
//! supply is exactly the job: the big owner could take far more, the cap
//! holds it to its share.

use anyhow::Context;
use clap::ValueEnum;
use fairgrid_sdk::jobfile::{DataCheck, dataset_facts};
use fairgrid_sdk::jobs::{
    ArchName, DataChoice, JobRequest, LrSchedule, MarketChoice, ModelChoice, ShardDemand,
    TrainingChoice,
};

/// Shards per owner the demo aims for.
pub const SHARDS_PER_OWNER: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Model {
    Cnn,
    Mlp,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Cnn => "cnn",
            Model::Mlp => "mlp",
        }
    }

    pub fn arch(self) -> ArchName {
        match self {
            Model::Cnn => ArchName::Cnn,
            Model::Mlp => ArchName::Mlp,
        }
    }
}

/// Settings a scenario may override.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Tuning {
    /// Training rounds (default: 30 for the cnn, 30 for the mlp).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Local steps per round (default: 8 for the cnn, 20 for the mlp).
    #[arg(long)]
    pub local_steps: Option<u32>,
    /// Samples per local step from each shard a worker holds (default 8:
    /// a node with the demo's 4 shards per owner steps on 32).
    #[arg(long)]
    pub batch: Option<u32>,
    /// Workers' learning rate (default: 0.05 for the cnn, 0.1 for the mlp).
    #[arg(long)]
    pub lr: Option<f32>,
    /// Use only this many training samples (default: all).
    #[arg(long)]
    pub max_train_samples: Option<u32>,
    /// Cap per owner (default: just above 1/owners).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Seconds a worker has per round before it is dropped (default 20).
    #[arg(long)]
    pub round_timeout_secs: Option<u64>,
    /// The workers' learning rate over the rounds: constant or cosine
    /// (default).
    #[arg(long)]
    pub schedule: Option<LrSchedule>,
    /// Seconds nodes have to bid (default 3).
    #[arg(long)]
    pub bid_window_secs: Option<u64>,
    /// Step size of the coordinator's outer update (default 1).
    #[arg(long)]
    pub outer_lr: Option<f32>,
    /// Nesterov momentum of the outer update (default 0).
    #[arg(long)]
    pub outer_momentum: Option<f32>,
    /// Evaluate after every this many rounds and the last (default 1).
    #[arg(long)]
    pub eval_every: Option<u32>,
}

/// The demo job for `owners` owners, with capacity `small_cpu_milli` per
/// small owner's node (their capacity is then exactly the cap).
pub fn demo_request(
    model: Model,
    data: &str,
    owners: usize,
    small_cpu_milli: u64,
    tuning: &Tuning,
) -> anyhow::Result<JobRequest> {
    let facts = dataset_facts(data, DataCheck::Local)
        .map_err(|(field, reason)| anyhow::anyhow!("--data: {field}: {reason}"))?
        .context("the dataset was not inspected")?;
    let available = facts.train_samples.context("unknown sample count")?;
    let used = tuning
        .max_train_samples
        .map_or(available, |m| u64::from(m).min(available));
    let shards = SHARDS_PER_OWNER * owners as u64;
    let shard_size = used.div_ceil(shards).max(1);
    let alpha = tuning
        .alpha
        .unwrap_or_else(|| (100.0 / owners as f64).ceil().min(100.0) / 100.0);
    let (rounds, local_steps, lr) = match model {
        Model::Cnn => (30, 8, 0.05),
        Model::Mlp => (30, 20, 0.1),
    };
    Ok(JobRequest {
        name: format!("testnet-demo-{}", model.name()),
        model: ModelChoice {
            arch: model.arch(),
            hidden: None,
            layers: None,
        },
        data: DataChoice {
            source: data.to_string(),
            shard_size: u32::try_from(shard_size).context("shard size")?,
            max_train_samples: tuning.max_train_samples,
        },
        training: TrainingChoice {
            rounds: tuning.rounds.unwrap_or(rounds),
            local_steps: tuning.local_steps.unwrap_or(local_steps),
            batch_size: tuning.batch.unwrap_or(8),
            lr: tuning.lr.unwrap_or(lr),
            schedule: tuning.schedule.unwrap_or(LrSchedule::Cosine),
            outer_lr: tuning.outer_lr.unwrap_or(1.0),
            outer_momentum: tuning.outer_momentum.unwrap_or(0.0),
            eval_every: tuning.eval_every.unwrap_or(1),
            ..TrainingChoice::default()
        },
        market: MarketChoice {
            alpha,
            // A small owner's node holds exactly SHARDS_PER_OWNER shards.
            demand_per_shard: ShardDemand {
                cpu_milli: small_cpu_milli / SHARDS_PER_OWNER,
                mem_mib: 16,
                gpu_milli: 0,
                gpu_mem_mib: 0,
            },
            bid_window_secs: tuning.bid_window_secs.unwrap_or(3),
            round_timeout_secs: tuning.round_timeout_secs.unwrap_or(20),
            deadline_secs: 3600,
            ..MarketChoice::default()
        },
        result: Default::default(),
    })
}

/// Makes the demo job a GPU job: each shard demands a quarter of a GPU
/// (`1000 / SHARDS_PER_OWNER` thousandths), so a node offering one GPU can
/// win an owner's whole share, and a node offering none wins nothing. The
/// GPU memory each node needs is checked by the node itself before it
/// bids (the model, its batch and the CUDA context), so the job declares
/// none.
pub fn on_gpus(request: &mut JobRequest) {
    request.market.demand_per_shard.gpu_milli = 1000 / SHARDS_PER_OWNER;
    request.name.push_str("-cuda");
}

/// "the built-in Fashion-MNIST subset (10000 train / 2000 test images,
/// compiled into the binary)" or the directory read.
pub fn describe_data(data: &str) -> String {
    match data {
        "builtin" => format!(
            "the built-in Fashion-MNIST subset ({} train / {} test images, compiled into the node)",
            fairgrid_sdk::jobfile::BUILTIN_TRAIN_SAMPLES,
            fairgrid_sdk::jobfile::BUILTIN_TEST_SAMPLES
        ),
        "system" => format!(
            "the full Fashion-MNIST from {}",
            fairgrid_sdk::jobfile::SYSTEM_DATASET_DIR
        ),
        dir => format!("Fashion-MNIST (IDX files) from {dir}"),
    }
}

/// Submits `request`, follows it with a progress bar for up to
/// `timeout_secs`, and fails unless it finished: the job's id, what was
/// followed, and the wall time from submission.
pub async fn submit_and_follow(
    client: &fairgrid_sdk::Client,
    request: &JobRequest,
    timeout_secs: u64,
) -> anyhow::Result<(
    String,
    fairgrid_node::cli::job::FollowReport,
    std::time::Duration,
)> {
    let started = std::time::Instant::now();
    let accepted = client.submit_job(request).await.context("submitting")?;
    let followed = tokio::time::timeout(
        std::time::Duration::from_secs(timeout_secs),
        fairgrid_node::cli::job::follow_with_progress(
            client,
            &accepted.job_id,
            request.training.rounds,
            |_| {},
        ),
    )
    .await
    .context("the job did not end in time")??;
    let wall = started.elapsed();
    if followed.state != fairgrid_sdk::jobs::JobState::Finished {
        anyhow::bail!("the job failed: {:?}", followed.failure);
    }
    Ok((accepted.job_id, followed, wall))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_sdk::jobfile::validate;

    #[test]
    fn the_demo_job_is_valid_and_its_cap_is_four_shards() {
        for (owners, alpha) in [(3, 0.34), (2, 0.5), (1, 1.0), (4, 0.25)] {
            let request =
                demo_request(Model::Cnn, "builtin", owners, 1000, &Tuning::default()).unwrap();
            assert_eq!(request.market.alpha, alpha);
            let plan = validate(&request, "demo", DataCheck::Local).unwrap();
            assert_eq!(plan.shards, Some(4 * owners as u64), "{owners} owners");
            assert_eq!(plan.owner_cap, Some(4), "{owners} owners");
            assert_eq!(request.market.demand_per_shard.cpu_milli, 250);
        }
        let tiny = Tuning {
            rounds: Some(2),
            max_train_samples: Some(600),
            ..Tuning::default()
        };
        let request = demo_request(Model::Mlp, "builtin", 3, 1000, &tiny).unwrap();
        assert_eq!(request.data.shard_size, 50);
        assert_eq!(request.training.rounds, 2);
        assert!(demo_request(Model::Mlp, "/nonexistent", 3, 1000, &tiny).is_err());
        let mut gpu = demo_request(Model::Cnn, "builtin", 3, 1000, &tiny).unwrap();
        on_gpus(&mut gpu);
        assert_eq!(gpu.market.demand_per_shard.gpu_milli, 250);
        validate(&gpu, "demo", DataCheck::Local).unwrap();
    }

    #[test]
    fn the_sdk_knows_the_builtin_subset_s_size() {
        let data = fairgrid_kernels::data::builtin::fashion_mnist().unwrap();
        use fairgrid_kernels::data::Samples;
        assert_eq!(
            data.train.len() as u64,
            fairgrid_sdk::jobfile::BUILTIN_TRAIN_SAMPLES
        );
        assert_eq!(
            data.test.len() as u64,
            fairgrid_sdk::jobfile::BUILTIN_TEST_SAMPLES
        );
    }
}
