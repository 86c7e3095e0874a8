//! Layers with forward and backward passes.
//!
//! Each layer owns its output buffer and its input-gradient buffer, sized
//! on first use and reused afterwards. `forward` reads the previous
//! layer's output; `backward` reads the same input plus the next layer's
//! input gradient. Shapes carry the batch first; spatial activations are
//! `[N, H, W, C]`.

mod avgpool;
mod conv2d;
mod linear;
mod norm;
mod residual;
mod simple;
mod smooth;

pub use avgpool::AvgPool2d;
pub use conv2d::Conv2d;
pub use linear::Linear;
pub use norm::{BATCHNORM_EPS, BATCHNORM_MOMENTUM, BatchNorm};
pub use residual::Residual;
pub use simple::{Flatten, MaxPool2d, Relu};
pub use smooth::{Dropout, Smooth};

use crate::backend::{Activation, Backend};
use crate::error::{KernelError, Result};
use crate::tensor::{Shape, Tensor};

/// What a forward pass is for: training (batch statistics, dropout masks
/// drawn from `seed`) or evaluation (running statistics, no dropout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Train { seed: u64 },
    Eval,
}

/// A tensor of the model's state and its gradient. Most are trained; a
/// buffer (batch norm's running statistics) is not: its gradient stays
/// zero and the optimizer skips it, but it travels in the flat buffer.
pub struct Param<B: Backend> {
    pub value: Tensor<B>,
    pub grad: Tensor<B>,
    pub trainable: bool,
}

impl<B: Backend> Param<B> {
    pub fn new(backend: &B, shape: Shape, init: &[f32]) -> Result<Self> {
        Ok(Param {
            grad: Tensor::zeros(backend, shape.clone())?,
            value: Tensor::from_host(backend, shape, init)?,
            trainable: true,
        })
    }

