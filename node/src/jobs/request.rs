//! A developer's `JobRequest` (the API's JSON) checked field by field into
//! a [`JobPlan`]; every error names the field at fault. Checks that need
//! the data (the number of shards) happen in [`JobPlan::spec`], once the
//! dataset is loaded.

use std::path::PathBuf;

use fairgrid_protocol::market::PPM;
use fairgrid_protocol::messages::{
    Compression, DatasetDescriptor, HyperParams, InputShape, JobSpec, LrSchedule, ModelArch,
    ModelSpec, OptimizerKind, ShortfallPolicy,
};
use fairgrid_protocol::{NodeId, PublicKey, ResourceVec};
use fairgrid_sdk::jobs::JobRequest;

use crate::net::wire::MAX_PARAM_BYTES;

/// Where the coordinator reads the training data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DataSource {
    Builtin,
    System,
    Dir(PathBuf),
}

impl DataSource {
    pub fn label(&self) -> String {
        match self {
            DataSource::Builtin => "fashion-mnist/builtin".into(),
            DataSource::System => "fashion-mnist/system".into(),
            DataSource::Dir(dir) => format!("fashion-mnist/{}", dir.display()),
        }
    }
}

/// A checked request, ready for the data to be loaded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobPlan {
    pub name: String,
    pub source: DataSource,
    pub shard_size: u32,
    pub max_train_samples: Option<u32>,
    pub arch: ModelArch,
    pub hyper: HyperParams,
    pub demand: ResourceVec,
    pub limit_price: u64,
    pub alpha_ppm: u32,
    pub bid_window_ms: u64,
    pub round_timeout_ms: u64,
    pub deadline_ms: u64,
    pub on_shortfall: ShortfallPolicy,
}

/// Longest job name.
pub const MAX_NAME: usize = 128;
const MAX_WINDOW_SECS: u64 = 3600;
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
const MAX_DEADLINE_SECS: u64 = 30 * 24 * 3600;

fn field<T>(name: &str, reason: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("{name}: {reason}"))
}

