//! Declared architectures: a job describes its network as a list of
//! layers, checked here with inferred shapes before anything is built.
//! The zoo's three models are presets of the same list.
//!
//! A list runs in the order given, with one exception that changes no
//! result: a ReLU directly followed by a max-pool runs after it (the max
//! commutes with ReLU, and pooling first touches a quarter of the values).
//! Parameter names keep PyTorch's numbering of the list as written.

use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};

/// Largest number of layers in a list, counting those inside residual
/// blocks.
pub const MAX_LAYERS: usize = 64;
/// Largest number of layers inside one residual block.
pub const MAX_RESIDUAL_LAYERS: usize = 16;
pub const MAX_CHANNELS: usize = 4096;
pub const MAX_FEATURES: usize = 65_536;
pub const MAX_KERNEL: usize = 15;
/// A pooling window may cover the whole input (global pooling).
pub const MAX_POOL: usize = 512;
/// Parts per million (dropout's probability).
pub const PPM: u32 = 1_000_000;

/// One layer that is not a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Conv2d {
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    MaxPool2d {
        kernel: usize,
        stride: usize,
    },
    AvgPool2d {
        kernel: usize,
        stride: usize,
    },
    Linear {
        out_features: usize,
    },
    Relu,
    Gelu,
    Tanh,
    /// Zeroes each value with probability `p_ppm / 10^6` in training.
    Dropout {
        p_ppm: u32,
    },
    /// `BatchNorm2d` on images, `BatchNorm1d` on features.
    BatchNorm,
    Flatten,
}

/// One entry of a layer list: a layer, or a residual block `x + f(x)` of
/// plain layers (blocks do not nest, which keeps decoding shallow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerSpec {
    Op(Op),
    Residual(Vec<Op>),
}

/// A sample's activation: an image `(c, h, w)` or `f` features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activ {
    Image { c: usize, h: usize, w: usize },
    Flat(usize),
}

impl Activ {
    pub fn numel(&self) -> usize {
        match *self {
            Activ::Image { c, h, w } => c * h * w,
            Activ::Flat(f) => f,
        }
    }

    fn describe(&self) -> String {
        match *self {
            Activ::Image { c, h, w } => format!("a {c}x{h}x{w} image"),
            Activ::Flat(f) => format!("{f} features"),
        }
    }
}

/// Where a list entry sits: its index as written and, inside a block, the
/// index within it (for error messages: `layers[3][1]`).
#[derive(Debug, Clone, Copy)]
struct At(usize, Option<usize>);

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            None => write!(f, "layers[{}]", self.0),
            Some(j) => write!(f, "layers[{}][{j}]", self.0),
        }
    }
}

fn bad(at: At, reason: String) -> KernelError {
    KernelError::config("model", format!("{at}: {reason}"))
}

fn in_range(at: At, what: &str, v: usize, lo: usize, hi: usize) -> Result<()> {
    if v < lo || v > hi {
        return Err(bad(at, format!("{what} {v} is not in {lo}..={hi}")));
    }
    Ok(())
}

/// The output of `op` on `input`, or why it cannot run there.
fn op_output(op: &Op, input: Activ, at: At) -> Result<Activ> {
    let image = |name: &str| match input {
        Activ::Image { c, h, w } => Ok((c, h, w)),
        Activ::Flat(_) => Err(bad(
            at,
            format!("{name} needs an image, got {}", input.describe()),
        )),
    };
    let pooled = |name: &str, kernel: usize, stride: usize| -> Result<Activ> {
        let (c, h, w) = image(name)?;
        in_range(at, "kernel", kernel, 1, MAX_POOL)?;
        in_range(at, "stride", stride, 1, MAX_POOL)?;
        if kernel > h || kernel > w {
            return Err(bad(at, format!("{name} window {kernel} exceeds {h}x{w}")));
        }
        Ok(Activ::Image {
            c,
            h: (h - kernel) / stride + 1,
            w: (w - kernel) / stride + 1,
        })
    };
    match *op {
        Op::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
        } => {
            let (_, h, w) = image("conv2d")?;
            in_range(at, "out_channels", out_channels, 1, MAX_CHANNELS)?;
            in_range(at, "kernel", kernel, 1, MAX_KERNEL)?;
            in_range(at, "stride", stride, 1, MAX_KERNEL)?;
            if padding >= kernel {
                return Err(bad(
                    at,
                    format!("padding {padding} must be below the kernel {kernel}"),
                ));
            }
            if h + 2 * padding < kernel || w + 2 * padding < kernel {
                return Err(bad(
                    at,
                    format!("kernel {kernel} exceeds the padded {h}x{w} input"),
                ));
            }
            Ok(Activ::Image {
                c: out_channels,
                h: (h + 2 * padding - kernel) / stride + 1,
                w: (w + 2 * padding - kernel) / stride + 1,
            })
        }
        Op::MaxPool2d { kernel, stride } => pooled("max_pool2d", kernel, stride),
        Op::AvgPool2d { kernel, stride } => pooled("avg_pool2d", kernel, stride),
        Op::Linear { out_features } => {
            if let Activ::Image { .. } = input {
                return Err(bad(
                    at,
                    format!(
                        "linear needs features, got {}: flatten first",
                        input.describe()
                    ),
                ));
            }
            in_range(at, "out_features", out_features, 1, MAX_FEATURES)?;
            Ok(Activ::Flat(out_features))
        }
        Op::Relu | Op::Gelu | Op::Tanh | Op::BatchNorm => Ok(input),
        Op::Dropout { p_ppm } => {
            if p_ppm >= PPM {
                return Err(bad(at, format!("dropout p {p_ppm} ppm is not below 1")));
            }
            Ok(input)
        }
        Op::Flatten => Ok(Activ::Flat(input.numel())),
    }
}

