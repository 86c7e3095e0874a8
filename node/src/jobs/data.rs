//! The coordinator's copy of a job's data: the training set cut into
//! hashed shards (served to workers) and the test set it evaluates on.
//! Loading is deterministic (source, sample limit, shard size, seed), so a
//! restarted coordinator cuts the same shards again and checks their
//! hashes against the signed spec instead of storing them.

use std::sync::Arc;

use fairgrid_kernels::data::{PixelKind, SYSTEM_FASHION_MNIST_DIR, builtin};
use fairgrid_kernels::{Dataset, FashionMnist, Samples, Shard, TrainTest};
use fairgrid_protocol::Hash32;
use fairgrid_protocol::messages::{InputShape, JobSpec, ShardInfo, ValueKind};

use super::request::{DataFacts, DataSource, JobPlan};

/// A job's data, loaded.
pub struct JobData {
    pub dataset_name: String,
    /// Canonical bytes of each shard (what workers fetch).
    pub shard_bytes: Vec<Arc<Vec<u8>>>,
    pub shards: Vec<ShardInfo>,
    pub test: Dataset,
    pub test_hash: Hash32,
    pub input: InputShape,
    pub classes: u32,
}

impl JobData {
    pub fn facts(&self) -> DataFacts<'_> {
        DataFacts {
            dataset_name: self.dataset_name.clone(),
            shards: &self.shards,
            test_hash: self.test_hash,
            test_samples: self.test.len() as u32,
            input: self.input,
            classes: self.classes,
        }
    }

    /// Checks that these are the shards and test set `spec` names.
    pub fn matches(&self, spec: &JobSpec) -> Result<(), String> {
        if self.shards != spec.dataset.shards {
            return Err(format!(
                "the data now cuts into {} shards that differ from the {} the job was submitted with",
                self.shards.len(),
                spec.dataset.shards.len()
            ));
        }
        if self.test_hash != spec.dataset.test_hash {
            return Err("the test set differs from the one the job was submitted with".into());
        }
        Ok(())
    }
}

fn load_source(source: &DataSource) -> Result<TrainTest, String> {
    match source {
        DataSource::Builtin => builtin::fashion_mnist().map_err(|e| format!("data.source: {e}")),
        DataSource::System => FashionMnist::load_dir(SYSTEM_FASHION_MNIST_DIR.as_ref()).map_err(|e| {
            format!("data.source: reading {SYSTEM_FASHION_MNIST_DIR} (package dataset-fashion-mnist): {e}")
        }),
        DataSource::Dir(dir) => FashionMnist::load_dir(dir)
            .map_err(|e| format!("data.source: reading {}: {e}", dir.display())),
    }
}

/// Loads and cuts the data a plan names (blocking: run it off the async
/// threads). Shards are cut with the job's seed.
pub fn load(plan: &JobPlan) -> Result<JobData, String> {
    let data = load_source(&plan.source)?;
    // "cifar-10/train" -> "cifar-10"; "npy:DIR/train" -> "npy".
    let format: String = data
        .train
        .name()
        .split(['/', ':'])
        .next()
        .unwrap_or("data")
        .to_string();
    let train = match plan.max_train_samples {
        Some(n) => data.train.take(n as usize),
        None => data.train,
    };
    let shards = train
        .shards(plan.shard_size as usize, plan.hyper.seed)
        .map_err(|e| format!("data.shard_size: {e}"))?;
    let test_shard = Shard::new(data.test.clone()).map_err(|e| format!("data: test set: {e}"))?;
    let shape = train.shape();
    let infos = shards
        .iter()
        .map(|s| ShardInfo {
            hash: Hash32(s.hash()),
            samples: s.len() as u32,
        })
        .collect();
    Ok(JobData {
        dataset_name: plan.source.label(&format),
        shard_bytes: shards.iter().map(|s| Arc::new(s.to_bytes())).collect(),
        shards: infos,
        test_hash: Hash32(test_shard.hash()),
        test: data.test,
        input: InputShape {
            channels: shape.channels as u32,
            height: shape.height as u32,
            width: shape.width as u32,
            values: value_kind(train.kind()),
        },
        classes: train.classes() as u32,
    })
}