/// Checks every field that can be checked without the data.
pub fn plan(request: &JobRequest) -> Result<JobPlan, String> {
    let name = request.name.trim();
    if name.is_empty() || name.len() > MAX_NAME {
        return field("name", format!("must be 1..={MAX_NAME} bytes"));
    }
    let arch = match (request.model.arch.as_str(), &request.model.hidden) {
        ("logreg", None) => ModelArch::LogReg,
        ("cnn", None) => ModelArch::Cnn,
        ("mlp", hidden) => {
            let hidden = hidden.clone().unwrap_or_else(|| vec![256, 128]);
            if hidden.is_empty() || hidden.len() > 8 || hidden.iter().any(|&w| w == 0 || w > 8192) {
                return field(
                    "model.hidden",
                    format!("{hidden:?}: need 1..=8 widths of 1..=8192"),
                );
            }
            ModelArch::Mlp { hidden }
        }
        ("logreg" | "cnn", Some(_)) => {
            return field("model.hidden", "only the mlp takes hidden widths");
        }
        (other, _) => {
            return field(
                "model.arch",
                format!("unknown model {other:?}; the zoo has \"cnn\", \"mlp\" and \"logreg\""),
            );
        }
    };
    let data = &request.data;
    let source = match data.source.as_str() {
        "builtin" => DataSource::Builtin,
        "system" => DataSource::System,
        "" => return field("data.source", "is empty"),
        dir => {
            let path = PathBuf::from(dir);
            if !path.is_dir() {
                return field(
                    "data.source",
                    format!("{dir:?} is not \"builtin\", \"system\" or a directory on this node"),
                );
            }
            DataSource::Dir(path)
        }
    };
    if data.shard_size == 0 || data.shard_size as usize > fairgrid_kernels::data::MAX_SHARD_SAMPLES
    {
        return field(
            "data.shard_size",
            format!(
                "{} is not in 1..={}",
                data.shard_size,
                fairgrid_kernels::data::MAX_SHARD_SAMPLES
            ),
        );
    }
    if data.max_train_samples == Some(0) {
        return field("data.max_train_samples", "is 0");
    }
    let t = &request.training;
    let optimizer = match t.optimizer.as_str() {
        "sgd" => OptimizerKind::Sgd,
        "nesterov" => OptimizerKind::Nesterov,
        "adam" => OptimizerKind::Adam,
        other => {
            return field(
                "training.optimizer",
                format!("unknown optimizer {other:?} (sgd, nesterov or adam)"),
            );
        }
    };
    let compression = match t.compression.as_str() {
        "int8" => Compression::Int8 {
            block: t.int8_block,
        },
        "fp32" => Compression::Fp32,
        "topk" => Compression::TopK {
            permille: t.topk_permille,
        },
        other => {
            return field(
                "training.compression",
                format!("unknown compression {other:?} (int8, fp32 or topk)"),
            );
        }
    };
    let schedule = match t.schedule.as_str() {
        "constant" => LrSchedule::Constant,
        "cosine" => LrSchedule::Cosine,
        other => {
            return field(
                "training.schedule",
                format!("unknown schedule {other:?} (constant or cosine)"),
            );
        }
    };
    let hyper = HyperParams {
        rounds: t.rounds,
        local_steps: t.local_steps,
        batch_size: t.batch_size,
        optimizer,
        lr: t.lr,
        momentum: t.momentum,
        outer_lr: t.outer_lr,
        compression,
        seed: t.seed,
        schedule,
    };
    let m = &request.market;
    if !(m.alpha > 0.0 && m.alpha <= 1.0) {
        return field("market.alpha", format!("{} is not in (0, 1]", m.alpha));
    }
    let alpha_ppm = (m.alpha * PPM as f64).round() as u32;
    if alpha_ppm == 0 {
        return field("market.alpha", format!("{} rounds to 0 ppm", m.alpha));
    }
    let d = &m.demand_per_shard;
    let demand = ResourceVec {
        cpu_milli: d.cpu_milli,
        mem_mib: d.mem_mib,
        gpu_milli: d.gpu_milli,
        gpu_mem_mib: d.gpu_mem_mib,
    };
    if demand.is_zero() {
        return field("market.demand_per_shard", "is all zero");
    }
    if m.bid_window_secs == 0 || m.bid_window_secs > MAX_WINDOW_SECS {
        return field(
            "market.bid_window_secs",
            format!("{} is not in 1..={MAX_WINDOW_SECS}", m.bid_window_secs),
        );
    }
    if m.round_timeout_secs == 0 || m.round_timeout_secs > MAX_TIMEOUT_SECS {
        return field(
            "market.round_timeout_secs",
            format!("{} is not in 1..={MAX_TIMEOUT_SECS}", m.round_timeout_secs),
        );
    }
    if m.deadline_secs <= m.bid_window_secs || m.deadline_secs > MAX_DEADLINE_SECS {
        return field(
            "market.deadline_secs",
            format!(
                "{} must exceed the bid window and be at most {MAX_DEADLINE_SECS}",
                m.deadline_secs
            ),
        );
    }
    let on_shortfall = match m.on_shortfall.as_str() {
        "run_with_fewer" => ShortfallPolicy::RunWithFewer,
        "wait" => ShortfallPolicy::Wait,
        other => {
            return field(
                "market.on_shortfall",
                format!("{other:?} is not \"run_with_fewer\" or \"wait\""),
            );
        }
    };
    let plan = JobPlan {
        name: name.to_string(),
        source,
        shard_size: data.shard_size,
        max_train_samples: data.max_train_samples,
        arch,
        hyper,
        demand,
        limit_price: m.limit_price,
        alpha_ppm,
        bid_window_ms: m.bid_window_secs * 1000,
        round_timeout_ms: m.round_timeout_secs * 1000,
        deadline_ms: m.deadline_secs * 1000,
        on_shortfall,
    };
    // Everything the spec's own validation checks that does not depend on
    // the data, reported with the request's field names.
    plan.check_without_data().map(|_| plan.clone())
}

/// What the loaded data contributes to the spec.
pub struct DataFacts<'a> {
    pub dataset_name: String,
    pub shards: &'a [fairgrid_protocol::messages::ShardInfo],
    pub test_hash: fairgrid_protocol::Hash32,
    pub test_samples: u32,
    pub input: InputShape,
    pub classes: u32,
}

