//! The model zoo. Jobs name a model from here; they never ship code.
//!
//! Every model is a plain sequence of layers, numbered the way a PyTorch
//! `nn.Sequential` numbers its children, so parameter names (`"3.weight"`)
//! match PyTorch's state dict.

use serde::{Deserialize, Serialize};

use super::arch::{self, Activ, Checked, LayerSpec, Op};
use crate::backend::{Activation, Backend};
use crate::error::{KernelError, Result};
use crate::init::Init;
use crate::layers::{
    AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, Relu, Residual,
    Smooth,
};
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
    /// A declared list of layers (see [`super::arch`]).
    Layers(Vec<LayerSpec>),
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
            Arch::Layers(layers) => write!(f, "layers({})", layers.len()),
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

/// Most channels of an image input.
pub const MAX_IMAGE_CHANNELS: usize = 16;
/// Largest height and width of an image input.
pub const MAX_IMAGE_SIDE: usize = 512;
/// Most features of a tabular input (`F x 1 x 1`).
pub const MAX_FEATURES: usize = 4096;

impl InputShape {
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// `F x 1 x 1`: a sample of `F` features (tabular data), which the
    /// layers see as features, not as an image.
    pub fn is_features(&self) -> bool {
        self.height == 1 && self.width == 1
    }

    /// Within the bounds every node accepts: an image of at most
    /// 16 x 512 x 512, or at most 4,096 features (the protocol's
    /// `JobSpec` checks the same).
    pub fn check_bounds(&self) -> std::result::Result<(), String> {
        let (c, h, w) = (self.channels, self.height, self.width);
        if c == 0 || h == 0 || w == 0 {
            return Err(format!("zero dimension in {c}x{h}x{w}"));
        }
        if self.is_features() {
            if c > MAX_FEATURES {
                return Err(format!("{c} features, at most {MAX_FEATURES}"));
            }
        } else if c > MAX_IMAGE_CHANNELS || h > MAX_IMAGE_SIDE || w > MAX_IMAGE_SIDE {
            return Err(format!(
                "a {c}x{h}x{w} image is larger than {MAX_IMAGE_CHANNELS}x{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}"
            ));
        }
        Ok(())
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

    /// The architecture as a layer list, in PyTorch's order (the zoo's
    /// models are presets).
    pub fn layer_list(&self) -> Vec<LayerSpec> {
        let op = LayerSpec::Op;
        let linear = |out_features| op(Op::Linear { out_features });
        match &self.arch {
            Arch::LogReg => vec![op(Op::Flatten), linear(self.classes)],
            Arch::Mlp { hidden } => {
                let mut layers = vec![op(Op::Flatten)];
                for &h in hidden {
                    layers.extend([linear(h), op(Op::Relu)]);
                }
                layers.push(linear(self.classes));
                layers
            }
            Arch::Cnn => {
                let mut layers = Vec::new();
                for out_channels in CNN_CHANNELS {
                    layers.extend([
                        op(Op::Conv2d {
                            out_channels,
                            kernel: 3,
                            stride: 1,
                            padding: 1,
                        }),
                        op(Op::Relu),
                        op(Op::MaxPool2d {
                            kernel: 2,
                            stride: 2,
                        }),
                    ]);
                }
                layers.extend([
                    op(Op::Flatten),
                    linear(CNN_FC),
                    op(Op::Relu),
                    linear(self.classes),
                ]);
                layers
            }
            Arch::Layers(layers) => layers.clone(),
        }
    }

    /// Tabular inputs (`F x 1 x 1`) are features, as PyTorch's `[N, F]`.
    fn input_activ(&self) -> Activ {
        if self.input.is_features() {
            return Activ::Flat(self.input.channels);
        }
        Activ::Image {
            c: self.input.channels,
            h: self.input.height,
            w: self.input.width,
        }
    }

    fn checked(&self) -> Result<Checked> {
        arch::check(&self.layer_list(), self.input_activ(), self.classes)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(KernelError::config("model spec", reason));
        let i = self.input;
        if let Err(reason) = i.check_bounds() {
            return bad(format!("input: {reason}"));
        }
        if self.classes < 2 || self.classes > 10_000 {
            return bad(format!("{} classes, need 2..=10000", self.classes));
        }
        match &self.arch {
            Arch::Mlp { hidden } if hidden.is_empty() || hidden.len() > 8 => {
                return bad(format!(
                    "MLP with {} hidden layers, need 1..=8",
                    hidden.len()
                ));
            }
            Arch::Mlp { hidden } if hidden.iter().any(|&w| w == 0 || w > 8192) => {
                return bad(format!("MLP hidden widths {hidden:?} not all in 1..=8192"));
            }
            Arch::Cnn if i.height < 8 || i.width < 8 => {
                return bad(format!(
                    "the CNN pools three times and needs 8x8 inputs, got {i:?}"
                ));
            }
            _ => {}
        }
        self.checked().map(|_| ())
    }

    /// Number of values in the flat buffer (parameters and batch-norm
    /// statistics), computed from the spec alone (nothing is allocated), so
    /// oversized jobs can be refused before building them. `u128::MAX` for
    /// a spec that does not check.
    pub fn param_count(&self) -> u128 {
        self.checked().map_or(u128::MAX, |c| c.params)
    }

    /// Values each layer's input holds for one sample (with, for a
    /// residual block, its inner layers' inputs), in the order layers run:
    /// what [`Model::training_bytes`](crate::model::Model::training_bytes)
    /// counts, computed from the spec alone so a worker can tell before it
    /// bids (and before anything is allocated) whether a job fits. Empty
    /// for a spec that does not check.
    pub fn layer_inputs_per_sample(&self) -> Vec<u128> {
        self.checked().map_or_else(
            |_| Vec::new(),
            |c| {
                c.inputs
                    .iter()
                    .map(|(input, inner)| {
                        input.numel() as u128
                            + inner.iter().map(|a| a.numel() as u128).sum::<u128>()
                    })
                    .collect()
            },
        )
    }

    /// Where the flat buffer holds values no optimizer trains (batch
    /// norm's running mean and variance), from the spec alone: the
    /// coordinator averages these plainly, whatever its outer step.
    pub fn statistics_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let Ok(checked) = self.checked() else {
            return Vec::new();
        };
        let mut ranges = Vec::new();
        let mut offset = 0usize;
        let mut visit = |op: &Op, input: Activ| {
            let count = arch::op_params(op, input) as usize;
            if matches!(op, Op::BatchNorm) {
                let c = count / 4;
                ranges.push(offset + 2 * c..offset + 4 * c);
            }
            offset += count;
        };
        let placed = arch::execution_order(&self.layer_list());
        for (p, (input, inner_inputs)) in placed.iter().zip(&checked.inputs) {
            match &p.spec {
                LayerSpec::Op(op) => visit(op, *input),
                LayerSpec::Residual(ops) => {
                    for (op, x) in ops.iter().zip(inner_inputs) {
                        visit(op, *x);
                    }
                }
            }
        }
        ranges
    }

