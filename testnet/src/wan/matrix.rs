//! `fairgrid-testnet nat-matrix`: for each pair of NAT types, two nodes
//! behind them (one per site) and a relay on the internet. Both hold a
//! slot on the relay; the first dials the second through it, as a node
//! reachable only through a relay is dialled, and DCUtR may then punch a
//! direct connection. Per trial: how the two ended up connected (directly
//! by TCP or QUIC, relayed, or not at all) and the hole punches each side
//! counted in `/metrics`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::netns::Netns;
use super::node::WanNode;
use super::testbed::{Nat, Testbed};
use crate::launcher::Launcher;

#[derive(Debug, Clone, clap::Args)]
pub struct MatrixArgs {
    /// Trials per pair of NAT types.
    #[arg(long, default_value_t = 3)]
    pub trials: usize,
    /// How long a relayed pair is given to punch a direct connection.
    #[arg(long, default_value_t = 20)]
    pub punch_secs: u64,
    /// Only these NAT types (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub nats: Vec<Nat>,
    /// Keep each trial's data dirs and logs (their paths are printed).
    #[arg(long)]
    pub keep_files: bool,
    /// Transports to run the matrix over (the nodes reach the relay, and
    /// so learn their public address, by this one).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Over::Tcp, Over::Quic])]
    pub transports: Vec<Over>,
    /// The nodes' tracing filter (e.g. "info,fairgrid::net=debug,libp2p_dcutr=debug").
    #[arg(long, default_value = "info")]
    pub log_filter: String,
}

/// The transport a trial's nodes use to reach the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Over {
    Tcp,
    Quic,
}

impl std::fmt::Display for Over {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Over::Tcp => "tcp",
            Over::Quic => "quic",
        })
    }
}

/// How the two nodes of a trial ended up connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A direct connection, over this transport (`tcp` or `quic`).
    Direct(String),
    Relayed,
    NotConnected,
}

#[derive(Debug, Clone)]
pub struct Trial {
    pub nats: (Nat, Nat),
    pub over: Over,
    pub outcome: Outcome,
    /// From the dial through the relay to a direct connection.
    pub time_to_direct: Option<Duration>,
    /// `fairgrid_hole_punches_total` lines of both nodes.
    pub punches: Vec<String>,
}

/// Every unordered pair of `nats` (with each type paired with itself).
pub fn pairs(nats: &[Nat]) -> Vec<(Nat, Nat)> {
    let mut out = Vec::new();
    for (i, &a) in nats.iter().enumerate() {
        for &b in &nats[i..] {
            out.push((a, b));
        }
    }
    out
}

pub fn run(launcher: &Launcher, args: &MatrixArgs) -> anyhow::Result<Vec<Trial>> {
    if let Some(why) = super::netns::unavailable() {
        bail!("{why}");
    }
    let nats = if args.nats.is_empty() {
        Nat::ALL.to_vec()
    } else {
        args.nats.clone()
    };
    let mut trials = Vec::new();
    for &over in &args.transports {
        for pair in pairs(&nats) {
            for k in 0..args.trials {
                let trial = one_trial(launcher, pair, over, args).with_context(|| {
                    format!(
                        "trial {} of {} / {} over {over}",
                        k + 1,
                        pair.0.label(),
                        pair.1.label()
                    )
                })?;
                eprintln!(
                    "{over:<5} {:<16} {:<16} {}",
                    pair.0.label(),
                    pair.1.label(),
                    describe(&trial)
                );
                trials.push(trial);
            }
        }
    }
    Ok(trials)
}

fn describe(trial: &Trial) -> String {
    let outcome = match (&trial.outcome, trial.time_to_direct) {
        (Outcome::Direct(t), Some(after)) => format!("direct ({t}) after {after:.1?}"),
        (Outcome::Direct(t), None) => format!("direct ({t})"),
        (Outcome::Relayed, _) => "relayed".into(),
        (Outcome::NotConnected, _) => "not connected".into(),
    };
    format!("{outcome}; {}", trial.punches.join("; "))
}

