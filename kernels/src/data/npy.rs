//! NumPy `.npy` arrays (format versions 1 to 3) as a dataset directory:
//! per split (`train`, `test`) either `{split}_images.npy` or
//! `{split}_features.npy`, and `{split}_labels.npy`. Images are `uint8`
//! (scaled by 1/255 in training) or floats (`float32`, or `float64`
//! narrowed to f32; used as they are), shaped `[N, H, W]` (one channel)
//! or `[N, H, W, C]` (channels last, as NumPy and PIL hold them).
//! Features (tabular data) are floats shaped `[N, F]`, the model's input
//! `F x 1 x 1`, which layers see as F features. Labels are integers (any
//! width, either byte order) shaped `[N]`, in `0..classes` where classes
//! is the largest label plus one (at least 2, at most 256). Every float
//! must be finite. Save with `np.save(path, np.ascontiguousarray(a))`.
//! Anything else (another dtype, Fortran order, a header or payload that
//! does not match) is refused with the file's name and the problem.

use std::path::Path;

use super::dataset::{Dataset, TrainTest};
use super::pixels::Pixels;
use crate::error::{KernelError, Result};
use crate::model::InputShape;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Longest header accepted (NumPy writes well under a kilobyte).
const MAX_HEADER: usize = 64 * 1024;

/// The files a `.npy` dataset directory of images holds (one of tabular
/// data holds `*_features.npy` instead of `*_images.npy`).
pub const NPY_FILES: [&str; 4] = [
    "train_images.npy",
    "train_labels.npy",
    "test_images.npy",
    "test_labels.npy",
];

/// Whether `dir` holds any of a `.npy` dataset's files.
pub fn detect(dir: &Path) -> bool {
    NPY_FILES
        .iter()
        .chain(&["train_features.npy", "test_features.npy"])
        .any(|f| dir.join(f).exists())
}

/// A parsed array: its shape and elements widened to i64 (integers),
/// kept as bytes (`uint8`) or as f32 (floats).
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    U8(Vec<u8>),
    Int(Vec<i64>),
    F32(Vec<f32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dtype {
    float: bool,
    signed: bool,
    bytes: usize,
    big_endian: bool,
}

fn dtype(descr: &str) -> std::result::Result<Dtype, String> {
    let (order, code) = match descr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => (descr.as_bytes()[0], &descr[1..]),
        _ => (b'=', descr),
    };
    let (float, signed, bytes) = match code {
        "u1" | "B" => (false, false, 1),
        "i1" | "b" => (false, true, 1),
        "u2" => (false, false, 2),
        "i2" => (false, true, 2),
        "u4" => (false, false, 4),
        "i4" => (false, true, 4),
        "u8" => (false, false, 8),
        "i8" => (false, true, 8),
        "f4" | "f" => (true, true, 4),
        "f8" | "d" => (true, true, 8),
        other => {
            return Err(format!(
                "dtype {other:?} is not supported: images must be uint8 or float32/float64, \
                 features float32/float64 and labels integers"
            ));
        }
    };
    Ok(Dtype {
        float,
        signed,
        bytes,
        big_endian: order == b'>',
    })
}

/// The value of `key` in NumPy's header dict (a Python literal).
fn field<'a>(header: &'a str, key: &str) -> std::result::Result<&'a str, String> {
    let at = header
        .find(&format!("'{key}'"))
        .ok_or_else(|| format!("the header has no '{key}'"))?;
    let rest = header[at + key.len() + 2..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| format!("the header's '{key}' has no value"))?
        .trim_start();
    let end = match rest.as_bytes().first() {
        Some(b'(') => rest.find(')').map(|i| i + 1),
        Some(b'\'') => rest[1..].find('\'').map(|i| i + 2),
        _ => rest.find([',', '}']),
    }
    .ok_or_else(|| format!("the header's '{key}' is not closed"))?;
    Ok(rest[..end].trim())
}