impl JobPlan {
    fn model(&self, input: InputShape, classes: u32) -> ModelSpec {
        ModelSpec {
            arch: self.arch.clone(),
            input,
            classes,
        }
    }

    /// The spec, given the data; checks the cap, the price bound and the
    /// model size, which need the shard count and the input shape.
    pub fn spec(
        &self,
        submitter: NodeId,
        nonce: u64,
        now: u64,
        data: &DataFacts<'_>,
    ) -> Result<JobSpec, String> {
        let m = data.shards.len() as u64;
        if m == 0 {
            return field("data", "the dataset has no training samples");
        }
        let cap = self.alpha_ppm as u64 * m / PPM as u64;
        if cap == 0 {
            return field(
                "market.alpha",
                format!(
                    "an owner may take floor({} x {m} shards) = 0 shards: no owner could take any",
                    self.alpha_ppm as f64 / PPM as f64
                ),
            );
        }
        if self.limit_price.checked_mul(m).is_none() {
            return field(
                "market.limit_price",
                format!("{} x {m} shards overflows", self.limit_price),
            );
        }
        let model = self.model(data.input, data.classes);
        let kernels_spec = super::model::kernels_spec(&model);
        kernels_spec
            .validate()
            .or_else(|e| field("model", e.to_string()))?;
        let bytes = kernels_spec.param_count().saturating_mul(4);
        if bytes > MAX_PARAM_BYTES as u128 {
            return field(
                "model",
                format!(
                    "{} has {} parameters; jobs are limited to {} MiB of fp32 parameters",
                    kernels_spec.arch,
                    kernels_spec.param_count(),
                    MAX_PARAM_BYTES >> 20
                ),
            );
        }
        let mut spec = JobSpec {
            submitter,
            nonce,
            model,
            dataset: DatasetDescriptor {
                name: data.dataset_name.clone(),
                shards: data.shards.to_vec(),
                test_hash: data.test_hash,
                test_samples: data.test_samples,
            },
            hyper: self.hyper.clone(),
            demand_per_shard: self.demand,
            limit_price: self.limit_price,
            alpha_ppm: self.alpha_ppm,
            bid_window_ms: self.bid_window_ms,
            round_timeout_ms: self.round_timeout_ms,
            deadline: now.saturating_add(self.deadline_ms),
            on_shortfall: self.on_shortfall,
            submitted_at: now,
        };
        spec.validate().or_else(|e| field(&request_field(&e), e))?;
        crate::net::wire::clip(&mut spec.dataset.name, 256);
        Ok(spec)
    }

    /// The spec's own checks on the fields that do not depend on the data
    /// (run on a stand-in dataset of one 28x28 shard).
    fn check_without_data(&self) -> Result<(), String> {
        let shard = [fairgrid_protocol::messages::ShardInfo {
            hash: fairgrid_protocol::Hash32::ZERO,
            samples: 1,
        }];
        let facts = DataFacts {
            dataset_name: String::new(),
            shards: &shard,
            test_hash: fairgrid_protocol::Hash32::ZERO,
            test_samples: 1,
            input: InputShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            classes: 10,
        };
        // With one shard, alpha always allows 0 shards unless it is 1; the
        // cap check runs again with the real shard count.
        let plan = JobPlan {
            alpha_ppm: PPM,
            ..self.clone()
        };
        plan.spec(NodeId(PublicKey([0; 32])), 0, 1, &facts)
            .map(|_| ())
    }
}

