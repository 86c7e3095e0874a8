//! # fairgrid-kernels
//!
//! The training engine every fairgrid node runs: f32 tensors, a
//! [`Backend`] trait with a CPU backend (always built) and a CUDA backend
//! (behind the `cuda` feature, on by default, probed at run time), layers
//! with forward and backward passes, the model zoo, optimizers, update
//! compression and dataset loaders. Jobs name a model from the zoo; this
//! crate never runs code that came over the network.
//!
//! Main types:
//! - [`Backend`], [`CpuBackend`], `backend::cuda::CudaBackend`: where
//!   tensors live and ops run; [`probe`] says which devices are usable
//!   (and, for CUDA, why not) and how fast they are.
//! - [`ModelSpec`] / [`Model`]: a zoo model, its flat parameter buffer
//!   (`params_flat`, `set_params_flat`) and safetensors files.
//! - [`Trainer`]: training steps, epochs, evaluation, and
//!   [`Trainer::train_local`], the local-SGD round a worker runs.
//! - [`Compressor`] / [`decode_update`]: updates on the wire (fp32, int8
//!   with error feedback, top-k).
//! - [`Dataset`], [`Shard`]: data, hashed canonical shards, the IDX reader
//!   and the built-in Fashion-MNIST subset.
//!
//! It must never: execute received code, panic on bad input (every file,
//! byte string and shape is checked and refused with a [`KernelError`]),
//! panic when CUDA is missing or broken (it is probed before cudarc is
//! called), or let a NaN/Inf loss or update pass silently.

pub mod backend;
pub mod compress;
pub mod data;
mod error;
pub mod init;
pub mod layers;
pub mod model;
pub mod optim;
pub mod probe;
pub mod rng;
pub mod tensor;
#[doc(hidden)]
pub mod test_utils;
pub mod train;

pub use backend::Backend;
pub use backend::cpu::CpuBackend;
pub use compress::{Compression, Compressor, decode_update, weighted_mean};
pub use data::{Dataset, FashionMnist, Samples, Shard, ShardSet, TrainTest};
pub use error::{IdxFault, KernelError, Result};
pub use model::{Arch, InputShape, Model, ModelSpec, load_safetensors, save_safetensors};
pub use optim::{Optimizer, OptimizerConfig};
pub use tensor::{Shape, Tensor};
pub use train::{LocalUpdate, MAX_TRAINING_BYTES, Metrics, Trainer};
