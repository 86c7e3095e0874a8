//! # fairgrid-sdk
//!
//! Client library for a fairgrid node's HTTP API: node status, peers, live
//! capacity adverts, the ledger, fairness reports, and training jobs
//! (submit, follow, fetch the model, explain the allocation). Any language
//! can use the same API with plain HTTP (see `docs/api.md` and
//! `docs/sdk.md`); this crate is the Rust way in. It speaks plain HTTP to
//! a local node: no TLS stack is linked.
//!
//! Main parts:
//! - [`Client`]: one node's API; the job methods live in `client_jobs.rs`
//!   ([`Client::submit_job`], [`Client::follow_job`], ...).
//! - [`jobfile`]: a `job.toml` loaded into a [`jobs::JobRequest`] and
//!   checked before anything is sent.
//! - [`follow`]: a job's events as a `futures` stream (long poll).
//! - [`render`]: plain-text tables of allocations and reports.
//!
//! The response types in [`types`] and [`jobs`] are the API's wire format;
//! the node serialises exactly these. This crate must never depend on the
//! node's internals.

mod client_jobs;
pub mod follow;
pub mod jobfile;
pub mod jobs;
pub mod render;
pub mod types;

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

pub use client_jobs::{Downloaded, check_job_id};
pub use follow::{FollowOptions, JobUpdate};
pub use types::*;

/// Most bytes a JSON or text answer may have; a node never sends more, so
/// anything larger is refused instead of filling memory.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// What can go wrong talking to a node or preparing a job.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("cannot reach the node at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("node answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected response from {url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("invalid base URL {0:?}")]
    BadUrl(String),
    #[error("{0:?} is not a job id (64 hex digits)")]
    BadJobId(String),
    #[error("invalid jobs query: {0}")]
    BadQuery(String),
    /// A job request that no node would accept, found before sending it.
    #[error("{origin}: {field}: {reason}")]
    InvalidJob {
        origin: String,
        field: String,
        reason: String,
    },
    /// A `job.toml` that is not TOML of the right shape.
    #[error("{}: {message}", path.display())]
    JobFileSyntax { path: PathBuf, message: String },
    /// A `job.toml` field the job format does not have (a typo must not
    /// silently fall back to a default).
    #[error("{}: unknown field `{field}`{location}; expected one of: {expected}", path.display())]
    UnknownJobField {
        path: PathBuf,
        /// Dotted path, e.g. `training.lr_max`.
        field: String,
        location: String,
        expected: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the model of job {job_id} does not match its report: BLAKE3 {actual}, expected {expected}"
    )]
    ModelHashMismatch {
        job_id: String,
        expected: String,
        actual: String,
    },
}

