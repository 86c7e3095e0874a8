//! A cluster of real node processes on 127.0.0.1: fresh data dirs under
//! one root, `fairgrid init`, owner keys and certificates, one bootstrap
//! node, mDNS off, ports chosen by the OS (read back from each node's run
//! files). [`Cluster`] is the guard: dropping it kills every node it
//! started, whatever path the program takes out (an error, a panic, a
//! Ctrl-C that drops the scenario future).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fairgrid_sdk::Client;

use crate::launcher::{Launcher, process_alive};
use crate::owners::{OwnerPlan, OwnerSetup};

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub owners: OwnerPlan,
    /// Extra `FAIRGRID_*` variables for every node.
    pub env: Vec<(String, String)>,
    /// Extra variables for one node (after `env`): (node index, name, value).
    pub node_env: Vec<(usize, String, String)>,
    /// Training and evaluation threads per node.
    pub node_threads: usize,
    /// Where the data dirs go (default: a fresh temp dir, removed on drop).
    pub root: Option<PathBuf>,
    /// How long to wait for the nodes to start and see each other.
    pub ready_timeout: Duration,
    /// Per node, the network namespace it runs in (`ip netns` name; see
    /// [`crate::wan`]); none, or a shorter list, leaves the rest on
    /// loopback. A namespaced node listens on 0.0.0.0 port 4001 (TCP and
    /// QUIC) and its API is bridged to 127.0.0.1 here.
    pub netns: Vec<Option<String>>,
    /// Bootstrap peers for every node (default: node 0, for the others).
    pub bootstrap: Vec<String>,
    /// Node 0 is a relay at this address (TCP port 4001), which every
    /// other node holds a slot on and bootstraps through.
    pub relay_via_node0: Option<std::net::Ipv4Addr>,
    /// Consortium mode: only nodes certified by the cluster's owners.
    pub consortium: bool,
}

impl ClusterSpec {
    pub fn new(nodes: usize, owners: usize) -> anyhow::Result<Self> {
        Ok(ClusterSpec {
            nodes,
            owners: OwnerPlan::new(nodes, owners)?,
            env: Vec::new(),
            node_env: Vec::new(),
            node_threads: 1,
            root: None,
            ready_timeout: Duration::from_secs(60),
            netns: Vec::new(),
            bootstrap: Vec::new(),
            relay_via_node0: None,
            consortium: false,
        })
    }
}

/// One running node.
#[derive(Debug)]
pub struct NodeProcess {
    pub index: usize,
    pub dir: PathBuf,
    pub peer_id: String,
    /// Index into [`Cluster::owners`].
    pub owner: usize,
    pub api: String,
    pub token: String,
    /// Dialable multiaddrs with `/p2p/PEERID`.
    pub listen: Vec<String>,
    pub pid: u32,
    child: Option<Child>,
    /// How it was started (without bootstrap peers), to start it again.
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The network namespace it runs in, if not the testnet's.
    pub netns: Option<String>,
    /// Its API made reachable from here, when it runs in a namespace.
    bridge: Option<crate::wan::bridge::ApiBridge>,
}

impl NodeProcess {
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.api, &self.token)?)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then up to `grace` for a clean exit (the ledger flushed),
    /// then SIGKILL. True if it exited cleanly.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and have not yet reaped, so
    // the pid cannot have been reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

