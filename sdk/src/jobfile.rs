//! `job.toml`: a [`JobRequest`] written in TOML, loaded and checked before
//! anything is sent. Every mistake gets its own error naming the field:
//! unknown fields (with their dotted path and line), values out of range,
//! an owner cap that cannot hold a single shard (alpha x shards < 1), a
//! dataset directory that is missing or incomplete, a model the zoo does
//! not have, zero sizes. The node checks the same rules again; these
//! checks only save a round trip and give the error a file position.
//!
//! A relative dataset directory is resolved against the job file's own
//! directory, because the node that reads it runs elsewhere.

use std::path::{Path, PathBuf};

use crate::jobs::{JobRequest, MarketChoice, ModelChoice, TrainingChoice};
use crate::{Result, SdkError};

mod dataset;

pub use dataset::{
    BUILTIN_TEST_SAMPLES, BUILTIN_TRAIN_SAMPLES, DatasetFacts, SYSTEM_DATASET_DIR, dataset_facts,
};

/// Largest job file read (the API refuses bodies over 64 KiB anyway).
pub const MAX_JOB_FILE_BYTES: u64 = 64 * 1024;
/// The protocol's limits (see `fairgrid_protocol::messages::JobSpec`).
pub const MAX_SHARDS: u64 = 25_000;
pub const MAX_ROUNDS: u32 = 100_000;
const PPM: u64 = 1_000_000;

/// The zoo's models, as `model.arch` names them.
pub const MODELS: [&str; 3] = ["cnn", "mlp", "logreg"];

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
    let base = path.parent().unwrap_or(Path::new("."));
    let mut request = parse(&text, path)?;
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

/// Checks a request the way the node will. `origin` names it in errors
/// (a file name, or "job request").
pub fn validate(request: &JobRequest, origin: &str, check: DataCheck) -> Result<JobPlan> {
    let bad = |field: &str, reason: String| SdkError::InvalidJob {
        origin: origin.to_string(),
        field: field.to_string(),
        reason,
    };
    let name = &request.name;
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(bad("name", "must be 1..=64 bytes of printable text".into()));
    }
    check_model(&request.model).map_err(|(f, r)| bad(f, r))?;
    check_training(&request.training).map_err(|(f, r)| bad(f, r))?;
    check_market(&request.market).map_err(|(f, r)| bad(f, r))?;

    let data = &request.data;
    if data.shard_size == 0 {
        return Err(bad(
            "data.shard_size",
            "is zero; a shard needs samples".into(),
        ));
    }
    if data.max_train_samples == Some(0) {
        return Err(bad(
            "data.max_train_samples",
            "is zero; leave it out to use every sample".into(),
        ));
    }
    let facts = dataset_facts(&data.source, check).map_err(|(f, r)| bad(f, r))?;
    let alpha_ppm = (request.market.alpha * PPM as f64).round() as u64;
    let mut plan = JobPlan {
        train_samples: None,
        shards: None,
        owner_cap: None,
        alpha_ppm,
    };
    let Some(available) = facts.and_then(|f| f.train_samples) else {
        return Ok(plan);
    };
    let used = data
        .max_train_samples
        .map_or(available, |m| u64::from(m).min(available));
    let shards = used.div_ceil(u64::from(data.shard_size));
    if shards > MAX_SHARDS {
        return Err(bad(
            "data.shard_size",
            format!(
                "{used} samples in shards of {} make {shards} shards; at most {MAX_SHARDS}",
                data.shard_size
            ),
        ));
    }
    let cap = alpha_ppm * shards / PPM;
    if cap == 0 {
        let least = PPM.div_ceil(shards) as f64 / PPM as f64;
        return Err(bad(
            "market.alpha",
            format!(
                "impossible cap: alpha {} of {shards} shards lets an owner take {cap} shards \
                 (alpha x shards < 1); raise alpha to at least {least:.6} or cut more shards",
                request.market.alpha
            ),
        ));
    }
    plan.train_samples = Some(used);
    plan.shards = Some(shards);
    plan.owner_cap = Some(cap);
    Ok(plan)
}

