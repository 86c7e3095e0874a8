//! What the examples share.

use fairgrid_kernels::{Arch, InputShape, ModelSpec};

/// The MLP 784-128-10 on Fashion-MNIST's 28x28 images.
pub fn mlp_128() -> ModelSpec {
    ModelSpec {
        arch: Arch::Mlp { hidden: vec![128] },
        input: InputShape {
            channels: 1,
            height: 28,
            width: 28,
        },
        classes: 10,
    }
}
