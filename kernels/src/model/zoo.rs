//! The model zoo. Jobs name a model from here; they never ship code.
//!
//! Every model is a plain sequence of layers, numbered the way a PyTorch
//! `nn.Sequential` numbers its children, so parameter names (`"3.weight"`)
//! match PyTorch's state dict.

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{KernelError, Result};
use crate::init::Init;
use crate::layers::{Conv2d, Flatten, Layer, Linear, MaxPool2d, Relu};
use crate::rng::SplitMix64;

/// Which network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Flatten, Linear(in, classes).
    LogReg,
    /// Flatten, then Linear+ReLU per hidden width, then Linear(.., classes).
    Mlp { hidden: Vec<usize> },
    /// The seed paper's CNN: three blocks of Conv3x3(pad 1)+ReLU+MaxPool2,
    /// with 32, 64 and 128 channels, then Flatten, Linear(.., 128), ReLU,
    /// Linear(128, classes).
    Cnn,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arch::LogReg => write!(f, "logreg"),
            Arch::Mlp { hidden } => {
                let widths: Vec<String> = hidden.iter().map(|w| w.to_string()).collect();
                write!(f, "mlp({})", widths.join("-"))
            }
            Arch::Cnn => write!(f, "cnn"),
        }
    }
}

/// Channels, height and width of one input sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputShape {
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// A complete model description: architecture, input and class count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub input: InputShape,
    pub classes: usize,
}

/// The MLP hidden widths used when none are given.
pub const DEFAULT_MLP_HIDDEN: [usize; 2] = [256, 128];
/// Width of the CNN's hidden fully connected layer.
const CNN_FC: usize = 128;
const CNN_CHANNELS: [usize; 3] = [32, 64, 128];

