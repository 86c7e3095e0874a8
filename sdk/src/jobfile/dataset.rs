//! What the client can tell about a job's dataset before sending it: the
//! built-in subset's size, and for a directory (or the system copy) which
//! format its files are (Fashion-MNIST IDX, CIFAR-10/100 binary, NumPy
//! or safetensors arrays: the node's readers, `fairgrid_kernels::data`)
//! and, where a header or the file sizes tell, how many training samples
//! they hold.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::DataCheck;

/// Samples in the subset compiled into every node (`kernels/data/`); a
/// testnet test checks these against the kernels crate.
pub const BUILTIN_TRAIN_SAMPLES: u64 = 10_000;
pub const BUILTIN_TEST_SAMPLES: u64 = 2_000;
/// Where the Debian package `dataset-fashion-mnist` installs the full set.
pub const SYSTEM_DATASET_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The four files a dataset directory holds (raw or `.gz`).
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// A NumPy arrays directory (`fairgrid_kernels::data::npy`) of images;
/// one of tabular data holds `*_features.npy` instead of `*_images.npy`.
pub const NPY_FILES: [&str; 4] = [
    "train_images.npy",
    "train_labels.npy",
    "test_images.npy",
    "test_labels.npy",
];

/// A safetensors arrays directory (`fairgrid_kernels::data::tensors`).
pub const SAFETENSORS_FILES: [&str; 2] = ["train.safetensors", "test.safetensors"];

/// The files a NumPy directory lacks (`None` when it is not one): per
/// split, its labels and its images or features.
fn npy_missing(dir: &Path) -> Option<Vec<String>> {
    let has = |f: &str| dir.join(f).is_file();
    let mut any = false;
    let mut missing = Vec::new();
    for split in ["train", "test"] {
        let (images, features, labels) = (
            format!("{split}_images.npy"),
            format!("{split}_features.npy"),
            format!("{split}_labels.npy"),
        );
        any |= has(&images) || has(&features) || has(&labels);
        if !has(&images) && !has(&features) {
            missing.push(format!("{images} (or {features})"));
        }
        if !has(&labels) {
            missing.push(labels);
        }
    }
    any.then_some(missing)
}

/// CIFAR binary batches: (training files, test file, bytes per record).
const CIFAR: [(&[&str], &str, u64); 2] = [
    (
        &[
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
        ],
        "test_batch.bin",
        1 + 3072,
    ),
    (&["train.bin"], "test.bin", 2 + 3072),
];

