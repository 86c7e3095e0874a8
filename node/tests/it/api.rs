//! The HTTP API of an in-process node: authentication, error format for
//! bad input, paging, metrics, and random bytes thrown at the socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use fairgrid_node::app::{self, NodeSetup};
use fairgrid_node::config::Config;
use fairgrid_node::datadir::DataDir;
use fairgrid_protocol::Keypair;
use fairgrid_protocol::messages::Hardware;
use rand::{Rng, RngCore, SeedableRng};

/// method, path, token, (content type, body), expected status, expected code.
type Case = (
    reqwest::Method,
    &'static str,
    Option<&'static str>,
    Option<(&'static str, &'static str)>,
    u16,
    &'static str,
);

pub(crate) const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

pub(crate) async fn node(dir: &std::path::Path) -> app::RunningNode {
    let mut config = Config::default();
    config.network.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.network.mdns = false;
    config.api.listen = "127.0.0.1:0".into();
    app::start(NodeSetup {
        data_dir: DataDir::new(dir),
        config,
        key: Keypair::from_seed(b"api-test"),
        api_token: TOKEN.into(),
        hardware: Some(Hardware {
            cpu_cores: 2,
            cpu_gflops: 10,
            mem_mib: 1024,
            gpus: Vec::new(),
        }),
    })
    .await
    .unwrap()
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((ctype, b)) = body {
        req = req.header("content-type", ctype).body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let base = format!("http://{}", node.api_addr);
    let http = reqwest::Client::new();
    use reqwest::Method as M;
    let cases: Vec<Case> = vec![
        (M::GET, "/v1/status", None, None, 401, "unauthorized"),
        (
            M::GET,
            "/v1/status",
            Some("wrong-token"),
            None,
            401,
            "unauthorized",
        ),
        (M::GET, "/v1/nothing", Some(TOKEN), None, 404, "not_found"),
        (
            M::DELETE,
            "/v1/status",
            Some(TOKEN),
            None,
            405,
            "method_not_allowed",
        ),
        (
            M::POST,
            "/v1/peers",
            Some(TOKEN),
            Some(("application/json", "{\"addr\": ")),
            400,
            "malformed_json",
        ),
        (
            M::POST,
            "/v1/peers",
            Some(TOKEN),
            Some(("application/json", "{\"address\": 1}")),
            422,
            "invalid_body",
        ),
        (
            M::POST,
            "/v1/peers",
            Some(TOKEN),
            Some(("text/plain", "{}")),
            415,
            "unsupported_media_type",
        ),
        (
            M::POST,
            "/v1/peers",
            Some(TOKEN),
            Some(("application/json", "{\"addr\": \"not a multiaddr\"}")),
            400,
            "bad_request",
        ),
        (
            M::GET,
            "/v1/ledger/jobs/00",
            Some(TOKEN),
            None,
            400,
            "bad_request",
        ),
        (
            M::GET,
            "/v1/ledger/jobs/1111111111111111111111111111111111111111111111111111111111111111",
            Some(TOKEN),
            None,
            404,
            "not_found",
        ),
        (
            M::GET,
            "/v1/fairness?job=2222222222222222222222222222222222222222222222222222222222222222",
            Some(TOKEN),
            None,
            404,
            "not_found",
        ),
        (
            M::GET,
            "/v1/ledger?limit=0",
            Some(TOKEN),
            None,
            400,
            "bad_request",
        ),
        (
            M::GET,
            "/v1/ledger?after=-1",
            Some(TOKEN),
            None,
            400,
            "bad_request",
        ),
        (
            M::GET,
            "/v1/ledger?kind=nope",
            Some(TOKEN),
            None,
            400,
            "bad_request",
        ),
        (
            M::GET,
            "/v1/ledger/entries/999999",
            Some(TOKEN),
            None,
            404,
            "not_found",
        ),
        (
            M::GET,
            "/v1/jobs?limit=9999",
            Some(TOKEN),
            None,
            400,
            "bad_request",
        ),
        (
            M::GET,
            "/v1/jobs?before=12%2F..%2Fstatus",
            Some(TOKEN),
            None,
            400,
            "bad_request",
        ),
        (
            M::GET,
            "/v1/adverts/12D3KooWnotanid",
            Some(TOKEN),
            None,
            400,
            "bad_request",
        ),
    ];
    for (method, path, token, body, status, code) in cases {
        let (got, json) = call(&http, method.clone(), format!("{base}{path}"), token, body).await;
        assert_eq!(got, status, "{method} {path}: {json}");
        assert_eq!(json["error"]["code"], code, "{method} {path}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let big = format!("{{\"addr\": \"{}\"}}", "x".repeat(100_000));
    let (got, json) = call(
        &http,
        M::POST,
        format!("{base}/v1/peers"),
        Some(TOKEN),
        Some(("application/json", &big)),
    )
    .await;
    assert_eq!(got, 413, "{json}");

    // The SDK reports the same errors, typed.
    let bad = fairgrid_sdk::Client::new(&base, "nope").unwrap();
    match bad.status().await {
        Err(fairgrid_sdk::SdkError::Api {
            status: 401, code, ..
        }) => assert_eq!(code, "unauthorized"),
        other => panic!("{other:?}"),
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_pages_metrics_and_fairness() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let ledger = node.shared.ledger.clone();
    let owner = Keypair::from_seed(b"o").owner_id();
    let job = fairgrid_protocol::Hash32::of(b"job");
    for i in 0..25u64 {
        ledger
            .append(fairgrid_protocol::ledger::EntryBody::Credit {
                job_id: job,
                owner,
                amount: i,
                shards: 2,
                clearing_price: 1,
                allocation: fairgrid_protocol::Hash32::ZERO,
            })
            .await
            .unwrap();
    }
    let client = fairgrid_sdk::Client::new(&format!("http://{}", node.api_addr), TOKEN).unwrap();
    let mut after = None;
    let mut seen = 0;
    loop {
        let page = client.ledger_page(after, 10).await.unwrap();
        seen += page.entries.len();
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let total = client.ledger_page(None, 1).await.unwrap().total;
    assert_eq!(seen as u64, total);
    assert!(total >= 25);
    let for_job = client.ledger_job(&job.to_hex()).await.unwrap();
    assert_eq!(for_job.len(), 25);
    let report = client.fairness(Some(&job.to_hex())).await.unwrap();
    assert_eq!(
        (report.total_units, report.hhi, report.max_owner_share_ppm),
        (50, 10_000, 1_000_000)
    );
    let verify = client.verify_ledger().await.unwrap();
    assert!(verify.ok && verify.own_entries == total, "{verify:?}");
    let metrics = client.metrics().await.unwrap();
    assert!(metrics.contains("# TYPE fairgrid_ledger_entries gauge"));
    assert!(metrics.contains("fairgrid_adverts_rejected_total{reason=\"bad_signature\"} 0"));
    // Reachability (issue 16): a node alone has no relay slot, nothing
    // confirmed from outside and no hole punched.
    assert!(metrics.contains("\nfairgrid_relay_slots 0\n"), "{metrics}");
    assert!(metrics.contains("\nfairgrid_reachability 0\n"), "{metrics}");
    assert!(
        metrics.contains("fairgrid_hole_punches_total{outcome=\"failed\",transport=\"any\"} 0")
    );
    let status = client.status().await.unwrap();
    assert_eq!(
        status.node_id,
        Keypair::from_seed(b"api-test").node_id().to_string()
    );
    assert_eq!(status.reachability, "unknown");
    assert!(status.relayed_addrs.is_empty());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_the_socket_never_take_the_api_down() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let addr = node.api_addr;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let prefixes: [&[u8]; 4] = [
        b"",
        b"GET /v1/status HTTP/1.1\r\n",
        b"POST /v1/peers HTTP/1.1\r\nAuthorization: Bearer ",
        b"GET /",
    ];
    for i in 0..150 {
        let mut bytes = prefixes[i % prefixes.len()].to_vec();
        let mut noise = vec![0u8; rng.random_range(1..2000)];
        rng.fill_bytes(&mut noise);
        bytes.extend_from_slice(&noise);
        if i % 3 == 0 {
            bytes.extend_from_slice(b"\r\n\r\n");
        }
        tokio::task::spawn_blocking(move || {
            if let Ok(mut s) = TcpStream::connect(addr) {
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let _ = s.write_all(&bytes);
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
            }
        })
        .await
        .unwrap();
    }
    // Random JSON bodies on the one JSON endpoint, authenticated.
    let http = reqwest::Client::new();
    for _ in 0..100 {
        let mut body = vec![0u8; rng.random_range(0..300)];
        rng.fill_bytes(&mut body);
        let resp = http
            .post(format!("http://{addr}/v1/peers"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
        let json: serde_json::Value = resp.json().await.unwrap();
        assert!(json["error"]["code"].is_string());
    }
    let client = fairgrid_sdk::Client::new(&format!("http://{addr}"), TOKEN).unwrap();
    assert!(client.status().await.is_ok(), "the API still answers");
    node.shutdown().await.unwrap();
}

/// Guessing the token is slow: after a burst of failures an address gets
/// 429 with Retry-After, while requests with the right token from the
/// same address go on being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_the_token_is_rate_limited_but_the_owner_gets_in() {
    use fairgrid_node::api::{FAILED_AUTH_BURST, FAILED_AUTH_PER_SEC};
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path()).await;
    let url = format!("http://{}/v1/status", node.api_addr);
    let http = reqwest::Client::new();
    let guesses = FAILED_AUTH_BURST * 3;
    let (mut refused, mut limited) = (0, 0);
    for i in 0..guesses {
        let guess = format!("{i:048x}");
        let response = http.get(&url).bearer_auth(&guess).send().await.unwrap();
        match response.status().as_u16() {
            401 => refused += 1,
            429 => {
                assert_eq!(response.headers()["retry-after"], "1");
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "too_many_failures", "{body}");
                limited += 1;
            }
            other => panic!("a wrong token got {other}"),
        }
        if i % 10 == 0 {
            let (status, _) =
                call(&http, reqwest::Method::GET, url.clone(), Some(TOKEN), None).await;
            assert_eq!(status, 200, "the right token is served during the attack");
        }
    }
    eprintln!("{guesses} wrong tokens: {refused} judged (401), {limited} refused unjudged (429)");
    // The burst, plus whatever refilled while the guesses were sent.
    assert!(
        (FAILED_AUTH_BURST..FAILED_AUTH_BURST * 2).contains(&refused),
        "{refused} guesses answered 401 of {guesses}"
    );
    assert_eq!(refused + limited, guesses);
    // The allowance refills: one guess a fifth of a second later is judged again.
    tokio::time::sleep(Duration::from_millis(
        1000 / u64::from(FAILED_AUTH_PER_SEC) + 50,
    ))
    .await;
    let response = http
        .get(&url)
        .bearer_auth("still wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}
