//! Silent TCP connections from one host cannot keep new peers out: while
//! 500 of them (opened from 127.0.0.2, re-opened as soon as the node drops
//! them) are held against node A's libp2p port, a new node B from
//! 127.0.0.1 joins A within 10 s. Before per-IP handshake limits, 200 such
//! connections kept a new node at 0 peers for as long as they lasted.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{NodeProc, init_dir, test_env};
use tokio::net::TcpSocket;
use tokio::sync::watch;

const JUNK_CONNECTIONS: usize = 500;

async fn junk_connection(target: SocketAddr, opened: Arc<AtomicU64>, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let Ok(mut stream) = socket.connect(target).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        // Say nothing; wait for the node to give up on us, then come back.
        let mut buf = [0u8; 64];
        let mut stop = stop.clone();
        tokio::select! {
            _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf) => {}
            _ = stop.changed() => return,
        }
    }
}

fn tcp_port(multiaddr: &str) -> u16 {
    let parts: Vec<&str> = multiaddr.split('/').collect();
    let at = parts
        .iter()
        .position(|p| *p == "tcp")
        .expect("a tcp address");
    parts[at + 1].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_connections_from_one_host_do_not_keep_new_peers_out() {
    let root = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
    init_dir(&a_dir);
    init_dir(&b_dir);
    let a = NodeProc::start(&a_dir, &[], &test_env(60));
    let target: SocketAddr = format!("127.0.0.1:{}", tcp_port(&a.listen[0]))
        .parse()
        .unwrap();
    let (stop, stopped) = watch::channel(false);
    let opened = Arc::new(AtomicU64::new(0));
    let attack: Vec<_> = (0..JUNK_CONNECTIONS)
        .map(|_| {
            tokio::spawn(junk_connection(
                target,
                Arc::clone(&opened),
                stopped.clone(),
            ))
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(30);
    while opened.load(Ordering::Relaxed) < JUNK_CONNECTIONS as u64 {
        assert!(
            Instant::now() < until,
            "the junk connections could not connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = NodeProc::start(&b_dir, &a.listen, &test_env(60));
    let started = Instant::now();
    let client = b.client();
    let joined = loop {
        let peers = client.peers().await.unwrap_or_default();
        if peers.iter().any(|p| p.peer_id == a.peer_id) {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "new peer joined after {joined:?} under {JUNK_CONNECTIONS} junk connections ({} opened)",
        opened.load(Ordering::Relaxed)
    );
    stop.send_replace(true);
    for task in attack {
        let _ = task.await;
    }
    assert!(
        joined.is_some(),
        "B did not join A within 10 s\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
}
