//! # fairgrid-protocol
//!
//! Everything fairgrid peers must agree on byte for byte:
//!
//! - identities: [`Keypair`], [`NodeId`] (a libp2p-compatible ed25519 node
//!   key), [`OwnerId`], owner certificates and the consortium [`TrustPolicy`];
//! - [`Signed<T>`]: payloads signed under a per-kind domain tag, decoded with
//!   a byte limit and no trailing bytes ([`codec`]);
//! - the [`messages`]: capacity adverts, jobs, bids, allocations, rounds;
//! - [`request`]: the job request developers send, and its checks;
//! - [`market`]: the deterministic clearing function and its verifier;
//! - [`fairness`]: concentration metrics over allocations;
//! - [`ledger`]: entry types and hash-chain verification.
//!
//! This crate is pure: no I/O, no clocks, no randomness that is not an
//! input, no async runtime, no networking, no storage. Consensus-relevant
//! code uses integers, checked arithmetic and sorted containers only.

mod bytes;
pub mod cert;
pub mod codec;
mod error;
pub mod fairness;
mod hash;
mod identity;
pub mod ledger;
pub mod market;
pub mod messages;
pub mod request;
mod resources;
mod signed;

pub use cert::{OwnerCertificate, Ownership, Revocation, TrustPolicy};
pub use error::{CertError, ProtocolError, Result};
pub use hash::Hash32;
pub use identity::{IdParseError, Keypair, NodeId, OwnerId, PublicKey, SignatureBytes};
pub use resources::ResourceVec;
pub use signed::{Signed, SignedMessage, signing_input};

/// The wire protocol version every signed message carries.
pub const PROTOCOL_VERSION: u16 = 1;
