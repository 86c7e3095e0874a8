//! Datasets: the IDX, CIFAR binary, NumPy and safetensors readers,
//! in-memory datasets of byte or f32 values, hashed shards, the built-in
//! Fashion-MNIST subset, and batch assembly.

pub mod builtin;
pub mod cifar;
mod dataset;
pub mod idx;
pub mod npy;
mod pixels;
mod shard;
pub mod tensors;

pub use dataset::{Dataset, FashionMnist, SYSTEM_FASHION_MNIST_DIR, Samples, ShardSet, TrainTest};
pub use pixels::{PixelKind, Pixels, SampleRef};
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

/// Copies the samples `indices` into a batch: values (sample-major, of the
/// samples' kind) into `images`, labels into `labels`. Both are cleared
/// first and reuse their capacity.
pub fn gather_batch(
    samples: &dyn Samples,
    indices: &[u32],
    images: &mut Pixels,
    labels: &mut Vec<u32>,
) {
    images.clear_as(samples.kind());
    labels.clear();
    for &i in indices {
        images.extend(samples.image(i as usize));
        labels.push(u32::from(samples.label(i as usize)));
    }
}
