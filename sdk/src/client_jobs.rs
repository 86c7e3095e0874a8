//! The jobs half of [`Client`]: submit, list, status, events (long poll),
//! allocation, explain, report, and the model download.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::jobs::{
    AllocationView, JobAccepted, JobEvents, JobList, JobListQuery, JobRequest, JobStatus,
    MAX_JOBS_PER_PAGE, TrainingReport,
};
use crate::{Client, Result, SdkError};

/// The longest wait a node grants one long poll (`wait_secs`).
pub const MAX_EVENT_WAIT_SECS: u64 = 30;

/// Most bytes of a model file the SDK accepts (the largest zoo model is
/// far smaller).
pub const MAX_MODEL_BYTES: u64 = 4 << 30;

/// Job ids are the hex BLAKE3 id of the signed job spec. Checked before a
/// request is built, so no caller-supplied text ends up in a URL path.
pub fn check_job_id(id: &str) -> Result<()> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(SdkError::BadJobId(id.chars().take(80).collect()))
    }
}

/// A downloaded model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// BLAKE3 of the file, hex.
    pub blake3: String,
}

impl Client {
    /// `POST /v1/jobs`. The node checks the request again and answers 400
    /// with the offending field if it refuses it.
    pub async fn submit_job(&self, request: &JobRequest) -> Result<JobAccepted> {
        self.post("/v1/jobs", request).await
    }

