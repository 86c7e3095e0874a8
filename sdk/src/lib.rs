//! # fairgrid-sdk
//!
//! Client library for a fairgrid node's HTTP API: submit training jobs,
//! follow their progress, fetch the trained model, and query allocations and
//! the ledger. Any language can use the same API with plain HTTP; this crate
//! is the Rust way in.
