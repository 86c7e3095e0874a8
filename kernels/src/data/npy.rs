//! NumPy `.npy` arrays (format versions 1 to 3) as a dataset directory:
//! `train_images.npy`, `train_labels.npy`, `test_images.npy`,
//! `test_labels.npy`. Images are `uint8`, shaped `[N, H, W]` (one
//! channel) or `[N, H, W, C]` (channels last, as NumPy and PIL hold
//! them); labels are integers (any width, either byte order) shaped `[N]`,
//! in `0..classes` where classes is the largest label plus one (at least
//! 2, at most 256). Save with `np.save(path, np.ascontiguousarray(a))`.
//! Anything else (another dtype, Fortran order, a header or payload that
//! does not match) is refused with the file's name and the problem.

use std::path::Path;

use super::dataset::{Dataset, TrainTest};
use crate::error::{KernelError, Result};
use crate::model::InputShape;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Longest header accepted (NumPy writes well under a kilobyte).
const MAX_HEADER: usize = 64 * 1024;

/// The files a `.npy` dataset directory holds.
pub const NPY_FILES: [&str; 4] = [
    "train_images.npy",
    "train_labels.npy",
    "test_images.npy",
    "test_labels.npy",
];

/// A parsed array: its shape and elements widened to i64 (labels) or
/// kept as bytes (`uint8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: NpyData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpyData {
    U8(Vec<u8>),
    Int(Vec<i64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dtype {
    signed: bool,
    bytes: usize,
    big_endian: bool,
}

fn dtype(descr: &str) -> std::result::Result<Dtype, String> {
    let (order, code) = match descr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => (descr.as_bytes()[0], &descr[1..]),
        _ => (b'=', descr),
    };
    let (signed, bytes) = match code {
        "u1" | "B" => (false, 1),
        "i1" | "b" => (true, 1),
        "u2" => (false, 2),
        "i2" => (true, 2),
        "u4" => (false, 4),
        "i4" => (true, 4),
        "u8" => (false, 8),
        "i8" => (true, 8),
        other => {
            return Err(format!(
                "dtype {other:?} is not supported: images must be uint8 and labels integers"
            ));
        }
    };
    Ok(Dtype {
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
    let data = if dtype.bytes == 1 && !dtype.signed {
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
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            u8::try_from(l).map_err(|_| bad(format!("label {l} at sample {i} is not in 0..256")))
        })
        .collect()
}

pub(super) fn images_of(array: NpyArray, file: &str) -> Result<(InputShape, Vec<u8>)> {
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
    match array.data {
        NpyData::U8(v) => Ok((shape, v)),
        NpyData::Int(_) => Err(bad("images must be uint8".into())),
    }
}

fn split(dir: &Path, which: &str) -> Result<(InputShape, Vec<u8>, Vec<u8>)> {
    let (images, images_file) = read(dir, &format!("{which}_images.npy"))?;
    let (labels, labels_file) = read(dir, &format!("{which}_labels.npy"))?;
    let (shape, pixels) = images_of(images, &images_file)?;
    Ok((shape, pixels, labels_of(labels, &labels_file)?))
}

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
    (shape, train_images, train_labels): (InputShape, Vec<u8>, Vec<u8>),
    (test_shape, test_images, test_labels): (InputShape, Vec<u8>, Vec<u8>),
) -> Result<TrainTest> {
    if test_shape != shape {
        return Err(KernelError::DatasetInvalid {
            name,
            reason: format!("train images are {shape:?} but test images {test_shape:?}"),
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
        assert_eq!(data.train.image(1)[0], 48);
        let grey: Vec<u8> = vec![7; 2 * 3 * 3];
        let a = parse_npy(&encode_npy("|u1", &[2, 3, 3], &grey), "g").unwrap();
        assert_eq!((a.shape, a.data), (vec![2, 3, 3], NpyData::U8(grey)));
        let neg = parse_npy(&encode_npy("<i2", &[1], &(-3i16).to_le_bytes()), "n").unwrap();
        assert_eq!(neg.data, NpyData::Int(vec![-3]));
    }

    #[test]
    fn files_that_are_not_what_they_claim_are_named_with_the_problem() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04not npy".to_vec(), "no \\x93NUMPY magic"),
            (
                encode_npy("<f4", &[2], &[0; 8]),
                "dtype \"f4\" is not supported",
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
        assert!(err.contains("but test images"), "{err}");
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
