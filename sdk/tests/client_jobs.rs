//! The SDK's job methods against a mock node on 127.0.0.1: requests,
//! answers, error mapping, the long-poll stream and the model download.

mod mock;

use std::time::Duration;

use fairgrid_sdk::jobs::{JobEventKind, JobListQuery, JobRequest, JobState};
use fairgrid_sdk::{Client, FollowOptions, JobUpdate, SdkError};
use futures::StreamExt;
use mock::{GARBAGE, GOOD, LIMIT_ERROR, MODEL, PRICEY, TAMPERED, TOKEN};

fn request() -> JobRequest {
    fairgrid_sdk::jobfile::parse(
        "name = \"t\"\n[model]\narch = \"mlp\"\n[data]\nsource = \"builtin\"\n",
        std::path::Path::new("inline"),
    )
    .unwrap()
}

fn fast() -> FollowOptions {
    FollowOptions {
        retry_delay: Duration::from_millis(10),
        ..FollowOptions::default()
    }
}

#[tokio::test]
async fn submit_list_status_and_the_node_s_errors() {
    let (base, state) = mock::start().await;
    let client = Client::new(&base, TOKEN).unwrap();
    let accepted = client.submit_job(&request()).await.unwrap();
    assert_eq!(accepted.job_id, GOOD);
    assert_eq!(state.lock().unwrap().submitted, vec![request()]);

    // The node's 400 comes back with its code and message.
    let mut bad = request();
    bad.market.alpha = 2.0;
    match client.submit_job(&bad).await {
        Err(SdkError::Api {
            status: 400,
            code,
            message,
        }) => {
            assert_eq!(code, "bad_request");
            assert!(message.contains("market.alpha"));
        }
        other => panic!("{other:?}"),
    }

    // The list comes page by page, the cursor of one page asking for the next.
    let jobs = client.jobs().await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[1].job_id, PRICEY);
    let queries = state.lock().unwrap().list_queries.clone();
    assert_eq!(queries.len(), 2);
    assert_eq!(
        queries[1].get("before").map(String::as_str),
        Some("2-cursor")
    );
    assert_eq!(queries[1].get("limit").map(String::as_str), Some("500"));
    // A cursor that would reshape the URL is refused before sending.
    let hostile = JobListQuery {
        before: Some("1&id_prefix=00/../status".into()),
        ..JobListQuery::default()
    };
    assert!(matches!(
        client.jobs_page(&hostile).await,
        Err(SdkError::BadQuery(_))
    ));
    assert_eq!(client.job(GOOD).await.unwrap().state, JobState::Finished);
    let failed = client.job(PRICEY).await.unwrap();
    assert_eq!(failed.error.as_deref(), Some(LIMIT_ERROR));

    let unknown = "f".repeat(64);
    let err = client.job(&unknown).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(!err.is_transient());
    // A malformed id never reaches the node.
    assert!(matches!(
        client.job("../v1/status").await,
        Err(SdkError::BadJobId(_))
    ));

    let wrong = Client::new(&base, "not-the-token").unwrap();
    match wrong.jobs().await {
        Err(SdkError::Api {
            status: 401, code, ..
        }) => assert_eq!(code, "unauthorized"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbage_answers_are_decode_or_http_errors() {
    let (base, _) = mock::start().await;
    let client = Client::new(&base, TOKEN).unwrap();
    match client.job(GARBAGE).await {
        Err(SdkError::Decode { url, reason }) => {
            assert!(url.ends_with(GARBAGE));
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // A proxy's HTML error page keeps its status and a bounded snippet.
    match client.job_events(GARBAGE, 0, 0).await {
        Err(e @ SdkError::Api { status: 502, .. }) => {
            assert!(e.is_transient());
            assert!(e.to_string().contains("proxy error"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_absent_node_is_unreachable_and_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(&format!("http://{addr}"), TOKEN).unwrap();
    let err = client.jobs().await.unwrap_err();
    assert!(matches!(err, SdkError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    for bad in [
        "127.0.0.1:7444",
        "https://x",
        "http://",
        "http:///x",
        "http://a b",
    ] {
        assert!(
            matches!(Client::new(bad, TOKEN), Err(SdkError::BadUrl(_))),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn follow_yields_every_event_once_and_ends_with_the_job() {
    let (base, state) = mock::start().await;
    let client = Client::new(&base, TOKEN).unwrap();
    let updates: Vec<JobUpdate> = client
        .follow_job(GOOD, fast())
        .map(|u| u.unwrap())
        .collect()
        .await;
    let events: Vec<u64> = updates
        .iter()
        .filter_map(|u| match u {
            JobUpdate::Event(e) => Some(e.seq),
            JobUpdate::State(_) => None,
        })
        .collect();
    assert_eq!(events, vec![1, 2, 3, 4, 5], "in order, none twice");
    let states: Vec<JobState> = updates
        .iter()
        .filter_map(|u| match u {
            JobUpdate::State(s) => Some(*s),
            JobUpdate::Event(_) => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![JobState::Training, JobState::Finished],
        "each change once"
    );
    match updates.last().unwrap() {
        JobUpdate::Event(e) => assert!(matches!(e.kind, JobEventKind::Finished { .. })),
        other => panic!("{other:?}"),
    }
    // The 503 of the first poll was retried; `after` advanced batch by batch.
    let mock = state.lock().unwrap();
    let afters: Vec<u64> = mock.poll_args.iter().map(|(a, _)| *a).collect();
    assert_eq!(afters, vec![0, 0, 2, 4]);
    assert!(mock.poll_args.iter().all(|(_, w)| *w == 20));
}

#[tokio::test]
async fn follow_resumes_after_a_seq_and_caps_the_wait() {
    let (base, state) = mock::start().await;
    let client = Client::new(&base, TOKEN).unwrap();
    let options = FollowOptions {
        after: 3,
        wait_secs: 300,
        ..fast()
    };
    let seqs: Vec<u64> = client
        .follow_job(GOOD, options)
        .filter_map(|u| async move {
            match u.unwrap() {
                JobUpdate::Event(e) => Some(e.seq),
                JobUpdate::State(_) => None,
            }
        })
        .collect()
        .await;
    assert_eq!(seqs, vec![4, 5]);
    assert!(
        state
            .lock()
            .unwrap()
            .poll_args
            .iter()
            .all(|(_, w)| *w == 30)
    );
}

#[tokio::test]
async fn a_limit_price_no_bid_meets_ends_the_stream_with_the_node_s_reason() {
    let (base, _) = mock::start().await;
    let client = Client::new(&base, TOKEN).unwrap();
    let updates: Vec<_> = client.follow_job(PRICEY, fast()).collect().await;
    let reason = updates
        .iter()
        .find_map(|u| match u {
            Ok(JobUpdate::Event(e)) => match &e.kind {
                JobEventKind::Failed { reason } => Some(reason.clone()),
                _ => None,
            },
            _ => None,
        })
        .expect("a failed event");
    assert!(reason.contains("cheapest ask seen: 250"), "{reason}");
    assert!(updates.iter().all(|u| u.is_ok()));
}

#[tokio::test]
async fn follow_gives_up_on_errors_that_stay() {
    let (base, state) = mock::start().await;
    let client = Client::new(&base, TOKEN).unwrap();
    // 502 forever: retried max_retries times, then yielded once.
    let options = FollowOptions {
        max_retries: 2,
        ..fast()
    };
    let updates: Vec<_> = client.follow_job(GARBAGE, options).collect().await;
    assert_eq!(updates.len(), 1);
    assert!(matches!(updates[0], Err(SdkError::Api { status: 502, .. })));
    assert_eq!(state.lock().unwrap().polls, 3);
    // A 404 is not retried; a malformed id is refused before any request.
    let updates: Vec<_> = client.follow_job(&"e".repeat(64), fast()).collect().await;
    assert!(matches!(
        updates[..],
        [Err(SdkError::Api { status: 404, .. })]
    ));
    let updates: Vec<_> = client.follow_job("nope", fast()).collect().await;
    assert!(matches!(updates[..], [Err(SdkError::BadJobId(_))]));
}

#[tokio::test]
async fn allocation_explain_and_report() {
    let (base, _) = mock::start().await;
    let client = Client::new(&base, TOKEN).unwrap();
    let allocation = client.job_allocation(GOOD).await.unwrap();
    assert_eq!(allocation.owner_cap, 4);
    let err = client.job_allocation(PRICEY).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    let text = client.job_explain(GOOD).await.unwrap();
    assert!(text.contains("cap 4 shards per owner"));
    let report = client.job_report(GOOD).await.unwrap();
    assert_eq!(report.final_test_accuracy, Some(0.75));
    let table = fairgrid_sdk::render::allocation_table(report.allocation.as_ref().unwrap());
    assert!(table.contains("Univ A"));
}

#[tokio::test]
async fn downloads_land_whole_or_not_at_all() {
    let (base, _) = mock::start().await;
    let client = Client::new(&base, TOKEN).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("model.safetensors");

    let got = client.download_result_verified(GOOD, &dest).await.unwrap();
    assert_eq!(got.bytes, MODEL.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), MODEL);
    assert_eq!(got.blake3, blake3::hash(MODEL).to_hex().to_string());

    // Not finished: the node's 409, and nothing written.
    let other = dir.path().join("early.safetensors");
    let err = client.download_result(PRICEY, &other).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert!(!other.exists());

    // A model that does not match its report is removed.
    let tampered = dir.path().join("tampered.safetensors");
    match client.download_result_verified(TAMPERED, &tampered).await {
        Err(SdkError::ModelHashMismatch { expected, .. }) => assert_eq!(expected, "00".repeat(32)),
        other => panic!("{other:?}"),
    }
    assert!(!tampered.exists());

    // A connection cut mid-body leaves neither the file nor its temp file,
    // and an earlier file at the destination is untouched.
    let cut = mock::truncating_server(1000, 10).await;
    let client = Client::new(&cut, TOKEN).unwrap();
    let err = client.download_result(GOOD, &dest).await.unwrap_err();
    assert!(matches!(err, SdkError::Unreachable { .. }), "{err:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), MODEL);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