impl SdkError {
    /// The HTTP status of an API error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            SdkError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying the same request later may succeed (the node is
    /// restarting or briefly overloaded), as opposed to a request that is
    /// wrong and will stay wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            SdkError::Unreachable { .. } => true,
            SdkError::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

pub type Result<T, E = SdkError> = std::result::Result<T, E>;

/// A client for one node's API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// Timeout of an ordinary request; long polls add their wait to it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// `base` is like `http://127.0.0.1:7444`; `token` is the node's
    /// `api.token`.
    pub fn new(base: &str, token: &str) -> Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        let rest = base.strip_prefix("http://").unwrap_or("");
        if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
            return Err(SdkError::BadUrl(base));
        }
        // No overall client timeout: each request sets its own, so that a
        // long poll or a model download is not cut short.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SdkError::Unreachable {
                url: base.clone(),
                source: e,
            })?;
        Ok(Client {
            base,
            token: token.trim().to_string(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let request = self.http.get(self.url(path)).timeout(REQUEST_TIMEOUT);
        self.json(path, request).await
    }

    pub(crate) async fn post<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let request = self
            .http
            .post(self.url(path))
            .timeout(REQUEST_TIMEOUT)
            .json(body);
        self.json(path, request).await
    }

    /// Sends `request` and returns the response if its status is 200 or
    /// 202; any other status becomes [`SdkError::Api`] with the node's
    /// error code and message.
    pub(crate) async fn send(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let url = self.url(path);
        let response =
            request
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| SdkError::Unreachable {
                    url: url.clone(),
                    source: e,
                })?;
        let status = response.status();
        if status == StatusCode::OK || status == StatusCode::ACCEPTED {
            return Ok(response);
        }
        // An error body is small; read a bounded prefix of it.
        let bytes = read_limited(response, &url, 64 * 1024).await?;
        Err(api_error(status, &bytes))
    }

    /// A JSON answer decoded as `T`.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T> {
        let response = self.send(path, request).await?;
        let url = self.url(path);
        let bytes = read_limited(response, &url, MAX_RESPONSE_BYTES).await?;
        serde_json::from_slice(&bytes).map_err(|e| SdkError::Decode {
            url,
            reason: e.to_string(),
        })
    }

    /// A text answer (`text/plain`, e.g. `/metrics` or a job's explain).
    pub(crate) async fn text(&self, path: &str) -> Result<String> {
        let request = self.http.get(self.url(path)).timeout(REQUEST_TIMEOUT);
        let response = self.send(path, request).await?;
        let url = self.url(path);
        let bytes = read_limited(response, &url, MAX_RESPONSE_BYTES).await?;
        String::from_utf8(bytes).map_err(|e| SdkError::Decode {
            url,
            reason: format!("not UTF-8 text: {e}"),
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn status(&self) -> Result<Status> {
        self.get("/v1/status").await
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        self.get("/v1/peers").await
    }

    /// Asks the node to dial a multiaddr.
    pub async fn dial(&self, addr: &str) -> Result<DialAccepted> {
        self.post("/v1/peers", &DialRequest { addr: addr.into() })
            .await
    }

    pub async fn adverts(&self) -> Result<Vec<AdvertInfo>> {
        self.get("/v1/adverts").await
    }

    /// One page of the node's own chain: entries with seq > `after`.
    pub async fn ledger_page(&self, after: Option<u64>, limit: u32) -> Result<LedgerPage> {
        let mut path = format!("/v1/ledger?limit={limit}");
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        self.get(&path).await
    }

    /// Every entry the node holds for one job (its own and other nodes').
    pub async fn ledger_job(&self, job_id: &str) -> Result<Vec<LedgerEntryView>> {
        check_job_id(job_id)?;
        self.get(&format!("/v1/ledger/jobs/{job_id}")).await
    }

    pub async fn verify_ledger(&self) -> Result<VerifyReport> {
        self.post("/v1/ledger/verify", &serde_json::json!({})).await
    }

    /// Concentration metrics over the whole ledger, or one job.
    pub async fn fairness(&self, job_id: Option<&str>) -> Result<FairnessReport> {
        match job_id {
            Some(job) => {
                check_job_id(job)?;
                self.get(&format!("/v1/fairness?job={job}")).await
            }
            None => self.get("/v1/fairness").await,
        }
    }

    /// Each owner's share of the work over time, over the whole ledger or
    /// one job.
    pub async fn fairness_history(&self, job_id: Option<&str>) -> Result<FairnessHistory> {
        match job_id {
            Some(job) => {
                check_job_id(job)?;
                self.get(&format!("/v1/fairness/history?job={job}")).await
            }
            None => self.get("/v1/fairness/history").await,
        }
    }

    /// A one-time dashboard login link (`fairgrid ui`).
    pub async fn ui_link(&self) -> Result<UiLink> {
        self.post("/v1/ui/links", &serde_json::json!({})).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        self.text("/metrics").await
    }
}

/// The node's JSON error, or the start of whatever else it sent.
fn api_error(status: StatusCode, bytes: &[u8]) -> SdkError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => SdkError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => SdkError::Api {
            status: status.as_u16(),
            code: "http".into(),
            message: String::from_utf8_lossy(bytes).chars().take(200).collect(),
        },
    }
}

/// Reads a body chunk by chunk, refusing one longer than `limit` bytes.
async fn read_limited(mut response: reqwest::Response, url: &str, limit: usize) -> Result<Vec<u8>> {
    if let Some(len) = response.content_length()
        && len > limit as u64
    {
        return Err(too_large(url, limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| SdkError::Unreachable {
        url: url.to_string(),
        source: e,
    })? {
        if body.len() + chunk.len() > limit {
            return Err(too_large(url, limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large(url: &str, limit: usize) -> SdkError {
    SdkError::Decode {
        url: url.to_string(),
        reason: format!("the answer is larger than {limit} bytes"),
    }
}
