//! The protocol crate's one error type.

use crate::Hash32;

/// Everything that can go wrong when decoding, verifying or validating a
/// protocol message. Variants name the input that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{kind}: message of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind}: malformed encoding: {reason}")]
    Malformed { kind: &'static str, reason: String },
    #[error("{kind}: {extra} trailing bytes after the message")]
    TrailingBytes { kind: &'static str, extra: usize },
    #[error("{kind}: protocol version {got} is not supported (this node speaks {supported})")]
    UnsupportedVersion {
        kind: &'static str,
        got: u16,
        supported: u16,
    },
    #[error("{kind}: signature does not verify (wrong key, tampered payload or wrong domain tag)")]
    BadSignature { kind: &'static str },
    #[error("{kind}: signer key is not a valid ed25519 point")]
    BadPublicKey { kind: &'static str },
    #[error("{kind}: field `{field}` is invalid: {reason}")]
    InvalidField {
        kind: &'static str,
        field: &'static str,
        reason: String,
    },
    #[error("certificate: {0}")]
    Certificate(#[from] CertError),
    #[error("ledger chain broken at seq {seq} (entry {entry}): {reason}")]
    Chain {
        seq: u64,
        entry: Hash32,
        reason: String,
    },
}

/// Why an owner certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("certificate is for node {cert_node}, not for {node}")]
    WrongNode { cert_node: String, node: String },
    #[error("certificate not valid until {valid_from} (now {now})")]
    NotYetValid { valid_from: u64, now: u64 },
    #[error("certificate expired at {valid_until} (now {now})")]
    Expired { valid_until: u64, now: u64 },
    #[error("certificate serial {serial} of owner {owner} is revoked")]
    Revoked { owner: String, serial: u64 },
    #[error("owner {owner} is not on the consortium allowlist")]
    NotAllowlisted { owner: String },
    #[error("consortium mode requires an owner certificate")]
    Missing,
    #[error("certificate signature: {0}")]
    Signature(String),
}

pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
