//! # fairgrid-testnet
//!
//! Runs real fairgrid node processes on 127.0.0.1 and drives scenarios
//! through the SDK, the way a developer would:
//!
//! - [`demo`]: a cluster of owners and nodes, one job, its allocation
//!   against the caps, the rounds, the model, the ledgers;
//! - [`chaos`]: the same with workers killed mid-job;
//! - [`bench`]: the job benchmarks (overhead, bytes, recovery, accuracy);
//! - [`up`]: a cluster that stays up for trying the CLI by hand;
//! - [`wan`]: nodes behind NATs in network namespaces (root only).
//!
//! [`cluster::Cluster`] starts the processes (fresh data dirs, owner keys
//! and certificates, one bootstrap, mDNS off, OS-chosen ports) and is the
//! guard that stops them: it must never leave a process behind, whether
//! the scenario ends, fails, panics or is interrupted. The testnet binary
//! doubles as the node binary ([`launcher`]), so `cargo run -p
//! fairgrid-testnet` needs nothing else built.

pub mod bench;
pub mod cgroup;
pub mod chaos;
pub mod cluster;
pub mod demo;
pub mod hetero;
pub mod job;
pub mod launcher;
pub mod many;
pub mod owners;
pub mod scenario;
pub mod soak;
pub mod up;
pub mod wan;
