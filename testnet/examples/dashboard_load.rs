//! Load benchmark of the dashboard: the network page with 1,000 live
//! adverts, 100 jobs and 20 owners with 300 history points each, in
//! headless Chromium. The page's assets are the node's own
//! (`api::ui::public_routes`); the API beside them is a mock serving the
//! same JSON shapes, since no test network holds 1,000 adverts.
//!
//! ```sh
//! cargo run -p fairgrid-testnet --example dashboard_load [-- RUNS]
//! ```
//!
//! Prints, per run, the time from the document's navigation start to its
//! data drawn (`main[data-ready]`, timed in the page), and the render time
//! alone (the API calls to the DOM); then the time to filter the rows.

#[path = "../tests/it/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::time::Duration;

use axum::Json;
use axum::routing::get;
use serde_json::{Value, json};

const ADVERTS: usize = 1000;
const JOBS: usize = 100;
const OWNERS: usize = 20;
const POINTS: usize = 300;

/// 64 hex digits, distinct per (i, salt).
fn hex(i: usize, salt: u8) -> String {
    format!("{salt:02x}{i:062x}")
}

fn adverts() -> Value {
    let now = 1_800_000_000_000u64;
    (0..ADVERTS)
        .map(|i| {
            let owner = i % OWNERS;
            json!({
                "node_id": format!("12D3KooW{:044}", i), "advert_id": hex(i, 1),
                "owner": hex(owner, 2), "owner_label": format!("Univ {owner}"),
                "certified": true, "seq": now, "issued_at": now, "expires_at": now + 600_000,
                "received_at": now, "from": if i == 0 { "self".to_string() } else { format!("12D3KooW{:044}", i / 7) },
                "hardware": {"cpu_cores": 16, "cpu_gflops": 400 + i % 50, "mem_mib": 64000,
                    "gpus": if i % 5 == 0 { json!([{"model": "H100", "mem_mib": 81920, "gflops": 60000}]) } else { json!([]) }},
                "offered": {"cpu_milli": 8000 + (i % 8) * 1000, "mem_mib": 32000, "gpu_milli": if i % 5 == 0 { 1000 } else { 0 }, "gpu_mem_mib": 0},
                "price_floor": i % 10,
            })
        })
        .collect()
}

fn jobs() -> Value {
    let jobs: Vec<Value> = (0..JOBS)
        .map(|i| {
            json!({
                "job_id": hex(i, 3), "name": format!("job {i}"),
                "state": if i % 3 == 0 { "training" } else { "finished" },
                "model": "mlp", "dataset": "fashion-mnist", "shards": 12, "round": 10, "rounds": 30,
                "last_loss": 0.5, "last_accuracy": 0.8, "workers": 4,
                "submitted_at_ms": 1_800_000_000_000u64 + i as u64, "updated_at_ms": 1_800_000_000_000u64,
                "eta_secs": null, "error": null,
            })
        })
        .collect();
    json!({"jobs": jobs, "next": null})
}

fn fairness() -> Value {
    let owners: Vec<Value> = (0..OWNERS)
        .map(|o| json!({"owner": hex(o, 2), "units": 1000 - o * 10, "share_ppm": 50_000}))
        .collect();
    json!({"job": null, "basis": "shard_rounds", "total_units": 18100, "owners": owners,
        "max_owner_share_ppm": 55_000, "hhi": 500, "gini": 0.05, "nakamoto_50": 10,
        "nakamoto_33": 7, "jain": 0.99})
}

fn history() -> Value {
    let points: Vec<Value> = (0..POINTS)
        .map(|p| {
            json!({"seq": p, "author": "12D3KooWself", "timestamp": 1_800_000_000_000u64 + p as u64 * 1000,
                "total_units": (p + 1) * 60,
                "share_ppm": (0..OWNERS).map(|o| 50_000 + (o * p) % 5000).collect::<Vec<_>>()})
        })
        .collect();
    json!({"job": null, "cap_ppm": 100_000, "owners": (0..OWNERS).map(|o| hex(o, 2)).collect::<Vec<_>>(), "points": points})
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map_or(10, |r| r.parse().expect("RUNS"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (adverts, jobs, fairness, history) = (adverts(), jobs(), fairness(), history());
    let app = axum::Router::new()
        .merge(fairgrid_node::api::ui::public_routes())
        .route("/v1/adverts", get(move || async move { Json(adverts) }))
        .route("/v1/jobs", get(move || async move { Json(jobs) }))
        .route("/v1/fairness", get(move || async move { Json(fairness) }))
        .route(
            "/v1/fairness/history",
            get(move || async move { Json(history) }),
        );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let page = browser::Page::open();
    let base = format!("http://{addr}");
    page.goto(&format!("{base}/"));
    page.wait_ready("login");
    page.eval("sessionStorage.setItem('fairgrid.token', 'mock'); ''");
    let mut loads = Vec::new();
    let mut renders = Vec::new();
    for run in 0..runs {
        // A fresh document each run: assets revalidated, nothing cached in JS.
        page.goto(&format!("{base}/?run={run}#/network"));
        page.wait_ready("network");
        let load: f64 = page
            .eval("document.getElementById('main').dataset.readyAtMs")
            .parse()
            .unwrap();
        let render: f64 = page
            .eval("document.getElementById('main').dataset.renderMs")
            .parse()
            .unwrap();
        let rows = page.eval("document.querySelectorAll('#adverts tbody tr').length");
        assert_eq!(rows, ADVERTS.to_string());
        let errors = page.take_errors();
        assert!(errors.is_empty(), "{errors:?}");
        println!(
            "run {run}: navigation to drawn {load:.0} ms, render {render:.0} ms ({rows} advert rows)"
        );
        loads.push(load);
        renders.push(render);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Filtering the 1,000 rows, as a user types: the handler and the
    // layout it causes, timed in the page.
    let filter_ms: f64 = page
        .eval(
            "(() => { const t = performance.now(); const s = document.getElementById('adverts-search'); \
             s.value = 'univ 7'; s.dispatchEvent(new Event('input')); document.body.offsetHeight; \
             return performance.now() - t; })()",
        )
        .parse()
        .unwrap();
    let shown = page.eval("document.getElementById('adverts-shown').textContent");
    loads.sort_by(f64::total_cmp);
    renders.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    println!(
        "result adverts={ADVERTS} jobs={JOBS} runs={runs} load_median_ms={:.0} load_max_ms={:.0} render_median_ms={:.0} filter_ms={:.0} filter_shown={shown}",
        median(&loads),
        loads[loads.len() - 1],
        median(&renders),
        filter_ms
    );
}