/// The wire's name for a data set's value kind.
pub fn value_kind(kind: PixelKind) -> ValueKind {
    match kind {
        PixelKind::U8 => ValueKind::U8,
        PixelKind::F32 => ValueKind::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_sdk::jobs::{ArchName, DataChoice, JobRequest, MarketChoice, ModelChoice};

    #[test]
    fn builtin_cuts_the_same_shards_twice() {
        let request = JobRequest {
            name: "t".into(),
            model: ModelChoice {
                arch: ArchName::Logreg,
                hidden: None,
                layers: None,
            },
            data: DataChoice {
                source: "builtin".into(),
                shard_size: 1000,
                max_train_samples: Some(2500),
            },
            training: Default::default(),
            market: MarketChoice::default(),
            result: Default::default(),
        };
        let plan = super::super::request::plan(&request).unwrap();
        let a = load(&plan).unwrap();
        let b = load(&plan).unwrap();
        assert_eq!(a.shards, b.shards);
        assert_eq!(a.shards.len(), 3);
        assert_eq!(a.shards[2].samples, 500);
        assert_eq!(a.test_hash, b.test_hash);
        for (info, bytes) in a.shards.iter().zip(&a.shard_bytes) {
            assert_eq!(Hash32(Shard::hash_bytes(bytes)), info.hash);
        }
    }

    /// A directory in the CIFAR-10 binary format (written here, record by
    /// record, as the official files are) becomes a job on 3x32x32 inputs.
    #[test]
    fn a_cifar_directory_becomes_a_job_on_colour_images() {
        use fairgrid_kernels::data::cifar::{Cifar, encode_cifar};
        let dir = tempfile::tempdir().unwrap();
        let record = |i: usize| ((i % 10) as u8, vec![(i % 251) as u8; 3 * 32 * 32]);
        for b in 1..=5 {
            let samples: Vec<_> = (0..40).map(|i| record(b * 40 + i)).collect();
            std::fs::write(
                dir.path().join(format!("data_batch_{b}.bin")),
                encode_cifar(Cifar::Ten, &samples),
            )
            .unwrap();
        }
        let test: Vec<_> = (0..20).map(record).collect();
        std::fs::write(
            dir.path().join("test_batch.bin"),
            encode_cifar(Cifar::Ten, &test),
        )
        .unwrap();
        let request = JobRequest {
            name: "cifar".into(),
            model: ModelChoice {
                arch: ArchName::Cnn,
                hidden: None,
                layers: None,
            },
            data: DataChoice {
                source: dir.path().display().to_string(),
                shard_size: 50,
                max_train_samples: None,
            },
            training: Default::default(),
            market: MarketChoice::default(),
            result: Default::default(),
        };
        let plan = super::super::request::plan(&request).unwrap();
        let data = load(&plan).unwrap();
        assert_eq!(
            (data.input.channels, data.input.height, data.input.width),
            (3, 32, 32)
        );
        assert_eq!((data.classes, data.shards.len()), (10, 4));
        assert_eq!(
            data.dataset_name,
            format!("cifar-10/{}", dir.path().display())
        );
        assert_eq!(data.test.len(), 20);
    }

    /// `docs/examples/tabular.toml` on a directory of NumPy features: the
    /// job's input is `F x 1 x 1` f32, its shards are f32 shards of the
    /// size the spec declares, and the declared network (a linear layer
    /// straight on the features) checks against the data.
    #[test]
    fn a_directory_of_tabular_features_becomes_a_job() {
        use fairgrid_kernels::data::npy::encode_npy;
        let dir = tempfile::tempdir().unwrap();
        let floats = |n: usize| -> Vec<u8> {
            (0..n * 7)
                .flat_map(|i| (i as f32 * 0.01 - 1.0).to_le_bytes())
                .collect()
        };
        let labels = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 2) as u8).collect() };
        for (split, n) in [("train", 1200), ("test", 100)] {
            let write = |name: &str, bytes: Vec<u8>| {
                std::fs::write(dir.path().join(format!("{split}_{name}.npy")), bytes).unwrap()
            };
            write("features", encode_npy("<f4", &[n, 7], &floats(n)));
            write("labels", encode_npy("|u1", &[n], &labels(n)));
        }
        let text = include_str!("../../../docs/examples/tabular.toml");
        let mut request: JobRequest = toml::from_str(text).unwrap();
        request.data.source = dir.path().display().to_string();
        let plan = super::super::request::plan(&request).unwrap();
        let data = load(&plan).unwrap();
        assert_eq!(
            data.input,
            InputShape {
                channels: 7,
                height: 1,
                width: 1,
                values: ValueKind::F32,
            }
        );
        assert_eq!((data.classes, data.shards.len()), (2, 3));
        for (info, bytes) in data.shards.iter().zip(&data.shard_bytes) {
            assert_eq!(bytes.len() as u64, info.bytes(&data.input));
            let shard = Shard::from_bytes(bytes).unwrap();
            assert_eq!(shard.kind(), PixelKind::F32);
        }
        let node = fairgrid_protocol::NodeId(fairgrid_protocol::PublicKey([1; 32]));
        let spec = plan.spec(node, 1, 0, &data.facts()).unwrap();
        spec.validate().unwrap();
        // The same network on images is refused by its first layer.
        let mut images = request.clone();
        images.data.source = "builtin".into();
        let plan = super::super::request::plan(&images).unwrap();
        let data = load(&plan).unwrap();
        let err = plan.spec(node, 1, 0, &data.facts()).unwrap_err();
        assert!(err.contains("linear needs features"), "{err}");

        // A NaN among the features: the job is refused, naming the file.
        let mut bad = floats(100);
        bad[4 * 33..4 * 34].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(
            dir.path().join("test_features.npy"),
            encode_npy("<f4", &[100, 7], &bad),
        )
        .unwrap();
        let plan = super::super::request::plan(&request).unwrap();
        let err = load(&plan).err().unwrap();
        assert!(
            err.contains("test_features.npy") && err.contains("element 33 is NaN"),
            "{err}"
        );
    }
}