type Check = std::result::Result<(), (&'static str, String)>;

fn check_model(model: &ModelChoice) -> Check {
    if !MODELS.contains(&model.arch.as_str()) {
        return Err((
            "model.arch",
            format!(
                "unknown model {:?}; the zoo has {}",
                model.arch.chars().take(40).collect::<String>(),
                MODELS.join(", ")
            ),
        ));
    }
    match (&model.hidden, model.arch.as_str()) {
        (Some(_), arch) if arch != "mlp" => Err((
            "model.hidden",
            format!("only an mlp has hidden widths, not a {arch}"),
        )),
        (Some(hidden), _)
            if hidden.is_empty()
                || hidden.len() > 8
                || hidden.iter().any(|&w| w == 0 || w > 8192) =>
        {
            Err((
                "model.hidden",
                "an mlp needs 1..=8 hidden layers of 1..=8192 units".into(),
            ))
        }
        _ => Ok(()),
    }
}

fn check_training(t: &TrainingChoice) -> Check {
    let range = |field, value: u64, lo: u64, hi: u64| -> Check {
        if (lo..=hi).contains(&value) {
            Ok(())
        } else if value == 0 {
            Err((field, format!("is zero; it must be in {lo}..={hi}")))
        } else {
            Err((field, format!("{value} is not in {lo}..={hi}")))
        }
    };
    range("training.rounds", t.rounds.into(), 1, MAX_ROUNDS.into())?;
    range("training.local_steps", t.local_steps.into(), 1, 10_000)?;
    range("training.batch_size", t.batch_size.into(), 1, 65_536)?;
    if !matches!(t.optimizer.as_str(), "sgd" | "nesterov" | "adam") {
        return Err((
            "training.optimizer",
            format!("{:?} is not sgd, nesterov or adam", t.optimizer),
        ));
    }
    for (field, value) in [("training.lr", t.lr), ("training.outer_lr", t.outer_lr)] {
        if !value.is_finite() || value <= 0.0 || value > 100.0 {
            return Err((field, format!("{value} is not a step size in (0, 100]")));
        }
    }
    if !t.momentum.is_finite() || !(0.0..1.0).contains(&t.momentum) {
        return Err((
            "training.momentum",
            format!("{} is not in [0, 1)", t.momentum),
        ));
    }
    if !matches!(t.schedule.as_str(), "constant" | "cosine") {
        return Err((
            "training.schedule",
            format!("{:?} is not constant or cosine", t.schedule),
        ));
    }
    match t.compression.as_str() {
        "int8" => range("training.int8_block", t.int8_block.into(), 1, 1 << 20),
        "topk" => range("training.topk_permille", t.topk_permille.into(), 1, 1000),
        "fp32" => Ok(()),
        other => Err((
            "training.compression",
            format!("{other:?} is not int8, fp32 or topk"),
        )),
    }
}

fn check_market(m: &MarketChoice) -> Check {
    if !m.alpha.is_finite() || m.alpha <= 0.0 || m.alpha > 1.0 {
        return Err((
            "market.alpha",
            format!(
                "{} is not in (0, 1]: it is the share of the job one owner may take",
                m.alpha
            ),
        ));
    }
    if (m.alpha * PPM as f64).round() < 1.0 {
        return Err((
            "market.alpha",
            format!("{} is below one part per million", m.alpha),
        ));
    }
    let d = &m.demand_per_shard;
    if d.cpu_milli == 0 && d.mem_mib == 0 && d.gpu_milli == 0 && d.gpu_mem_mib == 0 {
        return Err((
            "market.demand_per_shard",
            "is zero in every resource; a shard must need something".into(),
        ));
    }
    if m.bid_window_secs == 0 || m.bid_window_secs > 600 {
        return Err((
            "market.bid_window_secs",
            format!("{} is not in 1..=600", m.bid_window_secs),
        ));
    }
    if m.round_timeout_secs == 0 || m.round_timeout_secs > 86_400 {
        return Err((
            "market.round_timeout_secs",
            format!("{} is not in 1..=86400", m.round_timeout_secs),
        ));
    }
    if m.deadline_secs <= m.bid_window_secs {
        return Err((
            "market.deadline_secs",
            format!(
                "{} leaves no time after the {} s bid window",
                m.deadline_secs, m.bid_window_secs
            ),
        ));
    }
    if !matches!(m.on_shortfall.as_str(), "run_with_fewer" | "wait") {
        return Err((
            "market.on_shortfall",
            format!("{:?} is not run_with_fewer or wait", m.on_shortfall),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
