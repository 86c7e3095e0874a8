//! The crate's integration tests, one binary: each file below was a
//! test binary of its own, and linking them one by one was most of a
//! test build (docs/benchmarks.md, "Build and test times").

mod browser;
mod cli;
mod cluster;
mod dashboard;
mod demo;
mod python_client;
mod wan;
