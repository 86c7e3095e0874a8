//! `fairgrid owner new|certify|revoke`: owner keys, node certificates and
//! revocation lists. An owner directory holds:
//!
//! ```text
//! owner.key        owner secret key, hex, mode 0600
//! next_serial      the serial the next certificate gets
//! revoked.json     {"seq": N, "serials": [...]}: what has been revoked
//! revocations.rev  the latest signed revocation list (give it to nodes)
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use fairgrid_protocol::{Keypair, NodeId, OwnerCertificate, ResourceVec, Revocation, Signed};
use serde::{Deserialize, Serialize};

use crate::datadir::{self, read_secret_key, signed_hex_text, write_atomic, write_secret_key};
use crate::ledger::now_ms;

#[derive(Debug, Args)]
pub struct OwnerArgs {
    /// Owner directory (default: $FAIRGRID_OWNER_DIR or ~/.fairgrid-owner).
    #[arg(long, value_name = "DIR", global = true)]
    pub owner_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: OwnerCommand,
}

#[derive(Debug, Subcommand)]
pub enum OwnerCommand {
    /// Create an owner key and print the owner id (for allowlists).
    New,
    /// Certify a node as belonging to this owner.
    Certify(CertifyArgs),
    /// Revoke a certificate by serial; writes a signed revocation list.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CertifyArgs {
    /// The node's PeerId (12D3KooW...), from `fairgrid init`.
    #[arg(long)]
    pub node: String,
    /// Human-readable owner name, e.g. "Univ A" (at most 64 bytes).
    #[arg(long)]
    pub label: String,
    /// Most the node may claim, e.g. "cpu_milli=8000,mem_mib=16384,gpu_milli=1000".
    #[arg(long, value_name = "RESOURCES")]
    pub max_capacity: String,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub valid_days: u64,
    /// Where to write the certificate (default: ./<PEERID>.cert). Copy it
    /// to the node's data dir as node.cert.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Serial of the certificate to revoke.
    pub serial: u64,
    /// Where to write the signed list (default: <owner dir>/revocations.rev).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Revoked {
    seq: u64,
    serials: BTreeSet<u64>,
}

fn owner_dir(args: &OwnerArgs) -> PathBuf {
    if let Some(dir) = &args.owner_dir {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("FAIRGRID_OWNER_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".fairgrid-owner")
}

pub fn run(args: OwnerArgs) -> anyhow::Result<()> {
    let dir = owner_dir(&args);
    match args.command {
        OwnerCommand::New => new(&dir),
        OwnerCommand::Certify(c) => certify(&dir, c),
        OwnerCommand::Revoke(r) => revoke(&dir, r),
    }
}

fn load_owner(dir: &Path) -> anyhow::Result<Keypair> {
    let path = dir.join("owner.key");
    read_secret_key(&path).with_context(|| {
        format!(
            "no usable owner key in {} (run `fairgrid owner new`)",
            dir.display()
        )
    })
}

fn new(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("owner.key");
    if path.exists() {
        bail!(
            "{} already exists; refusing to overwrite an owner key",
            path.display()
        );
    }
    let key = Keypair::generate();
    write_secret_key(&path, &key)?;
    write_atomic(&dir.join("next_serial"), b"1\n")?;
    println!("owner id: {}", key.owner_id());
    println!("owner key: {}", path.display());
    Ok(())
}

/// Parses "cpu_milli=8000,mem_mib=16384" into a resource vector.
pub fn parse_resources(text: &str) -> anyhow::Result<ResourceVec> {
    let mut values = [0u64; 4];
    let mut seen = false;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .with_context(|| format!("{part:?} is not NAME=VALUE"))?;
        let index = ResourceVec::KINDS
            .iter()
            .position(|k| *k == name.trim())
            .with_context(|| {
                format!(
                    "unknown resource {name:?}; use {}",
                    ResourceVec::KINDS.join(", ")
                )
            })?;
        values[index] = value
            .trim()
            .parse()
            .with_context(|| format!("{value:?} is not a whole number"))?;
        seen = true;
    }
    if !seen {
        bail!("no resources given, e.g. cpu_milli=8000,mem_mib=16384");
    }
    Ok(ResourceVec::from_array(values))
}

fn certify(dir: &Path, args: CertifyArgs) -> anyhow::Result<()> {
    let owner = load_owner(dir)?;
    let node: NodeId = args
        .node
        .parse()
        .with_context(|| format!("--node {:?} is not a PeerId", args.node))?;
    if args.label.is_empty() || args.label.len() > fairgrid_protocol::cert::MAX_LABEL_BYTES {
        bail!("--label must be 1..=64 bytes");
    }
    if args.valid_days == 0 || args.valid_days > 3650 {
        bail!("--valid-days must be in 1..=3650");
    }
    let max_capacity = parse_resources(&args.max_capacity)?;
    let serial_path = dir.join("next_serial");
    let serial: u64 = std::fs::read_to_string(&serial_path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1);
    let now = now_ms();
    let cert = OwnerCertificate {
        node,
        owner: owner.owner_id(),
        label: args.label.clone(),
        max_capacity,
        valid_from: now.saturating_sub(60_000),
        valid_until: now + args.valid_days * 86_400_000,
        serial,
    };
    let signed = Signed::sign(&owner, &cert);
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{node}.cert")));
    let comment = format!(
        "owner certificate: node {node}, owner {} ({}), serial {serial}",
        owner.owner_id(),
        args.label
    );
    write_atomic(&out, signed_hex_text(&comment, &signed).as_bytes())?;
    write_atomic(&serial_path, format!("{}\n", serial + 1).as_bytes())?;
    // Read it back the way a node will.
    datadir::read_certificate(&out)?;
    println!(
        "certificate serial {serial} for {node} written to {}",
        out.display()
    );
    Ok(())
}

fn revoke(dir: &Path, args: RevokeArgs) -> anyhow::Result<()> {
    let owner = load_owner(dir)?;
    let state_path = dir.join("revoked.json");
    let mut revoked: Revoked = match std::fs::read_to_string(&state_path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged", state_path.display()))?,
        Err(_) => Revoked::default(),
    };
    revoked.serials.insert(args.serial);
    revoked.seq += 1;
    let list = Revocation {
        owner: owner.owner_id(),
        seq: revoked.seq,
        serials: revoked.serials.clone(),
        issued_at: now_ms(),
    };
    let signed = Signed::sign(&owner, &list);
    let out = args.out.unwrap_or_else(|| dir.join("revocations.rev"));
    let comment = format!(
        "revocation list {} of owner {}",
        revoked.seq,
        owner.owner_id()
    );
    write_atomic(&out, signed_hex_text(&comment, &signed).as_bytes())?;
    write_atomic(
        &state_path,
        serde_json::to_string_pretty(&revoked)?.as_bytes(),
    )?;
    println!(
        "revoked serial {}; list {} ({} serials) written to {}",
        args.serial,
        revoked.seq,
        revoked.serials.len(),
        out.display()
    );
    println!("add it to each node's trust.revocation_files and restart the node");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_strictly() {
        let r = parse_resources("cpu_milli=8000, mem_mib=16384").unwrap();
        assert_eq!((r.cpu_milli, r.mem_mib, r.gpu_milli), (8000, 16384, 0));
        assert!(parse_resources("cpu=8").is_err());
        assert!(parse_resources("cpu_milli=-1").is_err());
        assert!(parse_resources("").is_err());
    }
}
