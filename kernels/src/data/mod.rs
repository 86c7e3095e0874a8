//! Datasets: the IDX, CIFAR binary and NumPy readers, in-memory datasets,
//! hashed shards, the built-in Fashion-MNIST subset, and batch assembly.

pub mod builtin;
pub mod cifar;
mod dataset;
pub mod idx;
pub mod npy;
mod shard;
pub mod tensors;

pub use dataset::{Dataset, FashionMnist, SYSTEM_FASHION_MNIST_DIR, Samples, ShardSet, TrainTest};
pub use shard::{MAX_SHARD_SAMPLES, Shard};

/// The bytes of a dataset file; a missing file and a read error name it.
pub(crate) fn read_dataset_file(path: &std::path::Path) -> crate::error::Result<Vec<u8>> {
    if !path.exists() {
        return Err(crate::error::KernelError::DatasetFileMissing {
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(|source| crate::error::KernelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Copies the samples `indices` into a batch: pixels (sample-major) into
/// `images`, labels into `labels`. Both are cleared first and reuse their
/// capacity.
pub fn gather_batch(
    samples: &dyn Samples,
    indices: &[u32],
    images: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) {
    images.clear();
    labels.clear();
    for &i in indices {
        images.extend_from_slice(samples.image(i as usize));
        labels.push(u32::from(samples.label(i as usize)));
    }
}
