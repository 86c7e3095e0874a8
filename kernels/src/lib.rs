//! # fairgrid-kernels
//!
//! The training engine every fairgrid node runs: f32 tensors, a `Backend`
//! trait with a CPU backend (always built) and a CUDA backend (behind the
//! `cuda` feature, probed at run time), layers with forward and backward
//! passes, the model zoo, optimizers, update compression and dataset
//! loaders. Jobs name a model from the zoo; this crate never runs code that
//! came over the network.

pub mod probe;
