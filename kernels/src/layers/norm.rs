//! Batch normalisation over the last dimension: `BatchNorm2d` on
//! channels-last images, `BatchNorm1d` on flat features. The running
//! statistics are parameters that are not trained (no gradient, skipped by
//! the optimizer) but travel in the flat buffer, so workers average them
//! like the weights and the model file carries them.

use super::{Param, Pass};
use crate::backend::{Backend, NormGeometry};
use crate::error::{KernelError, Result};
use crate::tensor::{Shape, Tensor};

/// PyTorch's defaults.
pub const BATCHNORM_EPS: f32 = 1e-5;
pub const BATCHNORM_MOMENTUM: f32 = 0.1;

pub struct BatchNorm<B: Backend> {
    channels: usize,
    pub(crate) weight: Param<B>,
    pub(crate) bias: Param<B>,
    pub(crate) running_mean: Param<B>,
    pub(crate) running_var: Param<B>,
    saved_mean: Tensor<B>,
    saved_invstd: Tensor<B>,
    /// Whether the latest forward used batch statistics.
    trained: bool,
    pub(crate) out: Tensor<B>,
    pub(crate) dx: Tensor<B>,
}

impl<B: Backend> BatchNorm<B> {
    pub fn new(backend: &B, channels: usize) -> Result<Self> {
        if channels == 0 {
            return Err(KernelError::config("BatchNorm", "zero channels"));
        }
        let shape = Shape::new([channels]);
        Ok(BatchNorm {
            channels,
            weight: Param::new(backend, shape.clone(), &vec![1.0; channels])?,
            bias: Param::new(backend, shape.clone(), &vec![0.0; channels])?,
            running_mean: Param::buffer(backend, shape.clone(), &vec![0.0; channels])?,
            running_var: Param::buffer(backend, shape.clone(), &vec![1.0; channels])?,
            saved_mean: Tensor::zeros(backend, shape.clone())?,
            saved_invstd: Tensor::zeros(backend, shape)?,
            trained: false,
            out: Tensor::zeros(backend, Shape::new([0]))?,
            dx: Tensor::zeros(backend, Shape::new([0]))?,
        })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Whether the input is an image (`BatchNorm2d`) rather than features.
    pub fn is_spatial(input: &Shape) -> bool {
        input.dims().len() == 4
    }

    fn geometry(&self, input: &Shape) -> Result<NormGeometry> {
        let dims = input.dims();
        if dims.len() < 2 || dims[dims.len() - 1] != self.channels {
            return Err(KernelError::shape(
                "BatchNorm",
                format!("[.., {}]", self.channels),
                input,
            ));
        }
        Ok(NormGeometry {
            rows: input.numel() / self.channels,
            channels: self.channels,
            eps: BATCHNORM_EPS,
            momentum: BATCHNORM_MOMENTUM,
        })
    }

    pub fn output_shape(&self, input: &Shape) -> Result<Shape> {
        self.geometry(input)?;
        Ok(input.clone())
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>, pass: Pass) -> Result<()> {
        let g = self.geometry(x.shape())?;
        self.out.resize(backend, x.shape().clone())?;
        self.trained = matches!(pass, Pass::Train { .. });
        // One value per channel (a batch of one sample of features: a
        // worker holding only a job's one-sample last shard, or an epoch's
        // last batch) trains too, where PyTorch refuses: the output is
        // beta, nothing flows back through the layer, and the running
        // statistics stay. Refusing would fail the worker's whole round.
        if self.trained {
            backend.batchnorm_forward_train(
                &g,
                x.buf(),
                self.weight.value.buf(),
                self.bias.value.buf(),
                self.running_mean.value.buf_mut(),
                self.running_var.value.buf_mut(),
                self.saved_mean.buf_mut(),
                self.saved_invstd.buf_mut(),
                self.out.buf_mut(),
            )
        } else {
            backend.batchnorm_forward_eval(
                &g,
                x.buf(),
                self.weight.value.buf(),
                self.bias.value.buf(),
                self.running_mean.value.buf(),
                self.running_var.value.buf(),
                self.out.buf_mut(),
            )
        }
    }

    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        need_dx: bool,
    ) -> Result<()> {
        if !self.trained {
            return Err(KernelError::config(
                "BatchNorm backward",
                "the latest forward was not a training pass",
            ));
        }
        if dy.shape() != self.out.shape() || x.shape() != self.out.shape() {
            return Err(KernelError::shape(
                "BatchNorm backward",
                self.out.shape(),
                dy.shape(),
            ));
        }
        let g = self.geometry(x.shape())?;
        let dx = if need_dx {
            self.dx.resize(backend, x.shape().clone())?;
            Some(self.dx.buf_mut())
        } else {
            None
        };
        backend.batchnorm_backward(
            &g,
            x.buf(),
            dy.buf(),
            self.weight.value.buf(),
            self.saved_mean.buf(),
            self.saved_invstd.buf(),
            self.weight.grad.buf_mut(),
            self.bias.grad.buf_mut(),
            dx,
        )
    }
}
