//! The HTTP API (axum). Every route needs `Authorization: Bearer <token>`
//! (the data dir's `api.token`), except the dashboard's page and assets
//! and the trade of a one-time link code for the token ([`ui`]); errors are JSON `{"error": {code,
//! message}}` with the fitting status. Bodies are capped at 64 KiB.
//! Each client address may fail authentication [`FAILED_AUTH_PER_SEC`]
//! times a second (a burst of [`FAILED_AUTH_BURST`]), then gets 429 until
//! its allowance refills: guessing the token is slow, and a request with
//! the right token is always served, so a local attacker cannot lock the
//! node's own CLI out.
//!
//! To add routes (the jobs work), merge another `Router<Arc<Shared>>` in
//! [`router`]; it gets the same auth, limits and error format.

mod error;
mod fairness_routes;
mod jobs_routes;
mod ledger_routes;
mod routes;
pub mod server;
pub mod ui;
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
use crate::net::rate::RateLimiter;
use crate::state::Shared;

const BODY_LIMIT: usize = 64 * 1024;
/// Failed authentications per client address per second, and in a burst.
pub const FAILED_AUTH_PER_SEC: u32 = 5;
pub const FAILED_AUTH_BURST: u32 = 20;
/// Client addresses whose failures are tracked at once.
const FAILED_AUTH_CLIENTS: usize = 4096;

/// What authentication needs: the node's state and each client
/// address's allowance of failures.
struct Auth {
    shared: Arc<Shared>,
    failures: std::sync::Mutex<RateLimiter<std::net::IpAddr>>,
}

/// The full API router, authentication included.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(routes::routes())
        .merge(ledger_routes::routes())
        .merge(fairness_routes::routes())
        .merge(jobs_routes::routes())
        .merge(ui::api_routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(
            Arc::new(Auth {
                shared: Arc::clone(&shared),
                failures: std::sync::Mutex::new(RateLimiter::with_max_senders(
                    FAILED_AUTH_PER_SEC,
                    FAILED_AUTH_BURST,
                    FAILED_AUTH_CLIENTS,
                )),
            }),
            authenticate,
        ))
        .layer(axum::Extension(ui::Links::default()))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // After the authentication layer: the page and its assets hold no
        // data and are served without a token.
        .merge(ui::public_routes())
        .layer(middleware::from_fn(ui::security_headers))
        .with_state(shared)
}

/// Checks the bearer token (in constant time), limits each client's
/// failures, and counts the request.
async fn authenticate(
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let shared = &auth.shared;
    Metrics::inc(&shared.metrics.api_requests);
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let client = request
        .extensions()
        .get::<server::ClientAddr>()
        .map(|c| c.0.ip());
    let allowed = |auth: &Auth| {
        client.is_none_or(|ip| {
            auth.failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .allow(ip, std::time::Instant::now())
        })
    };
    // Trading a one-time code for the token takes no token; every attempt
    // is charged like a failure, so codes cannot be guessed quickly.
    let redeeming = request.uri().path() == ui::REDEEM_PATH;
    let failure = match presented {
        _ if redeeming => "",
        None => "missing bearer token",
        Some(token) if !constant_time_eq(token.as_bytes(), shared.api_token.as_bytes()) => {
            "wrong bearer token"
        }
        Some(_) => "",
    };
    let response = if redeeming && !allowed(&auth) {
        too_many_failures()
    } else if failure.is_empty() {
        next.run(request).await
    } else if allowed(&auth) {
        ApiError::unauthorized(failure).into_response()
    } else {
        too_many_failures()
    };
    if !response.status().is_success() {
        Metrics::inc(&shared.metrics.api_errors);
    }
    response
}

fn too_many_failures() -> Response {
    let mut response = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        format!(
            "too many failed authentications from this address (at most {FAILED_AUTH_PER_SEC} a second); wait and use the token in the data dir's api.token"
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
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
