//! `job.toml`: a [`JobRequest`] written in TOML, loaded and checked before
//! anything is sent. Every mistake gets its own error naming the field:
//! unknown fields and names (with their dotted path and line), values out
//! of range, an owner cap that cannot hold a single shard (alpha x shards
//! < 1), a dataset directory that is missing or incomplete, zero sizes.
//! The rules are the protocol's ([`JobRequest::check`]); the node checks
//! them again; checking here saves a round trip and gives the error a
//! file position.
//!
//! A relative dataset directory is resolved against the job file's own
//! directory, because the node that reads it runs elsewhere.

use std::path::{Path, PathBuf};

use fairgrid_protocol::request::{FieldError, owner_cap};

use crate::jobs::JobRequest;
use crate::{Result, SdkError};

mod dataset;

pub use dataset::{
    BUILTIN_TEST_SAMPLES, BUILTIN_TRAIN_SAMPLES, DatasetFacts, SYSTEM_DATASET_DIR, dataset_facts,
};

/// Largest job file read (the API refuses bodies over 64 KiB anyway).
pub const MAX_JOB_FILE_BYTES: u64 = 64 * 1024;

/// Whether [`validate`] may look at the local file system for the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCheck {
    /// The node runs on this machine: check the directory and count its
    /// samples.
    Local,
    /// The node runs elsewhere: only the form of `data.source` is checked.
    Skip,
}

/// What a valid request amounts to, as far as the client can tell.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// Training samples used (None when the dataset was not inspected).
    pub train_samples: Option<u64>,
    /// Number of shards the node will cut.
    pub shards: Option<u64>,
    /// Shards one owner may take: floor(alpha x shards).
    pub owner_cap: Option<u64>,
    /// alpha in parts per million, as the job spec carries it.
    pub alpha_ppm: u64,
}

/// Reads, parses and checks a job file.
pub fn load(path: &Path, check: DataCheck) -> Result<(JobRequest, JobPlan)> {
    let io = |source| SdkError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(SdkError::JobFileSyntax {
            path: path.to_path_buf(),
            message: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_JOB_FILE_BYTES {
        return Err(SdkError::JobFileSyntax {
            path: path.to_path_buf(),
            message: format!(
                "{} bytes; a job file has at most {MAX_JOB_FILE_BYTES}",
                meta.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|e| SdkError::JobFileSyntax {
        path: path.to_path_buf(),
        message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
    })?;
    // Editors on some systems start UTF-8 files with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut request = parse(text, path)?;
    resolve_data_dir(&mut request, base);
    let plan = validate(&request, &path.display().to_string(), check)?;
    Ok((request, plan))
}

/// Parses TOML text into a request (no semantic checks). `path` only
/// names the origin in errors.
pub fn parse(text: &str, path: &Path) -> Result<JobRequest> {
    let syntax = |message: String| SdkError::JobFileSyntax {
        path: path.to_path_buf(),
        message,
    };
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| syntax(describe_toml_error(&e, text)))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field_path = e.path().to_string();
        let inner = e.into_inner();
        let location = inner
            .span()
            .map(|s| format!(" (line {})", line_col(text, s.start).0))
            .unwrap_or_default();
        if let Some((field, expected)) = unknown_field(inner.message()) {
            let parent = field_path.trim_end_matches(&format!(".{field}"));
            let full = match parent {
                "" | "." => field,
                parent if parent == field => field,
                parent => format!("{parent}.{field}"),
            };
            return SdkError::UnknownJobField {
                path: path.to_path_buf(),
                field: full,
                location,
                expected,
            };
        }
        let at = if field_path == "." {
            String::new()
        } else {
            format!("{field_path}: ")
        };
        syntax(format!("{at}{}{location}", inner.message().trim()))
    })
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`".
fn unknown_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .trim_start_matches(',')
        .trim()
        .trim_start_matches("expected one of")
        .trim_start_matches("expected")
        .trim()
        .replace('`', "");
    Some((field.to_string(), expected))
}

fn describe_toml_error(error: &toml::de::Error, text: &str) -> String {
    match error.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!(
                "line {line}, column {col}: {}",
                error.message().trim().replace('\n', "; ")
            )
        }
        None => error.message().trim().to_string(),
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

/// Makes a relative dataset directory absolute against `base`.
pub fn resolve_data_dir(request: &mut JobRequest, base: &Path) {
    let source = request.data.source.as_str();
    if matches!(source, "builtin" | "system") || source.is_empty() {
        return;
    }
    let dir = Path::new(source);
    if dir.is_relative() {
        let joined: PathBuf = base.join(dir);
        let absolute = std::path::absolute(&joined).unwrap_or(joined);
        request.data.source = absolute.display().to_string();
    }
}

/// Checks a request with the protocol's rules (the node applies the same
/// ones), and, when the dataset is local, the shard count and the owner
/// cap. `origin` names it in errors (a file name, or "job request").
pub fn validate(request: &JobRequest, origin: &str, check: DataCheck) -> Result<JobPlan> {
    let bad = |e: FieldError| SdkError::InvalidJob {
        origin: origin.to_string(),
        field: e.field.to_string(),
        reason: e.reason,
    };
    let checked = request.check().map_err(bad)?;
    let facts = dataset_facts(&request.data.source, check).map_err(|(field, reason)| {
        SdkError::InvalidJob {
            origin: origin.to_string(),
            field: field.to_string(),
            reason,
        }
    })?;
    let mut plan = JobPlan {
        train_samples: None,
        shards: None,
        owner_cap: None,
        alpha_ppm: u64::from(checked.alpha_ppm),
    };
    let Some(available) = facts.and_then(|f| f.train_samples) else {
        return Ok(plan);
    };
    let shards = checked.shards(available).map_err(bad)?;
    let cap = owner_cap(checked.alpha_ppm, shards).map_err(bad)?;
    plan.train_samples = Some(
        checked
            .max_train_samples
            .map_or(available, |m| u64::from(m).min(available)),
    );
    plan.shards = Some(shards);
    plan.owner_cap = Some(cap);
    Ok(plan)
}

#[cfg(test)]
mod tests;
