//! A node process in one of the testbed's namespaces, and its API, which
//! listens on that namespace's loopback and is reached from a thread that
//! has entered it ([`Netns::run_inside`]).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fairgrid_sdk::Client;

use super::netns::Netns;
use crate::launcher::Launcher;

/// The port every testbed node listens on (TCP and QUIC; the cluster's
/// `WAN_LISTEN`).
pub const PORT: u16 = 4001;

pub struct WanNode {
    pub name: String,
    pub dir: PathBuf,
    pub peer_id: String,
    api: String,
    token: String,
    netns: String,
    child: Child,
}

impl WanNode {
    /// `fairgrid init` in `dir`, then `fairgrid run` inside `ns` with
    /// `env` and `extra_args` (bootstrap peers), mDNS off; waits for its
    /// run files.
    pub fn start(
        launcher: &Launcher,
        ns: &Netns,
        name: &str,
        dir: &Path,
        env: &[(String, String)],
        extra_args: &[String],
    ) -> anyhow::Result<WanNode> {
        let peer_id = crate::cluster::init_listening(launcher, dir, &crate::cluster::WAN_LISTEN)?;
        let dir_arg = dir.display().to_string();
        let mut args = vec![
            "run".to_string(),
            "--data-dir".into(),
            dir_arg,
            "--no-mdns".into(),
        ];
        args.extend(extra_args.iter().cloned());
        let netns_file = ns.open()?;
        let log = dir.join("node.log");
        let child = launcher.spawn_in(Some(&netns_file), &args, env, &log)?;
        let mut node = WanNode {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            peer_id,
            api: String::new(),
            token: String::new(),
            netns: ns.name().to_string(),
            child,
        };
        node.wait_started(Duration::from_secs(30))?;
        Ok(node)
    }

    fn wait_started(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let api_file = self.dir.join("run/api.addr");
        while !api_file.exists() {
            if !matches!(self.child.try_wait(), Ok(None)) {
                bail!(
                    "{} exited while starting:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start in time:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.api = format!("http://{}", std::fs::read_to_string(&api_file)?.trim());
        self.token = std::fs::read_to_string(self.dir.join("api.token"))
            .context("reading api.token")?
            .trim()
            .to_string();
        Ok(())
    }

    /// `/ip4/IP/tcp/PORT/p2p/ID`, for a node whose address is `ip`.
    pub fn tcp_addr(&self, ip: std::net::Ipv4Addr) -> String {
        format!("/ip4/{ip}/tcp/{PORT}/p2p/{}", self.peer_id)
    }

    /// `/ip4/IP/udp/PORT/quic-v1/p2p/ID`.
    pub fn quic_addr(&self, ip: std::net::Ipv4Addr) -> String {
        format!("/ip4/{ip}/udp/{PORT}/quic-v1/p2p/{}", self.peer_id)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `call` with an SDK client inside the node's namespace.
    pub fn api<T, F, Fut>(&self, ns: &Netns, call: F) -> anyhow::Result<T>
    where
        T: Send,
        F: FnOnce(Client) -> Fut + Send,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        anyhow::ensure!(
            ns.name() == self.netns,
            "{} runs in {}",
            self.name,
            self.netns
        );
        let (api, token) = (self.api.clone(), self.token.clone());
        ns.run_inside(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move { call(Client::new(&api, &token)?).await })
        })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WanNode {
    fn drop(&mut self) {
        self.kill();
    }
}
