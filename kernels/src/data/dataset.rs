//! In-memory labelled datasets. Byte images stay bytes (4x smaller than
//! f32) and are converted per batch on the device; f32 values (normalised
//! images, tabular features as `F x 1 x 1`) are used as they are.

use std::path::{Path, PathBuf};

use super::idx::{IdxArray, read_idx_file};
use super::pixels::{PixelKind, Pixels, SampleRef};
use super::shard::Shard;
use crate::error::{KernelError, Result};
use crate::model::InputShape;
use crate::rng::SplitMix64;

/// Read-only access to labelled samples; implemented by [`Dataset`],
/// [`Shard`] and [`ShardSet`], so training takes any of them.
pub trait Samples {
    fn shape(&self) -> InputShape;
    fn classes(&self) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the values are bytes or f32 (one kind for all samples).
    fn kind(&self) -> PixelKind;
    /// Sample `i`'s values, row-major `(h, w, c)`.
    fn image(&self, i: usize) -> SampleRef<'_>;
    fn label(&self, i: usize) -> u8;
}

/// Labelled samples, sample-major, each `(h, w, c)` row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    name: String,
    shape: InputShape,
    classes: usize,
    images: Pixels,
    labels: Vec<u8>,
}

impl Dataset {
    /// Checks sizes, label range and (for f32) that every value is
    /// finite; `classes` must be in 2..=256.
    pub fn new(
        name: impl Into<String>,
        shape: InputShape,
        classes: usize,
        images: impl Into<Pixels>,
        labels: Vec<u8>,
    ) -> Result<Self> {
        let name = name.into();
        let images = images.into();
        let bad = |reason: String| KernelError::DatasetInvalid {
            name: name.clone(),
            reason,
        };
        if !(2..=256).contains(&classes) {
            return Err(bad(format!("{classes} classes, need 2..=256")));
        }
        if shape.numel() == 0 {
            return Err(bad(format!("empty sample shape {shape:?}")));
        }
        if images.len() != labels.len() * shape.numel() {
            return Err(bad(format!(
                "{} values for {} labels of {} values each",
                images.len(),
                labels.len(),
                shape.numel()
            )));
        }
        if let Some((i, v)) = images.first_non_finite() {
            return Err(bad(format!(
                "value {v} of sample {} (index {i}) is not finite",
                i / shape.numel()
            )));
        }
        if let Some(i) = labels.iter().position(|&l| l as usize >= classes) {
            return Err(bad(format!(
                "label {} at sample {i} is not below {classes}",
                labels[i]
            )));
        }
        Ok(Dataset {
            name,
            shape,
            classes,
            images,
            labels,
        })
    }

    /// Pairs an IDX image array `[N, H, W]` with an IDX label array `[N]`.
    pub fn from_idx(
        name: impl Into<String>,
        images: IdxArray,
        labels: IdxArray,
        classes: usize,
    ) -> Result<Self> {
        let name = name.into();
        let bad = |reason: String| KernelError::DatasetInvalid {
            name: name.clone(),
            reason,
        };
        if images.dims.len() != 3 {
            return Err(bad(format!(
                "images are {:?}, expected [N, H, W]",
                images.dims
            )));
        }
        if labels.dims.len() != 1 {
            return Err(bad(format!("labels are {:?}, expected [N]", labels.dims)));
        }
        if images.dims[0] != labels.dims[0] {
            return Err(bad(format!(
                "{} images but {} labels",
                images.dims[0], labels.dims[0]
            )));
        }
        let shape = InputShape {
            channels: 1,
            height: images.dims[1],
            width: images.dims[2],
        };
        Dataset::new(name, shape, classes, images.data, labels.data)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    pub fn images(&self) -> &Pixels {
        &self.images
    }

    /// The first `n` samples (or all, if fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.labels.len());
        Dataset {
            name: format!("{}[..{n}]", self.name),
            shape: self.shape,
            classes: self.classes,
            images: match self.images.slice(0..n * self.shape.numel()) {
                SampleRef::U8(v) => Pixels::U8(v.to_vec()),
                SampleRef::F32(v) => Pixels::F32(v.to_vec()),
            },
            labels: self.labels[..n].to_vec(),
        }
    }

