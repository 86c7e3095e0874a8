//! Advert propagation across 20 nodes on 127.0.0.1 (in one process, real
//! libp2p over TCP): time from one node publishing a new advert until
//! every other node has validated and stored it. Prints p50/p99/max.
//!
//! `cargo bench -p fairgrid-node --bench propagation` (env PROP_NODES,
//! PROP_ROUNDS override 20 and 100).

use std::time::{Duration, Instant};

use fairgrid_node::app::{self, NodeSetup, RunningNode};
use fairgrid_node::config::Config;
use fairgrid_node::datadir::DataDir;
use fairgrid_node::ledger::now_ms;
use fairgrid_node::net::Topic;
use fairgrid_protocol::Keypair;
use fairgrid_protocol::messages::Hardware;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn start(i: usize, root: &std::path::Path, bootstrap: Vec<String>) -> RunningNode {
    let mut config = Config::default();
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.network.bootstrap = bootstrap;
    config.network.mdns = false;
    config.network.gossip_heartbeat_ms = 300;
    config.api.listen = "127.0.0.1:0".into();
    config.advert.lifetime_secs = 3600;
    config.log.filter = "warn".into();
    app::start(NodeSetup {
        data_dir: DataDir::new(root.join(format!("n{i}"))),
        config,
        key: Keypair::from_seed(format!("prop-{i}").as_bytes()),
        api_token: "x".repeat(32),
        hardware: Some(Hardware {
            cpu_cores: 2,
            cpu_gflops: 50,
            mem_mib: 4096,
            gpus: Vec::new(),
        }),
    })
    .await
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let n = env("PROP_NODES", 20);
    let rounds = env("PROP_ROUNDS", 100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = vec![start(0, root.path(), Vec::new()).await];
        let boot = nodes[0].dial_addrs();
        for i in 1..n {
            nodes.push(start(i, root.path(), boot.clone()).await);
        }
        // Wait until every node holds every advert (the mesh is up).
        let ready = Instant::now();
        loop {
            let full = nodes
                .iter()
                .all(|node| node.shared.adverts.lock().unwrap().live(now_ms()).len() == n);
            if full {
                break;
            }
            assert!(
                ready.elapsed() < Duration::from_secs(120),
                "mesh did not form"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("{n} nodes meshed in {:.1} s", ready.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(2)).await;

        let mut latencies = Vec::new();
        for round in 0..rounds {
            let publisher = &nodes[round % n];
            let mut receivers: Vec<_> = nodes
                .iter()
                .filter(|x| x.node_id() != publisher.node_id())
                .map(|x| x.shared.notices.subscribe())
                .collect();
            let signed = publisher.shared.publisher.lock().unwrap().issue(now_ms());
            let seq = signed.verify_and_decode().unwrap().1.seq;
            let from = publisher.node_id();
            let t0 = Instant::now();
            publisher
                .shared
                .net
                .publish(Topic::Adverts, signed.to_bytes())
                .await
                .unwrap();
            let mut last = t0;
            for rx in &mut receivers {
                let deadline = t0 + Duration::from_secs(10);
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, rx.recv()).await {
                        Ok(Ok(notice)) if notice.node == from && notice.seq == seq => {
                            last = last.max(notice.at);
                            break;
                        }
                        Ok(Ok(_))
                        | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                        _ => panic!("round {round}: advert did not reach every node in 10 s"),
                    }
                }
            }
            latencies.push(last - t0);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        latencies.sort();
        println!("## advert propagation, {n} nodes on 127.0.0.1, {rounds} publishes");
        println!("| publish -> every node validated and stored | ms |");
        println!("|---|---:|");
        for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            println!(
                "| {name} | {:.1} |",
                percentile(&latencies, p).as_secs_f64() * 1000.0
            );
        }
        println!(
            "| max | {:.1} |",
            latencies.last().unwrap().as_secs_f64() * 1000.0
        );
        for node in nodes {
            node.shutdown().await.unwrap();
        }
    });
}