fn parse_header(header: &str) -> std::result::Result<(Dtype, Vec<usize>), String> {
    let descr = field(header, "descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.strip_suffix('\''))
        .ok_or_else(|| {
            format!("descr {descr} is not a string (structured arrays are not supported)")
        })?;
    let dtype = dtype(descr)?;
    match field(header, "fortran_order")? {
        "False" => {}
        "True" => {
            return Err(
                "the array is in Fortran order: save np.ascontiguousarray(a) instead".into(),
            );
        }
        other => return Err(format!("fortran_order is {other}, not True or False")),
    }
    let shape = field(header, "shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("shape {shape} is not a tuple"))?;
    let dims = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| format!("shape {shape} has a dimension {d:?} that is not a size"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((dtype, dims))
}

/// Parses a whole `.npy` file; `file` names it in errors.
pub fn parse_npy(bytes: &[u8], file: &str) -> Result<NpyArray> {
    let bad = |reason: String| KernelError::DatasetInvalid {
        name: file.to_string(),
        reason,
    };
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => {
            return Err(bad(format!(
                "format version {v}.{} is not 1, 2 or 3",
                bytes[7]
            )));
        }
    };
    if header_len > MAX_HEADER || start + header_len > bytes.len() {
        return Err(bad(format!(
            "a header of {header_len} bytes does not fit the file's {} bytes",
            bytes.len()
        )));
    }
    let header = std::str::from_utf8(&bytes[start..start + header_len])
        .map_err(|_| bad("the header is not text".into()))?;
    let (dtype, shape) = parse_header(header).map_err(bad)?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let payload = &bytes[start + header_len..];
    let want = count
        .checked_mul(dtype.bytes)
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    if payload.len() != want {
        return Err(bad(format!(
            "shape {shape:?} of {}-byte elements needs {want} bytes of data, the file has {}",
            dtype.bytes,
            payload.len()
        )));
    }
    let data = if dtype.float {
        NpyData::F32(floats(payload, dtype))
    } else if dtype.bytes == 1 && !dtype.signed {
        NpyData::U8(payload.to_vec())
    } else {
        NpyData::Int(
            payload
                .chunks_exact(dtype.bytes)
                .map(|c| {
                    let mut b = [0u8; 8];
                    if dtype.big_endian {
                        b[8 - c.len()..].copy_from_slice(c);
                        b.reverse();
                    } else {
                        b[..c.len()].copy_from_slice(c);
                    }
                    let raw = u64::from_le_bytes(b);
                    let shift = 64 - 8 * dtype.bytes as u32;
                    if dtype.signed {
                        ((raw << shift) as i64) >> shift
                    } else {
                        raw as i64
                    }
                })
                .collect(),
        )
    };
    Ok(NpyArray { shape, data })
}

/// 4- or 8-byte floats as f32 (float64 rounds to the nearest f32; one
/// beyond f32's range becomes infinite, which datasets refuse).
fn floats(payload: &[u8], dtype: Dtype) -> Vec<f32> {
    payload
        .chunks_exact(dtype.bytes)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            if dtype.big_endian {
                b[..c.len()].reverse();
            }
            if dtype.bytes == 4 {
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            } else {
                f64::from_le_bytes(b) as f32
            }
        })
        .collect()
}

fn read(dir: &Path, name: &str) -> Result<(NpyArray, String)> {
    let path = dir.join(name);
    let bytes = super::read_dataset_file(&path)?;
    let label = path.display().to_string();
    Ok((parse_npy(&bytes, &label)?, label))
}

pub(super) fn labels_of(array: NpyArray, file: &str) -> Result<Vec<u8>> {
    let bad = |reason: String| KernelError::DatasetInvalid {
        name: file.to_string(),
        reason,
    };
    if array.shape.len() != 1 {
        return Err(bad(format!("labels are shaped {:?}, not [N]", array.shape)));
    }
    let values: Vec<i64> = match array.data {
        NpyData::U8(v) => v.into_iter().map(i64::from).collect(),
        NpyData::Int(v) => v,
        NpyData::F32(_) => return Err(bad("labels are floats, not integers".into())),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            u8::try_from(l).map_err(|_| bad(format!("label {l} at sample {i} is not in 0..256")))
        })
        .collect()
}

pub(super) fn images_of(array: NpyArray, file: &str) -> Result<(InputShape, Pixels)> {
    let bad = |reason: String| KernelError::DatasetInvalid {
        name: file.to_string(),
        reason,
    };
    let shape = match array.shape[..] {
        [_, h, w] => InputShape {
            channels: 1,
            height: h,
            width: w,
        },
        [_, h, w, c] => InputShape {
            channels: c,
            height: h,
            width: w,
        },
        _ => {
            return Err(bad(format!(
                "images are shaped {:?}, not [N, H, W] or [N, H, W, C]",
                array.shape
            )));
        }
    };
    shape.check_bounds().map_err(bad)?;
    match array.data {
        NpyData::U8(v) => Ok((shape, Pixels::U8(v))),
        NpyData::F32(v) => Ok((shape, finite(v, file)?)),
        NpyData::Int(_) => Err(bad(
            "images must be uint8 or floats (float32, float64), not wider integers".into(),
        )),
    }
}

