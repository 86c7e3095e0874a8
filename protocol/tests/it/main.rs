//! The crate's integration tests, one binary: each file below was a
//! test binary of its own, and linking them one by one was most of a
//! test build (docs/benchmarks.md, "Build and test times").

mod common;
#[macro_use]
mod samples;
mod hostile_bytes;
mod market_epoch;
mod market_instance;
mod market_milp;
mod market_order;
mod market_props;
mod market_signed;
mod market_speed;
mod market_window;
mod messages_props;