    /// A state tensor that is not trained.
    pub fn buffer(backend: &B, shape: Shape, init: &[f32]) -> Result<Self> {
        Ok(Param {
            trainable: false,
            ..Param::new(backend, shape, init)?
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
    AvgPool2d(AvgPool2d<B>),
    Flatten(Flatten<B>),
    Smooth(Smooth<B>),
    Dropout(Dropout<B>),
    BatchNorm(BatchNorm<B>),
    Residual(Residual<B>),
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
            Layer::AvgPool2d(p) => format!("AvgPool2d({}, stride={})", p.kernel(), p.stride()),
            Layer::Flatten(_) => "Flatten()".into(),
            Layer::Smooth(a) => match a.kind() {
                Activation::Gelu => "GELU()".into(),
                Activation::Tanh => "Tanh()".into(),
            },
            Layer::Dropout(d) => format!("Dropout(p={})", d.p()),
            Layer::BatchNorm(b) => format!("BatchNorm({})", b.channels()),
            Layer::Residual(r) => {
                let inner: Vec<String> = r.inner().iter().map(Layer::describe).collect();
                format!("Residual({})", inner.join(", "))
            }
        }
    }

    /// Output shape for an input of `input` (per item, batch first).
    pub fn output_shape(&self, input: &Shape) -> Result<Shape> {
        match self {
            Layer::Linear(l) => l.output_shape(input),
            Layer::Conv2d(c) => c.output_shape(input),
            Layer::Relu(_) | Layer::Smooth(_) | Layer::Dropout(_) => Ok(input.clone()),
            Layer::MaxPool2d(p) => p.output_shape(input),
            Layer::AvgPool2d(p) => p.output_shape(input),
            Layer::Flatten(_) => Ok(Shape::new([input.batch(), input.per_item()])),
            Layer::BatchNorm(b) => b.output_shape(input),
            Layer::Residual(r) => r.output_shape(input),
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>, pass: Pass) -> Result<()> {
        match self {
            Layer::Linear(l) => l.forward(backend, x),
            Layer::Conv2d(c) => c.forward(backend, x),
            Layer::Relu(r) => r.forward(backend, x),
            Layer::MaxPool2d(p) => p.forward(backend, x),
            Layer::AvgPool2d(p) => p.forward(backend, x),
            Layer::Flatten(f) => f.forward(backend, x),
            Layer::Smooth(a) => a.forward(backend, x),
            Layer::Dropout(d) => d.forward(backend, x, pass),
            Layer::BatchNorm(b) => b.forward(backend, x, pass),
            Layer::Residual(r) => r.forward(backend, x, pass),
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
            Layer::AvgPool2d(p) => p.backward(backend, dy),
            Layer::Flatten(f) => f.backward(backend, dy),
            Layer::Smooth(a) => a.backward(backend, x, dy),
            Layer::Dropout(d) => d.backward(backend, dy),
            Layer::BatchNorm(b) => b.backward(backend, x, dy, need_dx),
            Layer::Residual(r) => r.backward(backend, x, dy, need_dx),
        }
    }

    pub fn output(&self) -> &Tensor<B> {
        match self {
            Layer::Linear(l) => &l.out,
            Layer::Conv2d(c) => &c.out,
            Layer::Relu(r) => &r.out,
            Layer::MaxPool2d(p) => &p.out,
            Layer::AvgPool2d(p) => &p.out,
            Layer::Flatten(f) => &f.out,
            Layer::Smooth(a) => &a.out,
            Layer::Dropout(d) => &d.out,
            Layer::BatchNorm(b) => &b.out,
            Layer::Residual(r) => &r.out,
        }
    }

    pub fn input_grad(&self) -> &Tensor<B> {
        match self {
            Layer::Linear(l) => &l.dx,
            Layer::Conv2d(c) => &c.dx,
            Layer::Relu(r) => &r.dx,
            Layer::MaxPool2d(p) => &p.dx,
            Layer::AvgPool2d(p) => &p.dx,
            Layer::Flatten(f) => &f.dx,
            Layer::Smooth(a) => &a.dx,
            Layer::Dropout(d) => &d.dx,
            Layer::BatchNorm(b) => &b.dx,
            Layer::Residual(r) => &r.dx,
        }
    }

    /// State tensors in PyTorch state-dict order (weight, bias, then batch
    /// norm's running statistics), named within the layer (`"weight"`, or
    /// `"0.weight"` inside a residual block).
    pub fn params(&self) -> Vec<(String, &Param<B>)> {
        match self {
            Layer::Linear(l) => vec![("weight".into(), &l.weight), ("bias".into(), &l.bias)],
            Layer::Conv2d(c) => vec![("weight".into(), &c.weight), ("bias".into(), &c.bias)],
            Layer::BatchNorm(b) => vec![
                ("weight".into(), &b.weight),
                ("bias".into(), &b.bias),
                ("running_mean".into(), &b.running_mean),
                ("running_var".into(), &b.running_var),
            ],
            Layer::Residual(r) => r
                .inner
                .iter()
                .enumerate()
                .flat_map(|(i, l)| {
                    l.params()
                        .into_iter()
                        .map(move |(name, p)| (format!("{i}.{name}"), p))
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        match self {
            Layer::Linear(l) => vec![&mut l.weight, &mut l.bias],
            Layer::Conv2d(c) => vec![&mut c.weight, &mut c.bias],
            Layer::BatchNorm(b) => vec![
                &mut b.weight,
                &mut b.bias,
                &mut b.running_mean,
                &mut b.running_var,
            ],
            Layer::Residual(r) => r.inner.iter_mut().flat_map(Layer::params_mut).collect(),
            _ => Vec::new(),
        }
    }

    /// Values one sample's activations hold inside this layer beyond its
    /// input (a residual block's inner layers), for memory estimates.
    pub fn inner_inputs_per_item(&self, input: &Shape) -> Result<usize> {
        let Layer::Residual(r) = self else {
            return Ok(0);
        };
        let mut shape = input.clone();
        let mut total = 0;
        for layer in r.inner() {
            total += shape.per_item();
            shape = layer.output_shape(&shape)?;
        }
        Ok(total)
    }
}

/// The geometry of a `kernel` x `kernel` pooling window moved by `stride`
/// over channels-last `input` (max or average pooling, named `op`).
pub(crate) fn pool_geometry(
    op: &'static str,
    input: &Shape,
    kernel: usize,
    stride: usize,
) -> Result<crate::backend::PoolGeometry> {
    expect_shape(op, input, &[None, None, None])?;
    let d = input.dims();
    if d[1] < kernel || d[2] < kernel {
        return Err(KernelError::shape(
            op,
            format!("spatial size of at least {kernel}"),
            input,
        ));
    }
    Ok(crate::backend::PoolGeometry {
        batch: d[0],
        in_h: d[1],
        in_w: d[2],
        channels: d[3],
        kernel,
        stride,
    })
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
