//! Update compression for the network: what a worker sends back after a
//! round, and how the coordinator reads it.
//!
//! A [`Compressor`] keeps the worker's error-feedback residual across
//! rounds; [`decode_update`] turns bytes from an untrusted peer back into
//! a parameter delta, checking every field first.
//!
//! Wire layout (all integers little-endian):
//! ```text
//! offset size  field
//! 0      4     magic "FGUP"
//! 4      1     version = 1
//! 5      1     scheme: 0 fp32, 1 int8, 2 top-k
//! 6      2     reserved = 0
//! 8      8     len: number of parameters
//! 16     4     fp32: 0 | int8: block size | top-k: k, the entries kept
//! 20     ...   fp32: len f32 | int8: ceil(len/block) f32 scales, then len i8
//!              codes | top-k: k u32 indices (strictly increasing), then k f32
//! ```

pub mod int8;
pub mod robust;
pub mod topk;

use crate::error::{KernelError, Result};

const MAGIC: &[u8; 4] = b"FGUP";
const VERSION: u8 = 1;
const HEADER: usize = 20;
/// Largest update accepted: 2^28 parameters (1 GiB as fp32).
pub const MAX_UPDATE_PARAMS: usize = 1 << 28;

/// How an update is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain little-endian f32: 4 bytes per parameter, exact.
    Fp32,
    /// int8 codes with one f32 scale per `block` values, error feedback.
    Int8 { block: u32 },
    /// The largest `permille`/1000 of entries as (u32 index, f32 value),
    /// error feedback.
    TopK { permille: u32 },
}

impl Compression {
    pub fn validate(&self) -> Result<()> {
        match *self {
            Compression::Int8 { block } if block == 0 || block > 1 << 20 => Err(
                KernelError::config("int8 block size", format!("{block} not in 1..=2^20")),
            ),
            Compression::TopK { permille } if permille == 0 || permille > 1000 => Err(
                KernelError::config("top-k permille", format!("{permille} not in 1..=1000")),
            ),
            _ => Ok(()),
        }
    }

    /// Exact encoded size of an update of `len` parameters.
    pub fn encoded_len(&self, len: usize) -> usize {
        HEADER
            + match *self {
                Compression::Fp32 => 4 * len,
                Compression::Int8 { block } => 4 * int8::blocks(len, block as usize) + len,
                Compression::TopK { permille } => 8 * topk::kept(len, permille),
            }
    }

    /// Wire bytes per parameter for an update of `len` parameters.
    pub fn bytes_per_param(&self, len: usize) -> f64 {
        self.encoded_len(len) as f64 / len.max(1) as f64
    }
}

/// A worker's encoder: holds the error-feedback residual between rounds.
#[derive(Debug, Clone)]
pub struct Compressor {
    scheme: Compression,
    residual: Vec<f32>,
}

impl Compressor {
    pub fn new(scheme: Compression) -> Result<Self> {
        scheme.validate()?;
        Ok(Compressor {
            scheme,
            residual: Vec::new(),
        })
    }

    pub fn scheme(&self) -> Compression {
        self.scheme
    }

    /// What has not been sent yet (empty before the first update).
    pub fn residual(&self) -> &[f32] {
        &self.residual
    }

    /// A compressor carrying `residual`, as a worker's was before a round
    /// (what an auditor needs to encode a revealed delta the same way).
    pub fn with_residual(scheme: Compression, residual: Vec<f32>) -> Result<Self> {
        let mut compressor = Compressor::new(scheme)?;
        compressor.residual = residual;
        Ok(compressor)
    }

    /// Forgets the residual, e.g. when a job restarts from a checkpoint.
    pub fn reset(&mut self) {
        self.residual.clear();
    }

