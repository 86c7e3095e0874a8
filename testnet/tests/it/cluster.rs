//! Real node processes on 127.0.0.1: a small cluster starts, its nodes
//! see each other's certified adverts, and no process outlives the guard,
//! whether the scenario ends, panics, fails to start, is interrupted, or
//! the testnet itself is killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fairgrid_testnet::cluster::{Cluster, ClusterSpec};
use fairgrid_testnet::launcher::{Launcher, process_alive};
use futures::FutureExt;

const BIN: &str = env!("CARGO_BIN_EXE_fairgrid-testnet");

fn launcher() -> Launcher {
    Launcher::new(BIN)
}

/// Waits (bounded) until none of `pids` is alive.
fn assert_all_gone(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    while pids.iter().any(|&p| process_alive(p)) {
        assert!(
            Instant::now() < deadline,
            "still alive: {:?}",
            pids.iter()
                .filter(|&&p| process_alive(p))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn three_nodes_see_each_other_and_leave_nothing_behind() {
    let spec = ClusterSpec::new(3, 2).unwrap();
    let cluster = Cluster::start(launcher(), &spec).await.unwrap();
    cluster
        .wait_until_meshed(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cluster.owners.len(), 2);
    // Owner 0 runs nodes 0 and 1, owner 1 runs node 2.
    let owners: Vec<usize> = cluster.nodes.iter().map(|n| n.owner).collect();
    assert_eq!(owners, vec![0, 0, 1]);

    let adverts = cluster.nodes[2].client().unwrap().adverts().await.unwrap();
    assert_eq!(adverts.len(), 3);
    for node in &cluster.nodes {
        let owner = &cluster.owners[node.owner];
        let advert = adverts.iter().find(|a| a.node_id == node.peer_id).unwrap();
        assert!(
            advert.certified,
            "node {} runs on its certificate",
            node.index
        );
        assert_eq!(advert.owner, owner.id);
        assert_eq!(advert.owner_label, owner.label);
        assert!(advert.offered.cpu_milli <= spec.owners.cpu_milli(node.owner));
        assert_eq!(advert.price_floor, owner.price);
        assert!(node.listen.iter().all(|a| a.starts_with("/ip4/127.0.0.1/")));
    }
    // Every node is connected to the others (found through the bootstrap).
    for node in &cluster.nodes {
        let client = node.client().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let peers = client.peers().await.unwrap();
            let others = cluster
                .nodes
                .iter()
                .filter(|o| o.index != node.index)
                .all(|o| peers.iter().any(|p| p.peer_id == o.peer_id));
            if others {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} misses peers",
                node.index
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let pids = cluster.pids();
    let root = cluster.root().to_path_buf();
    assert!(pids.iter().all(|&p| process_alive(p)));
    drop(cluster);
    assert_all_gone(&pids, Duration::from_secs(5));
    assert!(!root.exists(), "the temp dir goes with the cluster");
}

#[tokio::test]
async fn a_panicking_scenario_still_stops_every_node() {
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let pids = Arc::clone(&seen);
    let outcome = std::panic::AssertUnwindSafe(async move {
        let spec = ClusterSpec::new(2, 2).unwrap();
        let cluster = Cluster::start(launcher(), &spec).await.unwrap();
        *pids.lock().unwrap() = cluster.pids();
        panic!("simulated failure in the middle of a scenario");
    })
    .catch_unwind()
    .await;
    assert!(outcome.is_err());
    let pids = seen.lock().unwrap().clone();
    assert_eq!(pids.len(), 2);
    assert_all_gone(&pids, Duration::from_secs(5));
}

#[tokio::test]
async fn a_node_that_cannot_start_is_reported_with_its_log() {
    let mut spec = ClusterSpec::new(2, 1).unwrap();
    spec.env.push(("FAIRGRID_LOG_FORMAT".into(), "xml".into()));
    let err = match Cluster::start(launcher(), &spec).await {
        Ok(_) => panic!("a node with a bad config started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("node 0 exited while starting"), "{err}");
    assert!(
        err.contains("log.format"),
        "the node's own error is shown: {err}"
    );
}

/// Starts `fairgrid-testnet up` and returns it with its nodes' pids and
/// its data root once it prints `ready`.
fn start_up(nodes: usize) -> (std::process::Child, Vec<u32>, std::path::PathBuf) {
    let mut child = Command::new(BIN)
        .args(["up", "--nodes", &nodes.to_string(), "--owners", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut pids = Vec::new();
    let mut root = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                panic!("`up` did not get ready: {e}");
            }
        };
        if let Some(pid) = line.split_whitespace().find_map(|w| w.strip_prefix("pid=")) {
            pids.push(pid.parse().unwrap());
        }
        if let Some(dir) = line.split_whitespace().find_map(|w| w.strip_prefix("dir=")) {
            root = std::path::Path::new(dir).parent().map(|p| p.to_path_buf());
        }
        if line.starts_with("ready") {
            break;
        }
    }
    assert_eq!(pids.len(), nodes);
    assert!(pids.iter().all(|&p| process_alive(p)));
    (child, pids, root.expect("`up` names the data dirs"))
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the testnet did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_stops_every_node() {
    let (mut child, pids, root) = start_up(2);
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    assert_all_gone(&pids, Duration::from_secs(5));
    assert!(!root.exists(), "the temp dir is removed on Ctrl-C");
}

#[test]
fn killing_the_testnet_kills_its_nodes() {
    let (mut child, pids, root) = start_up(2);
    child.kill().unwrap(); // SIGKILL: no Drop, no handler runs
    child.wait().unwrap();
    // The parent-death signal takes the nodes down.
    assert_all_gone(&pids, Duration::from_secs(10));
    // Nobody was left to remove the temp dir.
    std::fs::remove_dir_all(&root).unwrap();
}
