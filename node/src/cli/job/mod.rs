//! `fairgrid job submit|list|status|follow|result|explain|report`: the
//! developer's side of training jobs, built on the SDK. The node the
//! commands talk to is the job's coordinator: the running node of the data
//! dir (its `run/api.addr` and `api.token`), or `--api URL`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use fairgrid_sdk::jobfile::{self, DataCheck, JobPlan};
use fairgrid_sdk::jobs::{JobListQuery, JobRequest, JobState};
use fairgrid_sdk::{Client, render};

use super::DataDirArgs;

pub mod progress;
mod show;

pub use progress::{FollowReport, follow_with_progress};

#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// API base URL (default: the running node's address from its data dir).
    #[arg(long, value_name = "URL", global = true)]
    pub api: Option<String>,
    /// API bearer token (default: the data dir's api.token).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FAIRGRID_API_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Check a job.toml and submit it to the node (its coordinator).
    Submit(SubmitArgs),
    /// List the jobs the node coordinates, newest first.
    List(ListArgs),
    /// One job's state, round, loss and accuracy.
    Status(IdArgs),
    /// Follow a job's events until it finishes (a progress bar).
    Follow(IdArgs),
    /// Download the trained model (safetensors), checked against the report.
    Result(ResultArgs),
    /// Who got how many shards, at what price, the caps, and why.
    Explain(IdArgs),
    /// Loss and accuracy per round, bytes moved, credits.
    Report(IdArgs),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job file (see docs/examples/job.toml).
    pub file: PathBuf,
    /// Follow the job with a progress bar until it finishes or fails.
    #[arg(long)]
    pub follow: bool,
    /// Do not look for the dataset directory here (the node is remote).
    #[arg(long)]
    pub skip_data_check: bool,
    /// Print JSON (with --follow: one event per line).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show at most this many jobs (the newest).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    /// Show every job, however many.
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The job id (64 hex digits, or a unique prefix of one).
    pub id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The job id (64 hex digits, or a unique prefix of one).
    pub id: String,
    /// Where to write the model.
    #[arg(short, long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(args: JobArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        match args.command {
            JobCommand::Submit(submit) => submit_job(&client, submit).await,
            JobCommand::List(a) => show::list(&client, &a).await,
            JobCommand::Status(a) => {
                let id = resolve_id(&client, &a.id).await?;
                show::status(&client, &id, a.json).await
            }
            JobCommand::Follow(a) => {
                let id = resolve_id(&client, &a.id).await?;
                follow(&client, &id, a.json).await
            }
            JobCommand::Result(a) => {
                let id = resolve_id(&client, &a.id).await?;
                show::result(&client, &id, &a.out).await
            }
            JobCommand::Explain(a) => {
                let id = resolve_id(&client, &a.id).await?;
                show::explain(&client, &id, a.json).await
            }
            JobCommand::Report(a) => {
                let id = resolve_id(&client, &a.id).await?;
                show::report(&client, &id, a.json).await
            }
        }
    })
}

/// The node's API client: `--api`/`--token`, else the data dir's run file
/// and token.
fn client(args: &JobArgs) -> anyhow::Result<Client> {
    let dir = args.data.dir();
    let token = match &args.token {
        Some(token) => token.clone(),
        None => dir.load_token().context("reading the API token")?,
    };
    let base = match &args.api {
        Some(url) => url.clone(),
        None => format!(
            "http://{}",
            dir.running_api_addr()
                .context("is the node running? (no run/api.addr in its data dir)")?
        ),
    };
    Ok(Client::new(&base, &token)?)
}

/// A full id as given, or the one job whose id starts with `given`.
async fn resolve_id(client: &Client, given: &str) -> anyhow::Result<String> {
    let given = given.trim();
    if fairgrid_sdk::check_job_id(given).is_ok() {
        return Ok(given.to_ascii_lowercase());
    }
    if given.len() < 4 || given.len() > 64 || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{given:?} is not a job id (64 hex digits, or a prefix of at least 4)");
    }
    let prefix = given.to_ascii_lowercase();
    let page = client
        .jobs_page(&JobListQuery {
            limit: Some(2),
            id_prefix: Some(prefix.clone()),
            ..JobListQuery::default()
        })
        .await?;
    match page.jobs.as_slice() {
        [one] => Ok(one.job_id.clone()),
        [] => bail!("no job of this node starts with {prefix}"),
        _ => bail!("{prefix} matches more than one job; give more digits"),
    }
}

/// One line on what a checked job file amounts to.
pub fn describe_plan(request: &JobRequest, plan: &JobPlan) -> String {
    let t = &request.training;
    let data = match (plan.train_samples, plan.shards) {
        (Some(samples), Some(shards)) => format!(
            "{samples} samples of {} in {shards} shards of {}",
            request.data.source, request.data.shard_size
        ),
        _ => format!(
            "{} in shards of {}",
            request.data.source, request.data.shard_size
        ),
    };
    let cap = plan
        .owner_cap
        .map_or(String::new(), |c| format!(" = {c} shards per owner"));
    format!(
        "{}: {} on {data}; {} rounds of {} local steps x batch {} per shard, {} updates; cap alpha {}{cap}; limit price {}",
        request.name,
        request.model.arch,
        t.rounds,
        t.local_steps,
        t.batch_size,
        t.compression,
        request.market.alpha,
        request.market.limit_price
    )
}

async fn submit_job(client: &Client, args: SubmitArgs) -> anyhow::Result<()> {
    let check = if args.skip_data_check {
        DataCheck::Skip
    } else {
        DataCheck::Local
    };
    let (request, plan) = jobfile::load(&args.file, check)?;
    if !args.json {
        println!("{}", describe_plan(&request, &plan));
    }
    let accepted = match client.submit_job(&request).await {
        Ok(accepted) => accepted,
        Err(e) if e.status() == Some(404) => {
            return Err(e).context("this node does not serve the jobs API (an older fairgrid?)");
        }
        Err(e) => return Err(e).context("the node refused the job"),
    };
    if args.json && !args.follow {
        println!("{}", serde_json::to_string_pretty(&accepted)?);
        return Ok(());
    }
    if !args.json {
        println!(
            "submitted job {} to {} ({} shards of {})",
            accepted.job_id,
            render::short(&accepted.coordinator),
            accepted.shards,
            accepted.dataset
        );
    }
    if !args.follow {
        println!("follow it with: fairgrid job follow {}", accepted.job_id);
        return Ok(());
    }
    follow(client, &accepted.job_id, args.json).await
}

/// Follows to the end; a failed job is an error (non-zero exit) that
/// carries the node's reason.
async fn follow(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return progress::follow_json(client, id).await;
    }
    let rounds = client.job(id).await?.rounds;
    let report = follow_with_progress(client, id, rounds, |_| {}).await?;
    match report.state {
        JobState::Finished => {
            show::summary(client, id).await?;
            println!("fetch the model with: fairgrid job result {id} -o model.safetensors");
            Ok(())
        }
        _ => bail!(
            "job {id} failed: {}",
            report.failure.as_deref().unwrap_or("no reason given")
        ),
    }
}
