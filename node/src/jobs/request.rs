//! A developer's `JobRequest` (the API's JSON) checked field by field into
//! a [`JobPlan`]; every error names the field at fault. Checks that need
//! the data (the number of shards) happen in [`JobPlan::spec`], once the
//! dataset is loaded.

use std::path::PathBuf;

use fairgrid_protocol::market::PPM;
use fairgrid_protocol::messages::{
    Arithmetic, DatasetDescriptor, HyperParams, InputShape, JobSpec, ModelArch, ModelSpec,
    ShortfallPolicy, ValueKind,
};
use fairgrid_protocol::request::{JobRequest, owner_cap};
use fairgrid_protocol::{NodeId, PublicKey, ResourceVec};

use crate::net::wire::MAX_PARAM_BYTES;
use fairgrid_kernels::model::{LayerSpec, Op};

/// Where the coordinator reads the training data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DataSource {
    Builtin,
    System,
    Dir(PathBuf),
}

impl DataSource {
    /// The data set's name in the job: `format` is the directory's, as
    /// its reader names it ("fashion-mnist", "cifar-10", "cifar-100",
    /// "npy").
    pub fn label(&self, format: &str) -> String {
        match self {
            DataSource::Builtin => "fashion-mnist/builtin".into(),
            DataSource::System => "fashion-mnist/system".into(),
            DataSource::Dir(dir) => format!("{format}/{}", dir.display()),
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
    pub relayed_workers: bool,
    pub exact_audits: bool,
}

fn field<T>(name: &str, reason: impl std::fmt::Display) -> Result<T, String> {
    Err(format!("{name}: {reason}"))
}

/// Checks the request with the protocol's rules, and where its data is
/// on this node.
pub fn plan(request: &JobRequest) -> Result<JobPlan, String> {
    let checked = request.check().map_err(|e| e.to_string())?;
    let source = match checked.source.as_str() {
        "builtin" => DataSource::Builtin,
        "system" => DataSource::System,
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
    let plan = JobPlan {
        name: checked.name,
        source,
        shard_size: checked.shard_size,
        max_train_samples: checked.max_train_samples,
        arch: checked.arch,
        hyper: checked.hyper,
        demand: checked.demand,
        limit_price: checked.limit_price,
        alpha_ppm: checked.alpha_ppm,
        bid_window_ms: checked.bid_window_ms,
        round_timeout_ms: checked.round_timeout_ms,
        deadline_ms: checked.deadline_ms,
        on_shortfall: checked.on_shortfall,
        relayed_workers: checked.relayed_workers,
        exact_audits: checked.exact_audits,
    };
    // This node replays the audited rounds that an auditor fails: under
    // the exact rule only if its own CPU is of the exact class.
    if plan.exact_audits && crate::jobs::device::cpu_arithmetic() != Arithmetic::X86Avx2Fma {
        return field(
            "market.exact_audits",
            "this node's CPU is not an x86-64 with AVX2 and FMA, so it cannot replay the job's rounds bit for bit",
        );
    }
    // Everything the spec's own validation checks that does not depend on
    // the data (the model's size), reported with the request's field names.
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
        owner_cap(self.alpha_ppm, m).map_err(|e| e.to_string())?;
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
        // Batch norm trains on a batch's statistics: one sample of
        // features has none (PyTorch refuses it too).
        let has_batch_norm = kernels_spec.layer_list().iter().any(|l| match l {
            LayerSpec::Op(op) => matches!(op, Op::BatchNorm),
            LayerSpec::Residual(ops) => ops.iter().any(|op| matches!(op, Op::BatchNorm)),
        });
        if has_batch_norm && self.hyper.batch_size < 2 {
            return field(
                "training.batch_size",
                "a model with batch_norm needs batches of at least 2 samples",
            );
        }
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
        // Each shard demands at least the memory its data takes, so that
        // the market never gives a worker more data than its offer holds.
        let largest = data
            .shards
            .iter()
            .map(|s| s.bytes(&data.input))
            .max()
            .unwrap_or(0);
        let mut demand = self.demand;
        demand.mem_mib = demand.mem_mib.max(largest.div_ceil(1 << 20));
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
            demand_per_shard: demand,
            limit_price: self.limit_price,
            alpha_ppm: self.alpha_ppm,
            bid_window_ms: self.bid_window_ms,
            round_timeout_ms: self.round_timeout_ms,
            deadline: now.saturating_add(self.deadline_ms),
            on_shortfall: self.on_shortfall,
            relayed_workers: self.relayed_workers,
            exact_audits: self.exact_audits,
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
                values: ValueKind::U8,
            },
            classes: 10,
        };
        // With one shard, alpha always allows 0 shards unless it is 1; the
        // cap check runs again with the real shard count. A declared model
        // is checked against the real input and classes only (a CIFAR-100
        // network does not fit the stand-in), so a zoo model stands in.
        let arch = match self.arch {
            ModelArch::Layers(_) => ModelArch::LogReg,
            ref zoo => zoo.clone(),
        };
        let plan = JobPlan {
            alpha_ppm: PPM,
            arch,
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
        ("hyper.outer_momentum", "training.outer_momentum"),
        ("hyper.eval_every", "training.eval_every"),
        ("hyper.lr", "training.lr"),
        ("hyper.momentum", "training.momentum"),
        ("hyper.compression", "training.compression"),
        ("model", "model"),
        ("alpha_ppm", "market.alpha"),
        ("dataset.shards", "data.shard_size"),
        ("exact_audits", "market.exact_audits"),
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
    use fairgrid_protocol::messages::Compression;
    use fairgrid_protocol::request::{
        ArchName, DataChoice, MarketChoice, ModelChoice, TrainingChoice,
    };

    fn request() -> JobRequest {
        JobRequest {
            name: "t".into(),
            model: ModelChoice {
                arch: ArchName::Logreg,
                hidden: None,
                layers: None,
            },
            data: DataChoice {
                source: "builtin".into(),
                shard_size: 250,
                max_train_samples: None,
            },
            training: TrainingChoice::default(),
            market: MarketChoice::default(),
            result: Default::default(),
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
    fn the_protocol_s_checks_name_the_field_and_the_node_checks_its_data_dir() {
        assert!(err(|r| r.market.alpha = 1.5).starts_with("market.alpha:"));
        assert!(err(|r| r.data.source = "/definitely/not/here".into()).starts_with("data.source:"));
        assert!(err(|r| r.name = "a\nb".into()).starts_with("name:"));
        // Too big for the wire: the model check needs no data either.
        let big = err(|r| {
            r.model.arch = ArchName::Mlp;
            r.model.hidden = Some(vec![8192; 8]);
        });
        assert!(big.starts_with("model:"), "{big}");
    }

    fn facts(
        shards: &[fairgrid_protocol::messages::ShardInfo],
        input: InputShape,
        classes: u32,
    ) -> DataFacts<'_> {
        DataFacts {
            dataset_name: "d".into(),
            shards,
            test_hash: fairgrid_protocol::Hash32::ZERO,
            test_samples: 1,
            input,
            classes,
        }
    }

    #[test]
    fn a_declared_model_is_checked_against_the_real_data_and_names_its_layer() {
        let text = include_str!("../../../docs/examples/declared.toml");
        let example: JobRequest = toml::from_str(text).unwrap();
        let shards = vec![
            fairgrid_protocol::messages::ShardInfo {
                hash: fairgrid_protocol::Hash32::ZERO,
                samples: 5,
            };
            8
        ];
        let fashion = InputShape {
            channels: 1,
            height: 28,
            width: 28,
            values: ValueKind::U8,
        };
        let node = NodeId(PublicKey([1; 32]));
        let spec = plan(&example)
            .unwrap()
            .spec(node, 0, 10, &facts(&shards, fashion, 10));
        assert!(spec.is_ok(), "{spec:?}");
        let mut single = example.clone();
        single.training.batch_size = 1;
        let e = plan(&single)
            .unwrap()
            .spec(node, 0, 10, &facts(&shards, fashion, 10))
            .unwrap_err();
        assert!(e.starts_with("training.batch_size:"), "{e}");
        // A CIFAR-100 network passes the checks that need no data, then
        // meets the data it was written for, or one it does not fit.
        let mut cifar100 = request();
        cifar100.model.arch = ArchName::Layers;
        cifar100.model.layers = Some(vec![
            fairgrid_protocol::request::LayerChoice::AvgPool2d {
                kernel: 32,
                stride: None,
            },
            fairgrid_protocol::request::LayerChoice::Flatten,
            fairgrid_protocol::request::LayerChoice::Linear { out_features: 100 },
        ]);
        let p = plan(&cifar100).unwrap();
        let cifar = InputShape {
            channels: 3,
            height: 32,
            width: 32,
            values: ValueKind::U8,
        };
        let fits = p.spec(node, 0, 10, &facts(&shards, cifar, 100));
        assert!(fits.is_ok(), "{fits:?}");
        let e = p
            .spec(node, 0, 10, &facts(&shards, fashion, 10))
            .unwrap_err();
        assert!(e.starts_with("model:") && e.contains("layers[0]"), "{e}");
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
                values: ValueKind::U8,
            },
            classes: 10,
        };
        let e = p
            .spec(NodeId(PublicKey([1; 32])), 0, 10, &facts)
            .unwrap_err();
        assert!(e.starts_with("market.alpha: impossible cap"), "{e}");
        r.market.alpha = 0.05;
        let spec = plan(&r)
            .unwrap()
            .spec(NodeId(PublicKey([1; 32])), 0, 10, &facts)
            .unwrap();
        assert_eq!(spec.shard_count(), 40);
        assert_eq!(spec.deadline, 10 + 3_600_000);
    }
}
