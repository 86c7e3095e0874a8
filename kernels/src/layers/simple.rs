//! Parameter-free layers: ReLU, max pooling and flatten.

use super::pool_geometry;
use crate::backend::{Backend, PoolGeometry};
use crate::error::{KernelError, Result};
use crate::tensor::{IndexTensor, Shape, Tensor};

pub struct Relu<B: Backend> {
    pub(crate) out: Tensor<B>,
    pub(crate) dx: Tensor<B>,
}

impl<B: Backend> Relu<B> {
    pub fn new(backend: &B) -> Result<Self> {
        Ok(Relu {
            out: Tensor::zeros(backend, Shape::new([0]))?,
            dx: Tensor::zeros(backend, Shape::new([0]))?,
        })
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> Result<()> {
        self.out.resize(backend, x.shape().clone())?;
        backend.relu_forward(x.buf(), self.out.buf_mut(), x.numel())
    }

    /// Uses its own output (`y > 0` is the same mask as `x > 0`).
    pub fn backward(&mut self, backend: &B, dy: &Tensor<B>) -> Result<()> {
        if dy.shape() != self.out.shape() {
            return Err(KernelError::shape(
                "ReLU backward",
                self.out.shape(),
                dy.shape(),
            ));
        }
        self.dx.resize(backend, dy.shape().clone())?;
        backend.relu_backward(self.out.buf(), dy.buf(), self.dx.buf_mut(), dy.numel())
    }
}

pub struct MaxPool2d<B: Backend> {
    kernel: usize,
    stride: usize,
    argmax: IndexTensor<B>,
    geometry: Option<PoolGeometry>,
    pub(crate) out: Tensor<B>,
    pub(crate) dx: Tensor<B>,
}

impl<B: Backend> MaxPool2d<B> {
    pub fn new(backend: &B, kernel: usize, stride: usize) -> Result<Self> {
        if kernel == 0 || stride == 0 {
            return Err(KernelError::config(
                "MaxPool2d",
                format!("kernel {kernel}, stride {stride}"),
            ));
        }
        Ok(MaxPool2d {
            kernel,
            stride,
            argmax: IndexTensor::zeros(backend, 0)?,
            geometry: None,
            out: Tensor::zeros(backend, Shape::new([0]))?,
            dx: Tensor::zeros(backend, Shape::new([0]))?,
        })
    }

    pub fn kernel(&self) -> usize {
        self.kernel
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    fn geometry(&self, input: &Shape) -> Result<PoolGeometry> {
        pool_geometry("MaxPool2d", input, self.kernel, self.stride)
    }

    pub fn output_shape(&self, input: &Shape) -> Result<Shape> {
        let g = self.geometry(input)?;
        Ok(Shape::new([g.batch, g.out_h(), g.out_w(), g.channels]))
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> Result<()> {
        let g = self.geometry(x.shape())?;
        self.out.resize(
            backend,
            Shape::new([g.batch, g.out_h(), g.out_w(), g.channels]),
        )?;
        self.argmax.resize(backend, g.output_len())?;
        backend.maxpool_forward(&g, x.buf(), self.out.buf_mut(), self.argmax.buf_mut())?;
        self.geometry = Some(g);
        Ok(())
    }

    pub fn backward(&mut self, backend: &B, dy: &Tensor<B>) -> Result<()> {
        let g = self
            .geometry
            .ok_or_else(|| KernelError::config("MaxPool2d backward", "called before forward"))?;
        if dy.shape() != self.out.shape() {
            return Err(KernelError::shape(
                "MaxPool2d backward",
                self.out.shape(),
                dy.shape(),
            ));
        }
        self.dx
            .resize(backend, Shape::new([g.batch, g.in_h, g.in_w, g.channels]))?;
        backend.maxpool_backward(&g, dy.buf(), self.argmax.buf(), self.dx.buf_mut())
    }
}

/// `[N, ...] -> [N, prod(...)]`. Channels-last input flattens in
/// `(h, w, c)` order; model files permute the next Linear's columns to
/// PyTorch's `(c, h, w)` order.
pub struct Flatten<B: Backend> {
    input: Shape,
    pub(crate) out: Tensor<B>,
    pub(crate) dx: Tensor<B>,
}

impl<B: Backend> Flatten<B> {
    pub fn new(backend: &B) -> Result<Self> {
        Ok(Flatten {
            input: Shape::new([0]),
            out: Tensor::zeros(backend, Shape::new([0]))?,
            dx: Tensor::zeros(backend, Shape::new([0]))?,
        })
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> Result<()> {
        self.input = x.shape().clone();
        let shape = Shape::new([x.shape().batch(), x.shape().per_item()]);
        self.out.resize(backend, shape)?;
        backend.copy(x.buf(), self.out.buf_mut(), x.numel())
    }

    pub fn backward(&mut self, backend: &B, dy: &Tensor<B>) -> Result<()> {
        if dy.shape() != self.out.shape() {
            return Err(KernelError::shape(
                "Flatten backward",
                self.out.shape(),
                dy.shape(),
            ));
        }
        self.dx.resize(backend, self.input.clone())?;
        backend.copy(dy.buf(), self.dx.buf_mut(), dy.numel())
    }
}
