//! Hostile peers publish every kind of bad advert to an honest node A; a
//! second honest node B hears the network only through A. Nothing bad is
//! accepted by A or forwarded to B, each rejection is logged with its
//! reason and the sender, the senders' gossip scores drop, and the honest
//! nodes keep exchanging adverts.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{NodeProc, init_dir, test_env, wait_for, wait_for_adverts};
use fairgrid_node::adverts::forge::{self, Forgery};
use fairgrid_node::datadir::signed_hex_text;
use fairgrid_node::ledger::now_ms;
use fairgrid_node::net::{self, NetConfig, NetEvent, NetworkClient, Topic, Verdict};
use fairgrid_protocol::{Keypair, OwnerCertificate, ResourceVec, Revocation, Signed};

/// The count of one rejection reason in a `/metrics` text.
fn rejected(metrics: &str, code: &str) -> u64 {
    let prefix = format!("fairgrid_adverts_rejected_total{{reason=\"{code}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no counter for {code}"))
}

/// An in-process libp2p peer that only speaks what we tell it to.
async fn hostile_peer(seed: &[u8], target: &str) -> (Keypair, NetworkClient) {
    let key = Keypair::from_seed(seed);
    let mut config = NetConfig::from_config(&Default::default(), false).unwrap();
    // Not listening: nobody but A can reach it, so B hears it only
    // through A.
    config.listen = Vec::new();
    // And it dials nobody it discovers.
    config.target_peers = 1;
    config.mdns = false;
    config.heartbeat = Duration::from_millis(300);
    let (client, mut events, _task) = net::spawn(&key, config).unwrap();
    let drain = client.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let NetEvent::Gossip {
                message_id, source, ..
            } = event
            {
                let _ = drain.validate(message_id, source, Verdict::Ignore).await;
            }
        }
    });
    client.dial(target.parse().unwrap()).await.unwrap();
    (key, client)
}

