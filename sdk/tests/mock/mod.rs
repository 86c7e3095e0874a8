#![allow(dead_code)]

//! A stand-in for a node's jobs API on 127.0.0.1: canned answers in the
//! node's JSON format, so the SDK's requests, error mapping, long polling
//! and downloads can be tested without a node.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fairgrid_sdk::jobs::*;
use fairgrid_sdk::{ErrorBody, ErrorDetail};
use serde::Deserialize;

pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// A job that trains and finishes.
pub const GOOD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
/// A job that no bid can take at its limit price.
pub const PRICEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";
/// A job whose report hash does not match its model.
pub const TAMPERED: &str = "3333333333333333333333333333333333333333333333333333333333333333";
/// A job whose endpoints answer garbage.
pub const GARBAGE: &str = "4444444444444444444444444444444444444444444444444444444444444444";

pub const MODEL: &[u8] = b"safetensors bytes of a very small model";
pub const LIMIT_ERROR: &str =
    "no bid at or below the limit price 100; cheapest ask seen: 250 (node 12D3KooWcheap)";

#[derive(Default)]
pub struct Mock {
    /// Event polls answered so far (the first one of GOOD fails with 503).
    pub polls: u32,
    pub submitted: Vec<JobRequest>,
    /// `after` and `wait_secs` of every poll, in order.
    pub poll_args: Vec<(u64, u64)>,
    /// The query of every `GET /v1/jobs`, in order.
    pub list_queries: Vec<std::collections::HashMap<String, String>>,
}

type Shared = Arc<Mutex<Mock>>;

pub async fn start() -> (String, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(status))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/jobs/{id}/allocation", get(allocation))
        .route("/v1/jobs/{id}/explain", get(explain))
        .route("/v1/jobs/{id}/report", get(report))
        .route("/v1/jobs/{id}/result", get(result))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.into(),
            message: message.into(),
        },
    };
    (status, Json(body)).into_response()
}

/// The error answer for a request without the token or with an id this
/// node does not know, if any.
fn refuse(headers: &HeaderMap, id: Option<&str>) -> Option<Response> {
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if !authorised {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong bearer token",
        ));
    }
    let id = id?;
    if id.len() != 64 {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "malformed job id",
        ));
    }
    if [GOOD, PRICEY, TAMPERED, GARBAGE].contains(&id) {
        None
    } else {
        Some(error(StatusCode::NOT_FOUND, "not_found", "no such job"))
    }
}

pub fn job_status(id: &str, state: JobState) -> JobStatus {
    JobStatus {
        job_id: id.into(),
        name: "mock".into(),
        state,
        model: "cnn".into(),
        dataset: "fashion-mnist/builtin".into(),
        shards: 12,
        round: 2,
        rounds: 2,
        last_loss: Some(0.5),
        last_accuracy: Some(0.8),
        workers: 3,
        submitted_at_ms: 1,
        updated_at_ms: 2,
        eta_secs: None,
        error: (state == JobState::Failed).then(|| LIMIT_ERROR.to_string()),
    }
}

async fn submit(
    State(state): State<Shared>,
    headers: HeaderMap,
    Json(request): Json<JobRequest>,
) -> Response {
    if let Some(e) = refuse(&headers, None) {
        return e;
    }
    if request.market.alpha > 1.0 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "market.alpha: 2 is not in (0, 1]",
        );
    }
    state.lock().unwrap().submitted.push(request);
    (
        StatusCode::ACCEPTED,
        Json(JobAccepted {
            job_id: GOOD.into(),
            coordinator: "12D3KooWcoord".into(),
            shards: 12,
            dataset: "fashion-mnist/builtin".into(),
        }),
    )
        .into_response()
}

/// Pages of one job each (a node may answer fewer than `limit`), after
/// `id_prefix`; the cursor `N-cursor` starts at the N-th job (from 1).
async fn list(
    State(state): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = refuse(&headers, None) {
        return e;
    }
    state.lock().unwrap().list_queries.push(q.clone());
    let prefix = q.get("id_prefix").cloned().unwrap_or_default();
    let all: Vec<JobStatus> = [
        job_status(GOOD, JobState::Finished),
        job_status(PRICEY, JobState::Failed),
    ]
    .into_iter()
    .filter(|j| j.job_id.starts_with(&prefix))
    .collect();
    let start = match q.get("before").map(String::as_str) {
        None => 0,
        Some("2-cursor") => 1,
        Some(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "not a cursor"),
    };
    let jobs: Vec<JobStatus> = all.iter().skip(start).take(1).cloned().collect();
    let next = (all.len() > start + 1).then(|| format!("{}-cursor", start + 2));
    Json(JobList { jobs, next }).into_response()
}

async fn status(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(e) = refuse(&headers, Some(&id)) {
        return e;
    }
    if id == GARBAGE {
        return (StatusCode::OK, "{\"job_id\": 7").into_response();
    }
    let state = if id == PRICEY {
        JobState::Failed
    } else {
        JobState::Finished
    };
    Json(job_status(&id, state)).into_response()
}

