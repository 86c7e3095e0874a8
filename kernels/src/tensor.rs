//! Shapes and device-resident f32 tensors.
//!
//! A [`Tensor`] is a backend buffer plus a shape. The buffer may be longer
//! than the shape needs: layers size their buffers for the largest batch
//! they have seen and reuse a prefix for smaller ones, so a training step
//! allocates nothing. Activations are channels-last (`[N, H, W, C]`), the
//! layout both the CPU and the CUDA backend use.

use std::fmt;

use crate::backend::Backend;
use crate::error::{KernelError, Result};

/// Dimensions of a tensor, outermost first.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// First dimension (the batch for activations).
    pub fn batch(&self) -> usize {
        self.0.first().copied().unwrap_or(1)
    }

    /// Elements per batch item.
    pub fn per_item(&self) -> usize {
        self.0.iter().skip(1).product()
    }

    /// The same shape with a different first dimension.
    pub fn with_batch(&self, batch: usize) -> Shape {
        let mut dims = self.0.clone();
        if let Some(first) = dims.first_mut() {
            *first = batch;
        }
        Shape(dims)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// An f32 tensor living on a backend.
pub struct Tensor<B: Backend> {
    buf: B::Buf,
    capacity: usize,
    shape: Shape,
}

impl<B: Backend> Tensor<B> {
    /// A zero-filled tensor.
    pub fn zeros(backend: &B, shape: Shape) -> Result<Self> {
        let capacity = shape.numel();
        Ok(Tensor {
            buf: backend.alloc(capacity)?,
            capacity,
            shape,
        })
    }

    /// Uploads host data; `data.len()` must equal the shape's size.
    pub fn from_host(backend: &B, shape: Shape, data: &[f32]) -> Result<Self> {
        if data.len() != shape.numel() {
            return Err(KernelError::shape(
                "Tensor::from_host",
                format!("{} elements for {shape}", shape.numel()),
                data.len(),
            ));
        }
        let mut tensor = Tensor::zeros(backend, shape)?;
        backend.upload(data, &mut tensor.buf)?;
        Ok(tensor)
    }

    /// Downloads the tensor's elements (only the shape's prefix).
    pub fn to_host(&self, backend: &B) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.shape.numel()];
        backend.download(&self.buf, &mut out)?;
        Ok(out)
    }

    /// Copies host data into the tensor, which keeps its shape.
    pub fn write_host(&mut self, backend: &B, data: &[f32]) -> Result<()> {
        if data.len() != self.shape.numel() {
            return Err(KernelError::shape(
                "Tensor::write_host",
                self.shape.numel(),
                data.len(),
            ));
        }
        backend.upload(data, &mut self.buf)
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    pub fn buf(&self) -> &B::Buf {
        &self.buf
    }

    pub fn buf_mut(&mut self) -> &mut B::Buf {
        &mut self.buf
    }

    /// Reshapes in place to `shape`, growing the buffer only when it is too
    /// small. Contents are unspecified afterwards.
    pub fn resize(&mut self, backend: &B, shape: Shape) -> Result<()> {
        let needed = shape.numel();
        if needed > self.capacity {
            self.buf = backend.alloc(needed)?;
            self.capacity = needed;
        }
        self.shape = shape;
        Ok(())
    }

    /// Changes the shape without touching the data; sizes must match.
    pub fn reshape(&mut self, shape: Shape) -> Result<()> {
        if shape.numel() != self.shape.numel() {
            return Err(KernelError::shape("Tensor::reshape", &self.shape, shape));
        }
        self.shape = shape;
        Ok(())
    }
}

/// A u32 buffer on a backend (class labels, max-pool argmax indices).
pub struct IndexTensor<B: Backend> {
    buf: B::IdxBuf,
    capacity: usize,
    len: usize,
}

impl<B: Backend> IndexTensor<B> {
    pub fn zeros(backend: &B, len: usize) -> Result<Self> {
        Ok(IndexTensor {
            buf: backend.alloc_idx(len)?,
            capacity: len,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn buf(&self) -> &B::IdxBuf {
        &self.buf
    }

    pub fn buf_mut(&mut self) -> &mut B::IdxBuf {
        &mut self.buf
    }

    pub fn resize(&mut self, backend: &B, len: usize) -> Result<()> {
        if len > self.capacity {
            self.buf = backend.alloc_idx(len)?;
            self.capacity = len;
        }
        self.len = len;
        Ok(())
    }

    /// Uploads `data`, resizing to its length.
    pub fn write_host(&mut self, backend: &B, data: &[u32]) -> Result<()> {
        self.resize(backend, data.len())?;
        backend.upload_idx(data, &mut self.buf)
    }
}
