//! The node library's one error type.

use std::path::PathBuf;

use fairgrid_protocol::ProtocolError;

/// What can go wrong inside the daemon's library parts. Binaries wrap it in
/// `anyhow` with context; each variant names the input that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin}: {reason}")]
    Config { origin: String, reason: String },
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("ledger storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("ledger: {0}")]
    Ledger(String),
    #[error("job store: {0}")]
    JobStore(String),
    #[error("ledger entry rejected: {0}")]
    Protocol(#[from] ProtocolError),
    #[error(
        "foreign entry conflicts with a stored one: author {author} seq {seq} was signed twice"
    )]
    Equivocation { author: String, seq: u64 },
    #[error("the ledger writer has stopped")]
    WriterStopped,
    #[error("network: {0}")]
    Network(String),
    #[error("the network event loop has stopped")]
    NetworkStopped,
}

impl NodeError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NodeError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;
