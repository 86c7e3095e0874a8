//! # fairgrid-node
//!
//! The `fairgrid` daemon that contributors run, and its command-line
//! interface. The binary is a thin shell over [`cli`]; the daemon's parts
//! live in their own modules so that tests, benchmarks and the testnet can
//! drive them in-process:
//!
//! - [`net`]: libp2p plumbing (one event loop owns the swarm; a cloneable
//!   [`net::NetworkClient`] talks to it over bounded channels);
//! - [`app`]: what the node does with network events: advert validation
//!   and publishing, consortium admission, request handling;
//! - [`jobs`]: training jobs: coordinator, worker, checkpoints, credits,
//!   built from a narrow [`jobs::JobsContext`] (no `app`, `api` or `state`);
//! - [`state`]: the state the node's tasks and the API share;
//! - [`adverts`]: capacity probe, advert issuing, validation, live table;
//! - [`ledger`]: the signed hash chain in sled, group-committed;
//! - [`api`]: the HTTP API; [`metrics`]: its Prometheus counters;
//! - [`config`], [`datadir`]: configuration and on-disk layout.
//!
//! The node never executes code received from the network: jobs name a
//! model from the kernels' zoo. Its event loops never block on disk or CPU
//! work.

pub mod adverts;
mod allocator;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod error;
pub mod fairness;
pub mod idle;
pub mod jobs;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod state;
pub mod text;
pub mod watchdog;

pub use error::{NodeError, Result};
