//! The crate's integration tests, one binary: each file below was a
//! test binary of its own, and linking them one by one was most of a
//! test build (docs/benchmarks.md, "Build and test times").

mod common;
mod gradcheck;
mod gradcheck_layers;
mod hostile;
mod int8;
mod ops;
mod parity;
mod parity_layers;
mod properties;
mod simd_paths;
mod training;
