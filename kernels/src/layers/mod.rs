//! Layers with forward and backward passes.
//!
//! Each layer owns its output buffer and its input-gradient buffer, sized
//! on first use and reused afterwards. `forward` reads the previous
//! layer's output; `backward` reads the same input plus the next layer's
//! input gradient. Shapes carry the batch first; spatial activations are
//! `[N, H, W, C]`.

mod conv2d;
mod linear;
mod simple;

pub use conv2d::Conv2d;
pub use linear::Linear;
pub use simple::{Flatten, MaxPool2d, Relu};

use crate::backend::Backend;
use crate::error::{KernelError, Result};
use crate::tensor::{Shape, Tensor};

/// A trainable tensor and its gradient.
pub struct Param<B: Backend> {
    pub value: Tensor<B>,
    pub grad: Tensor<B>,
}

impl<B: Backend> Param<B> {
    pub fn new(backend: &B, shape: Shape, init: &[f32]) -> Result<Self> {
        Ok(Param {
            grad: Tensor::zeros(backend, shape.clone())?,
            value: Tensor::from_host(backend, shape, init)?,
        })
    }

    pub fn numel(&self) -> usize {
        self.value.numel()
    }
}

/// One layer of a sequential model.
pub enum Layer<B: Backend> {
    Linear(Linear<B>),
    Conv2d(Conv2d<B>),
    Relu(Relu<B>),
    MaxPool2d(MaxPool2d<B>),
    Flatten(Flatten<B>),
}

impl<B: Backend> Layer<B> {
    /// The PyTorch module this layer corresponds to (for docs and errors).
    pub fn describe(&self) -> String {
        match self {
            Layer::Linear(l) => format!("Linear({}, {})", l.in_features(), l.out_features()),
            Layer::Conv2d(c) => format!(
                "Conv2d({}, {}, kernel_size={}, stride={}, padding={})",
                c.in_channels(),
                c.out_channels(),
                c.kernel(),
                c.stride(),
                c.pad()
            ),
            Layer::Relu(_) => "ReLU()".into(),
            Layer::MaxPool2d(p) => format!("MaxPool2d({}, stride={})", p.kernel(), p.stride()),
            Layer::Flatten(_) => "Flatten()".into(),
        }
    }

    /// Output shape for an input of `input` (per item, batch first).
    pub fn output_shape(&self, input: &Shape) -> Result<Shape> {
        match self {
            Layer::Linear(l) => l.output_shape(input),
            Layer::Conv2d(c) => c.output_shape(input),
            Layer::Relu(_) => Ok(input.clone()),
            Layer::MaxPool2d(p) => p.output_shape(input),
            Layer::Flatten(_) => Ok(Shape::new([input.batch(), input.per_item()])),
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> Result<()> {
        match self {
            Layer::Linear(l) => l.forward(backend, x),
            Layer::Conv2d(c) => c.forward(backend, x),
            Layer::Relu(r) => r.forward(backend, x),
            Layer::MaxPool2d(p) => p.forward(backend, x),
            Layer::Flatten(f) => f.forward(backend, x),
        }
    }

    /// Computes parameter gradients and, when `need_dx`, the input
    /// gradient. `x` must be the input of the latest `forward`.
    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        need_dx: bool,
    ) -> Result<()> {
        match self {
            Layer::Linear(l) => l.backward(backend, x, dy, need_dx),
            Layer::Conv2d(c) => c.backward(backend, x, dy, need_dx),
            Layer::Relu(r) => r.backward(backend, dy),
            Layer::MaxPool2d(p) => p.backward(backend, dy),
            Layer::Flatten(f) => f.backward(backend, dy),
        }
    }

    pub fn output(&self) -> &Tensor<B> {
        match self {
            Layer::Linear(l) => &l.out,
            Layer::Conv2d(c) => &c.out,
            Layer::Relu(r) => &r.out,
            Layer::MaxPool2d(p) => &p.out,
            Layer::Flatten(f) => &f.out,
        }
    }

    pub fn input_grad(&self) -> &Tensor<B> {
        match self {
            Layer::Linear(l) => &l.dx,
            Layer::Conv2d(c) => &c.dx,
            Layer::Relu(r) => &r.dx,
            Layer::MaxPool2d(p) => &p.dx,
            Layer::Flatten(f) => &f.dx,
        }
    }

    /// Trainable tensors in PyTorch state-dict order (weight, then bias).
    pub fn params(&self) -> Vec<(&'static str, &Param<B>)> {
        match self {
            Layer::Linear(l) => vec![("weight", &l.weight), ("bias", &l.bias)],
            Layer::Conv2d(c) => vec![("weight", &c.weight), ("bias", &c.bias)],
            _ => Vec::new(),
        }
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        match self {
            Layer::Linear(l) => vec![&mut l.weight, &mut l.bias],
            Layer::Conv2d(c) => vec![&mut c.weight, &mut c.bias],
            _ => Vec::new(),
        }
    }
}

/// Checks that `x` has rank `rank` and per-item dims `want` (None = any).
pub(crate) fn expect_shape(op: &'static str, x: &Shape, want: &[Option<usize>]) -> Result<()> {
    let dims = x.dims();
    let ok = dims.len() == want.len() + 1
        && dims[1..]
            .iter()
            .zip(want)
            .all(|(d, w)| w.is_none_or(|w| w == *d));
    if !ok {
        let want: Vec<String> = std::iter::once("N".to_string())
            .chain(want.iter().map(|w| w.map_or("*".into(), |v| v.to_string())))
            .collect();
        return Err(KernelError::shape(op, format!("[{}]", want.join(", ")), x));
    }
    Ok(())
}
