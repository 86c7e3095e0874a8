//! # fairgrid-node
//!
//! The `fairgrid` daemon that contributors run, and its command-line
//! interface. The binary is a thin shell over [`cli`]; the daemon's parts
//! live in their own modules so that the testnet can drive them too.
//!
//! The node never executes code received from the network: jobs name a
//! model from the kernels' zoo.

pub mod cli;
