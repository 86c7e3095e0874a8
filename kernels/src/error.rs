//! The crate's one error type. Every variant names what went wrong and
//! with which input, so a node can log it next to the peer or file that
//! caused it.

use std::path::PathBuf;

/// Everything that can go wrong in the training engine.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Two shapes that must agree do not (API misuse or a hostile input).
    #[error("shape mismatch in {op}: expected {expected}, got {found}")]
    ShapeMismatch {
        op: &'static str,
        expected: String,
        found: String,
    },
    /// A configuration value is out of its allowed range.
    #[error("invalid {what}: {reason}")]
    InvalidConfig { what: &'static str, reason: String },
    /// A loss, gradient, parameter or update became NaN or infinite.
    #[error("non-finite value ({value}) in {what}")]
    NonFinite { what: String, value: f32 },
    /// The backend could not be created or failed at run time.
    #[error("backend {backend}: {reason}")]
    Backend {
        backend: &'static str,
        reason: String,
    },
    /// CUDA cannot be used on this machine, and why (see [`crate::probe`]).
    #[error("CUDA is not usable: {0}")]
    CudaUnavailable(crate::probe::CudaUnavailable),
    /// A CUDA driver, NVRTC or cuBLAS call failed.
    #[error("CUDA {op}: {source}")]
    Cuda {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// An IDX file is malformed.
    #[error("IDX {source_name}: {reason}")]
    Idx {
        source_name: String,
        reason: IdxFault,
    },
    /// A dataset directory lacks one of its files.
    #[error("dataset file not found: {path} (looked for the raw and the .gz name)")]
    DatasetFileMissing { path: PathBuf },
    /// Training stopped between two steps because its cancel flag was set
    /// ([`crate::Trainer::set_cancel`]).
    #[error("training cancelled")]
    Cancelled,
    /// Images and labels of one split disagree, or a label is out of range.
    #[error("dataset {name}: {reason}")]
    DatasetInvalid { name: String, reason: String },
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Shard bytes that do not follow the canonical layout.
    #[error("shard bytes: {0}")]
    ShardDecode(String),
    /// Compressed-update bytes that do not decode.
    #[error("update bytes: {0}")]
    UpdateDecode(String),

    /// A safetensors file that cannot be parsed at all.
    #[error("model file: {0}")]
    ModelFileFormat(String),
    /// A model file lacks a tensor the model needs.
    #[error("model file: missing tensor {name:?}")]
    MissingTensor { name: String },
    /// A model file holds a tensor the model does not have.
    #[error("model file: unexpected tensor {name:?}")]
    UnexpectedTensor { name: String },
    /// A model file's tensor has the wrong shape or dtype.
    #[error("model file: tensor {name:?} is {found}, expected {expected}")]
    TensorMismatch {
        name: String,
        expected: String,
        found: String,
    },
}

/// What exactly is wrong with an IDX file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdxFault {
    #[error("file is {0} bytes, shorter than an IDX header")]
    TooShort(usize),
    #[error("bad magic {0:#010x} (expected 0x0000080N with N dimensions)")]
    BadMagic(u32),
    #[error("element type {0:#04x} is not unsigned byte (0x08)")]
    UnsupportedType(u8),
    #[error("dimensions {dims:?} are absurd: {reason}")]
    AbsurdDims { dims: Vec<u64>, reason: String },
    #[error("truncated: header promises {expected} data bytes, file has {found}")]
    Truncated { expected: usize, found: usize },
    #[error("{0} bytes after the data")]
    TrailingBytes(usize),
    #[error("gzip stream is corrupt: {0}")]
    Gzip(String),
    #[error("decompressed size exceeds the {0} byte limit")]
    TooLarge(usize),
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

impl KernelError {
    pub(crate) fn shape(op: &'static str, expected: impl ToString, found: impl ToString) -> Self {
        KernelError::ShapeMismatch {
            op,
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    pub(crate) fn config(what: &'static str, reason: impl Into<String>) -> Self {
        KernelError::InvalidConfig {
            what,
            reason: reason.into(),
        }
    }
}
