//! Slow and idle HTTP clients cannot keep a node's own CLI out of its API:
//! a node limited to 512 open files serves `/v1/status` while 1,000
//! slowloris connections (a partial request head, one more header line
//! every 2 s, re-opened when closed) hammer it.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{NodeProc, init_dir, test_env};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Connections the attack holds open (re-opening those the node closes).
const SLOW_CONNECTIONS: usize = 1000;

async fn slow_client(addr: String, opened: Arc<AtomicU64>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let Ok(mut stream) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        if stream
            .write_all(b"GET /v1/status HTTP/1.1\r\nHost: fairgrid\r\n")
            .await
            .is_err()
        {
            continue;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.changed() => return,
            }
            if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                break;
            }
        }
    }
}

fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count() as u64)
}

/// Records the most descriptors the node held at once, every 10 ms.
async fn sample_descriptors(pid: u32, peak: Arc<AtomicU64>, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        peak.fetch_max(open_descriptors(pid), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_cannot_keep_the_node_s_own_cli_out() {
    let dir = tempfile::tempdir().unwrap();
    init_dir(dir.path());
    let node = NodeProc::start_with(dir.path(), &[], &test_env(60), Some(512));
    let addr = node.api.trim_start_matches("http://").to_string();
    let pid = node.child.as_ref().expect("node running").id();
    let before_attack = open_descriptors(pid);
    let peak = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let opened = Arc::new(AtomicU64::new(0));
    let attack: Vec<_> = (0..SLOW_CONNECTIONS)
        .map(|_| {
            tokio::spawn(slow_client(
                addr.clone(),
                Arc::clone(&opened),
                stopped.clone(),
            ))
        })
        .collect();
    let sampler = tokio::spawn(sample_descriptors(pid, Arc::clone(&peak), stopped.clone()));
    let until = Instant::now() + Duration::from_secs(30);
    while opened.load(Ordering::Relaxed) < SLOW_CONNECTIONS as u64 {
        assert!(Instant::now() < until, "the attack could not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = node.client();
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(10), client.status()).await;
        assert!(
            matches!(status, Ok(Ok(_))),
            "status under attack: {status:?}\n{}",
            node.log()
        );
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort();
    eprintln!(
        "status under {SLOW_CONNECTIONS} slow connections: median {:?}, max {:?}; {} connections opened",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        opened.load(Ordering::Relaxed)
    );
    stop.send_replace(true);
    for task in attack {
        let _ = task.await;
    }
    let _ = sampler.await;
    let peak = peak.load(Ordering::Relaxed);
    eprintln!("node descriptors: {before_attack} before the attack, peak {peak} during it");
    // At most `api.max_connections` (256) sockets on top of what the node
    // had open before, whatever the clients' reconnect rate.
    assert!(
        peak <= before_attack + 256 + 8,
        "the node held {peak} descriptors ({before_attack} before the attack)"
    );
    assert!(
        !node.log().contains("Too many open files"),
        "the node ran out of descriptors:\n{}",
        node.log()
    );
}
