//! The CIFAR-10 and CIFAR-100 binary formats (the seed paper's data set),
//! as `cifar-10-batches-bin/` and `cifar-100-binary/` unpack:
//!
//! - CIFAR-10: `data_batch_1.bin` .. `data_batch_5.bin` and
//!   `test_batch.bin`, each record 1 label byte (0..=9) then 3,072 pixel
//!   bytes;
//! - CIFAR-100: `train.bin` and `test.bin`, each record a coarse label
//!   byte (0..=19), a fine label byte (0..=99, the one used) then 3,072
//!   pixel bytes.
//!
//! Pixels are channel-planar (1,024 red, then green, then blue, each row
//! by row); they are stored here as `(h, w, c)` like every dataset. A file
//! that is not a whole number of records, or holds a label out of range,
//! is refused with its name and the record at fault.

use std::path::Path;

use super::dataset::{Dataset, TrainTest};
use crate::error::{KernelError, Result};
use crate::model::InputShape;

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;

/// Which of the two formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar {
    Ten,
    Hundred,
}

impl Cifar {
    fn label_bytes(self) -> usize {
        match self {
            Cifar::Ten => 1,
            Cifar::Hundred => 2,
        }
    }

    fn classes(self) -> usize {
        match self {
            Cifar::Ten => 10,
            Cifar::Hundred => 100,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cifar::Ten => "cifar-10",
            Cifar::Hundred => "cifar-100",
        }
    }

    fn train_files(self) -> Vec<String> {
        match self {
            Cifar::Ten => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            Cifar::Hundred => vec!["train.bin".into()],
        }
    }

    fn test_file(self) -> &'static str {
        match self {
            Cifar::Ten => "test_batch.bin",
            Cifar::Hundred => "test.bin",
        }
    }

    /// The format whose files `dir` holds, if any.
    pub fn detect(dir: &Path) -> Option<Cifar> {
        [Cifar::Ten, Cifar::Hundred]
            .into_iter()
            .find(|c| dir.join(c.test_file()).exists() && dir.join(&c.train_files()[0]).exists())
    }
}

/// Appends the records of one file to `images` (as `(h, w, c)`) and
/// `labels`; `file` names it in errors.
pub fn parse_cifar(
    bytes: &[u8],
    file: &str,
    format: Cifar,
    images: &mut Vec<u8>,
    labels: &mut Vec<u8>,
) -> Result<()> {
    let bad = |reason: String| KernelError::DatasetInvalid {
        name: file.to_string(),
        reason,
    };
    let record = format.label_bytes() + PIXELS;
    if bytes.is_empty() {
        return Err(bad(format!("empty: not a {} binary file", format.name())));
    }
    if !bytes.len().is_multiple_of(record) {
        return Err(bad(format!(
            "{} bytes is not a whole number of {}-byte {} records ({} whole, {} bytes over)",
            bytes.len(),
            record,
            format.name(),
            bytes.len() / record,
            bytes.len() % record
        )));
    }
    let count = bytes.len() / record;
    images.reserve(count * PIXELS);
    labels.reserve(count);
    for (i, r) in bytes.chunks_exact(record).enumerate() {
        let label = r[format.label_bytes() - 1];
        if usize::from(label) >= format.classes() {
            return Err(bad(format!(
                "record {i} has label {label}, not below {} (is this a {} file?)",
                format.classes(),
                format.name()
            )));
        }
        if format == Cifar::Hundred && r[0] >= 20 {
            return Err(bad(format!(
                "record {i} has coarse label {}, not below 20 (is this a cifar-100 file?)",
                r[0]
            )));
        }
        labels.push(label);
        let planes = &r[format.label_bytes()..];
        for p in 0..SIDE * SIDE {
            images.extend([
                planes[p],
                planes[SIDE * SIDE + p],
                planes[2 * SIDE * SIDE + p],
            ]);
        }
    }
    Ok(())
}

fn read_split(dir: &Path, files: &[String], format: Cifar, split: &str) -> Result<Dataset> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for name in files {
        let path = dir.join(name);
        let bytes = super::read_dataset_file(&path)?;
        parse_cifar(
            &bytes,
            &path.display().to_string(),
            format,
            &mut images,
            &mut labels,
        )?;
    }
    let shape = InputShape {
        channels: 3,
        height: SIDE,
        width: SIDE,
    };
    Dataset::new(
        format!("{}/{split}", format.name()),
        shape,
        format.classes(),
        images,
        labels,
    )
}

