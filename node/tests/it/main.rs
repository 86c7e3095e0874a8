//! The crate's integration tests, one binary: each file below was a
//! test binary of its own, and linking them one by one was most of a
//! test build (docs/benchmarks.md, "Build and test times").

mod api;
mod api_limits;
mod cli;
mod cluster;
mod common;
mod connection_pinning;
mod consortium;
mod cuda_probe_cli;
mod dashboard_api;
mod disk_full;
mod hostile;
mod job_cli;
mod jobs_churn;
mod jobs_common;
mod jobs_e2e;
mod ledger_crash;
mod market_cli;
#[path = "../../../sdk/tests/mock/mod.rs"]
mod mock;
mod relay;
mod watchdog;
mod wire_spec;
