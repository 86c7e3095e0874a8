//! Consortium mode: two nodes certified by an allowlisted owner (through
//! the `fairgrid owner` CLI) admit each other; an uncertified node that
//! bootstraps from them is refused, disconnected, and its advert is never
//! accepted.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{NodeProc, fairgrid, init_dir, test_env, wait_for, wait_for_adverts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consortium_refuses_an_uncertified_node() {
    let root = tempfile::tempdir().unwrap();
    let owner_dir = root.path().join("owner");
    let owner_dir_s = owner_dir.to_str().unwrap().to_string();
    let out = fairgrid(&["owner", "new", "--owner-dir", &owner_dir_s]);
    let owner_id = out
        .lines()
        .find_map(|l| l.strip_prefix("owner id:"))
        .unwrap()
        .trim()
        .to_string();

    let mut env = test_env(30);
    env.push(("FAIRGRID_TRUST_CONSORTIUM".into(), "true".into()));
    env.push(("FAIRGRID_TRUST_ALLOWLIST".into(), owner_id.clone()));
    env.push(("FAIRGRID_TRUST_HELLO_TIMEOUT_MS".into(), "3000".into()));

    let mut members = Vec::new();
    for name in ["c1", "c2"] {
        let dir = root.path().join(name);
        let peer = init_dir(&dir);
        let cert = dir.join("node.cert");
        fairgrid(&[
            "owner",
            "certify",
            "--owner-dir",
            &owner_dir_s,
            "--node",
            &peer,
            "--label",
            "Univ A",
            "--max-capacity",
            "cpu_milli=1000000,mem_mib=100000000",
            "--valid-days",
            "1",
            "--out",
            cert.to_str().unwrap(),
        ]);
        let bootstrap: Vec<String> = members
            .first()
            .map(|m: &NodeProc| m.listen.clone())
            .unwrap_or_default();
        members.push(NodeProc::start(&dir, &bootstrap, &env));
    }
    let member_ids: BTreeSet<String> = members.iter().map(|m| m.peer_id.clone()).collect();
    for m in &members {
        let c = m.client();
        wait_for_adverts(&c, &member_ids, "both members' adverts").await;
        let status = c.status().await.unwrap();
        assert!(status.consortium && status.certified);
        assert_eq!(status.owner, owner_id);
    }

    // An uncertified node (open mode, so it happily tries) joins via c1.
    let dir = root.path().join("intruder");
    init_dir(&dir);
    let intruder = NodeProc::start(&dir, &members[0].listen, &test_env(30));
    let c1 = members[0].client();
    wait_for(Duration::from_secs(20), "c1 to refuse the intruder", || {
        let c = c1.clone();
        async move {
            let text = c.metrics().await.ok()?;
            (!text.contains("fairgrid_peers_refused_total 0")).then_some(())
        }
    })
    .await;
    assert!(
        members[0]
            .log()
            .lines()
            .any(|l| l.contains("peer refused") && l.contains(&intruder.peer_id)),
        "c1 logs the refusal naming the intruder"
    );
    // It stays out: not connected, its advert never accepted, anywhere.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for m in &members {
        let c = m.client();
        let peers = c.peers().await.unwrap();
        assert!(
            peers.iter().all(|p| p.peer_id != intruder.peer_id),
            "intruder still connected"
        );
        let adverts = c.adverts().await.unwrap();
        assert!(
            adverts.iter().all(|a| a.node_id != intruder.peer_id),
            "intruder's advert accepted"
        );
        assert_eq!(adverts.len(), 2);
    }
    let intruder_peers = intruder.client().peers().await.unwrap();
    assert!(
        intruder_peers
            .iter()
            .all(|p| !member_ids.contains(&p.peer_id))
    );
}