impl ModelSpec {
    /// A model for 28x28 greyscale, 10-class inputs (Fashion-MNIST).
    pub fn fashion_mnist(arch: Arch) -> Self {
        ModelSpec {
            arch,
            input: InputShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            classes: 10,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(KernelError::config("model spec", reason));
        let i = self.input;
        if i.channels == 0 || i.height == 0 || i.width == 0 {
            return bad(format!("zero input dimension in {i:?}"));
        }
        if i.channels > 16 || i.height > 512 || i.width > 512 {
            return bad(format!("input {i:?} larger than 16x512x512"));
        }
        if self.classes < 2 || self.classes > 10_000 {
            return bad(format!("{} classes, need 2..=10000", self.classes));
        }
        match &self.arch {
            Arch::Mlp { hidden } if hidden.is_empty() || hidden.len() > 8 => bad(format!(
                "MLP with {} hidden layers, need 1..=8",
                hidden.len()
            )),
            Arch::Mlp { hidden } if hidden.iter().any(|&w| w == 0 || w > 8192) => {
                bad(format!("MLP hidden widths {hidden:?} not all in 1..=8192"))
            }
            Arch::Cnn if i.height < 8 || i.width < 8 => bad(format!(
                "the CNN pools three times and needs 8x8 inputs, got {i:?}"
            )),
            _ => Ok(()),
        }
    }

    /// Number of parameters, computed from the spec alone (nothing is
    /// allocated), so oversized jobs can be refused before building them.
    pub fn param_count(&self) -> u128 {
        let linear = |i: usize, o: usize| (i as u128 + 1) * o as u128;
        match &self.arch {
            Arch::LogReg => linear(self.input.numel(), self.classes),
            Arch::Mlp { hidden } => {
                let mut width = self.input.numel();
                let mut total = 0;
                for &h in hidden {
                    total += linear(width, h);
                    width = h;
                }
                total + linear(width, self.classes)
            }
            Arch::Cnn => {
                let mut channels = self.input.channels;
                let mut total = 0;
                for out in CNN_CHANNELS {
                    total += linear(channels * 9, out);
                    channels = out;
                }
                let (h, w) = self.cnn_final_hw();
                total + linear(channels * h * w, CNN_FC) + linear(CNN_FC, self.classes)
            }
        }
    }

    /// Values each layer's input holds for one sample, in layer order:
    /// what [`Model::training_bytes`](crate::model::Model::training_bytes)
    /// counts, computed from the spec alone so a worker can tell before it
    /// bids (and before anything is allocated) whether a job fits.
    pub fn layer_inputs_per_sample(&self) -> Vec<u128> {
        let numel = self.input.numel() as u128;
        let mut inputs = Vec::new();
        match &self.arch {
            Arch::LogReg => inputs.extend([numel, numel]),
            Arch::Mlp { hidden } => {
                inputs.push(numel);
                let mut width = numel;
                for &h in hidden {
                    inputs.extend([width, h as u128]);
                    width = h as u128;
                }
                inputs.push(width);
            }
            Arch::Cnn => {
                let (mut c, mut h, mut w) = (
                    self.input.channels as u128,
                    self.input.height as u128,
                    self.input.width as u128,
                );
                for out in CNN_CHANNELS {
                    let out = out as u128;
                    inputs.extend([c * h * w, out * h * w, out * (h / 2) * (w / 2)]);
                    (c, h, w) = (out, h / 2, w / 2);
                }
                inputs.extend([c * h * w, c * h * w, CNN_FC as u128, CNN_FC as u128]);
            }
        }
        inputs
    }

    /// Bytes a trainer of this model plans to use at `batch` (see
    /// [`Model::training_bytes`](crate::model::Model::training_bytes)).
    pub fn training_bytes(&self, batch: usize) -> u128 {
        let per_item: u128 = self.layer_inputs_per_sample().iter().sum::<u128>() * 2;
        let logits = self.classes as u128 * 2;
        4 * ((per_item + logits) * batch as u128 + 4 * self.param_count())
    }

    /// Spatial size after the CNN's three poolings (each rounds down).
    pub fn cnn_final_hw(&self) -> (usize, usize) {
        (self.input.height / 8, self.input.width / 8)
    }

    /// Builds the layers with weights drawn from `seed`, each paired with
    /// its PyTorch index. Layer `i` draws from its own stream, so layer
    /// sizes do not shift each other's init.
    pub(crate) fn build<B: Backend>(
        &self,
        backend: &B,
        seed: u64,
    ) -> Result<Vec<(usize, Layer<B>)>> {
        self.validate()?;
        let mut layers: Vec<Layer<B>> = Vec::new();
        let rng = |index: usize| SplitMix64::derive(seed, index as u64);
        let linear = |layers: &Vec<Layer<B>>, i: usize, o: usize, init: Init| {
            Linear::new(backend, i, o, init, &mut rng(layers.len())).map(Layer::Linear)
        };
        // PyTorch order unless a block says otherwise.
        let mut torch_order: Vec<usize> = Vec::new();
        match &self.arch {
            Arch::LogReg => {
                layers.push(Layer::Flatten(Flatten::new(backend)?));
                layers.push(linear(
                    &layers,
                    self.input.numel(),
                    self.classes,
                    Init::XavierUniform,
                )?);
            }
            Arch::Mlp { hidden } => {
                layers.push(Layer::Flatten(Flatten::new(backend)?));
                let mut width = self.input.numel();
                for &h in hidden {
                    layers.push(linear(&layers, width, h, Init::KaimingNormal)?);
                    layers.push(Layer::Relu(Relu::new(backend)?));
                    width = h;
                }
                layers.push(linear(&layers, width, self.classes, Init::XavierUniform)?);
            }
            Arch::Cnn => {
                let mut channels = self.input.channels;
                for out in CNN_CHANNELS {
                    let conv = Conv2d::new(
                        backend,
                        channels,
                        out,
                        3,
                        1,
                        1,
                        Init::KaimingNormal,
                        &mut rng(layers.len()),
                    )?;
                    let at = layers.len();
                    layers.push(Layer::Conv2d(conv));
                    layers.push(Layer::MaxPool2d(MaxPool2d::new(backend, 2, 2)?));
                    layers.push(Layer::Relu(Relu::new(backend)?));
                    torch_order.extend([at, at + 2, at + 1]);
                    channels = out;
                }
                layers.push(Layer::Flatten(Flatten::new(backend)?));
                let (h, w) = self.cnn_final_hw();
                layers.push(linear(
                    &layers,
                    channels * h * w,
                    CNN_FC,
                    Init::KaimingNormal,
                )?);
                layers.push(Layer::Relu(Relu::new(backend)?));
                layers.push(linear(&layers, CNN_FC, self.classes, Init::XavierUniform)?);
            }
        }
        while torch_order.len() < layers.len() {
            torch_order.push(torch_order.len());
        }
        Ok(torch_order.into_iter().zip(layers).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;
    use crate::test_utils::cpu_backend;

    #[test]
    fn training_bytes_from_the_spec_match_the_built_model() {
        let inputs = [
            MNIST,
            CIFAR,
            InputShape {
                channels: 2,
                height: 13,
                width: 9,
            },
        ];
        let archs = [
            Arch::LogReg,
            Arch::Mlp {
                hidden: vec![64, 32, 16],
            },
            Arch::Cnn,
        ];
        for input in inputs {
            for arch in archs.clone() {
                let spec = ModelSpec {
                    arch,
                    input,
                    classes: 7,
                };
                let model = Model::new(&cpu_backend(), &spec, 1).unwrap();
                for batch in [1, 32, 100] {
                    assert_eq!(
                        spec.training_bytes(batch),
                        model.training_bytes(batch),
                        "{spec:?} batch {batch}"
                    );
                }
            }
        }
    }

    fn count(arch: Arch, input: InputShape) -> usize {
        let spec = ModelSpec {
            arch,
            input,
            classes: 10,
        };
        Model::new(&cpu_backend(), &spec, 1).unwrap().param_count()
    }

    const MNIST: InputShape = InputShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    const CIFAR: InputShape = InputShape {
        channels: 3,
        height: 32,
        width: 32,
    };

    #[test]
    fn parameter_counts_match_the_documented_shapes() {
        assert_eq!(count(Arch::LogReg, MNIST), 784 * 10 + 10);
        let mlp = Arch::Mlp {
            hidden: DEFAULT_MLP_HIDDEN.to_vec(),
        };
        assert_eq!(count(mlp, MNIST), 235_146);
        assert_eq!(count(Arch::Cnn, MNIST), 241_546);
        assert_eq!(count(Arch::Cnn, CIFAR), 356_810);
        for arch in [
            Arch::LogReg,
            Arch::Cnn,
            Arch::Mlp {
                hidden: vec![7, 300, 2],
            },
        ] {
            for input in [MNIST, CIFAR] {
                let spec = ModelSpec {
                    arch: arch.clone(),
                    input,
                    classes: 10,
                };
                assert_eq!(spec.param_count(), count(arch.clone(), input) as u128);
            }
        }
    }

    #[test]
    fn cnn_output_shapes_follow_the_table() {
        let spec = ModelSpec {
            arch: Arch::Cnn,
            input: CIFAR,
            classes: 10,
        };
        let model = Model::new(&cpu_backend(), &spec, 1).unwrap();
        let flatten_in = model
            .layers()
            .iter()
            .position(|l| matches!(l, crate::layers::Layer::Flatten(_)))
            .unwrap();
        assert_eq!(model.layer_input_shape(flatten_in).dims(), &[1, 4, 4, 128]);
        assert_eq!(
            model.pytorch_modules(),
            vec![
                "Conv2d(3, 32, kernel_size=3, stride=1, padding=1)",
                "ReLU()",
                "MaxPool2d(2, stride=2)",
                "Conv2d(32, 64, kernel_size=3, stride=1, padding=1)",
                "ReLU()",
                "MaxPool2d(2, stride=2)",
                "Conv2d(64, 128, kernel_size=3, stride=1, padding=1)",
                "ReLU()",
                "MaxPool2d(2, stride=2)",
                "Flatten()",
                "Linear(2048, 128)",
                "ReLU()",
                "Linear(128, 10)",
            ]
        );
    }
}