/// Tabular features `[N, F]` (floats) as samples of shape `F x 1 x 1`.
pub(super) fn features_of(array: NpyArray, file: &str) -> Result<(InputShape, Pixels)> {
    let bad = |reason: String| KernelError::DatasetInvalid {
        name: file.to_string(),
        reason,
    };
    let [_, f] = array.shape[..] else {
        return Err(bad(format!(
            "features are shaped {:?}, not [N, F]",
            array.shape
        )));
    };
    let shape = InputShape {
        channels: f,
        height: 1,
        width: 1,
    };
    shape.check_bounds().map_err(bad)?;
    match array.data {
        NpyData::F32(v) => Ok((shape, finite(v, file)?)),
        _ => Err(bad("features must be floats (float32 or float64)".into())),
    }
}

/// Float values, refused by file and place when one is NaN or infinite
/// (a float64 beyond f32's range is infinite once narrowed).
fn finite(values: Vec<f32>, file: &str) -> Result<Pixels> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(KernelError::DatasetInvalid {
            name: file.to_string(),
            reason: format!("element {i} is {}, not a finite float32", values[i]),
        });
    }
    Ok(Pixels::F32(values))
}

/// One split's values and labels: `{which}_features.npy` when present,
/// else `{which}_images.npy`.
fn split(dir: &Path, which: &str) -> Result<Split> {
    let features = format!("{which}_features.npy");
    let (shape, pixels) = if dir.join(&features).exists() {
        let (array, file) = read(dir, &features)?;
        features_of(array, &file)?
    } else {
        let (array, file) = read(dir, &format!("{which}_images.npy"))?;
        images_of(array, &file)?
    };
    let (labels, labels_file) = read(dir, &format!("{which}_labels.npy"))?;
    Ok((shape, pixels, labels_of(labels, &labels_file)?))
}

/// A split's sample shape, values and labels.
pub(super) type Split = (InputShape, Pixels, Vec<u8>);

/// Reads a `.npy` dataset directory ([`NPY_FILES`]).
pub fn load_npy_dir(dir: &Path) -> Result<TrainTest> {
    let train = split(dir, "train")?;
    let test = split(dir, "test")?;
    train_test(format!("npy:{}", dir.display()), dir, train, test)
}

/// The train and test splits of an array directory as a data set: both of
/// one shape, classes from the largest label.
pub(super) fn train_test(
    name: String,
    dir: &Path,
    (shape, train_images, train_labels): Split,
    (test_shape, test_images, test_labels): Split,
) -> Result<TrainTest> {
    if test_shape != shape {
        return Err(KernelError::DatasetInvalid {
            name,
            reason: format!("train samples are {shape:?} but test samples {test_shape:?}"),
        });
    }
    if train_images.kind() != test_images.kind() {
        return Err(KernelError::DatasetInvalid {
            name,
            reason: format!(
                "train values are {} but test values {}",
                train_images.kind().name(),
                test_images.kind().name()
            ),
        });
    }
    let classes = train_labels
        .iter()
        .chain(&test_labels)
        .map(|&l| usize::from(l) + 1)
        .max()
        .unwrap_or(0)
        .max(2);
    Ok(TrainTest {
        train: Dataset::new(
            format!("{name}/train"),
            shape,
            classes,
            train_images,
            train_labels,
        )?,
        test: Dataset::new(
            format!("{name}/test"),
            shape,
            classes,
            test_images,
            test_labels,
        )?,
        source: format!("arrays read from {}", dir.display()),
    })
}