    /// `GET /v1/jobs?...`: one page of the jobs this node coordinates,
    /// newest first.
    pub async fn jobs_page(&self, query: &JobListQuery) -> Result<JobList> {
        // Checked here so that a hostile cursor cannot reshape the URL.
        let safe = |v: &Option<String>| {
            v.as_deref()
                .is_none_or(|v| v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        if !safe(&query.before) || !safe(&query.id_prefix) {
            return Err(SdkError::BadQuery(format!(
                "a cursor or prefix holds only letters, digits and '-': {query:?}"
            )));
        }
        self.get(&format!("/v1/jobs{}", query.to_query_string()))
            .await
    }

    /// Every job this node coordinates, newest first, page by page.
    pub async fn jobs(&self) -> Result<Vec<JobStatus>> {
        let mut query = JobListQuery {
            limit: Some(MAX_JOBS_PER_PAGE),
            ..JobListQuery::default()
        };
        let mut all = Vec::new();
        loop {
            let page = self.jobs_page(&query).await?;
            all.extend(page.jobs);
            match page.next {
                // A node that hands back the same cursor would loop forever.
                Some(next) if query.before.as_ref() != Some(&next) => query.before = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, job_id: &str) -> Result<JobStatus> {
        check_job_id(job_id)?;
        self.get(&format!("/v1/jobs/{job_id}")).await
    }

    /// `GET /v1/jobs/{id}/events?after=N&wait_secs=S`: events with seq >
    /// `after`, waiting up to `wait_secs` (at most 30) for the first one.
    pub async fn job_events(&self, job_id: &str, after: u64, wait_secs: u64) -> Result<JobEvents> {
        check_job_id(job_id)?;
        let wait = wait_secs.min(MAX_EVENT_WAIT_SECS);
        let path = format!("/v1/jobs/{job_id}/events?after={after}&wait_secs={wait}");
        // The node holds the request open for up to `wait` seconds.
        let request = self
            .http()
            .get(self.url(&path))
            .timeout(Duration::from_secs(wait + 30));
        self.json(&path, request).await
    }

    /// `GET /v1/jobs/{id}/allocation`; 409 while the job is still bidding.
    pub async fn job_allocation(&self, job_id: &str) -> Result<AllocationView> {
        check_job_id(job_id)?;
        self.get(&format!("/v1/jobs/{job_id}/allocation")).await
    }

    /// `GET /v1/jobs/{id}/explain`: the market's account of the allocation
    /// in force, as text.
    pub async fn job_explain(&self, job_id: &str) -> Result<String> {
        check_job_id(job_id)?;
        self.text(&format!("/v1/jobs/{job_id}/explain")).await
    }

    /// `GET /v1/jobs/{id}/report`.
    pub async fn job_report(&self, job_id: &str) -> Result<TrainingReport> {
        check_job_id(job_id)?;
        self.get(&format!("/v1/jobs/{job_id}/report")).await
    }

    /// `GET /v1/jobs/{id}/result`: streams the safetensors model into
    /// `dest`. The bytes go to a temporary file beside `dest` that is
    /// renamed over it only once complete, so `dest` never holds half a
    /// model. 409 until the job has finished.
    pub async fn download_result(&self, job_id: &str, dest: &Path) -> Result<Downloaded> {
        check_job_id(job_id)?;
        let path = format!("/v1/jobs/{job_id}/result");
        let url = self.url(&path);
        // Generous: the body streams, and a model is megabytes.
        let request = self.http().get(&url).timeout(Duration::from_secs(600));
        let mut response = self.send(&path, request).await?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_MODEL_BYTES)
        {
            return Err(SdkError::Decode {
                url,
                reason: format!("the model is larger than {MAX_MODEL_BYTES} bytes"),
            });
        }
        let tmp = temp_path(dest);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SdkError::Io { path, source }
        };
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        let written = async {
            let mut hasher = blake3::Hasher::new();
            let mut bytes = 0u64;
            while let Some(chunk) = response.chunk().await.map_err(|e| SdkError::Unreachable {
                url: url.clone(),
                source: e,
            })? {
                bytes += chunk.len() as u64;
                if bytes > MAX_MODEL_BYTES {
                    return Err(SdkError::Decode {
                        url: url.clone(),
                        reason: format!("the model is larger than {MAX_MODEL_BYTES} bytes"),
                    });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io(&tmp))?;
            }
            file.sync_all().await.map_err(io(&tmp))?;
            Ok((bytes, hasher.finalize().to_hex().to_string()))
        }
        .await;
        drop(file);
        let (bytes, blake3) = match written {
            Ok(done) => done,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if bytes == 0 {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(SdkError::Decode {
                url,
                reason: "the model file is empty".into(),
            });
        }
        if let Err(e) = tokio::fs::rename(&tmp, dest).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io(dest)(e));
        }
        Ok(Downloaded {
            path: dest.to_path_buf(),
            bytes,
            blake3,
        })
    }

    /// [`Client::download_result`], then checks the file against the
    /// `model_hash` of the job's report; a mismatch removes the file.
    pub async fn download_result_verified(&self, job_id: &str, dest: &Path) -> Result<Downloaded> {
        let report = self.job_report(job_id).await?;
        let downloaded = self.download_result(job_id, dest).await?;
        if let Some(expected) = report.model_hash
            && !expected.eq_ignore_ascii_case(&downloaded.blake3)
        {
            let _ = tokio::fs::remove_file(dest).await;
            return Err(SdkError::ModelHashMismatch {
                job_id: job_id.to_string(),
                expected,
                actual: downloaded.blake3,
            });
        }
        Ok(downloaded)
    }
}

/// `dir/.name.part`, beside `dest` so that the final rename stays on one
/// file system.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    dest.with_file_name(format!(".{name}.part"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_64_hex_digits_and_nothing_else() {
        assert!(check_job_id(&"ab".repeat(32)).is_ok());
        assert!(check_job_id(&"AB".repeat(32)).is_ok());
        for bad in [
            "",
            "abc",
            &"a".repeat(63),
            &"a".repeat(65),
            &format!("{}/../status", "a".repeat(54)),
            &"g".repeat(64),
            &format!("{}?x", "a".repeat(62)),
        ] {
            assert!(
                matches!(check_job_id(bad), Err(SdkError::BadJobId(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn temp_file_sits_beside_the_destination() {
        assert_eq!(
            temp_path(Path::new("/x/y/model.safetensors")),
            Path::new("/x/y/.model.safetensors.part")
        );
        assert_eq!(temp_path(Path::new("m")), Path::new(".m.part"));
    }
}
