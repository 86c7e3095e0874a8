//! Loopback harness: real `fairgrid` node processes on 127.0.0.1 with
//! fresh data dirs, bounded waits, and cleanup on drop (so a failing test
//! leaves no process behind).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fairgrid_sdk::Client;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fairgrid"))
}

/// Runs a `fairgrid` command to completion and returns its stdout.
pub fn fairgrid(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("fairgrid runs");
    assert!(
        out.status.success(),
        "fairgrid {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `fairgrid init` into a fresh data dir on loopback with ephemeral ports.
pub fn init_dir(dir: &Path) -> String {
    let out = fairgrid(&[
        "init",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api-listen",
        "127.0.0.1:0",
    ]);
    out.lines()
        .find_map(|l| l.strip_prefix("peer id:"))
        .expect("init prints the peer id")
        .trim()
        .to_string()
}

pub struct NodeProc {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub peer_id: String,
    pub api: String,
    pub token: String,
    pub listen: Vec<String>,
}

/// Environment every test node gets: short adverts, a tiny probe.
pub fn test_env(lifetime_secs: u64) -> Vec<(String, String)> {
    vec![
        (
            "FAIRGRID_ADVERT_LIFETIME_SECS".into(),
            lifetime_secs.to_string(),
        ),
        ("FAIRGRID_ADVERT_PROBE_MS".into(), "20".into()),
        ("FAIRGRID_NETWORK_GOSSIP_HEARTBEAT_MS".into(), "300".into()),
        ("FAIRGRID_LOG_FILTER".into(), "info,fairgrid=debug".into()),
        ("RUST_LOG".into(), String::new()),
    ]
}

impl NodeProc {
    /// Starts `fairgrid run` in `dir` (already initialised) and waits for
    /// its API address.
    pub fn start(dir: &Path, bootstrap: &[String], env: &[(String, String)]) -> NodeProc {
        Self::start_with(dir, bootstrap, env, None)
    }

    /// [`NodeProc::start`], with at most `fd_limit` open files for the
    /// node (as `ulimit -n`).
    pub fn start_with(
        dir: &Path,
        bootstrap: &[String],
        env: &[(String, String)],
        fd_limit: Option<u64>,
    ) -> NodeProc {
        // A node killed earlier left its run files behind: wait for new ones.
        let _ = std::fs::remove_file(dir.join("run/api.addr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--data-dir", dir.to_str().unwrap(), "--no-mdns"]);
        for b in bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(limit) = fd_limit {
            use std::os::unix::process::CommandExt;
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec here.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("fairgrid run starts");
        let mut node = NodeProc {
            child: Some(child),
            dir: dir.to_path_buf(),
            peer_id: String::new(),
            api: String::new(),
            token: std::fs::read_to_string(dir.join("api.token"))
                .unwrap()
                .trim()
                .to_string(),
            listen: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let api_file = dir.join("run/api.addr");
        while !api_file.exists() {
            if let Some(status) = node.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("node exited early ({status}):\n{}", node.log());
            }
            assert!(
                Instant::now() < deadline,
                "node did not start:\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(20));
        node.api = format!(
            "http://{}",
            std::fs::read_to_string(&api_file).unwrap().trim()
        );
        node.listen = std::fs::read_to_string(dir.join("run/listen.addrs"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        node.peer_id = fairgrid_node::datadir::read_secret_key(&dir.join("node.key"))
            .unwrap()
            .node_id()
            .to_string();
        node
    }

    pub fn client(&self) -> Client {
        Client::new(&self.api, &self.token).unwrap()
    }

    /// Waits up to `limit` for the process to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// SIGKILL: the node gets no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns whether the
    /// exit status was success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` until it returns Some or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `client`'s node holds adverts from exactly `expected`.
pub async fn wait_for_adverts(client: &Client, expected: &BTreeSet<String>, what: &str) {
    wait_for(Duration::from_secs(45), what, || async {
        let seen: BTreeSet<String> = client
            .adverts()
            .await
            .ok()?
            .into_iter()
            .map(|a| a.node_id)
            .collect();
        (&seen == expected).then_some(())
    })
    .await;
}

/// Waits until `client`'s node is connected to every peer in `others`.
pub async fn wait_for_peers(client: &Client, others: &BTreeSet<String>) {
    wait_for(Duration::from_secs(45), "a full mesh of peers", || async {
        let peers: BTreeSet<String> = client
            .peers()
            .await
            .ok()?
            .into_iter()
            .map(|p| p.peer_id)
            .collect();
        others.is_subset(&peers).then_some(())
    })
    .await;
}
