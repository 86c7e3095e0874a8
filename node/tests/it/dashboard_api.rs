//! The dashboard's side of the API on an in-process node: the page and
//! its assets without a token under a strict Content-Security-Policy,
//! one-time login links, the owner filter of the ledger and the fairness
//! history, with hostile inputs.

use std::collections::BTreeSet;

use fairgrid_node::api::ui::CONTENT_SECURITY_POLICY;
use fairgrid_protocol::Keypair;

use crate::api::{TOKEN, node};

fn assert_secure(headers: &reqwest::header::HeaderMap, what: &str) {
    assert_eq!(
        headers["content-security-policy"], CONTENT_SECURITY_POLICY,
        "{what}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["x-frame-options"], "DENY", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
}

/// The `/ui/...` files a page or script names (`src=`, `href=`, `from "./x"`).
fn referenced_assets(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for marker in ["\"/ui/", "\"./"] {
        let mut rest = text;
        while let Some(i) = rest.find(marker) {
            rest = &rest[i + marker.len()..];
            if let Some(end) = rest.find('"') {
                out.insert(rest[..end].to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_every_asset_it_loads_are_served_without_the_token_under_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let base = format!("http://{}", node.api_addr);
    let http = reqwest::Client::new();

    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_secure(page.headers(), "/");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline code"
    );

    // Walk every asset the page loads, and those they import.
    let mut todo: Vec<String> = referenced_assets(&html).into_iter().collect();
    let mut served = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !served.insert(name.clone()) {
            continue;
        }
        let r = http.get(format!("{base}/ui/{name}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "/ui/{name}");
        assert_secure(r.headers(), &name);
        let etag = r.headers()["etag"].clone();
        let body = r.text().await.unwrap();
        assert!(!body.contains("innerHTML"), "{name}: markup from data");
        todo.extend(referenced_assets(&body));
        // Revalidation: an unchanged asset is not sent again.
        let again = http
            .get(format!("{base}/ui/{name}"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status().as_u16(), 304, "{name}");
    }
    assert!(served.len() >= 8, "{served:?}");

    for bad in ["nope.js", "..%2fCargo.toml", "app.js%00"] {
        let r = http.get(format!("{base}/ui/{bad}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{bad}");
    }
    // The API keeps its token, and its answers carry the policy too.
    let r = http.get(format!("{base}/v1/status")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_secure(r.headers(), "/v1/status");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_link_gives_the_token_once_and_guesses_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let base = format!("http://{}", node.api_addr);
    let http = reqwest::Client::new();
    let redeem = |body: String| {
        http.post(format!("{base}/v1/ui/redeem"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let r = http
        .post(format!("{base}/v1/ui/links"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "minting a link needs the token");
    let client = fairgrid_sdk::Client::new(&base, TOKEN).unwrap();
    let link = client.ui_link().await.unwrap();
    assert_eq!(link.path, format!("/#code={}", link.code));
    assert!(link.expires_in_secs > 0);

    for (body, status) in [
        ("{\"code\": \"00000000000000000000000000000000\"}", 401),
        ("{\"code\": 7}", 422),
        ("{\"code\": \"x\", \"token\": \"y\"}", 422),
        ("not json", 400),
    ] {
        let r = redeem(body.to_string()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
    }
    let r = redeem(format!("{{\"code\": \"{}\"}}", link.code))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let token: fairgrid_sdk::UiToken = r.json().await.unwrap();
    assert_eq!(token.token, TOKEN);
    let r = redeem(format!("{{\"code\": \"{}\"}}", link.code))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "a link works once");

    // Guessing codes is charged like guessing the token.
    let mut limited = 0;
    for i in 0..60 {
        let r = redeem(format!("{{\"code\": \"{i:032x}\"}}")).await.unwrap();
        match r.status().as_u16() {
            401 => {}
            429 => limited += 1,
            other => panic!("a guessed code got {other}"),
        }
    }
    assert!(limited >= 20, "{limited} of 60 guesses limited");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_filters_by_owner_and_the_fairness_history_follows_the_rounds() {
    use fairgrid_protocol::Hash32;
    use fairgrid_protocol::ledger::{EntryBody, RoundParticipant};
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let base = format!("http://{}", node.api_addr);
    let client = fairgrid_sdk::Client::new(&base, TOKEN).unwrap();
    let (a, b) = (
        Keypair::from_seed(b"owner a").owner_id(),
        Keypair::from_seed(b"owner b").owner_id(),
    );
    let job = Hash32::of(b"dashboard job");
    let participant = |owner, shards: u32| RoundParticipant {
        node: Keypair::from_seed(&shards.to_le_bytes()).node_id(),
        owner,
        shards: (0..shards).collect(),
        samples: 1,
        update_hash: Hash32::ZERO,
    };
    for round in 0..5u32 {
        node.shared
            .ledger
            .append(EntryBody::RoundCompleted {
                job_id: job,
                round,
                participants: vec![participant(a, 3), participant(b, 1)],
                model_hash: Hash32::ZERO,
                train_loss_micro: 0,
                test_accuracy_ppm: None,
            })
            .await
            .unwrap();
    }
    node.shared
        .ledger
        .append(EntryBody::Credit {
            job_id: job,
            owner: b,
            amount: 5,
            shards: 1,
            clearing_price: 1,
            allocation: Hash32::ZERO,
        })
        .await
        .unwrap();

    let history = client.fairness_history(Some(&job.to_hex())).await.unwrap();
    assert_eq!(history.points.len(), 5);
    let ib = history
        .owners
        .iter()
        .position(|o| *o == b.to_string())
        .unwrap();
    assert_eq!(history.points[4].share_ppm[ib], 250_000);
    assert_eq!(history.points[4].total_units, 20);
    // No JobSubmitted here, so the cap is the node's network cap.
    let whole = client.fairness_history(None).await.unwrap();
    assert_eq!(whole.cap_ppm, node.shared.config.jobs.beta_ppm);
    let report = client.fairness(None).await.unwrap();
    let last = whole.points.last().unwrap();
    for o in &report.owners {
        let i = whole.owners.iter().position(|x| *x == o.owner).unwrap();
        assert_eq!(
            last.share_ppm[i], o.share_ppm,
            "the history ends where /v1/fairness is"
        );
    }

    let http = reqwest::Client::new();
    let get = |q: &str| {
        http.get(format!("{base}/v1/ledger?{q}"))
            .bearer_auth(TOKEN)
            .send()
    };
    let page: fairgrid_sdk::LedgerPage = get(&format!("owner={b}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = page.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "round_completed").count(), 5);
    assert_eq!(kinds.iter().filter(|k| **k == "credit").count(), 1);
    assert_eq!(page.next_after, None);
    // Paging: two at a time, every entry once, in order.
    let (mut after, mut seen) = (None::<u64>, Vec::new());
    loop {
        let q = match after {
            Some(a) => format!("owner={b}&limit=2&after={a}"),
            None => format!("owner={b}&limit=2"),
        };
        let page: fairgrid_sdk::LedgerPage = get(&q).await.unwrap().json().await.unwrap();
        seen.extend(page.entries.iter().map(|e| e.seq));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let all: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seen, all);
    let credits: fairgrid_sdk::LedgerPage = get(&format!("owner={b}&kind=credit&limit=1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(credits.entries.len(), 1);
    let none: fairgrid_sdk::LedgerPage = get(&format!("owner={a}&kind=credit"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(none.entries.is_empty());
    for (q, status) in [
        ("owner=zz", 400),
        ("owner=", 400),
        (&format!("owner={a}&kind=nope") as &str, 400),
        (&format!("owner={a}&limit=0") as &str, 400),
    ] {
        let r = get(q).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{q}");
    }
    let r = http
        .get(format!("{base}/v1/fairness/history?job=abc"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = http
        .get(format!(
            "{base}/v1/fairness/history?job={}",
            Hash32::of(b"unknown").to_hex()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    node.shutdown().await.unwrap();
}