fn one_trial(
    launcher: &Launcher,
    nats: (Nat, Nat),
    over: Over,
    args: &MatrixArgs,
) -> anyhow::Result<Trial> {
    let punch = Duration::from_secs(args.punch_secs);
    let log = ("FAIRGRID_LOG_FILTER".to_string(), args.log_filter.clone());
    let mut files = tempfile::Builder::new().prefix("fairgrid-nat-").tempdir()?;
    if args.keep_files {
        files.disable_cleanup(true);
        eprintln!("files: {}", files.path().display());
    }
    let testbed = Testbed::create(&[nats.0, nats.1], None)?;
    let relay = WanNode::start(
        launcher,
        &testbed.internet,
        "relay",
        &files.path().join("relay"),
        &[
            ("FAIRGRID_NETWORK_RELAY_SERVER".into(), "true".into()),
            log.clone(),
        ],
        &[],
    )?;
    let relay_addr = match over {
        Over::Tcp => relay.tcp_addr(Testbed::INTERNET_HOST),
        Over::Quic => relay.quic_addr(Testbed::INTERNET_HOST),
    };
    let behind_nat = |i: usize| {
        WanNode::start(
            launcher,
            &testbed.sites[i].host,
            &format!("node{i}"),
            &files.path().join(format!("node{i}")),
            &[
                ("FAIRGRID_NETWORK_RELAYS".into(), relay_addr.clone()),
                log.clone(),
            ],
            &["--bootstrap".into(), relay_addr.clone()],
        )
    };
    let dialler = behind_nat(0)?;
    let dialled = behind_nat(1)?;
    let (a_ns, b_ns) = (&testbed.sites[0].host, &testbed.sites[1].host);

    for (node, ns) in [(&dialled, b_ns), (&dialler, a_ns)] {
        wait(Duration::from_secs(30), "relay slot", || {
            let status = node.api(ns, |c| async move { Ok(c.status().await?) })?;
            Ok(status.relayed_addrs.into_iter().next())
        })
        .map_err(|e| e.context(format!("{}: {}", node.name, node.log_tail(20))))?;
    }
    // Through the relay's public TCP address, as a peer that knows only
    // the relay would.
    let target = format!("{relay_addr}/p2p-circuit/p2p/{}", dialled.peer_id);
    dialler.api(a_ns, |c| {
        let target = target.clone();
        async move { Ok(c.dial(&target).await?) }
    })?;

    let started = Instant::now();
    let mut outcome = Outcome::NotConnected;
    let mut time_to_direct = None;
    while started.elapsed() < punch {
        let transports = transports_to(&dialler, a_ns, &dialled.peer_id)?;
        if let Some(direct) = transports.iter().find(|t| *t != "relayed") {
            outcome = Outcome::Direct(direct.clone());
            time_to_direct = Some(started.elapsed());
            break;
        }
        if transports.iter().any(|t| t == "relayed") {
            outcome = Outcome::Relayed;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut punches = Vec::new();
    for (node, ns) in [(&dialler, a_ns), (&dialled, b_ns)] {
        let metrics = node.api(ns, |c| async move { Ok(c.metrics().await?) })?;
        punches.extend(
            metrics
                .lines()
                .filter(|l| l.starts_with("fairgrid_hole_punches_total{"))
                .map(|l| format!("{}: {l}", node.name)),
        );
    }
    drop(relay);
    Ok(Trial {
        nats,
        over,
        outcome,
        time_to_direct,
        punches,
    })
}

pub(crate) fn transports_to(node: &WanNode, ns: &Netns, peer: &str) -> anyhow::Result<Vec<String>> {
    let peers = node.api(ns, |c| async move { Ok(c.peers().await?) })?;
    Ok(peers
        .into_iter()
        .find(|p| p.peer_id == peer)
        .map(|p| p.transports)
        .unwrap_or_default())
}

/// Polls `probe` every 100 ms until it yields a value, for up to `timeout`.
pub(crate) fn wait<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe()? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("no {what} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The matrix as a table, and the fraction of trials directly connected
/// among the pairs that can punch a hole.
pub fn report(trials: &[Trial]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<16} {:<16} {:>7} {:>7} {:>8} {:>6}  median time to direct",
        "over", "nat a", "nat b", "direct", "relayed", "none", "punch?"
    );
    let mut seen: Vec<(Over, (Nat, Nat))> = trials.iter().map(|t| (t.over, t.nats)).collect();
    seen.dedup();
    for (over, pair) in seen {
        let of_pair: Vec<&Trial> = trials
            .iter()
            .filter(|t| t.nats == pair && t.over == over)
            .collect();
        let count = |f: &dyn Fn(&Outcome) -> bool| of_pair.iter().filter(|t| f(&t.outcome)).count();
        let mut times: Vec<Duration> = of_pair.iter().filter_map(|t| t.time_to_direct).collect();
        times.sort();
        let _ = writeln!(
            out,
            "{:<5} {:<16} {:<16} {:>7} {:>7} {:>8} {:>6}  {}",
            over,
            pair.0.label(),
            pair.1.label(),
            count(&|o| matches!(o, Outcome::Direct(_))),
            count(&|o| *o == Outcome::Relayed),
            count(&|o| *o == Outcome::NotConnected),
            if Nat::hole_punchable(pair.0, pair.1) {
                "yes"
            } else {
                "no"
            },
            times
                .get(times.len() / 2)
                .map_or("-".into(), |t| format!("{t:.1?}"))
        );
    }
    let (direct, punchable) = direct_where_punchable(trials);
    let connected = trials
        .iter()
        .filter(|t| t.outcome != Outcome::NotConnected)
        .count();
    let _ = writeln!(
        out,
        "directly connected where hole punching is possible: {direct}/{punchable} ; connected at all: {connected}/{}",
        trials.len()
    );
    out
}

/// Of the trials whose NATs allow hole punching: (directly connected, all).
pub fn direct_where_punchable(trials: &[Trial]) -> (usize, usize) {
    let punchable: Vec<&Trial> = trials
        .iter()
        .filter(|t| Nat::hole_punchable(t.nats.0, t.nats.1))
        .collect();
    let direct = punchable
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Direct(_)))
        .count();
    (direct, punchable.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unordered_pair_once() {
        let p = pairs(&Nat::ALL);
        assert_eq!(p.len(), 6);
        assert!(p.contains(&(Nat::FullCone, Nat::Symmetric)));
        assert!(!p.contains(&(Nat::Symmetric, Nat::FullCone)));
    }
}