    /// Encodes `update` (plus the carried residual). A non-finite input is
    /// refused before any state changes.
    pub fn encode(&mut self, update: &[f32]) -> Result<Vec<u8>> {
        if update.len() > MAX_UPDATE_PARAMS {
            return Err(KernelError::config(
                "update length",
                format!("{} exceeds {MAX_UPDATE_PARAMS}", update.len()),
            ));
        }
        if let Some((i, &v)) = update.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(KernelError::NonFinite {
                what: format!("update element {i}"),
                value: v,
            });
        }
        if self.residual.len() != update.len() {
            self.residual = vec![0.0; update.len()];
        }
        let len = update.len();
        let mut out = Vec::with_capacity(self.scheme.encoded_len(len));
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        match self.scheme {
            Compression::Fp32 => {
                header(&mut out, 0, len, 0);
                for v in update {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Compression::Int8 { block } => {
                header(&mut out, 1, len, block);
                let block = block as usize;
                let mut codes = vec![0i8; len];
                let mut scales = vec![0.0f32; int8::blocks(len, block)];
                int8::quantize_ef(update, &mut self.residual, block, &mut codes, &mut scales)?;
                for s in &scales {
                    out.extend_from_slice(&s.to_le_bytes());
                }
                out.extend(codes.iter().map(|&c| c as u8));
            }
            Compression::TopK { permille } => {
                for (r, u) in self.residual.iter_mut().zip(update) {
                    *r += u;
                }
                let k = topk::kept(len, permille);
                let (indices, values) = topk::select(&mut self.residual, k);
                header(&mut out, 2, len, k as u32);
                for i in &indices {
                    out.extend_from_slice(&i.to_le_bytes());
                }
                for v in &values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        debug_assert_eq!(out.len(), self.scheme.encoded_len(len));
        Ok(out)
    }
}

fn header(out: &mut Vec<u8>, scheme: u8, len: usize, param: u32) {
    out.push(scheme);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(&param.to_le_bytes());
}

fn fail<T>(reason: impl Into<String>) -> Result<T> {
    Err(KernelError::UpdateDecode(reason.into()))
}

fn f32_at(bytes: &[u8], i: usize) -> f32 {
    f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
}

/// The scheme in the header (for top-k, `permille` is left 0: the header
/// carries k instead).
fn peek_scheme(bytes: &[u8]) -> Result<Compression> {
    if bytes.len() < HEADER {
        return fail(format!(
            "{} bytes, shorter than the {HEADER}-byte header",
            bytes.len()
        ));
    }
    if &bytes[..4] != MAGIC {
        return fail(format!("bad magic {:02x?}", &bytes[..4]));
    }
    if bytes[4] != VERSION {
        return fail(format!("unknown version {}", bytes[4]));
    }
    if bytes[6..8] != [0, 0] {
        return fail("reserved bytes are not zero");
    }
    let param = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    match bytes[5] {
        0 if param == 0 => Ok(Compression::Fp32),
        0 => fail(format!("fp32 parameter field is {param}, expected 0")),
        1 => {
            let scheme = Compression::Int8 { block: param };
            scheme
                .validate()
                .map_err(|e| KernelError::UpdateDecode(e.to_string()))?;
            Ok(scheme)
        }
        // For top-k the field is k, not permille; report it as such.
        2 => Ok(Compression::TopK { permille: 0 }),
        other => fail(format!("unknown scheme {other}")),
    }
}

/// Decodes an update from an untrusted peer. `expected_len` is the model's
/// parameter count; anything else is refused, as is any size, index or
/// value that does not fit.
pub fn decode_update(bytes: &[u8], expected_len: usize) -> Result<Vec<f32>> {
    let scheme = peek_scheme(bytes)?;
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if len != expected_len as u64 {
        return fail(format!("{len} parameters, the model has {expected_len}"));
    }
    let len = expected_len;
    let param = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
    let body = &bytes[HEADER..];
    let mut out = vec![0.0f32; len];
    match scheme {
        Compression::Fp32 => {
            if body.len() != 4 * len {
                return fail(format!(
                    "fp32 body is {} bytes, expected {}",
                    body.len(),
                    4 * len
                ));
            }
            for (i, o) in out.iter_mut().enumerate() {
                *o = f32_at(body, i);
            }
        }
        Compression::Int8 { .. } => {
            let nblocks = int8::blocks(len, param);
            let want = 4 * nblocks + len;
            if body.len() != want {
                return fail(format!(
                    "int8 body is {} bytes, expected {want}",
                    body.len()
                ));
            }
            let scales: Vec<f32> = (0..nblocks).map(|b| f32_at(body, b)).collect();
            if let Some(b) = scales.iter().position(|s| !s.is_finite() || *s < 0.0) {
                return fail(format!("scale of block {b} is {}", scales[b]));
            }
            let codes: Vec<i8> = body[4 * nblocks..].iter().map(|&c| c as i8).collect();
            if codes.contains(&i8::MIN) {
                return fail("int8 code -128 is outside the symmetric range");
            }
            int8::dequantize(&codes, &scales, param, &mut out)?;
        }
        Compression::TopK { .. } => {
            let k = param;
            if k > len {
                return fail(format!("top-k keeps {k} of {len} entries"));
            }
            if body.len() != 8 * k {
                return fail(format!(
                    "top-k body is {} bytes, expected {}",
                    body.len(),
                    8 * k
                ));
            }
            let mut previous: Option<u32> = None;
            for j in 0..k {
                let index = u32::from_le_bytes(body[4 * j..4 * j + 4].try_into().expect("4"));
                if index as usize >= len || previous.is_some_and(|p| index <= p) {
                    return fail(format!(
                        "top-k index {index} at position {j} is out of range or not increasing"
                    ));
                }
                previous = Some(index);
                out[index as usize] = f32_at(&body[4 * k..], j);
            }
        }
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return fail(format!("element {i} is {}", out[i]));
    }
    Ok(out)
}

/// Sample-weighted mean of worker deltas, in f64 for stability. Every
/// delta must have the same length; weights are sample counts.
pub fn weighted_mean(deltas: &[(&[f32], u64)]) -> Result<Vec<f32>> {
    let Some(((first, _), _)) = deltas.split_first() else {
        return Err(KernelError::config("aggregation", "no updates to average"));
    };
    let len = first.len();
    let total: u64 = deltas.iter().map(|(_, w)| *w).sum();
    if total == 0 {
        return Err(KernelError::config(
            "aggregation",
            "total sample count is zero",
        ));
    }
    let mut acc = vec![0.0f64; len];
    for (delta, weight) in deltas {
        if delta.len() != len {
            return Err(KernelError::shape("weighted_mean", len, delta.len()));
        }
        let w = *weight as f64 / total as f64;
        for (a, &d) in acc.iter_mut().zip(delta.iter()) {
            *a += w * f64::from(d);
        }
    }
    Ok(acc.into_iter().map(|v| v as f32).collect())
}
