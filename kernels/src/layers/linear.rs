//! Fully connected layer: `y = x W^T + b`, `W` of shape `[out, in]`.

use super::{Param, expect_shape};
use crate::backend::{Backend, GemmSpec};
use crate::error::Result;
use crate::init::Init;
use crate::rng::SplitMix64;
use crate::tensor::{Shape, Tensor};

pub struct Linear<B: Backend> {
    pub(crate) weight: Param<B>,
    pub(crate) bias: Param<B>,
    in_features: usize,
    out_features: usize,
    pub(crate) out: Tensor<B>,
    pub(crate) dx: Tensor<B>,
}

impl<B: Backend> Linear<B> {
    pub fn new(
        backend: &B,
        in_features: usize,
        out_features: usize,
        init: Init,
        rng: &mut SplitMix64,
    ) -> Result<Self> {
        let w = init.sample(rng, in_features * out_features, in_features, out_features);
        Ok(Linear {
            weight: Param::new(backend, Shape::new([out_features, in_features]), &w)?,
            bias: Param::new(
                backend,
                Shape::new([out_features]),
                &vec![0.0; out_features],
            )?,
            in_features,
            out_features,
            out: Tensor::zeros(backend, Shape::new([0, out_features]))?,
            dx: Tensor::zeros(backend, Shape::new([0, in_features]))?,
        })
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    pub fn output_shape(&self, input: &Shape) -> Result<Shape> {
        expect_shape("Linear", input, &[Some(self.in_features)])?;
        Ok(Shape::new([input.batch(), self.out_features]))
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> Result<()> {
        let shape = self.output_shape(x.shape())?;
        let n = shape.batch();
        self.out.resize(backend, shape)?;
        let spec = GemmSpec {
            trans_b: true,
            ..GemmSpec::new(n, self.out_features, self.in_features)
        };
        backend.gemm(spec, x.buf(), self.weight.value.buf(), self.out.buf_mut())?;
        backend.add_bias(
            self.out.buf_mut(),
            self.bias.value.buf(),
            n,
            self.out_features,
        )
    }

    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        need_dx: bool,
    ) -> Result<()> {
        let out_shape = self.output_shape(x.shape())?;
        expect_shape("Linear backward", dy.shape(), &[Some(self.out_features)])?;
        let n = out_shape.batch();
        if dy.shape().batch() != n {
            return Err(crate::KernelError::shape(
                "Linear backward",
                &out_shape,
                dy.shape(),
            ));
        }
        // dW[out, in] = dy^T[out, n] * x[n, in]
        let dw = GemmSpec {
            trans_a: true,
            ..GemmSpec::new(self.out_features, self.in_features, n)
        };
        backend.gemm(dw, dy.buf(), x.buf(), self.weight.grad.buf_mut())?;
        backend.sum_rows(dy.buf(), n, self.out_features, self.bias.grad.buf_mut())?;
        if need_dx {
            self.dx.resize(backend, x.shape().clone())?;
            // dx[n, in] = dy[n, out] * W[out, in]
            let spec = GemmSpec::new(n, self.in_features, self.out_features);
            backend.gemm(spec, dy.buf(), self.weight.value.buf(), self.dx.buf_mut())?;
        }
        Ok(())
    }
}
