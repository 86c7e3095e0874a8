//! Five real node processes on 127.0.0.1 find each other through one
//! bootstrap node, all see every advert, and a stopped node disappears
//! once its advert expires. The stopped node's ledger then verifies
//! offline and exports as JSON lines.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{NodeProc, fairgrid, init_dir, test_env, wait_for, wait_for_adverts, wait_for_peers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_discover_each_other_and_forget_a_stopped_one() {
    let root = tempfile::tempdir().unwrap();
    let env = test_env(4);
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 0..5 {
        let dir = root.path().join(format!("n{i}"));
        init_dir(&dir);
        let bootstrap: Vec<String> = nodes.first().map(|b| b.listen.clone()).unwrap_or_default();
        nodes.push(NodeProc::start(&dir, &bootstrap, &env));
    }
    let ids: BTreeSet<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    assert_eq!(ids.len(), 5);

    // Every node connects to every other (discovered through Kademlia, not
    // configured), and holds every node's advert.
    for node in &nodes {
        let client = node.client();
        let mut others = ids.clone();
        others.remove(&node.peer_id);
        wait_for_peers(&client, &others).await;
        wait_for_adverts(&client, &ids, "every advert").await;
    }
    let status = nodes[2].client().status().await.unwrap();
    assert_eq!(status.live_adverts, 5);
    assert!(status.ledger.entries > 0, "adverts seen are recorded");

    // Stop node 4 gracefully; the others drop it after its advert expires.
    let gone = nodes[4].peer_id.clone();
    assert!(
        nodes[4].stop(),
        "clean exit on SIGTERM:\n{}",
        nodes[4].log()
    );
    for node in &nodes[..4] {
        let client = node.client();
        let gone = gone.clone();
        wait_for(
            Duration::from_secs(15),
            "the stopped node's advert to expire",
            || {
                let client = client.clone();
                let gone = gone.clone();
                async move {
                    let adverts = client.adverts().await.ok()?;
                    (adverts.len() == 4 && adverts.iter().all(|a| a.node_id != gone)).then_some(())
                }
            },
        )
        .await;
    }
    let n0 = &nodes[0];
    wait_for(Duration::from_secs(5), "the expiry log line", || {
        let found = n0
            .log()
            .lines()
            .any(|l| l.contains("advert expired") && l.contains(gone.as_str()));
        async move { found.then_some(()) }
    })
    .await;

    // The stopped node's ledger is intact offline.
    let dir = nodes[4].dir.to_str().unwrap().to_string();
    let verified = fairgrid(&["ledger", "verify", "--data-dir", &dir]);
    assert!(verified.starts_with("ledger OK"), "{verified}");
    let export = fairgrid(&["ledger", "export", "--data-dir", &dir]);
    let lines: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().any(|l| l["kind"] == "advert_seen"));
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as u64);
    }
    for node in &mut nodes[..4] {
        assert!(node.stop());
    }
}
