//! The built-in Fashion-MNIST subset (10 000 train, 2 000 test samples),
//! compiled into the binary so a fresh machine can train with no download.
//! Source, licence (MIT, Zalando SE) and how it was cut:
//! `kernels/data/README.md`.

use super::dataset::{Dataset, FashionMnist};
use super::idx::parse_idx;
use crate::error::Result;

const TRAIN_IMAGES: &[u8] = include_bytes!("../../data/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../data/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../data/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../data/t10k-labels-idx1-ubyte.gz");

/// How the run's output names this dataset.
pub const BUILTIN_NAME: &str = "Fashion-MNIST, the built-in subset compiled into this binary";

/// Decodes the embedded subset.
pub fn fashion_mnist() -> Result<FashionMnist> {
    let train = Dataset::from_idx(
        "fashion-mnist-builtin/train",
        parse_idx(TRAIN_IMAGES, "builtin train images")?,
        parse_idx(TRAIN_LABELS, "builtin train labels")?,
        10,
    )?;
    let test = Dataset::from_idx(
        "fashion-mnist-builtin/test",
        parse_idx(TEST_IMAGES, "builtin test images")?,
        parse_idx(TEST_LABELS, "builtin test labels")?,
        10,
    )?;
    Ok(FashionMnist {
        train,
        test,
        source: BUILTIN_NAME.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use crate::data::Samples;

    #[test]
    fn builtin_subset_has_the_documented_size_and_all_classes() {
        let fm = super::fashion_mnist().unwrap();
        assert_eq!(fm.train.len(), 10_000);
        assert_eq!(fm.test.len(), 2_000);
        assert_eq!(fm.train.shape().numel(), 784);
        for class in 0..10u8 {
            let count = fm.train.labels().iter().filter(|&&l| l == class).count();
            assert!((900..1100).contains(&count), "class {class}: {count}");
        }
    }
}
