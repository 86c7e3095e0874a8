//! # fairgrid-sdk
//!
//! Client library for a fairgrid node's HTTP API: node status, peers, live
//! capacity adverts, the ledger and fairness reports (and, with the jobs
//! work, submitting and following training jobs). Any language can use the
//! same API with plain HTTP (see `docs/api.md`); this crate is the Rust way
//! in. It speaks plain HTTP to a local node: no TLS stack is linked.
//!
//! The response types in [`types`] are the API's wire format; the node
//! serialises exactly these.

pub mod jobs;
pub mod types;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

pub use types::*;

/// What can go wrong talking to a node.
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
}

pub type Result<T, E = SdkError> = std::result::Result<T, E>;

/// A client for one node's API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// `base` is like `http://127.0.0.1:7444`; `token` is the node's
    /// `api.token`.
    pub fn new(base: &str, token: &str) -> Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(SdkError::BadUrl(base));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
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

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(path, request).await
    }

    async fn post<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let request = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(path, request).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
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
        let bytes = response.bytes().await.map_err(|e| SdkError::Unreachable {
            url: url.clone(),
            source: e,
        })?;
        if status != StatusCode::OK && status != StatusCode::ACCEPTED {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => SdkError::Api {
                    status: status.as_u16(),
                    code: body.error.code,
                    message: body.error.message,
                },
                Err(_) => SdkError::Api {
                    status: status.as_u16(),
                    code: "http".into(),
                    message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| SdkError::Decode {
            url,
            reason: e.to_string(),
        })
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
        self.get(&format!("/v1/ledger/jobs/{job_id}")).await
    }

    pub async fn verify_ledger(&self) -> Result<VerifyReport> {
        self.post("/v1/ledger/verify", &serde_json::json!({})).await
    }

    /// Concentration metrics over the whole ledger, or one job.
    pub async fn fairness(&self, job_id: Option<&str>) -> Result<FairnessReport> {
        match job_id {
            Some(job) => self.get(&format!("/v1/fairness?job={job}")).await,
            None => self.get("/v1/fairness").await,
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("{}/metrics", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| SdkError::Unreachable {
                url: url.clone(),
                source: e,
            })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| SdkError::Unreachable {
            url: url.clone(),
            source: e,
        })?;
        if !status.is_success() {
            return Err(SdkError::Api {
                status: status.as_u16(),
                code: "http".into(),
                message: text,
            });
        }
        Ok(text)
    }
}