/// CIFAR-10 or CIFAR-100 binary batches in `dir`: the training samples
/// from the file sizes, each a whole number of records.
fn cifar(dir: &Path, name: &str) -> Result<Option<DatasetFacts>, (&'static str, String)> {
    let Some((train, test, record)) = CIFAR
        .iter()
        .find(|(train, test, _)| dir.join(test).is_file() && dir.join(train[0]).is_file())
    else {
        return Ok(None);
    };
    let mut samples = 0;
    for file in train.iter().chain([test]) {
        let path = dir.join(file);
        let len = std::fs::metadata(&path)
            .map_err(|e| ("data.source", format!("{}: {e}", path.display())))?
            .len();
        if len == 0 || len % record != 0 {
            return Err((
                "data.source",
                format!(
                    "{}: {len} bytes is not a whole number of {record}-byte CIFAR records",
                    path.display()
                ),
            ));
        }
        if file != test {
            samples += len / record;
        }
    }
    Ok(Some(DatasetFacts {
        name: name.to_string(),
        train_samples: Some(samples),
    }))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFacts {
    /// "fashion-mnist/builtin", or the directory.
    pub name: String,
    pub train_samples: Option<u64>,
}

type Found = Result<Option<DatasetFacts>, (&'static str, String)>;

/// Checks `data.source` and, with [`DataCheck::Local`], the files it
/// names. `Ok(None)` when the dataset was not inspected.
pub fn dataset_facts(source: &str, check: DataCheck) -> Found {
    match source {
        "" => Err((
            "data.source",
            "is empty; use \"builtin\", \"system\" or a directory".into(),
        )),
        "builtin" => Ok(Some(DatasetFacts {
            name: "fashion-mnist/builtin".into(),
            train_samples: Some(BUILTIN_TRAIN_SAMPLES),
        })),
        _ if source.chars().any(char::is_control) => {
            Err(("data.source", "contains control characters".into()))
        }
        _ if check == DataCheck::Skip => Ok(None),
        "system" => directory(Path::new(SYSTEM_DATASET_DIR), "system").map(Some),
        dir => directory(Path::new(dir), dir).map(Some),
    }
}

fn directory(dir: &Path, name: &str) -> Result<DatasetFacts, (&'static str, String)> {
    let hint = if name == "system" {
        " (install the Debian package dataset-fashion-mnist, or use \"builtin\")"
    } else {
        ""
    };
    if !dir.is_dir() {
        return Err((
            "data.source",
            format!("dataset directory {} does not exist{hint}", dir.display()),
        ));
    }
    if let Some(facts) = cifar(dir, name)? {
        return Ok(facts);
    }
    let arrays = match npy_missing(dir) {
        Some(missing) if !missing.is_empty() => {
            return Err((
                "data.source",
                format!(
                    "{} holds NumPy arrays but no {}",
                    dir.display(),
                    missing.join(", no ")
                ),
            ));
        }
        Some(_) => true,
        None => match SAFETENSORS_FILES.iter().find(|f| !dir.join(f).is_file()) {
            Some(missing) if SAFETENSORS_FILES.iter().any(|f| dir.join(f).is_file()) => {
                return Err((
                    "data.source",
                    format!(
                        "{} holds safetensors arrays but no {missing}",
                        dir.display()
                    ),
                ));
            }
            Some(_) => false,
            None => true,
        },
    };
    if arrays {
        // The node reads the arrays; the count is in their headers.
        return Ok(DatasetFacts {
            name: name.to_string(),
            train_samples: None,
        });
    }
    let mut labels = None;
    for file in IDX_FILES {
        let found = [dir.join(file), dir.join(format!("{file}.gz"))]
            .into_iter()
            .find(|p| p.is_file());
        match found {
            Some(path) if file == "train-labels-idx1-ubyte" => labels = Some(path),
            Some(_) => {}
            None => {
                return Err((
                    "data.source",
                    format!(
                        "{} has no {file} (or {file}.gz){hint}; a data directory holds the four Fashion-MNIST IDX files, CIFAR-10 or CIFAR-100 binary batches, NumPy arrays ({}; features_*.npy for tabular data) or safetensors arrays ({})",
                        dir.display(),
                        NPY_FILES.join(", "),
                        SAFETENSORS_FILES.join(", ")
                    ),
                ));
            }
        }
    }
    let labels = labels.expect("checked above");
    let count = label_count(&labels)
        .map_err(|reason| ("data.source", format!("{}: {reason}", labels.display())))?;
    if count == 0 {
        return Err((
            "data.source",
            format!("{} holds no training samples", labels.display()),
        ));
    }
    Ok(DatasetFacts {
        name: name.to_string(),
        train_samples: Some(count),
    })
}

/// The sample count from an IDX1 labels header (magic 0x00000801, then
/// the count, big-endian), gzipped or not.
fn label_count(path: &PathBuf) -> Result<u64, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut header = [0u8; 8];
    let gz = path.extension().is_some_and(|e| e == "gz");
    let read = if gz {
        flate2::read::GzDecoder::new(file).read_exact(&mut header)
    } else {
        let mut file = file;
        file.read_exact(&mut header)
    };
    read.map_err(|e| format!("cannot read the IDX header: {e}"))?;
    if header[..4] != [0, 0, 0x08, 0x01] {
        return Err(format!(
            "not an IDX labels file (magic {:02x?}, expected 00 00 08 01)",
            &header[..4]
        ));
    }
    Ok(u64::from(u32::from_be_bytes([
        header[4], header[5], header[6], header[7],
    ])))
}
