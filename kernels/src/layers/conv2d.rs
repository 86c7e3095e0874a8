//! 2-D convolution with square kernels over `[N, H, W, C]` input. The
//! weight is stored `[C_out, K, K, C_in]` (OHWI); model files convert to
//! PyTorch's OIHW.

use super::{Param, expect_shape};
use crate::backend::{Backend, Conv2dGeometry};
use crate::error::{KernelError, Result};
use crate::init::Init;
use crate::rng::SplitMix64;
use crate::tensor::{Shape, Tensor};

pub struct Conv2d<B: Backend> {
    pub(crate) weight: Param<B>,
    pub(crate) bias: Param<B>,
    in_c: usize,
    out_c: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    pub(crate) out: Tensor<B>,
    pub(crate) dx: Tensor<B>,
}

impl<B: Backend> Conv2d<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: &B,
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        init: Init,
        rng: &mut SplitMix64,
    ) -> Result<Self> {
        if kernel == 0 || stride == 0 || pad >= kernel || in_c == 0 || out_c == 0 {
            return Err(KernelError::config(
                "Conv2d",
                format!("in {in_c}, out {out_c}, kernel {kernel}, stride {stride}, pad {pad}"),
            ));
        }
        let fan_in = in_c * kernel * kernel;
        let fan_out = out_c * kernel * kernel;
        let w = init.sample(rng, out_c * fan_in, fan_in, fan_out);
        Ok(Conv2d {
            weight: Param::new(backend, Shape::new([out_c, kernel, kernel, in_c]), &w)?,
            bias: Param::new(backend, Shape::new([out_c]), &vec![0.0; out_c])?,
            in_c,
            out_c,
            kernel,
            stride,
            pad,
            out: Tensor::zeros(backend, Shape::new([0, 1, 1, out_c]))?,
            dx: Tensor::zeros(backend, Shape::new([0, 1, 1, in_c]))?,
        })
    }

    pub fn in_channels(&self) -> usize {
        self.in_c
    }
    pub fn out_channels(&self) -> usize {
        self.out_c
    }
    pub fn kernel(&self) -> usize {
        self.kernel
    }
    pub fn stride(&self) -> usize {
        self.stride
    }
    pub fn pad(&self) -> usize {
        self.pad
    }

    pub fn geometry(&self, input: &Shape) -> Result<Conv2dGeometry> {
        expect_shape("Conv2d", input, &[None, None, Some(self.in_c)])?;
        let d = input.dims();
        let g = Conv2dGeometry {
            batch: d[0],
            in_h: d[1],
            in_w: d[2],
            in_c: self.in_c,
            out_c: self.out_c,
            kernel: self.kernel,
            stride: self.stride,
            pad: self.pad,
        };
        if g.in_h + 2 * g.pad < g.kernel || g.in_w + 2 * g.pad < g.kernel {
            return Err(KernelError::shape(
                "Conv2d",
                format!("spatial size of at least {}", g.kernel - 2 * g.pad),
                input,
            ));
        }
        Ok(g)
    }

    pub fn output_shape(&self, input: &Shape) -> Result<Shape> {
        let g = self.geometry(input)?;
        Ok(Shape::new([g.batch, g.out_h(), g.out_w(), g.out_c]))
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> Result<()> {
        let g = self.geometry(x.shape())?;
        self.out.resize(
            backend,
            Shape::new([g.batch, g.out_h(), g.out_w(), g.out_c]),
        )?;
        backend.conv2d_forward(
            &g,
            x.buf(),
            self.weight.value.buf(),
            self.bias.value.buf(),
            self.out.buf_mut(),
        )
    }

    pub fn backward(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dy: &Tensor<B>,
        need_dx: bool,
    ) -> Result<()> {
        let g = self.geometry(x.shape())?;
        let want = Shape::new([g.batch, g.out_h(), g.out_w(), g.out_c]);
        if dy.shape() != &want {
            return Err(KernelError::shape("Conv2d backward", &want, dy.shape()));
        }
        let dx = if need_dx {
            self.dx.resize(backend, x.shape().clone())?;
            Some(self.dx.buf_mut())
        } else {
            None
        };
        backend.conv2d_backward(
            &g,
            x.buf(),
            self.weight.value.buf(),
            dy.buf(),
            self.weight.grad.buf_mut(),
            self.bias.grad.buf_mut(),
            dx,
        )
    }
}