enum Root {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

/// The running cluster and the guard that stops it.
pub struct Cluster {
    pub launcher: Launcher,
    pub nodes: Vec<NodeProcess>,
    pub owners: Vec<OwnerSetup>,
    root: Root,
}

impl Cluster {
    /// Creates, certifies and starts every node and waits for their run
    /// files. Nodes die with the thread that spawned them, so run this on
    /// a long-lived thread (the testnet uses a current-thread runtime).
    pub async fn start(launcher: Launcher, spec: &ClusterSpec) -> anyhow::Result<Cluster> {
        let root = match &spec.root {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                Root::Kept(dir.clone())
            }
            None => Root::Temp(
                tempfile::Builder::new()
                    .prefix("fairgrid-testnet-")
                    .tempdir()
                    .context("creating a temp dir")?,
            ),
        };
        let mut cluster = Cluster {
            launcher,
            nodes: Vec::new(),
            owners: Vec::new(),
            root,
        };
        let root = cluster.root().to_path_buf();
        cluster.owners = spec
            .owners
            .create(&cluster.launcher, &root.join("owners"))?;
        let mut prepared = Vec::new();
        let netns_of = |index: usize| spec.netns.get(index).cloned().flatten();
        for index in 0..spec.nodes {
            let dir = root.join(format!("node{index}"));
            let peer_id = match netns_of(index) {
                None => init(&cluster.launcher, &dir)?,
                Some(_) => init_listening(&cluster.launcher, &dir, &WAN_LISTEN)?,
            };
            let owner = spec.owners.owner_of(index);
            cluster.owners[owner].certify(&cluster.launcher, &peer_id, &dir.join("node.cert"))?;
            prepared.push((index, dir, peer_id, owner));
        }
        let deadline = Instant::now() + spec.ready_timeout;
        let mut bootstrap: Vec<String> = spec.bootstrap.clone();
        let mut shared_env = spec.env.clone();
        if spec.consortium {
            let allowlist: Vec<String> = cluster.owners.iter().map(|o| o.id.clone()).collect();
            shared_env.push(("FAIRGRID_TRUST_CONSORTIUM".into(), "true".into()));
            shared_env.push(("FAIRGRID_TRUST_ALLOWLIST".into(), allowlist.join(",")));
        }
        let relay = match (spec.relay_via_node0, prepared.first()) {
            (Some(ip), Some((_, _, relay_id, _))) => {
                Some(format!("/ip4/{ip}/tcp/4001/p2p/{relay_id}"))
            }
            _ => None,
        };
        for (index, dir, peer_id, owner) in prepared {
            let mut env = shared_env.clone();
            match &relay {
                Some(_) if index == 0 => {
                    env.push(("FAIRGRID_NETWORK_RELAY_SERVER".into(), "true".into()))
                }
                Some(relay) => {
                    env.push(("FAIRGRID_NETWORK_RELAYS".into(), relay.clone()));
                    bootstrap = vec![relay.clone()];
                }
                None => {}
            }
            env.extend(spec.owners.node_env(owner));
            env.extend(thread_env(&dir, spec.node_threads)?);
            env.extend(
                spec.node_env
                    .iter()
                    .filter(|(i, _, _)| *i == index)
                    .map(|(_, k, v)| (k.clone(), v.clone())),
            );
            // Every node of a loopback testnet connects from 127.0.0.1.
            env.push((
                "FAIRGRID_NETWORK_MAX_ESTABLISHED_INCOMING_PER_IP".into(),
                (spec.nodes * 4).max(64).to_string(),
            ));
            let base: Vec<String> = vec![
                "run".into(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--no-mdns".into(),
            ];
            let mut args = base.clone();
            for b in &bootstrap {
                args.extend(["--bootstrap".to_string(), b.clone()]);
            }
            let netns = netns_of(index);
            let child = spawn_node(
                &cluster.launcher,
                netns.as_deref(),
                &args,
                &env,
                &dir.join("node.log"),
            )?;
            cluster.nodes.push(NodeProcess {
                index,
                pid: child.id(),
                child: Some(child),
                args: base,
                env,
                token: read_token(&dir)?,
                dir,
                peer_id,
                owner,
                api: String::new(),
                listen: Vec::new(),
                netns,
                bridge: None,
            });
            if index == 0 {
                cluster.wait_run_files(0, deadline).await?;
                if spec.bootstrap.is_empty() && relay.is_none() {
                    // Everyone else joins through the first node.
                    bootstrap = cluster.nodes[0].listen.clone();
                }
            }
        }
        for i in 1..cluster.nodes.len() {
            cluster.wait_run_files(i, deadline).await?;
        }
        Ok(cluster)
    }

    /// Starts node `i` again (after a kill) on its data dir, joining
    /// through a running node, and waits for its run files.
    pub async fn restart(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        self.nodes[i].kill();
        let run = self.nodes[i].dir.join("run");
        for file in ["listen.addrs", "api.addr"] {
            let _ = std::fs::remove_file(run.join(file));
        }
        let bootstrap: Vec<String> = (0..self.nodes.len())
            .filter(|&j| j != i)
            .find(|&j| self.nodes[j].is_running())
            .map(|j| self.nodes[j].listen.clone())
            .unwrap_or_default();
        let node = &mut self.nodes[i];
        let mut args = node.args.clone();
        for b in &bootstrap {
            args.extend(["--bootstrap".to_string(), b.clone()]);
        }
        let child = spawn_node(
            &self.launcher,
            node.netns.as_deref(),
            &args,
            &node.env,
            &node.dir.join("node.log"),
        )?;
        node.pid = child.id();
        node.child = Some(child);
        self.wait_run_files(i, Instant::now() + timeout).await
    }

    pub fn root(&self) -> &Path {
        match &self.root {
            Root::Temp(t) => t.path(),
            Root::Kept(p) => p,
        }
    }

