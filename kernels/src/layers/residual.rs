//! A residual block: `y = x + f(x)`, `f` a short sequence of layers that
//! keeps the shape. In PyTorch it is `fairgrid.torch.Residual`, an
//! `nn.Sequential` whose forward adds its input, so parameter names nest
//! (`"4.0.weight"`).

use super::{Layer, Pass};
use crate::backend::Backend;
use crate::error::{KernelError, Result};
use crate::tensor::{Shape, Tensor};

pub struct Residual<B: Backend> {
    pub(crate) inner: Vec<Layer<B>>,
    pub(crate) out: Tensor<B>,
    pub(crate) dx: Tensor<B>,
}

impl<B: Backend> Residual<B> {
    pub fn new(backend: &B, inner: Vec<Layer<B>>) -> Result<Self> {
        if inner.is_empty() {
            return Err(KernelError::config("Residual", "no layers inside"));
        }
        Ok(Residual {
            inner,
            out: Tensor::zeros(backend, Shape::new([0]))?,
            dx: Tensor::zeros(backend, Shape::new([0]))?,
        })
    }

    pub fn inner(&self) -> &[Layer<B>] {
        &self.inner
    }

    pub fn output_shape(&self, input: &Shape) -> Result<Shape> {
        let mut shape = input.clone();
        for layer in &self.inner {
            shape = layer.output_shape(&shape)?;
        }
        if &shape != input {
            return Err(KernelError::shape("Residual", input, shape));
        }
        Ok(shape)
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>, pass: Pass) -> Result<()> {
        for i in 0..self.inner.len() {
            let (before, rest) = self.inner.split_at_mut(i);
            let input = if i == 0 { x } else { before[i - 1].output() };
            rest[0].forward(backend, input, pass)?;
        }
        let last = self.inner.last().expect("checked non-empty").output();
        if last.shape() != x.shape() {
            return Err(KernelError::shape("Residual", x.shape(), last.shape()));
        }
        self.out.resize(backend, x.shape().clone())?;
        backend.copy(last.buf(), self.out.buf_mut(), x.numel())?;
        backend.axpy(1.0, x.buf(), self.out.buf_mut(), x.numel())
    }

    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        need_dx: bool,
    ) -> Result<()> {
        if dy.shape() != self.out.shape() {
            return Err(KernelError::shape(
                "Residual backward",
                self.out.shape(),
                dy.shape(),
            ));
        }
        let n = self.inner.len();
        for i in (0..n).rev() {
            let (before, rest) = self.inner.split_at_mut(i);
            let (current, after) = rest.split_first_mut().expect("i < n");
            let grad = if i == n - 1 {
                dy
            } else {
                after[0].input_grad()
            };
            let input = if i == 0 { x } else { before[i - 1].output() };
            current.backward(backend, input, grad, need_dx || i > 0)?;
        }
        if need_dx {
            self.dx.resize(backend, x.shape().clone())?;
            backend.copy(dy.buf(), self.dx.buf_mut(), dy.numel())?;
            let through = self.inner[0].input_grad();
            backend.axpy(1.0, through.buf(), self.dx.buf_mut(), dy.numel())?;
        }
        Ok(())
    }
}