    /// Bytes a trainer of this model plans to use at `batch` (see
    /// [`Model::training_bytes`](crate::model::Model::training_bytes)).
    pub fn training_bytes(&self, batch: usize) -> u128 {
        let per_item: u128 = self.layer_inputs_per_sample().iter().sum::<u128>() * 2;
        let logits = self.classes as u128 * 2;
        // Saturating: a spec that does not check counts u128::MAX values.
        (per_item + logits)
            .saturating_mul(batch as u128)
            .saturating_add(self.param_count().saturating_mul(4))
            .saturating_mul(4)
    }

    /// Builds the layers with weights drawn from `seed`, each paired with
    /// its PyTorch index. Layer `i` (in the order layers run) draws from
    /// its own stream, so layer sizes do not shift each other's init.
    /// Convolutions and hidden linear layers start Kaiming-normal, the
    /// last linear layer Xavier-uniform, batch norms at the identity.
    pub(crate) fn build<B: Backend>(
        &self,
        backend: &B,
        seed: u64,
    ) -> Result<Vec<(usize, Layer<B>)>> {
        self.validate()?;
        let placed = arch::execution_order(&self.layer_list());
        let last_linear = placed
            .iter()
            .rposition(|p| matches!(p.spec, LayerSpec::Op(Op::Linear { .. })));
        let mut shape = self.input_activ();
        let mut layers = Vec::with_capacity(placed.len());
        for (index, p) in placed.into_iter().enumerate() {
            let layer = match &p.spec {
                LayerSpec::Op(op) => {
                    let init = if Some(index) == last_linear {
                        Init::XavierUniform
                    } else {
                        Init::KaimingNormal
                    };
                    let salt = index as u64;
                    let layer = build_op(backend, op, shape, init, seed, salt)?;
                    shape = op_shape(op, shape);
                    layer
                }
                LayerSpec::Residual(inner) => {
                    let mut built = Vec::with_capacity(inner.len());
                    let mut x = shape;
                    for (j, op) in inner.iter().enumerate() {
                        let salt = ((index as u64 + 1) << 16) | j as u64;
                        built.push(build_op(backend, op, x, Init::KaimingNormal, seed, salt)?);
                        x = op_shape(op, x);
                    }
                    Layer::Residual(Residual::new(backend, built)?)
                }
            };
            layers.push((p.torch_index, layer));
        }
        Ok(layers)
    }
}