/// Parameters (and batch-norm buffers) of `op` on `input`.
pub(crate) fn op_params(op: &Op, input: Activ) -> u128 {
    match (*op, input) {
        (
            Op::Conv2d {
                out_channels,
                kernel,
                ..
            },
            Activ::Image { c, .. },
        ) => (c as u128 * (kernel * kernel) as u128 + 1) * out_channels as u128,
        (Op::Linear { out_features }, Activ::Flat(f)) => (f as u128 + 1) * out_features as u128,
        (Op::BatchNorm, Activ::Image { c, .. }) => 4 * c as u128,
        (Op::BatchNorm, Activ::Flat(f)) => 4 * f as u128,
        _ => 0,
    }
}

/// A list entry in the order it runs, with its PyTorch index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub torch_index: usize,
    pub spec: LayerSpec,
}

/// The order layers run in (see the module docs).
pub fn execution_order(layers: &[LayerSpec]) -> Vec<Placed> {
    let mut placed: Vec<Placed> = layers
        .iter()
        .enumerate()
        .map(|(torch_index, spec)| Placed {
            torch_index,
            spec: spec.clone(),
        })
        .collect();
    let mut i = 0;
    while i + 1 < placed.len() {
        let relu_then_pool = matches!(placed[i].spec, LayerSpec::Op(Op::Relu))
            && matches!(placed[i + 1].spec, LayerSpec::Op(Op::MaxPool2d { .. }));
        if relu_then_pool {
            placed.swap(i, i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    placed
}

/// What checking a list finds: the shapes it runs through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Per placed layer: its input, and its inner layers' inputs.
    pub inputs: Vec<(Activ, Vec<Activ>)>,
    pub params: u128,
}

/// Checks `layers` on `input` ending in `classes` features.
pub fn check(layers: &[LayerSpec], input: Activ, classes: usize) -> Result<Checked> {
    let model_bad = |reason: String| Err(KernelError::config("model", reason));
    if layers.is_empty() {
        return model_bad("the layer list is empty".into());
    }
    let total: usize = layers
        .iter()
        .map(|l| match l {
            LayerSpec::Op(_) => 1,
            LayerSpec::Residual(inner) => 1 + inner.len(),
        })
        .sum();
    if total > MAX_LAYERS {
        return model_bad(format!("{total} layers, at most {MAX_LAYERS}"));
    }
    // Between a Flatten of an image and the next Linear only elementwise
    // layers may run: model files reorder that Linear's columns from
    // channels-last to PyTorch's order, which a batch norm or a block in
    // between would not follow.
    let mut flattened_image = false;
    let mut shape = input;
    let mut inputs = Vec::new();
    let mut params = 0u128;
    for placed in execution_order(layers) {
        let at = At(placed.torch_index, None);
        let before = shape;
        let mut inner_inputs = Vec::new();
        match &placed.spec {
            LayerSpec::Op(op) => {
                if flattened_image && matches!(op, Op::BatchNorm) {
                    return Err(bad(
                        at,
                        "batch_norm between a flatten and the first linear after it is not supported; put it before the flatten or after the linear".into(),
                    ));
                }
                shape = op_output(op, shape, at)?;
                params += op_params(op, before);
                match op {
                    // A flatten of features keeps the image's column order.
                    Op::Flatten => flattened_image |= matches!(before, Activ::Image { .. }),
                    Op::Linear { .. } => flattened_image = false,
                    _ => {}
                }
            }
            LayerSpec::Residual(inner) => {
                if flattened_image {
                    return Err(bad(
                        at,
                        "a residual block between a flatten and the first linear after it is not supported".into(),
                    ));
                }
                if inner.is_empty() || inner.len() > MAX_RESIDUAL_LAYERS {
                    return Err(bad(
                        at,
                        format!(
                            "a residual block holds {} layers, need 1..={MAX_RESIDUAL_LAYERS}",
                            inner.len()
                        ),
                    ));
                }
                let mut x = shape;
                for (j, op) in inner.iter().enumerate() {
                    let at = At(placed.torch_index, Some(j));
                    if matches!(op, Op::Flatten) {
                        return Err(bad(at, "no flatten inside a residual block".into()));
                    }
                    inner_inputs.push(x);
                    params += op_params(op, x);
                    x = op_output(op, x, at)?;
                }
                if x != shape {
                    return Err(bad(
                        at,
                        format!(
                            "a residual block must keep its input's shape: {} in, {} out",
                            shape.describe(),
                            x.describe()
                        ),
                    ));
                }
            }
        }
        inputs.push((before, inner_inputs));
    }
    if shape != Activ::Flat(classes) {
        return model_bad(format!(
            "the last layer gives {}, not the {classes} class scores (end with linear(out_features = {classes}))",
            shape.describe()
        ));
    }
    Ok(Checked { inputs, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(out: usize, kernel: usize, stride: usize, padding: usize) -> LayerSpec {
        LayerSpec::Op(Op::Conv2d {
            out_channels: out,
            kernel,
            stride,
            padding,
        })
    }

    const IMAGE: Activ = Activ::Image { c: 3, h: 8, w: 8 };

    fn err(layers: &[LayerSpec]) -> String {
        check(layers, IMAGE, 10).unwrap_err().to_string()
    }

    #[test]
    fn shapes_follow_pytorch_arithmetic() {
        let layers = [
            conv(4, 3, 2, 1),
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
            LayerSpec::Op(Op::AvgPool2d {
                kernel: 2,
                stride: 2,
            }),
            LayerSpec::Op(Op::Flatten),
            LayerSpec::Op(Op::Dropout { p_ppm: 500_000 }),
            LayerSpec::Op(Op::Linear { out_features: 10 }),
        ];
        let checked = check(&layers, IMAGE, 10).unwrap();
        // conv 8x8 stride 2 pad 1 -> 4x4; pool -> 2x2; flatten 16.
        assert_eq!(checked.inputs[3].0, Activ::Image { c: 4, h: 4, w: 4 });
        assert_eq!(checked.inputs[5].0, Activ::Flat(16));
        assert_eq!(checked.params, 112 + 16 + 148 + 170);
    }

    #[test]
    fn bad_lists_name_the_layer_and_the_problem() {
        let linear = |n| LayerSpec::Op(Op::Linear { out_features: n });
        assert!(err(&[]).contains("empty"));
        assert!(err(&[linear(10)]).contains("layers[0]: linear needs features"));
        assert!(err(&[LayerSpec::Op(Op::Flatten), linear(7)]).contains("not the 10 class"));
        assert!(err(&[conv(4, 3, 1, 3)]).contains("padding 3 must be below"));
        assert!(err(&[conv(4, 16, 1, 0)]).contains("kernel 16 is not in"));
        assert!(
            err(&[
                LayerSpec::Op(Op::Flatten),
                LayerSpec::Op(Op::MaxPool2d {
                    kernel: 2,
                    stride: 2
                })
            ])
            .contains("layers[1]: max_pool2d needs an image")
        );
        let block = LayerSpec::Residual(vec![Op::Conv2d {
            out_channels: 5,
            kernel: 1,
            stride: 1,
            padding: 0,
        }]);
        assert!(err(&[block]).contains("must keep its input's shape"));
        let flat_block = LayerSpec::Residual(vec![Op::Flatten]);
        assert!(err(&[flat_block]).contains("layers[0][0]: no flatten"));
        let bn_after_flatten = [
            LayerSpec::Op(Op::Flatten),
            LayerSpec::Op(Op::BatchNorm),
            linear(10),
        ];
        assert!(err(&bn_after_flatten).contains("layers[1]: batch_norm between"));
        let twice = [
            LayerSpec::Op(Op::Flatten),
            LayerSpec::Op(Op::Flatten),
            LayerSpec::Op(Op::BatchNorm),
            linear(10),
        ];
        assert!(err(&twice).contains("layers[2]: batch_norm between"));
        let too_many = vec![LayerSpec::Op(Op::Relu); MAX_LAYERS + 1];
        assert!(err(&too_many).contains("at most 64"));
        assert!(err(&[LayerSpec::Op(Op::Dropout { p_ppm: PPM })]).contains("not below 1"));
    }

    #[test]
    fn relu_before_max_pool_runs_after_it_and_keeps_its_torch_index() {
        let layers = [
            conv(4, 3, 1, 1),
            LayerSpec::Op(Op::Relu),
            LayerSpec::Op(Op::MaxPool2d {
                kernel: 2,
                stride: 2,
            }),
        ];
        let order: Vec<usize> = execution_order(&layers)
            .iter()
            .map(|p| p.torch_index)
            .collect();
        assert_eq!(order, [0, 2, 1]);
    }
}