/// GOOD's story, served at most two events per poll.
pub fn good_events() -> Vec<JobEvent> {
    let kinds = vec![
        JobEventKind::Submitted { shards: 12 },
        JobEventKind::Cleared {
            attempt: 1,
            winners: 3,
            assigned: 12,
            shortfall: 0,
        },
        JobEventKind::RoundCompleted {
            round: 1,
            train_loss: 1.2,
            test_accuracy: Some(0.6),
            updates_accepted: 3,
            bytes_up: 1000,
            bytes_down: 3000,
            duration_ms: 900,
            workers: vec![],
        },
        JobEventKind::RoundCompleted {
            round: 2,
            train_loss: 0.7,
            test_accuracy: Some(0.75),
            updates_accepted: 3,
            bytes_up: 1000,
            bytes_down: 3000,
            duration_ms: 800,
            workers: vec![],
        },
        JobEventKind::Finished {
            test_accuracy: 0.75,
            rounds: 2,
        },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| JobEvent {
            seq: i as u64 + 1,
            at_ms: 1000 + i as u64,
            kind,
        })
        .collect()
}

#[derive(Deserialize)]
struct EventsQuery {
    after: u64,
    wait_secs: u64,
}

async fn events(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = refuse(&headers, Some(&id)) {
        return e;
    }
    let polls = {
        let mut mock = state.lock().unwrap();
        mock.polls += 1;
        mock.poll_args.push((q.after, q.wait_secs));
        mock.polls
    };
    if id == GARBAGE {
        return (StatusCode::BAD_GATEWAY, "<html>proxy error</html>").into_response();
    }
    let all = if id == PRICEY {
        vec![
            JobEvent {
                seq: 1,
                at_ms: 1,
                kind: JobEventKind::Submitted { shards: 12 },
            },
            JobEvent {
                seq: 2,
                at_ms: 2,
                kind: JobEventKind::Failed {
                    reason: LIMIT_ERROR.into(),
                },
            },
        ]
    } else {
        if polls == 1 {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal",
                "node is starting",
            );
        }
        good_events()
    };
    let fresh: Vec<JobEvent> = all
        .iter()
        .filter(|e| e.seq > q.after)
        .take(2)
        .cloned()
        .collect();
    let next = fresh.last().map_or(q.after, |e| e.seq);
    let state = if next as usize >= all.len() {
        if id == PRICEY {
            JobState::Failed
        } else {
            JobState::Finished
        }
    } else if next >= 2 {
        JobState::Training
    } else {
        JobState::Bidding
    };
    Json(JobEvents {
        events: fresh,
        next,
        state,
    })
    .into_response()
}

pub fn allocation_view(id: &str) -> AllocationView {
    AllocationView {
        job_id: id.into(),
        attempt: 1,
        allocation_hash: "cd".repeat(32),
        shards: 12,
        shortfall: 0,
        alpha: 0.34,
        owner_cap: 4,
        nodes: vec![NodeShareView {
            node: "12D3KooWworker1".into(),
            owner: "aa".repeat(32),
            ask: 100,
            shards: 4,
        }],
        owners: vec![OwnerAllocationView {
            owner: "aa".repeat(32),
            label: "Univ A".into(),
            shards: 4,
            cap: 4,
            share: 1.0 / 3.0,
            cost: 400,
            payment: 600,
        }],
        hhi: 3333,
        gini: 0.0,
        nakamoto_50: 2,
        nakamoto_33: 1,
        max_owner_share: 1.0 / 3.0,
    }
}

async fn allocation(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(e) = refuse(&headers, Some(&id)) {
        return e;
    }
    if id == PRICEY {
        return error(StatusCode::CONFLICT, "conflict", "the job is still bidding");
    }
    Json(allocation_view(&id)).into_response()
}

async fn explain(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(e) = refuse(&headers, Some(&id)) {
        return e;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Job \"mock\": 12 shards, limit price 1000 per shard, alpha 34% (cap 4 shards per owner).\n",
    )
        .into_response()
}

pub fn training_report(id: &str) -> TrainingReport {
    let hash = if id == TAMPERED {
        "00".repeat(32)
    } else {
        blake3::hash(MODEL).to_hex().to_string()
    };
    TrainingReport {
        job_id: id.into(),
        state: JobState::Finished,
        rounds: vec![RoundReport {
            round: 1,
            train_loss: 0.7,
            test_accuracy: Some(0.75),
            participants: 3,
            bytes_up: 1000,
            bytes_down: 3000,
            duration_ms: 800,
        }],
        final_test_accuracy: Some(0.75),
        allocation: Some(allocation_view(id)),
        bytes_up: 1000,
        bytes_down: 3000,
        credits: vec![CreditView {
            owner: "aa".repeat(32),
            label: "Univ A".into(),
            amount: 600,
            audit_amount: 0,
            shards: 4,
        }],
        model_hash: Some(hash),
        compression: None,
    }
}

async fn report(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(e) = refuse(&headers, Some(&id)) {
        return e;
    }
    Json(training_report(&id)).into_response()
}

async fn result(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(e) = refuse(&headers, Some(&id)) {
        return e;
    }
    if id == PRICEY {
        return error(StatusCode::CONFLICT, "conflict", "the job has not finished");
    }
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Bytes::from_static(MODEL),
    )
        .into_response()
}

/// A server that promises `promised` bytes, sends `sent` and hangs up.
pub async fn truncating_server(promised: usize, sent: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {promised}\r\n\r\n"
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&vec![7u8; sent]).await;
            let _ = socket.shutdown().await;
        }
    });
    format!("http://{addr}")
}