/// The output of an op already checked by [`arch::check`].
fn op_shape(op: &Op, input: Activ) -> Activ {
    match (*op, input) {
        (
            Op::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
            },
            Activ::Image { h, w, .. },
        ) => Activ::Image {
            c: out_channels,
            h: (h + 2 * padding - kernel) / stride + 1,
            w: (w + 2 * padding - kernel) / stride + 1,
        },
        (
            Op::MaxPool2d { kernel, stride } | Op::AvgPool2d { kernel, stride },
            Activ::Image { c, h, w },
        ) => Activ::Image {
            c,
            h: (h - kernel) / stride + 1,
            w: (w - kernel) / stride + 1,
        },
        (Op::Linear { out_features }, _) => Activ::Flat(out_features),
        (Op::Flatten, a) => Activ::Flat(a.numel()),
        (_, a) => a,
    }
}

/// One layer; `salt` is its place in the model (its init stream and its
/// dropout masks).
fn build_op<B: Backend>(
    backend: &B,
    op: &Op,
    input: Activ,
    init: Init,
    seed: u64,
    salt: u64,
) -> Result<Layer<B>> {
    let mut rng = SplitMix64::derive(seed, salt);
    let channels = match input {
        Activ::Image { c, .. } => c,
        Activ::Flat(f) => f,
    };
    Ok(match *op {
        Op::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
        } => Layer::Conv2d(Conv2d::new(
            backend,
            channels,
            out_channels,
            kernel,
            stride,
            padding,
            Init::KaimingNormal,
            &mut rng,
        )?),
        Op::MaxPool2d { kernel, stride } => {
            Layer::MaxPool2d(MaxPool2d::new(backend, kernel, stride)?)
        }
        Op::AvgPool2d { kernel, stride } => {
            Layer::AvgPool2d(AvgPool2d::new(backend, kernel, stride)?)
        }
        Op::Linear { out_features } => Layer::Linear(Linear::new(
            backend,
            channels,
            out_features,
            init,
            &mut rng,
        )?),
        Op::Relu => Layer::Relu(Relu::new(backend)?),
        Op::Gelu => Layer::Smooth(Smooth::new(backend, Activation::Gelu)?),
        Op::Tanh => Layer::Smooth(Smooth::new(backend, Activation::Tanh)?),
        Op::Dropout { p_ppm } => Layer::Dropout(Dropout::new(
            backend,
            (f64::from(p_ppm) / f64::from(arch::PPM)) as f32,
            salt,
        )?),
        Op::BatchNorm => Layer::BatchNorm(BatchNorm::new(backend, channels)?),
        Op::Flatten => Layer::Flatten(Flatten::new(backend)?),
    })
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
            Arch::Layers(vec![
                LayerSpec::Op(Op::Conv2d {
                    out_channels: 4,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                }),
                LayerSpec::Op(Op::BatchNorm),
                LayerSpec::Residual(vec![
                    Op::Conv2d {
                        out_channels: 4,
                        kernel: 3,
                        stride: 1,
                        padding: 1,
                    },
                    Op::Gelu,
                ]),
                LayerSpec::Op(Op::Relu),
                LayerSpec::Op(Op::MaxPool2d {
                    kernel: 2,
                    stride: 2,
                }),
                LayerSpec::Op(Op::Flatten),
                LayerSpec::Op(Op::Dropout { p_ppm: 1000 }),
                LayerSpec::Op(Op::Linear { out_features: 7 }),
            ]),
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
