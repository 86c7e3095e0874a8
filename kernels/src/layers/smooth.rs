//! GELU and tanh (elementwise, no parameters) and dropout.

use crate::backend::{Activation, Backend, DropoutMask};
use crate::error::{KernelError, Result};
use crate::rng::SplitMix64;
use crate::tensor::{Shape, Tensor};

use super::Pass;

pub struct Smooth<B: Backend> {
    kind: Activation,
    pub(crate) out: Tensor<B>,
    pub(crate) dx: Tensor<B>,
}

impl<B: Backend> Smooth<B> {
    pub fn new(backend: &B, kind: Activation) -> Result<Self> {
        Ok(Smooth {
            kind,
            out: Tensor::zeros(backend, Shape::new([0]))?,
            dx: Tensor::zeros(backend, Shape::new([0]))?,
        })
    }

    pub fn kind(&self) -> Activation {
        self.kind
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>) -> Result<()> {
        self.out.resize(backend, x.shape().clone())?;
        backend.activation_forward(self.kind, x.buf(), self.out.buf_mut(), x.numel())
    }

    pub fn backward(&mut self, backend: &B, x: &Tensor<B>, dy: &Tensor<B>) -> Result<()> {
        if dy.shape() != self.out.shape() || x.shape() != self.out.shape() {
            return Err(KernelError::shape(
                "activation backward",
                self.out.shape(),
                dy.shape(),
            ));
        }
        self.dx.resize(backend, dy.shape().clone())?;
        backend.activation_backward(
            self.kind,
            x.buf(),
            self.out.buf(),
            dy.buf(),
            self.dx.buf_mut(),
            dy.numel(),
        )
    }
}

/// Inverted dropout: in training, each element is zeroed with probability
/// `p` and the rest scaled by `1 / (1 - p)`; in evaluation, the identity.
/// The mask is a function of the pass's seed and this layer's `salt` (its
/// place in the model), so a round recomputes exactly.
pub struct Dropout<B: Backend> {
    p: f32,
    salt: u64,
    /// The mask of the latest training forward (`None`: evaluation).
    mask: Option<DropoutMask>,
    pub(crate) out: Tensor<B>,
    pub(crate) dx: Tensor<B>,
}

impl<B: Backend> Dropout<B> {
    pub fn new(backend: &B, p: f32, salt: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(KernelError::config(
                "Dropout",
                format!("p = {p} not in [0, 1)"),
            ));
        }
        Ok(Dropout {
            p,
            salt,
            mask: None,
            out: Tensor::zeros(backend, Shape::new([0]))?,
            dx: Tensor::zeros(backend, Shape::new([0]))?,
        })
    }

    pub fn p(&self) -> f32 {
        self.p
    }

    /// This layer's place in the model (its masks derive from it).
    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// The mask a training pass with `seed` draws.
    pub fn mask_for(&self, seed: u64) -> DropoutMask {
        DropoutMask {
            seed: SplitMix64::derive(seed, self.salt).next_u64(),
            threshold: (f64::from(self.p) * f64::from(1u32 << 24)).round() as u32,
            scale: 1.0 / (1.0 - self.p),
        }
    }

    pub fn forward(&mut self, backend: &B, x: &Tensor<B>, pass: Pass) -> Result<()> {
        self.out.resize(backend, x.shape().clone())?;
        self.mask = match pass {
            Pass::Train { seed } => Some(self.mask_for(seed)),
            Pass::Eval => None,
        };
        match &self.mask {
            Some(mask) => backend.dropout(mask, x.buf(), self.out.buf_mut(), x.numel()),
            None => backend.copy(x.buf(), self.out.buf_mut(), x.numel()),
        }
    }

    pub fn backward(&mut self, backend: &B, dy: &Tensor<B>) -> Result<()> {
        if dy.shape() != self.out.shape() {
            return Err(KernelError::shape(
                "Dropout backward",
                self.out.shape(),
                dy.shape(),
            ));
        }
        self.dx.resize(backend, dy.shape().clone())?;
        match &self.mask {
            Some(mask) => backend.dropout(mask, dy.buf(), self.dx.buf_mut(), dy.numel()),
            None => backend.copy(dy.buf(), self.dx.buf_mut(), dy.numel()),
        }
    }
}
