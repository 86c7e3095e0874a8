//! Test doubles for the jobs service, so that whole jobs run in one
//! process without sockets: an in-memory network ([`net::MemoryNet`]),
//! a stand-in for the rest of the node ([`host::TestHost`]), and a
//! cluster of in-process nodes ([`cluster::Cluster`]) with the real
//! coordinator and worker shells, job stores and ledgers (in memory, or
//! on disk to survive a restart). Built for the crate's own tests and,
//! with the `test-utils` feature, for other crates'.

pub mod cluster;
pub mod host;
pub mod net;
pub mod rounds;
pub mod samples;

pub use samples::{sample_spec, spec_with};

#[cfg(test)]
mod auditors;
#[cfg(test)]
mod compressed;
#[cfg(test)]
mod declared;
#[cfg(test)]
mod tabular;
#[cfg(test)]
mod tests;