/// Maps a `JobSpec::validate` error to the request's field name.
fn request_field(e: &fairgrid_protocol::ProtocolError) -> String {
    let text = e.to_string();
    for (spec_field, request_field) in [
        ("hyper.rounds", "training.rounds"),
        ("hyper.local_steps", "training.local_steps"),
        ("hyper.batch_size", "training.batch_size"),
        ("hyper.outer_lr", "training.outer_lr"),
        ("hyper.lr", "training.lr"),
        ("hyper.momentum", "training.momentum"),
        ("hyper.compression", "training.compression"),
        ("model", "model"),
        ("alpha_ppm", "market.alpha"),
        ("dataset.shards", "data.shard_size"),
    ] {
        if text.contains(spec_field) {
            return request_field.into();
        }
    }
    "job".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_sdk::jobs::{DataChoice, MarketChoice, ModelChoice, TrainingChoice};

    fn request() -> JobRequest {
        JobRequest {
            name: "t".into(),
            model: ModelChoice {
                arch: "logreg".into(),
                hidden: None,
            },
            data: DataChoice {
                source: "builtin".into(),
                shard_size: 250,
                max_train_samples: None,
            },
            training: TrainingChoice::default(),
            market: MarketChoice::default(),
        }
    }

    fn err(f: impl FnOnce(&mut JobRequest)) -> String {
        let mut r = request();
        f(&mut r);
        plan(&r).unwrap_err()
    }

    #[test]
    fn defaults_plan() {
        let p = plan(&request()).unwrap();
        assert_eq!(p.alpha_ppm, 340_000);
        assert_eq!(p.hyper.compression, Compression::Int8 { block: 256 });
    }

    #[test]
    fn each_bad_field_is_named() {
        assert!(err(|r| r.model.arch = "gpt".into()).starts_with("model.arch: unknown model"));
        assert!(err(|r| r.model.hidden = Some(vec![8])).starts_with("model.hidden: only the mlp"));
        assert!(err(|r| r.market.alpha = 0.0).starts_with("market.alpha:"));
        assert!(err(|r| r.market.alpha = 1.5).starts_with("market.alpha:"));
        assert!(err(|r| r.market.alpha = f64::NAN).starts_with("market.alpha:"));
        assert!(err(|r| r.data.shard_size = 0).starts_with("data.shard_size:"));
        assert!(err(|r| r.data.source = "/definitely/not/here".into()).starts_with("data.source:"));
        assert!(err(|r| r.training.optimizer = "lion".into()).starts_with("training.optimizer:"));
        assert!(
            err(|r| r.training.compression = "zip".into()).starts_with("training.compression:")
        );
        assert!(err(|r| r.training.rounds = 0).starts_with("training.rounds:"));
        assert!(err(|r| r.training.lr = -1.0).starts_with("training.lr:"));
        assert!(err(|r| r.training.int8_block = 0).starts_with("training.compression:"));
        assert!(
            err(|r| r.market.on_shortfall = "panic".into()).starts_with("market.on_shortfall:")
        );
        assert!(
            err(|r| {
                r.market.demand_per_shard = fairgrid_sdk::jobs::ShardDemand {
                    cpu_milli: 0,
                    mem_mib: 0,
                    gpu_milli: 0,
                    gpu_mem_mib: 0,
                }
            })
            .starts_with("market.demand_per_shard:")
        );
        assert!(err(|r| r.market.bid_window_secs = 0).starts_with("market.bid_window_secs:"));
        assert!(err(|r| r.name = " ".into()).starts_with("name:"));
    }

    #[test]
    fn impossible_cap_needs_the_shard_count() {
        let mut r = request();
        r.market.alpha = 0.01;
        let p = plan(&r).unwrap();
        let shards = vec![
            fairgrid_protocol::messages::ShardInfo {
                hash: fairgrid_protocol::Hash32::ZERO,
                samples: 5,
            };
            40
        ];
        let facts = DataFacts {
            dataset_name: "d".into(),
            shards: &shards,
            test_hash: fairgrid_protocol::Hash32::ZERO,
            test_samples: 1,
            input: InputShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            classes: 10,
        };
        let e = p
            .spec(NodeId(PublicKey([1; 32])), 0, 10, &facts)
            .unwrap_err();
        assert!(e.starts_with("market.alpha: an owner may take"), "{e}");
        r.market.alpha = 0.05;
        let spec = plan(&r)
            .unwrap()
            .spec(NodeId(PublicKey([1; 32])), 0, 10, &facts)
            .unwrap();
        assert_eq!(spec.shard_count(), 40);
        assert_eq!(spec.deadline, 10 + 3_600_000);
    }
}
