//! `fairgrid ledger verify|show|export`: offline access to a node's ledger
//! (the node must be stopped; a running node answers through its API).

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::DataDirArgs;
use crate::ledger::{LedgerStore, StoredEntry, verify};

#[derive(Debug, Args)]
pub struct LedgerArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    #[command(subcommand)]
    pub command: LedgerCommand,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Check every hash link and signature; exit non-zero on the first fault.
    Verify,
    /// Print entries.
    Show {
        /// Start after this seq.
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Export every entry (own, then foreign) as JSON lines.
    Export {
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

fn open(args: &LedgerArgs) -> anyhow::Result<LedgerStore> {
    let dir = args.data.dir();
    let path = dir.ledger_path();
    if !path.exists() {
        bail!("{} has no ledger", dir.root().display());
    }
    Ok(LedgerStore::open(&path)?)
}

fn json_line(stored: &StoredEntry) -> anyhow::Result<String> {
    let entry = stored.entry()?;
    let view = crate::api::entry_view(stored, &entry);
    Ok(serde_json::to_string(&view)?)
}

pub fn run(args: LedgerArgs) -> anyhow::Result<()> {
    let store = open(&args)?;
    match args.command {
        LedgerCommand::Verify => {
            let started = Instant::now();
            let report = verify::verify_store(&store).context("ledger verification FAILED")?;
            println!(
                "ledger OK: {} own entries (head {}), {} foreign entries, verified in {:.2} s",
                report.own_entries,
                if report.own_entries == 0 {
                    "-".to_string()
                } else {
                    report.head.to_hex()
                },
                report.foreign_entries,
                started.elapsed().as_secs_f64()
            );
        }
        LedgerCommand::Show { after, limit } => {
            for stored in store.page(after, limit)? {
                let entry = stored.entry()?;
                println!(
                    "{:>8}  {}  {:<17} {}",
                    entry.seq,
                    entry.timestamp,
                    entry.body.kind().name(),
                    serde_json::to_string(&entry.body)?
                );
            }
        }
        LedgerCommand::Export { out } => {
            let mut sink: Box<dyn Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut n = 0u64;
            for stored in store.iter_own().chain(store.iter_foreign()) {
                writeln!(sink, "{}", json_line(&stored?)?)?;
                n += 1;
            }
            sink.flush()?;
            if out.is_some() {
                eprintln!("exported {n} entries");
            }
        }
    }
    Ok(())
}