/// A version 1.0 `.npy` file, for tests and tools.
pub fn encode_npy(descr: &str, shape: &[usize], payload: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // NumPy pads the header with spaces and a newline to 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend([1, 0]);
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Samples;

    fn write(dir: &Path, name: &str, bytes: Vec<u8>) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    fn dataset_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let images: Vec<u8> = (0..5 * 4 * 4 * 3).map(|i| i as u8).collect();
        write(
            dir.path(),
            "train_images.npy",
            encode_npy("|u1", &[5, 4, 4, 3], &images),
        );
        let labels: Vec<u8> = [0i64, 1, 2, 9, 3]
            .iter()
            .flat_map(|l| l.to_le_bytes())
            .collect();
        write(
            dir.path(),
            "train_labels.npy",
            encode_npy("<i8", &[5], &labels),
        );
        write(
            dir.path(),
            "test_images.npy",
            encode_npy("|u1", &[2, 4, 4, 3], &images[..96]),
        );
        let test_labels: Vec<u8> = [4i32, 5].iter().flat_map(|l| l.to_be_bytes()).collect();
        write(
            dir.path(),
            "test_labels.npy",
            encode_npy(">i4", &[2], &test_labels),
        );
        dir
    }

    #[test]
    fn reads_images_channels_last_and_integer_labels_of_any_width() {
        let dir = dataset_dir();
        let data = load_npy_dir(dir.path()).unwrap();
        assert_eq!(data.train.len(), 5);
        assert_eq!(data.test.len(), 2);
        assert_eq!(data.train.classes(), 10);
        assert_eq!(data.train.shape().channels, 3);
        assert_eq!(data.train.label(3), 9);
        assert_eq!(data.test.label(1), 5, "big-endian int32");
        assert_eq!(data.train.image(1).to_f32(1.0)[0], 48.0);
        let grey: Vec<u8> = vec![7; 2 * 3 * 3];
        let a = parse_npy(&encode_npy("|u1", &[2, 3, 3], &grey), "g").unwrap();
        assert_eq!((a.shape, a.data), (vec![2, 3, 3], NpyData::U8(grey)));
        let neg = parse_npy(&encode_npy("<i2", &[1], &(-3i16).to_le_bytes()), "n").unwrap();
        assert_eq!(neg.data, NpyData::Int(vec![-3]));
    }

    fn le32(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn float_images_and_tabular_features_load_as_f32() {
        use crate::data::{PixelKind, SampleRef};
        let dir = tempfile::tempdir().unwrap();
        let labels = encode_npy("|u1", &[2], &[0, 1]);
        // float32 images, little-endian; float64 images, big-endian.
        let train: Vec<f32> = (0..2 * 2 * 2).map(|i| i as f32 * 0.25 - 1.0).collect();
        write(
            dir.path(),
            "train_images.npy",
            encode_npy("<f4", &[2, 2, 2], &le32(&train)),
        );
        let test: Vec<u8> = [0.5f64, -3.25, 1e-3, 7.0, 0.0, 1.0, 2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        write(
            dir.path(),
            "test_images.npy",
            encode_npy(">f8", &[2, 2, 2], &test),
        );
        write(dir.path(), "train_labels.npy", labels.clone());
        write(dir.path(), "test_labels.npy", labels.clone());
        let data = TrainTest::load_dir(dir.path()).unwrap();
        assert_eq!(data.train.kind(), PixelKind::F32);
        assert_eq!(data.train.image(1), SampleRef::F32(&train[4..]));
        assert_eq!(data.test.image(0), SampleRef::F32(&[0.5, -3.25, 1e-3, 7.0]));
        assert_eq!(data.train.shape().channels, 1);

        // Features [N, F] become F x 1 x 1 samples.
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<f32> = (0..3 * 5).map(|i| i as f32 / 3.0).collect();
        write(
            dir.path(),
            "train_features.npy",
            encode_npy("<f4", &[3, 5], &le32(&rows)),
        );
        write(
            dir.path(),
            "test_features.npy",
            encode_npy("<f4", &[1, 5], &le32(&rows[..5])),
        );
        write(
            dir.path(),
            "train_labels.npy",
            encode_npy("<i4", &[3], &[0; 12]),
        );
        write(dir.path(), "test_labels.npy", encode_npy("|u1", &[1], &[2]));
        let data = TrainTest::load_dir(dir.path()).unwrap();
        assert_eq!(
            data.train.shape(),
            InputShape {
                channels: 5,
                height: 1,
                width: 1
            }
        );
        assert_eq!(data.train.image(2), SampleRef::F32(&rows[10..]));
        assert_eq!(data.train.classes(), 3, "the test split's label 2 counts");
    }

    #[test]
    fn float_files_that_are_not_what_they_claim_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let two_labels = encode_npy("|u1", &[2], &[0, 1]);
        write(dir.path(), "train_labels.npy", two_labels.clone());
        write(dir.path(), "test_labels.npy", two_labels);
        let load = |name: &str, bytes: Vec<u8>| {
            write(dir.path(), name, bytes);
            let e = TrainTest::load_dir(dir.path()).unwrap_err().to_string();
            let _ = std::fs::remove_file(dir.path().join(name));
            e
        };
        write(
            dir.path(),
            "test_features.npy",
            encode_npy("<f4", &[2, 2], &le32(&[0.0; 4])),
        );
        let e = load(
            "train_features.npy",
            encode_npy("<f4", &[2, 2], &le32(&[0.0, f32::NAN, 1.0, 2.0])),
        );
        assert!(
            e.contains("train_features.npy") && e.contains("element 1 is NaN"),
            "{e}"
        );
        let huge: Vec<u8> = [1e300f64, 0.0, 0.0, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let e = load("train_features.npy", encode_npy("<f8", &[2, 2], &huge));
        assert!(e.contains("element 0 is inf"), "{e}");
        let e = load("train_features.npy", encode_npy("|u1", &[2, 2], &[0; 4]));
        assert!(e.contains("features must be floats"), "{e}");
        let e = load(
            "train_features.npy",
            encode_npy("<f4", &[2, 2, 1], &le32(&[0.0; 4])),
        );
        assert!(e.contains("not [N, F]"), "{e}");
        let e = load(
            "train_features.npy",
            encode_npy("<f4", &[2, 5000], &le32(&[0.0; 10_000])),
        );
        assert!(e.contains("5000 features, at most 4096"), "{e}");
        // Byte images for training, float ones for testing.
        write(
            dir.path(),
            "test_images.npy",
            encode_npy("<f4", &[2, 1, 2], &le32(&[0.0; 4])),
        );
        let _ = std::fs::remove_file(dir.path().join("test_features.npy"));
        let e = load("train_images.npy", encode_npy("|u1", &[2, 1, 2], &[0; 4]));
        assert!(
            e.contains("train values are uint8 but test values float32"),
            "{e}"
        );
    }

    #[test]
    fn files_that_are_not_what_they_claim_are_named_with_the_problem() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04not npy".to_vec(), "no \\x93NUMPY magic"),
            (
                encode_npy("<c8", &[2], &[0; 16]),
                "dtype \"c8\" is not supported",
            ),
            (
                encode_npy("|u1", &[2, 2], &[0; 3]),
                "needs 4 bytes of data, the file has 3",
            ),
            (
                encode_npy("|u1", &[2, 2], &[0; 5]),
                "needs 4 bytes of data, the file has 5",
            ),
            (encode_npy("|u1", &[usize::MAX, 2], &[]), "overflows"),
            (
                {
                    let mut b = encode_npy("|u1", &[1], &[0]);
                    b[6] = 9;
                    b
                },
                "format version 9",
            ),
            (
                {
                    let mut b = encode_npy("|u1", &[1], &[0]);
                    b[8] = 0xff;
                    b[9] = 0xff;
                    b
                },
                "does not fit",
            ),
            (
                {
                    let mut b = encode_npy("|u1", &[1], &[0]);
                    let at = b.windows(5).position(|w| w == b"False").unwrap();
                    b[at..at + 5].copy_from_slice(b"True ");
                    b
                },
                "Fortran order",
            ),
        ];
        for (bytes, want) in cases {
            let err = parse_npy(&bytes, "data/x.npy").unwrap_err().to_string();
            assert!(
                err.contains("data/x.npy") && err.contains(want),
                "{want}: {err}"
            );
        }
        // Whole directories: a label out of range, a wrongly shaped array,
        // a missing file, train and test that disagree.
        let dir = dataset_dir();
        write(
            dir.path(),
            "train_labels.npy",
            encode_npy("<i8", &[5], &[0xff; 40]),
        );
        let err = load_npy_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("train_labels.npy") && err.contains("label -1 at sample 0"),
            "{err}"
        );
        let dir = dataset_dir();
        write(
            dir.path(),
            "test_images.npy",
            encode_npy("|u1", &[2, 4, 4, 1], &[0; 32]),
        );
        let err = load_npy_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("but test samples"), "{err}");
        let dir = dataset_dir();
        write(
            dir.path(),
            "train_images.npy",
            encode_npy("|u1", &[80], &[0; 80]),
        );
        let err = load_npy_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("train_images.npy") && err.contains("not [N, H, W]"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("test_labels.npy")).unwrap();
        assert!(load_npy_dir(dir.path()).is_err());
    }
}
