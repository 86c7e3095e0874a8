//! The dashboard: a small single-page app served at `/`, its assets built
//! into the binary (nodes may be offline, so no CDN), and the one-time
//! login links of `fairgrid ui`. The assets hold no data and are served
//! without the token; the data comes from the authenticated API, which the
//! page calls with the token in an `Authorization` header, never in a URL.
//! Every response carries a strict Content-Security-Policy (scripts and
//! styles from this origin only, no inline code, no framing).

pub mod links;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{Extension, Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fairgrid_sdk::{UiLink, UiRedeem, UiToken};

use super::error::{ApiError, ApiJson};
use crate::state::Shared;
use links::{LINK_TTL, OneTimeLinks};

/// The path that trades a one-time code for the token: the one API path
/// that takes no token (failures count against the client like a wrong
/// token).
pub const REDEEM_PATH: &str = "/v1/ui/redeem";

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// (name under /ui/, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("../../../ui/app.js")),
    ("api.js", JS, include_str!("../../../ui/api.js")),
    ("charts.js", JS, include_str!("../../../ui/charts.js")),
    ("dom.js", JS, include_str!("../../../ui/dom.js")),
    ("node.js", JS, include_str!("../../../ui/node.js")),
    ("network.js", JS, include_str!("../../../ui/network.js")),
    ("jobs.js", JS, include_str!("../../../ui/jobs.js")),
    ("ledger.js", JS, include_str!("../../../ui/ledger.js")),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../../ui/app.css"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("../../../ui/index.html");

pub type Links = Arc<Mutex<OneTimeLinks>>;

/// Routes without authentication: the page and its assets (any state:
/// the load benchmark serves them beside a mock API).
pub fn public_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{file}", get(asset))
}

/// Routes behind the API's authentication (the redeem path is let through
/// by it without a token).
pub fn api_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/ui/links", post(mint))
        .route(REDEEM_PATH, post(redeem))
}

async fn index(headers: HeaderMap) -> Response {
    cached("text/html; charset=utf-8", INDEX, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => cached(kind, body, &headers),
        None => ApiError::not_found(format!("no dashboard asset {file:?}")).into_response(),
    }
}

/// Revalidated on every load (`no-cache`) with an ETag of the body, so a
/// new binary's assets are never mixed with an old one's.
fn cached(kind: &str, body: &'static str, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", &blake3::hash(body.as_bytes()).to_hex()[..32]);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, kind.to_string())], body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}

async fn mint(Extension(links): Extension<Links>) -> Result<Json<UiLink>, ApiError> {
    let code = links
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .mint(Instant::now())
        .map_err(|e| ApiError::internal(format!("random link code: {e}")))?;
    Ok(Json(UiLink {
        path: format!("/#code={code}"),
        code,
        expires_in_secs: LINK_TTL.as_secs(),
    }))
}

async fn redeem(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    Extension(links): Extension<Links>,
    ApiJson(body): ApiJson<UiRedeem>,
) -> Result<Json<UiToken>, ApiError> {
    let taken = links
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .redeem(&body.code, Instant::now());
    if !taken {
        return Err(ApiError::unauthorized(
            "unknown, used or expired link code: run `fairgrid ui` for a new link",
        ));
    }
    Ok(Json(UiToken {
        token: shared.api_token.clone(),
    }))
}

/// Adds the security headers to every response, API included.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}
