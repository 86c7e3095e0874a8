//! The dashboard in a real browser (headless Chromium) against a real
//! testnet job: every page loads without a console error, a wrong token is
//! refused, a one-time link logs in once, the live curves gain points
//! while the job runs, the owner shares shown are `/v1/fairness`'s, and
//! the verify button reports the ledger's result. Screenshots of every
//! page go to `target/tmp/dashboard-screenshots/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fairgrid_sdk::jobs::JobState;
use fairgrid_testnet::job::{Model, Tuning};
use fairgrid_testnet::launcher::Launcher;
use fairgrid_testnet::scenario::{self, DemoDevice, ScenarioArgs};

use crate::browser::{Page, json};

const BIN: &str = env!("CARGO_BIN_EXE_fairgrid-testnet");

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn points(page: &Page, chart: &str) -> u64 {
    page.eval(&format!(
        "(document.getElementById({}) || {{dataset: {{points: '0'}}}}).dataset.points",
        json(chart)
    ))
    .parse()
    .unwrap()
}

/// JS: true when the owner-share table shows exactly `fairness`'s owners
/// and shares.
fn shares_shown_are(fairness: &fairgrid_sdk::FairnessReport) -> String {
    let expected: Vec<String> = fairness
        .owners
        .iter()
        .map(|o| format!("{}={}", o.owner, o.share_ppm))
        .collect();
    format!(
        "JSON.stringify([...document.querySelectorAll('#owner-shares tbody tr')]\
         .map((r) => `${{r.dataset.owner}}=${{r.dataset.sharePpm}}`)) === {}",
        json(&serde_json::to_string(&expected).unwrap())
    )
}

/// Asserts the page reported no error since the last check.
fn assert_clean(page: &Page, what: &str) {
    let errors = page.take_errors();
    assert!(errors.is_empty(), "{what}: the browser reported {errors:?}");
}

