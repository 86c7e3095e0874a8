//! Average pooling with a square window and no padding.

use super::pool_geometry;
use crate::backend::{Backend, PoolGeometry};
use crate::error::{KernelError, Result};
use crate::tensor::{Shape, Tensor};

pub struct AvgPool2d<B: Backend> {
    kernel: usize,
    stride: usize,
    geometry: Option<PoolGeometry>,
    pub(crate) out: Tensor<B>,
    pub(crate) dx: Tensor<B>,
}

impl<B: Backend> AvgPool2d<B> {
    pub fn new(backend: &B, kernel: usize, stride: usize) -> Result<Self> {
        if kernel == 0 || stride == 0 {
            return Err(KernelError::config(
                "AvgPool2d",
                format!("kernel {kernel}, stride {stride}"),
            ));
        }
        Ok(AvgPool2d {
            kernel,
            stride,
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
        pool_geometry("AvgPool2d", input, self.kernel, self.stride)
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
        backend.avgpool_forward(&g, x.buf(), self.out.buf_mut())?;
        self.geometry = Some(g);
        Ok(())
    }

    pub fn backward(&mut self, backend: &B, dy: &Tensor<B>) -> Result<()> {
        let g = self
            .geometry
            .ok_or_else(|| KernelError::config("AvgPool2d backward", "called before forward"))?;
        if dy.shape() != self.out.shape() {
            return Err(KernelError::shape(
                "AvgPool2d backward",
                self.out.shape(),
                dy.shape(),
            ));
        }
        self.dx
            .resize(backend, Shape::new([g.batch, g.in_h, g.in_w, g.channels]))?;
        backend.avgpool_backward(&g, dy.buf(), self.dx.buf_mut())
    }
}
