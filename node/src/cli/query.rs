//! `fairgrid status|peers|adverts`: read the running node's API through
//! the SDK.

use anyhow::Context;
use clap::Args;
use fairgrid_sdk::Client;

use super::DataDirArgs;

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// API base URL (default: the running node's address from its data dir).
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn client(args: &QueryArgs) -> anyhow::Result<Client> {
    let dir = args.data.dir();
    let token = dir.load_token().context("reading the API token")?;
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

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn status(args: QueryArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let status = super::runtime()?.block_on(client.status())?;
    if args.json {
        return print_json(&status);
    }
    println!("node      {}", status.node_id);
    println!(
        "owner     {} ({}{})",
        status.owner,
        status.owner_label,
        if status.certified {
            ", certified"
        } else {
            ", self-owned"
        }
    );
    println!(
        "mode      {}",
        if status.consortium {
            "consortium"
        } else {
            "open"
        }
    );
    println!("uptime    {} s", status.uptime_secs);
    for addr in &status.listen_addrs {
        println!("listen    {addr}");
    }
    for addr in &status.relayed_addrs {
        println!("relayed   {addr}");
    }
    if !status.reachability.is_empty() {
        println!("reachable {} (AutoNAT)", status.reachability);
    }
    if !status.upnp.is_empty() && status.upnp != "off" {
        println!("upnp      {}", status.upnp);
    }
    for addr in &status.upnp_addrs {
        println!("mapped    {addr} (UPnP)");
    }
    println!("peers     {}", status.peers);
    println!("adverts   {} live", status.live_adverts);
    if let Some(own) = &status.own_advert {
        println!(
            "offering  {} cores ({} GFLOP/s measured), {} MiB, floor {} (seq {}, expires {})",
            own.offered.cpu_milli / 1000,
            own.hardware.cpu_gflops,
            own.offered.mem_mib,
            own.price_floor,
            own.seq,
            own.expires_at
        );
    }
    if let Some(why) = &status.not_offering {
        println!("paused    not offering: {why}");
    }
    println!(
        "ledger    {} entries, {} foreign, head {}",
        status.ledger.entries,
        status.ledger.foreign_entries,
        status.ledger.head.as_deref().unwrap_or("-")
    );
    Ok(())
}

pub fn peers(args: QueryArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let peers = super::runtime()?.block_on(client.peers())?;
    if args.json {
        return print_json(&peers);
    }
    println!(
        "{:<54} {:>7} {:>8} {:>9} {:<12} address",
        "peer", "rtt_ms", "score", "admitted", "via"
    );
    for p in &peers {
        let via = if p.transports.is_empty() {
            "-".to_string()
        } else {
            p.transports.join(",")
        };
        println!(
            "{:<54} {:>7} {:>8} {:>9} {:<12} {}",
            p.peer_id,
            p.rtt_ms.map_or("-".into(), |r| r.to_string()),
            p.gossip_score.map_or("-".into(), |s| format!("{s:.1}")),
            p.admitted,
            via,
            p.addresses.first().map_or("-", String::as_str)
        );
    }
    println!("{} peers", peers.len());
    Ok(())
}

pub fn adverts(args: QueryArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let adverts = super::runtime()?.block_on(client.adverts())?;
    if args.json {
        return print_json(&adverts);
    }
    println!(
        "{:<54} {:<16} {:>5} {:>7} {:>9} {:>6} {:>15}  reach",
        "node", "owner", "cores", "gflops", "mem_mib", "floor", "seq"
    );
    for a in &adverts {
        println!(
            "{:<54} {:<16} {:>5} {:>7} {:>9} {:>6} {:>15}  {}",
            a.node_id,
            a.owner_label.chars().take(16).collect::<String>(),
            a.offered.cpu_milli / 1000,
            a.hardware.cpu_gflops,
            a.offered.mem_mib,
            a.price_floor,
            a.seq,
            a.reach
        );
    }
    println!("{} live adverts", adverts.len());
    Ok(())
}