#[test]
fn the_dashboard_shows_a_live_job_in_a_real_browser() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let args = ScenarioArgs {
        nodes: 3,
        owners: 2,
        model: Model::Mlp,
        node_threads: 1,
        data: "builtin".into(),
        tuning: Tuning {
            rounds: Some(12),
            local_steps: Some(10),
            max_train_samples: Some(2000),
            ..Tuning::default()
        },
        keep: None,
        timeout_secs: 300,
        device: DemoDevice::Cpu,
    };
    let prepared = runtime
        .block_on(scenario::prepare(Launcher::new(BIN), &args))
        .unwrap();
    let node = &prepared.cluster.nodes[0];
    let client = node.client().unwrap();
    let base = node.api.trim_end_matches('/').to_string();
    let shots = screenshots();
    let page = Page::open();

    // A wrong token is refused, and the page says so.
    page.goto(&format!("{base}/"));
    page.wait_ready("login");
    page.eval("document.getElementById('token').value = 'not-the-token'; document.querySelector('#login button').click(); ''");
    page.wait_for(
        "the refusal",
        "document.getElementById('login-error').textContent.includes('wrong')",
        Duration::from_secs(10),
    );
    page.screenshot(&shots.join("login-refused.png"));
    let errors = page.take_errors();
    assert!(
        errors.iter().all(|e| e.contains("401")),
        "only the refused request is an error: {errors:?}"
    );

    // A one-time link logs in, leaves no code in the address bar, and
    // works once.
    let link = runtime.block_on(client.ui_link()).unwrap();
    page.goto(&format!("{base}{}", link.path));
    page.wait_ready("node");
    assert!(
        !page.tab.get_url().contains("code="),
        "{}",
        page.tab.get_url()
    );
    assert!(!page.eval("location.href").contains(&link.code));
    assert_clean(&page, "login by link");

    // The job page while the job runs: the curves gain points.
    let (_, accepted) = runtime.block_on(scenario::submit(&prepared)).unwrap();
    let job = accepted.job_id.clone();
    page.route(&format!("#/jobs/{job}"));
    page.wait_ready("jobs");
    let before = points(&page, "loss-chart");
    page.wait_for(
        "the loss curve to gain two points",
        &format!(
            "Number(document.getElementById('loss-chart').dataset.points) >= {}",
            before + 2
        ),
        Duration::from_secs(120),
    );
    let status = runtime.block_on(client.job(&job)).unwrap();
    assert!(
        (before as u32) < status.rounds,
        "the page was open before the job ended ({before} points of {} rounds)",
        status.rounds
    );
    page.screenshot(&shots.join("job-live.png"));
    assert_clean(&page, "job page, live");

    let deadline = Instant::now() + Duration::from_secs(240);
    while runtime.block_on(client.job(&job)).unwrap().state != JobState::Finished {
        assert!(Instant::now() < deadline, "the job did not finish");
        std::thread::sleep(Duration::from_millis(500));
    }
    page.wait_for(
        "the page to see the job finish",
        "document.getElementById('job-state').textContent === 'finished'",
        Duration::from_secs(30),
    );
    page.wait_for(
        "the download button",
        "document.getElementById('download')",
        Duration::from_secs(10),
    );
    let shown = points(&page, "loss-chart");
    assert_eq!(shown, u64::from(status.rounds), "one point per round");
    // The job's owner shares are /v1/fairness?job='s once the page has
    // drawn the last round.
    let fairness = runtime.block_on(client.fairness(Some(&job))).unwrap();
    page.wait_for(
        "the job's owner shares",
        &shares_shown_are(&fairness),
        Duration::from_secs(30),
    );
    assert!(page.eval("document.getElementById('explain').textContent.length") != "0");
    assert!(
        page.eval("document.querySelectorAll('#worker-rounds tbody tr').length")
            .parse::<u32>()
            .unwrap()
            > 0,
        "per-worker round times"
    );
    // The download button hands the browser the model the API serves.
    page.eval(
        "window.__downloaded = -1; const make = URL.createObjectURL; \
         URL.createObjectURL = (blob) => { window.__downloaded = blob.size; return make(blob); }; \
         document.getElementById('download').click(); ''",
    );
    page.wait_for(
        "the download",
        "window.__downloaded > 0",
        Duration::from_secs(30),
    );
    let model = tempfile::tempdir().unwrap();
    let downloaded = runtime
        .block_on(client.download_result_verified(&job, &model.path().join("m.safetensors")))
        .unwrap();
    assert_eq!(
        page.eval("String(window.__downloaded)"),
        downloaded.bytes.to_string()
    );
    page.screenshot(&shots.join("job-finished.png"));
    assert_clean(&page, "job page, finished");

    // The network page shows /v1/fairness's shares.
    page.route("#/network");
    page.wait_ready("network");
    let fairness = runtime.block_on(client.fairness(None)).unwrap();
    assert!(!fairness.owners.is_empty());
    assert_eq!(
        page.eval(&shares_shown_are(&fairness)),
        "true",
        "{fairness:?}"
    );
    assert!(points(&page, "share-history") > 0);
    page.screenshot(&shots.join("network.png"));
    assert_clean(&page, "network page");

    for (hash, ready, name) in [("#/node", "node", "node"), ("#/jobs", "jobs", "jobs")] {
        page.route(hash);
        page.wait_ready(ready);
        page.screenshot(&shots.join(format!("{name}.png")));
        assert_clean(&page, name);
    }
    assert!(
        page.eval("document.getElementById('jobs').textContent")
            .contains(&job[..6])
    );

    // The ledger: the job's entries, and the verify button's verdict.
    page.route(&format!("#/ledger?job={job}"));
    page.wait_ready("ledger");
    assert!(
        page.eval("document.querySelectorAll('#ledger-entries tbody tr').length")
            .parse::<u32>()
            .unwrap()
            > 0
    );
    page.eval("document.getElementById('verify').click(); ''");
    page.wait_for(
        "the verdict",
        "document.getElementById('verify-result').dataset.ok",
        Duration::from_secs(30),
    );
    let verdict = runtime.block_on(client.verify_ledger()).unwrap();
    assert_eq!(
        page.eval("document.getElementById('verify-result').dataset.ok"),
        verdict.ok.to_string()
    );
    assert!(verdict.ok, "{verdict:?}");
    assert!(
        page.eval("document.getElementById('verify-result').textContent")
            .starts_with("verified")
    );
    page.screenshot(&shots.join("ledger.png"));
    assert_clean(&page, "ledger page");

    // Logging out forgets the token: the API is not called without one.
    page.eval("document.getElementById('logout').click(); ''");
    page.wait_ready("login");
    assert_eq!(
        page.eval("String(sessionStorage.getItem('fairgrid.token'))"),
        "null"
    );
    assert_clean(&page, "log out");
    eprintln!("screenshots in {}", shots.display());
}
