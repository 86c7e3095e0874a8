//! IDX files (the MNIST family's format), raw or gzipped.
//!
//! Layout: two zero bytes, an element-type byte, a dimension count, then
//! one big-endian u32 per dimension, then the elements. Only unsigned
//! bytes (type 0x08) are supported. Everything about the header is checked
//! before any allocation sized by it, and gzip input is decompressed with
//! a hard size limit.

use std::io::Read;
use std::path::Path;

use crate::error::{IdxFault, KernelError, Result};

/// Largest decoded IDX payload accepted (1 GiB).
pub const MAX_IDX_BYTES: usize = 1 << 30;
const MAX_DIMS: usize = 4;

/// A decoded IDX array of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn fault(name: &str, reason: IdxFault) -> KernelError {
    KernelError::Idx {
        source_name: name.to_string(),
        reason,
    }
}

/// Decompresses when `bytes` starts with the gzip magic; returns the
/// input unchanged otherwise.
fn maybe_gunzip<'a>(bytes: &'a [u8], name: &str) -> Result<std::borrow::Cow<'a, [u8]>> {
    if bytes.len() < 2 || bytes[..2] != [0x1f, 0x8b] {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let limit = MAX_IDX_BYTES + 16 + 4 * MAX_DIMS;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| fault(name, IdxFault::Gzip(e.to_string())))?;
    if out.len() > limit {
        return Err(fault(name, IdxFault::TooLarge(limit)));
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Parses IDX bytes (raw or gzipped). `name` is used in errors.
pub fn parse_idx(bytes: &[u8], name: &str) -> Result<IdxArray> {
    let raw_owned = maybe_gunzip(bytes, name)?;
    let raw: &[u8] = raw_owned.as_ref();
    if raw.len() < 4 {
        return Err(fault(name, IdxFault::TooShort(raw.len())));
    }
    let magic = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let ndims = raw[3] as usize;
    if raw[0] != 0 || raw[1] != 0 || ndims == 0 || ndims > MAX_DIMS {
        return Err(fault(name, IdxFault::BadMagic(magic)));
    }
    if raw[2] != 0x08 {
        return Err(fault(name, IdxFault::UnsupportedType(raw[2])));
    }
    let header = 4 + 4 * ndims;
    if raw.len() < header {
        return Err(fault(name, IdxFault::TooShort(raw.len())));
    }
    let dims64: Vec<u64> = raw[4..header]
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let absurd = |reason: &str| {
        fault(
            name,
            IdxFault::AbsurdDims {
                dims: dims64.clone(),
                reason: reason.to_string(),
            },
        )
    };
    if dims64.contains(&0) {
        return Err(absurd("a dimension is zero"));
    }
    let total = dims64
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&t| t <= MAX_IDX_BYTES as u64)
        .ok_or_else(|| absurd("more than 1 GiB of elements"))?;
    let total = total as usize;
    let body = &raw[header..];
    if body.len() < total {
        return Err(fault(
            name,
            IdxFault::Truncated {
                expected: total,
                found: body.len(),
            },
        ));
    }
    if body.len() > total {
        return Err(fault(name, IdxFault::TrailingBytes(body.len() - total)));
    }
    let dims = dims64.iter().map(|&d| d as usize).collect();
    let data = match raw_owned {
        // Reuse the decompressed buffer instead of copying the payload.
        std::borrow::Cow::Owned(mut bytes) => {
            bytes.drain(..header);
            bytes
        }
        std::borrow::Cow::Borrowed(bytes) => bytes[header..].to_vec(),
    };
    Ok(IdxArray { dims, data })
}

/// Reads `path`, or `path` + ".gz" when `path` does not exist.
pub fn read_idx_file(path: &Path) -> Result<IdxArray> {
    let gz = path.with_file_name(format!(
        "{}.gz",
        path.file_name().map_or("".into(), |n| n.to_string_lossy())
    ));
    let chosen = if path.exists() {
        path.to_path_buf()
    } else if gz.exists() {
        gz
    } else {
        return Err(KernelError::DatasetFileMissing {
            path: path.to_path_buf(),
        });
    };
    let bytes = std::fs::read(&chosen).map_err(|source| KernelError::Io {
        path: chosen.clone(),
        source,
    })?;
    parse_idx(&bytes, &chosen.display().to_string())
}

/// Encodes bytes as raw IDX (used by tests and tools).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip() {
        let bytes = encode_idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let arr = parse_idx(&bytes, "t").unwrap();
        assert_eq!(arr.dims, vec![2, 3]);
        assert_eq!(arr.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn gzip_round_trip() {
        use std::io::Write;
        let raw = encode_idx(&[4], &[9, 8, 7, 6]);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).unwrap();
        let arr = parse_idx(&enc.finish().unwrap(), "t").unwrap();
        assert_eq!(arr.data, vec![9, 8, 7, 6]);
    }
}