    /// Samples `order[0]`, `order[1]`, ... as a new dataset.
    pub fn select(&self, name: impl Into<String>, order: &[u32]) -> Result<Dataset> {
        let mut images = Pixels::empty(self.images.kind());
        let mut labels = Vec::with_capacity(order.len());
        for &i in order {
            let i = i as usize;
            if i >= self.labels.len() {
                return Err(KernelError::shape("Dataset::select", self.labels.len(), i));
            }
            images.extend(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset::new(name, self.shape, self.classes, images, labels)
    }

    /// Cuts the dataset into shards of `shard_size` samples after a
    /// shuffle seeded by `seed` (the last shard holds the remainder).
    /// The same dataset, size and seed always give the same shards, and so
    /// the same hashes.
    pub fn shards(&self, shard_size: usize, seed: u64) -> Result<Vec<Shard>> {
        if shard_size == 0 {
            return Err(KernelError::config("shard size", "zero"));
        }
        let order = SplitMix64::new(seed).permutation(self.len());
        order
            .chunks(shard_size)
            .enumerate()
            .map(|(i, chunk)| Shard::new(self.select(format!("{}#{i}", self.name), chunk)?))
            .collect()
    }
}

impl Samples for Dataset {
    fn shape(&self) -> InputShape {
        self.shape
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn kind(&self) -> PixelKind {
        self.images.kind()
    }
    fn image(&self, i: usize) -> SampleRef<'_> {
        let per = self.shape.numel();
        self.images.slice(i * per..(i + 1) * per)
    }
    fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }
}

/// Several shards seen as one sample sequence (a worker's assignment).
pub struct ShardSet<'a> {
    shards: Vec<&'a Shard>,
    /// `starts[i]` = index of shard i's first sample; one extra at the end.
    starts: Vec<usize>,
}

impl<'a> ShardSet<'a> {
    /// All shards must share shape, class count and value kind.
    pub fn new(shards: Vec<&'a Shard>) -> Result<Self> {
        let describe = |s: &Shard| {
            format!(
                "{:?} {} with {} classes",
                s.shape(),
                s.kind().name(),
                s.classes()
            )
        };
        if let Some(first) = shards.first()
            && let Some(other) = shards.iter().find(|s| {
                s.shape() != first.shape()
                    || s.classes() != first.classes()
                    || s.kind() != first.kind()
            })
        {
            return Err(KernelError::shape(
                "ShardSet",
                describe(first),
                describe(other),
            ));
        }
        let mut starts = vec![0];
        for s in &shards {
            starts.push(starts.last().copied().unwrap_or(0) + s.len());
        }
        Ok(ShardSet { shards, starts })
    }

    /// Shards in the set.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The set's sample indices that are shard `k`'s.
    pub fn shard_range(&self, k: usize) -> std::ops::Range<usize> {
        self.starts[k]..self.starts[k + 1]
    }

    fn locate(&self, i: usize) -> (usize, usize) {
        let shard = self.starts.partition_point(|&s| s <= i) - 1;
        (shard, i - self.starts[shard])
    }
}

impl Samples for ShardSet<'_> {
    fn shape(&self) -> InputShape {
        self.shards.first().map_or(
            InputShape {
                channels: 0,
                height: 0,
                width: 0,
            },
            |s| s.shape(),
        )
    }
    fn classes(&self) -> usize {
        self.shards.first().map_or(0, |s| s.classes())
    }
    fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }
    fn kind(&self) -> PixelKind {
        self.shards.first().map_or(PixelKind::U8, |s| s.kind())
    }
    fn image(&self, i: usize) -> SampleRef<'_> {
        let (s, j) = self.locate(i);
        self.shards[s].image(j)
    }
    fn label(&self, i: usize) -> u8 {
        let (s, j) = self.locate(i);
        self.shards[s].label(j)
    }
}

/// Where the Debian package `dataset-fashion-mnist` installs the full set.
pub const SYSTEM_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// A data set's train and test splits and where they came from.
#[derive(Debug, Clone)]
pub struct TrainTest {
    pub train: Dataset,
    pub test: Dataset,
    /// "builtin subset" or the directory read.
    pub source: String,
}

/// The name the built-in and system data sets are loaded under.
pub type FashionMnist = TrainTest;

impl TrainTest {
    /// Reads a data set directory in whichever format its files are:
    /// CIFAR-10 or CIFAR-100 binary ([`super::cifar`]), NumPy arrays
    /// ([`super::npy`]), safetensors arrays ([`super::tensors`]), or else
    /// the four Fashion-MNIST IDX files.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        if let Some(format) = super::cifar::Cifar::detect(dir) {
            return super::cifar::load_cifar_dir(dir, format);
        }
        if super::npy::detect(dir) {
            return super::npy::load_npy_dir(dir);
        }
        if super::tensors::SAFETENSORS_FILES
            .iter()
            .any(|f| dir.join(f).exists())
        {
            return super::tensors::load_safetensors_dir(dir);
        }
        Self::load_idx_dir(dir)
    }

    /// Reads the four IDX files (raw or `.gz`) from `dir`.
    pub fn load_idx_dir(dir: &Path) -> Result<Self> {
        let file = |name: &str| -> PathBuf { dir.join(name) };
        let train = Dataset::from_idx(
            "fashion-mnist/train",
            read_idx_file(&file("train-images-idx3-ubyte"))?,
            read_idx_file(&file("train-labels-idx1-ubyte"))?,
            10,
        )?;
        let test = Dataset::from_idx(
            "fashion-mnist/test",
            read_idx_file(&file("t10k-images-idx3-ubyte"))?,
            read_idx_file(&file("t10k-labels-idx1-ubyte"))?,
            10,
        )?;
        Ok(TrainTest {
            train,
            test,
            source: format!("Fashion-MNIST read from {}", dir.display()),
        })
    }
}
