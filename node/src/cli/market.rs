//! `fairgrid market clear --input instance.json [--explain]`: clear a
//! human-written market instance and print the allocation (JSON) or an
//! account of why each owner got what it got.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use fairgrid_protocol::market::explain::explain;
use fairgrid_protocol::market::instance::{Instance, MAX_INSTANCE_BYTES};

#[derive(Debug, Args)]
pub struct MarketArgs {
    #[command(subcommand)]
    pub command: MarketCommand,
}

#[derive(Debug, Subcommand)]
pub enum MarketCommand {
    /// Clear a JSON market instance (format: docs/protocol.md, "Market instance format").
    Clear(ClearArgs),
}

#[derive(Debug, Args)]
pub struct ClearArgs {
    /// The instance file (`-` reads standard input).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Print a readable explanation instead of the JSON allocation.
    #[arg(long)]
    pub explain: bool,
}

pub fn run(args: MarketArgs) -> anyhow::Result<()> {
    match args.command {
        MarketCommand::Clear(args) => clear(args),
    }
}

fn clear(args: ClearArgs) -> anyhow::Result<()> {
    let text = read_bounded(&args.input)?;
    let name = args.input.display();
    let instance =
        Instance::from_json(&text).with_context(|| format!("invalid instance {name}"))?;
    let outcome = instance
        .clear()
        .with_context(|| format!("clearing {name} failed"))?;
    if args.explain {
        print!("{}", explain(&outcome));
    } else {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    }
    Ok(())
}

/// Reads the file (or stdin), refusing more than the instance limit.
fn read_bounded(path: &PathBuf) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    let limit = MAX_INSTANCE_BYTES as u64 + 1;
    if path.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open {}", path.display()))?
            .take(limit)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
    if bytes.len() > MAX_INSTANCE_BYTES {
        bail!(
            "{} is larger than {MAX_INSTANCE_BYTES} bytes",
            path.display()
        );
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))
}