/// Publishes once A's subscription has reached the peer.
async fn publish(client: &NetworkClient, data: Vec<u8>) {
    wait_for(
        Duration::from_secs(20),
        "a subscribed peer to publish to",
        || {
            let client = client.clone();
            let data = data.clone();
            async move { client.publish(Topic::Adverts, data).await.ok() }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_adverts_are_rejected_logged_and_never_forwarded() {
    let root = tempfile::tempdir().unwrap();

    // An owner whose certificate serial 9 is revoked.
    let owner = Keypair::from_seed(b"owner-with-a-revocation");
    let revoked_node = Keypair::from_seed(b"hostile-revoked");
    let cert = Signed::sign(
        &owner,
        &OwnerCertificate {
            node: revoked_node.node_id(),
            owner: owner.owner_id(),
            label: "Revoked Lab".into(),
            max_capacity: ResourceVec {
                cpu_milli: 64_000,
                mem_mib: 1 << 20,
                ..Default::default()
            },
            valid_from: 0,
            valid_until: u64::MAX / 2,
            serial: 9,
        },
    );
    let revocation = Signed::sign(
        &owner,
        &Revocation {
            owner: owner.owner_id(),
            seq: 1,
            serials: [9].into(),
            issued_at: now_ms(),
        },
    );
    let rev_path = root.path().join("revocations.rev");
    std::fs::write(&rev_path, signed_hex_text("test", &revocation)).unwrap();
    let mut env = test_env(10);
    env.push((
        "FAIRGRID_TRUST_REVOCATION_FILES".into(),
        rev_path.to_str().unwrap().into(),
    ));

    let (dir_a, dir_b) = (root.path().join("a"), root.path().join("b"));
    init_dir(&dir_a);
    init_dir(&dir_b);
    let a = NodeProc::start(&dir_a, &[], &env);
    // B does not listen: it dials A and hears the network only through A,
    // so whatever bad advert reaches B was forwarded by A.
    let mut env_b = env.clone();
    env_b.push(("FAIRGRID_NETWORK_LISTEN".into(), String::new()));
    let b = NodeProc::start(&dir_b, &a.listen, &env_b);
    let target = a.listen[0].clone();

    // The honest pair first sees each other.
    let honest: BTreeSet<String> = [a.peer_id.clone(), b.peer_id.clone()].into();
    for node in [&a, &b] {
        let client = node.client();
        wait_for_adverts(&client, &honest, "the honest adverts").await;
    }

    // One hostile peer per kind of forgery, plus a revoked certificate and
    // a replayed (lower) seq after a good advert.
    let now = now_ms();
    let mut hostile_ids = Vec::new();
    let mut hostiles = Vec::new();
    for forgery in Forgery::ALL {
        let (key, client) = hostile_peer(format!("hostile-{forgery:?}").as_bytes(), &target).await;
        publish(&client, forge::forge(forgery, &key, now, now)).await;
        hostile_ids.push((key.node_id().to_string(), forgery.expected_code()));
        hostiles.push(client);
    }
    let (_, revoked_client) = hostile_peer(b"hostile-revoked", &target).await;
    publish(
        &revoked_client,
        forge::certified(&revoked_node, cert, now, now, 60_000),
    )
    .await;
    hostile_ids.push((revoked_node.node_id().to_string(), "revoked_certificate"));

    let (replayer, replay_client) = hostile_peer(b"hostile-replayer", &target).await;
    publish(
        &replay_client,
        forge::good(&replayer, now + 1000, now, 60_000),
    )
    .await;
    // The good one travels A -> B.
    let b_client = b.client();
    let replayer_id = replayer.node_id().to_string();
    wait_for(
        Duration::from_secs(20),
        "the replayer's good advert at B",
        || {
            let c = b_client.clone();
            let id = replayer_id.clone();
            async move {
                c.adverts()
                    .await
                    .ok()?
                    .iter()
                    .any(|x| x.node_id == id)
                    .then_some(())
            }
        },
    )
    .await;
    publish(
        &replay_client,
        forge::good(&replayer, now + 10, now + 1, 60_000),
    )
    .await;
    hostile_ids.push((replayer_id.clone(), "replayed_seq"));

    // A rejected each with its own reason, naming the sender.
    let a_client = a.client();
    let metrics = wait_for(Duration::from_secs(20), "every rejection at A", || {
        let c = a_client.clone();
        let codes: Vec<&str> = hostile_ids.iter().map(|(_, code)| *code).collect();
        async move {
            let text = c.metrics().await.ok()?;
            codes
                .iter()
                .all(|code| rejected(&text, code) >= 1)
                .then_some(text)
        }
    })
    .await;
    let log = a.log();
    for (id, code) in &hostile_ids {
        assert!(
            log.lines().any(|l| l.contains("advert rejected")
                && l.contains(id.as_str())
                && l.contains(code)),
            "no rejection line for {code} from {id} in A's log"
        );
    }
    assert_eq!(rejected(&metrics, "bad_signature"), 1);

    // Invalid messages cost their senders.
    let peers = a_client.peers().await.unwrap();
    let scored: Vec<f64> = peers
        .iter()
        .filter(|p| {
            hostile_ids
                .iter()
                .any(|(id, code)| *id == p.peer_id && *code != "signer_mismatch")
        })
        .filter_map(|p| p.gossip_score)
        .collect();
    assert!(
        !scored.is_empty() && scored.iter().all(|s| *s < 0.0),
        "scores {scored:?}"
    );

    // Nothing bad reached B: it rejected nothing (nothing was forwarded),
    // and its table holds only the honest nodes and the replayer's good advert.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b_metrics = b_client.metrics().await.unwrap();
    for code in fairgrid_node::adverts::AdvertRejection::CODES {
        assert_eq!(
            rejected(&b_metrics, code),
            0,
            "B saw a forwarded {code} advert: {}",
            b.log()
                .lines()
                .filter(|l| l.contains("rejected"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let at_b = b_client.adverts().await.unwrap();
    let mut expected = honest.clone();
    expected.insert(replayer_id.clone());
    assert_eq!(
        at_b.iter()
            .map(|x| x.node_id.clone())
            .collect::<BTreeSet<_>>(),
        expected
    );
    let replayed = at_b.iter().find(|x| x.node_id == replayer_id).unwrap();
    assert_eq!(
        replayed.seq,
        now + 1000,
        "the lower seq did not replace the good advert"
    );

    // The honest nodes keep working: B's re-issued adverts still reach A.
    let first_seq = a_client
        .adverts()
        .await
        .unwrap()
        .iter()
        .find(|x| x.node_id == b.peer_id)
        .unwrap()
        .seq;
    let b_id = b.peer_id.clone();
    wait_for(
        Duration::from_secs(30),
        "a fresh advert from B at A",
        || {
            let c = a_client.clone();
            let id = b_id.clone();
            async move {
                c.adverts()
                    .await
                    .ok()?
                    .iter()
                    .any(|x| x.node_id == id && x.seq > first_seq)
                    .then_some(())
            }
        },
    )
    .await;
}