    /// Keeps the data dirs after the cluster is gone.
    pub fn keep_files(&mut self) {
        if let Root::Temp(_) = self.root {
            let old = std::mem::replace(&mut self.root, Root::Kept(PathBuf::new()));
            if let Root::Temp(t) = old {
                self.root = Root::Kept(t.keep());
            }
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    async fn wait_run_files(&mut self, i: usize, deadline: Instant) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let listen_file = node.dir.join("run/listen.addrs");
        while !listen_file.exists() {
            if !node.is_running() {
                bail!(
                    "node {i} exited while starting; its log ends:\n{}",
                    node.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "node {i} did not start in time; its log ends:\n{}",
                    node.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let api = std::fs::read_to_string(node.dir.join("run/api.addr"))
            .context("reading run/api.addr")?;
        node.api = format!("http://{}", api.trim());
        if let Some(ns) = &node.netns {
            let target = api.trim().parse().context("run/api.addr")?;
            let bridge = crate::wan::bridge::ApiBridge::start(ns, target)?;
            node.api = bridge.url();
            node.bridge = Some(bridge);
        }
        node.listen = std::fs::read_to_string(&listen_file)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if node.listen.is_empty() {
            bail!("node {i} listens on no address");
        }
        Ok(())
    }

    /// Waits until every running node holds every running node's advert.
    pub async fn wait_until_meshed(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut expected: Vec<String> = self.nodes.iter().map(|n| n.peer_id.clone()).collect();
        expected.sort();
        for node in &self.nodes {
            let client = node.client()?;
            loop {
                let mut seen: Vec<String> = client
                    .adverts()
                    .await
                    .map(|a| a.into_iter().map(|a| a.node_id).collect())
                    .unwrap_or_default();
                seen.sort();
                if seen == expected {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {} sees {} of {} adverts after {:?}; its log ends:\n{}",
                        node.index,
                        seen.len(),
                        expected.len(),
                        timeout,
                        node.log_tail(20)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Stops every node gracefully (all SIGTERMs first, so they wind down
    /// together); returns the indices that exited cleanly.
    pub fn stop_all(&mut self, grace: Duration) -> Vec<usize> {
        for node in &self.nodes {
            if let Some(child) = &node.child {
                signal(child.id(), libc::SIGTERM);
            }
        }
        self.nodes
            .iter_mut()
            .filter_map(|n| n.stop(grace).then_some(n.index))
            .collect()
    }

    /// `fairgrid ledger verify` on a stopped node's data dir.
    pub fn verify_ledger_offline(&self, index: usize) -> anyhow::Result<String> {
        let dir = self.nodes[index].dir.display().to_string();
        let out = self
            .launcher
            .run(["ledger", "verify", "--data-dir", &dir])?;
        Ok(out.trim().to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        // Belt and braces: nothing we started may outlive the guard.
        for node in &self.nodes {
            if process_alive(node.pid) {
                signal(node.pid, libc::SIGKILL);
            }
        }
    }
}

/// `fairgrid ARGS` as a node daemon, inside network namespace `netns`
/// (an `ip netns` name) if given.
fn spawn_node(
    launcher: &Launcher,
    netns: Option<&str>,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Child> {
    let netns_file = netns.map(crate::wan::netns::open_netns).transpose()?;
    launcher.spawn_in(netns_file.as_ref(), args, env, log)
}

/// Where a node in a namespace listens: each namespace has ports of its
/// own, and a fixed one is what a NAT keeps.
pub const WAN_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"];

/// `fairgrid init` on loopback with OS-chosen ports; returns the PeerId.
fn init(launcher: &Launcher, dir: &Path) -> anyhow::Result<String> {
    init_listening(launcher, dir, &["/ip4/127.0.0.1/tcp/0"])
}

/// `fairgrid init` listening on `listen`, the API on an OS-chosen
/// loopback port; returns the PeerId.
pub fn init_listening(launcher: &Launcher, dir: &Path, listen: &[&str]) -> anyhow::Result<String> {
    let dir_arg = dir.display().to_string();
    let mut args = vec!["init", "--data-dir", &dir_arg];
    for addr in listen {
        args.extend(["--listen", addr]);
    }
    args.extend(["--api-listen", "127.0.0.1:0"]);
    let out = launcher.run(args)?;
    out.lines()
        .find_map(|l| l.strip_prefix("peer id:"))
        .map(|p| p.trim().to_string())
        .context("`fairgrid init` printed no peer id")
}

fn read_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("api.token");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

/// `threads` training threads per node (one by default: the nodes share
/// the machine's cores).
/// The setting's name is whatever the node's documented config calls a
/// `*threads*` field, so this follows the node without a second copy of
/// its config schema.
fn thread_env(dir: &Path, threads: usize) -> anyhow::Result<Vec<(String, String)>> {
    let path = dir.join("config.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut env = Vec::new();
    for (section, fields) in &table {
        let Some(fields) = fields.as_table() else {
            continue;
        };
        for (field, value) in fields {
            if field.contains("threads") && value.is_integer() {
                env.push((
                    format!("FAIRGRID_{section}_{field}").to_uppercase(),
                    threads.max(1).to_string(),
                ));
            }
        }
    }
    Ok(env)
}
