//! What `fairgrid job list|status|result|explain|report` print.

use std::path::Path;

use anyhow::Context;
use fairgrid_sdk::jobs::{JobListQuery, JobState};
use fairgrid_sdk::{Client, render};

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn list(client: &Client, args: &super::ListArgs) -> anyhow::Result<()> {
    let (jobs, more) = if args.all {
        (client.jobs().await?, false)
    } else {
        let page = client
            .jobs_page(&JobListQuery {
                limit: Some(args.limit),
                ..JobListQuery::default()
            })
            .await?;
        (page.jobs, page.next.is_some())
    };
    if args.json {
        return print_json(&jobs);
    }
    print!("{}", render::jobs_table(&jobs));
    if more {
        println!("showing the newest {}; --all lists every job", jobs.len());
    } else {
        println!("{} jobs", jobs.len());
    }
    Ok(())
}

pub async fn status(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let s = client.job(id).await?;
    if json {
        return print_json(&s);
    }
    println!("job       {}", s.job_id);
    println!("name      {}", s.name);
    println!(
        "state     {} (round {}/{})",
        render::state(s.state),
        s.round,
        s.rounds
    );
    println!(
        "training  {} on {}, {} shards, {} workers",
        s.model, s.dataset, s.shards, s.workers
    );
    if let Some(loss) = s.last_loss {
        println!(
            "last      loss {loss:.4}, test accuracy {}",
            s.last_accuracy
                .map_or("-".into(), |a| render::percent(f64::from(a)))
        );
    }
    if let Some(eta) = s.eta_secs
        && !s.state.is_terminal()
    {
        println!("eta       {eta} s");
    }
    if let Some(error) = &s.error {
        println!("error     {error}");
    }
    Ok(())
}

pub async fn result(client: &Client, id: &str, out: &Path) -> anyhow::Result<()> {
    let got = client
        .download_result_verified(id, out)
        .await
        .with_context(|| format!("downloading the model of job {id}"))?;
    println!(
        "wrote {} ({}) to {}; BLAKE3 {} matches the job's report",
        render::bytes(got.bytes),
        got.bytes,
        got.path.display(),
        got.blake3
    );
    Ok(())
}

pub async fn explain(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let allocation = match client.job_allocation(id).await {
        Ok(a) => a,
        Err(e) if e.status() == Some(409) => {
            println!("job {id} is still bidding: no allocation yet ({e})");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        return print_json(&allocation);
    }
    print!("{}", render::allocation_table(&allocation));
    println!();
    // The market's own account: the caps, the price levels, who was
    // capped and why, the VCG payments.
    print!("{}", client.job_explain(id).await?);
    Ok(())
}

pub async fn report(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let r = client.job_report(id).await?;
    if json {
        return print_json(&r);
    }
    println!("job {} ({})", r.job_id, render::state(r.state));
    print!("{}", render::rounds_table(&r.rounds));
    if let Some(acc) = r.final_test_accuracy {
        println!("final test accuracy {}", render::percent(f64::from(acc)));
    }
    println!(
        "bytes moved: {} up (updates), {} down (parameters)",
        render::bytes(r.bytes_up),
        render::bytes(r.bytes_down)
    );
    if let Some(a) = &r.allocation {
        println!();
        print!("{}", render::allocation_table(a));
    }
    if !r.credits.is_empty() {
        println!();
        print!("{}", render::credits_table(&r.credits));
    }
    if let Some(hash) = &r.model_hash {
        println!("model BLAKE3 {hash}");
    }
    Ok(())
}

/// After `--follow`: the allocation and the outcome in a few lines.
pub async fn summary(client: &Client, id: &str) -> anyhow::Result<()> {
    let r = client.job_report(id).await?;
    if let Some(a) = &r.allocation {
        println!();
        print!("{}", render::allocation_table(a));
    }
    println!(
        "{}: test accuracy {}, {} rounds, {} up, {} down",
        render::state(r.state),
        r.final_test_accuracy
            .map_or("-".into(), |a| render::percent(f64::from(a))),
        r.rounds.len(),
        render::bytes(r.bytes_up),
        render::bytes(r.bytes_down)
    );
    if r.state != JobState::Finished {
        anyhow::bail!("job {id} is {}", render::state(r.state));
    }
    Ok(())
}
