//! The HTTP API (axum). Every route needs `Authorization: Bearer <token>`
//! (the data dir's `api.token`); errors are JSON `{"error": {code,
//! message}}` with the fitting status. Bodies are capped at 64 KiB.
//!
//! To add routes (the jobs work), merge another `Router<Arc<Shared>>` in
//! [`router`]; it gets the same auth, limits and error format.

mod error;
mod jobs_routes;
mod ledger_routes;
mod routes;
pub mod server;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

pub use error::{ApiError, ApiJson};
pub use views::entry as entry_view;

use crate::metrics::Metrics;
use crate::state::Shared;

const BODY_LIMIT: usize = 64 * 1024;

/// The full API router, authentication included.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(routes::routes())
        .merge(ledger_routes::routes())
        .merge(jobs_routes::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// Checks the bearer token (in constant time) and counts the request.
async fn authenticate(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    Metrics::inc(&shared.metrics.api_requests);
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let response = match presented {
        None => ApiError::unauthorized("missing bearer token").into_response(),
        Some(token) if !constant_time_eq(token.as_bytes(), shared.api_token.as_bytes()) => {
            ApiError::unauthorized("wrong bearer token").into_response()
        }
        Some(_) => next.run(request).await,
    };
    if !response.status().is_success() {
        Metrics::inc(&shared.metrics.api_errors);
    }
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the API on `listener` until `stop` fires.
pub async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    stop: watch::Receiver<bool>,
) {
    let limits = server::Limits {
        max_connections: shared.config.api.max_connections as usize,
        header_timeout: std::time::Duration::from_secs(shared.config.api.header_timeout_secs),
    };
    let app = router(shared);
    server::serve(listener, app, limits, stop).await;
}
