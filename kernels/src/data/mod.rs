//! Datasets: the IDX reader, in-memory datasets, hashed shards, the
//! built-in Fashion-MNIST subset, and batch assembly.

pub mod builtin;
mod dataset;
pub mod idx;
mod shard;

pub use dataset::{Dataset, FashionMnist, SYSTEM_FASHION_MNIST_DIR, Samples, ShardSet};
pub use shard::{MAX_SHARD_SAMPLES, Shard};

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
