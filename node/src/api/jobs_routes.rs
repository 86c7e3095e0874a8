//! Jobs routes: submit, list, status, events (long poll), allocation,
//! explanation, report and the trained model. The bodies are the SDK's
//! `jobs` types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fairgrid_protocol::Hash32;
use fairgrid_sdk::jobs::{
    AllocationView, JobAccepted, JobEvents, JobList, JobRequest, JobStatus, TrainingReport,
};

use super::error::{ApiError, ApiJson};
use crate::jobs::coordinator::{CoordJob, submit};
use crate::jobs::listing::ListQuery;
use crate::jobs::{JobsError, views};
use crate::state::Shared;

/// Longest a long poll waits.
const MAX_WAIT_SECS: u64 = 30;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/jobs", get(list).post(create))
        .route("/v1/jobs/{id}", get(status))
        .route("/v1/jobs/{id}/events", get(events))
        .route("/v1/jobs/{id}/allocation", get(allocation))
        .route("/v1/jobs/{id}/explain", get(explain))
        .route("/v1/jobs/{id}/report", get(report))
        .route("/v1/jobs/{id}/result", get(result))
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}

async fn job(shared: &Shared, text: &str) -> Result<Arc<CoordJob>, ApiError> {
    let id = Hash32::from_hex(text)
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a job id (64 hex digits)")))?;
    shared
        .jobs
        .jobs
        .find_coordinated(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("this node coordinates no job {text}")))
}

async fn create(
    State(shared): State<Arc<Shared>>,
    ApiJson(request): ApiJson<JobRequest>,
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    match submit::submit(&shared.jobs, request).await {
        Ok(accepted) => Ok((StatusCode::ACCEPTED, Json(accepted))),
        Err(JobsError::BadRequest(m)) => Err(ApiError::bad_request(m)),
        Err(JobsError::Busy(m)) => Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "busy", m)),
        Err(JobsError::Internal(m)) => Err(ApiError::internal(m)),
    }
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<JobList>, ApiError> {
    let query = ListQuery::parse(&params).map_err(ApiError::bad_request)?;
    Ok(Json(query.page(shared.jobs.jobs.statuses())))
}

async fn status(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    Ok(Json(views::status(job(&shared, &id).await?.as_ref())))
}

fn number(params: &HashMap<String, String>, name: &str) -> Result<u64, ApiError> {
    params.get(name).map_or(Ok(0), |v| {
        v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter {name}={v:?} is not a non-negative integer"
            ))
        })
    })
}

async fn events(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<JobEvents>, ApiError> {
    let job = job(&shared, &id).await?;
    let after = number(&params, "after")?;
    let wait = number(&params, "wait_secs")?;
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::bad_request(format!(
            "wait_secs must be at most {MAX_WAIT_SECS}"
        )));
    }
    let mut changes = job.events.subscribe();
    let mut found = job.events.after(after);
    if found.is_empty() && wait > 0 {
        let _ = tokio::time::timeout(Duration::from_secs(wait), async {
            while job.events.last_seq() <= after {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        found = job.events.after(after);
    }
    let next = found.last().map_or(after, |e| e.seq);
    let state = job.state().phase;
    Ok(Json(JobEvents {
        events: found,
        next,
        state,
    }))
}

async fn allocation(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<AllocationView>, ApiError> {
    let job = job(&shared, &id).await?;
    views::current_allocation(&job)
        .map(Json)
        .ok_or_else(|| conflict("no allocation yet: the job is still bidding"))
}

async fn explain(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = job(&shared, &id).await?;
    match views::explain(&shared.jobs, &job) {
        None => Err(conflict("no allocation yet: the job is still bidding")),
        Some(Err(e)) => Err(ApiError::internal(format!(
            "explaining the allocation: {e}"
        ))),
        Some(Ok(text)) => {
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
        }
    }
}

async fn report(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<TrainingReport>, ApiError> {
    Ok(Json(views::report(job(&shared, &id).await?.as_ref())))
}

async fn result(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = job(&shared, &id).await?;
    if !views::is_finished(&job) {
        return Err(conflict(format!(
            "the job is {:?}; its model is ready once it has finished",
            job.state().phase
        )));
    }
    let path = shared.jobs.jobs.store.result_path(&job.id);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::internal(format!("reading {}: {e}", path.display())))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
