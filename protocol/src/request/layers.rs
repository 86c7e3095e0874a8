//! `model.layers` of a job request: a declared architecture as developers
//! write it (TOML or JSON, one table per layer with its `type`), turned
//! into the wire's [`Layer`] list. Shapes are checked later, against the
//! data, by the kernels.

use serde::{Deserialize, Serialize};

use super::check::{FieldError, bad};
use crate::messages::{Layer, LayerOp, MAX_DECLARED_LAYERS, MAX_RESIDUAL_LAYERS, PPM};

/// One layer, e.g. `{ type = "conv2d", out_channels = 32, kernel = 3,
/// padding = 1 }`. Names and defaults follow PyTorch's modules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerChoice {
    Conv2d {
        out_channels: u32,
        kernel: u32,
        #[serde(default = "one")]
        stride: u32,
        #[serde(default)]
        padding: u32,
    },
    /// The stride defaults to the kernel, as in PyTorch.
    MaxPool2d {
        kernel: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<u32>,
    },
    AvgPool2d {
        kernel: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<u32>,
    },
    Linear {
        out_features: u32,
    },
    Relu,
    Gelu,
    Tanh,
    /// The probability of zeroing a value, in [0, 1).
    Dropout {
        p: f64,
    },
    /// `BatchNorm2d` after an image, `BatchNorm1d` after features.
    BatchNorm,
    Flatten,
    /// `x + f(x)` with `f` the layers inside (plain layers: blocks do not
    /// nest).
    Residual {
        layers: Vec<LayerChoice>,
    },
}

fn one() -> u32 {
    1
}

/// The wire form of `layers`, or the first problem, named by its path
/// (`model.layers[3][1].p`).
pub fn to_wire(layers: &[LayerChoice]) -> Result<Vec<Layer>, FieldError> {
    let total: usize = layers
        .iter()
        .map(|l| match l {
            LayerChoice::Residual { layers } => 1 + layers.len(),
            _ => 1,
        })
        .sum();
    if layers.is_empty() || total > MAX_DECLARED_LAYERS {
        return bad(
            "model.layers",
            format!(
                "{total} layers; a model has 1..={MAX_DECLARED_LAYERS}, counting those in residual blocks"
            ),
        );
    }
    let mut wire = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let path = format!("model.layers[{i}]");
        wire.push(match layer {
            LayerChoice::Residual { layers: inner } => {
                if inner.is_empty() || inner.len() > MAX_RESIDUAL_LAYERS {
                    return bad(
                        path.clone(),
                        format!(
                            "a residual block holds {} layers, need 1..={MAX_RESIDUAL_LAYERS}",
                            inner.len()
                        ),
                    );
                }
                let ops = inner
                    .iter()
                    .enumerate()
                    .map(|(j, l)| op(l, &format!("{path}[{j}]")))
                    .collect::<Result<_, _>>()?;
                Layer::Residual(ops)
            }
            other => Layer::Op(op(other, &path)?),
        });
    }
    Ok(wire)
}

fn op(layer: &LayerChoice, path: &str) -> Result<LayerOp, FieldError> {
    Ok(match *layer {
        LayerChoice::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
        } => LayerOp::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
        },
        LayerChoice::MaxPool2d { kernel, stride } => LayerOp::MaxPool2d {
            kernel,
            stride: stride.unwrap_or(kernel),
        },
        LayerChoice::AvgPool2d { kernel, stride } => LayerOp::AvgPool2d {
            kernel,
            stride: stride.unwrap_or(kernel),
        },
        LayerChoice::Linear { out_features } => LayerOp::Linear { out_features },
        LayerChoice::Relu => LayerOp::Relu,
        LayerChoice::Gelu => LayerOp::Gelu,
        LayerChoice::Tanh => LayerOp::Tanh,
        LayerChoice::Dropout { p } => {
            if !(p.is_finite() && (0.0..1.0).contains(&p)) {
                return bad(format!("{path}.p"), format!("{p} is not in [0, 1)"));
            }
            LayerOp::Dropout {
                p_ppm: ((p * f64::from(PPM)).round() as u32).min(PPM - 1),
            }
        }
        LayerChoice::BatchNorm => LayerOp::BatchNorm,
        LayerChoice::Flatten => LayerOp::Flatten,
        LayerChoice::Residual { .. } => {
            return bad(path.to_string(), "residual blocks do not nest");
        }
    })
}