/// Reads a CIFAR-10 or CIFAR-100 binary directory.
pub fn load_cifar_dir(dir: &Path, format: Cifar) -> Result<TrainTest> {
    let train = read_split(dir, &format.train_files(), format, "train")?;
    let test = read_split(dir, &[format.test_file().to_string()], format, "test")?;
    Ok(TrainTest {
        train,
        test,
        source: format!("{} read from {}", format.name(), dir.display()),
    })
}

/// Records in the CIFAR binary layout, for tests and tools: `(label,
/// (h, w, c) pixels)` each.
pub fn encode_cifar(format: Cifar, samples: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (label, hwc) in samples {
        if format == Cifar::Hundred {
            out.push(label / 5);
        }
        out.push(*label);
        for c in 0..3 {
            out.extend((0..SIDE * SIDE).map(|p| hwc[p * 3 + c]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Samples;

    fn sample(seed: u8) -> Vec<u8> {
        (0..PIXELS).map(|i| (i as u8).wrapping_mul(seed)).collect()
    }

    fn write_dir(format: Cifar, per_file: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let files = format.train_files();
        for (f, name) in files.iter().enumerate() {
            let samples: Vec<(u8, Vec<u8>)> = (0..per_file)
                .map(|i| ((f + i) as u8 % 10, sample((f * per_file + i) as u8)))
                .collect();
            std::fs::write(dir.path().join(name), encode_cifar(format, &samples)).unwrap();
        }
        let test: Vec<(u8, Vec<u8>)> = (0..3)
            .map(|i| (i as u8 * 3, sample(200 + i as u8)))
            .collect();
        std::fs::write(
            dir.path().join(format.test_file()),
            encode_cifar(format, &test),
        )
        .unwrap();
        dir
    }

    #[test]
    fn reads_both_formats_in_record_order_as_hwc() {
        for format in [Cifar::Ten, Cifar::Hundred] {
            let dir = write_dir(format, 4);
            assert_eq!(Cifar::detect(dir.path()), Some(format));
            let data = load_cifar_dir(dir.path(), format).unwrap();
            let files = format.train_files().len();
            assert_eq!(data.train.len(), 4 * files);
            assert_eq!(data.test.len(), 3);
            assert_eq!(data.train.shape().channels, 3);
            assert_eq!(data.train.classes(), format.classes());
            // The last file's last record, pixel for pixel.
            let last = data.train.len() - 1;
            assert_eq!(
                data.train.image(last),
                crate::data::SampleRef::U8(sample(last as u8).as_slice())
            );
            assert_eq!(data.train.label(last), ((files - 1 + 3) % 10) as u8);
            assert_eq!(data.test.label(2), 6);
        }
    }

    /// The seed paper's network on CIFAR-10 is the zoo's CNN on these
    /// inputs (docs/examples/cifar10-seed.toml quotes its size).
    #[test]
    fn the_seed_cnn_on_cifar_10_has_the_documented_size() {
        let spec = crate::ModelSpec {
            arch: crate::Arch::Cnn,
            input: InputShape {
                channels: 3,
                height: SIDE,
                width: SIDE,
            },
            classes: Cifar::Ten.classes(),
        };
        assert_eq!(spec.param_count(), 356_810);
    }

    #[test]
    fn a_file_that_is_not_what_it_claims_is_named_with_its_fault() {
        let dir = write_dir(Cifar::Ten, 2);
        let path = dir.path().join("data_batch_3.bin");
        // Truncated mid-record.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 100);
        std::fs::write(&path, &bytes).unwrap();
        let err = load_cifar_dir(dir.path(), Cifar::Ten)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data_batch_3.bin"), "{err}");
        assert!(
            err.contains("not a whole number of 3073-byte cifar-10 records"),
            "{err}"
        );
        // A label out of range (a CIFAR-100 file read as CIFAR-10).
        let hundred = encode_cifar(Cifar::Hundred, &[(57, sample(1))]);
        let err = parse_cifar(
            &hundred[..3073],
            "x.bin",
            Cifar::Ten,
            &mut vec![],
            &mut vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("x.bin: record 0 has label 11, not below 10"),
            "{err}"
        );
        // An empty file, a missing file.
        std::fs::write(&path, b"").unwrap();
        let err = load_cifar_dir(dir.path(), Cifar::Ten)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data_batch_3.bin") && err.contains("empty"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
        let err = load_cifar_dir(dir.path(), Cifar::Ten)
            .unwrap_err()
            .to_string();
        assert!(err.contains("data_batch_3.bin"), "{err}");
        // Random bytes of a whole number of records: labels out of range.
        let noise: Vec<u8> = (0..3073 * 3)
            .map(|i| (i * 7919 % 251) as u8 | 0x80)
            .collect();
        assert!(parse_cifar(&noise, "n.bin", Cifar::Ten, &mut vec![], &mut vec![]).is_err());
    }
}
