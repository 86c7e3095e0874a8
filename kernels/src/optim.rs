//! Optimizers: SGD with momentum (optionally Nesterov) and Adam, applied
//! tensor by tensor through the backend's fused update ops.

use serde::{Deserialize, Serialize};

use crate::backend::{AdamHyper, Backend, SgdHyper, UpdateTensor};
use crate::error::{KernelError, Result};
use crate::model::Model;
use crate::tensor::Tensor;

/// Which optimizer, with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerConfig {
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
    },
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
}

impl OptimizerConfig {
    pub fn sgd(lr: f32, momentum: f32) -> Self {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    pub fn nesterov(lr: f32, momentum: f32) -> Self {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            nesterov: true,
            weight_decay: 0.0,
        }
    }

    pub fn adam(lr: f32) -> Self {
        OptimizerConfig::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    pub fn lr(&self) -> f32 {
        match *self {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } => lr,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(KernelError::config("optimizer", reason));
        let unit = |v: f32| v.is_finite() && (0.0..1.0).contains(&v);
        let lr = self.lr();
        if !lr.is_finite() || lr <= 0.0 || lr > 100.0 {
            return bad(format!("learning rate {lr} is not in (0, 100]"));
        }
        match *self {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                if !unit(momentum) {
                    return bad(format!("momentum {momentum} is not in [0, 1)"));
                }
                if nesterov && momentum == 0.0 {
                    return bad("Nesterov needs a positive momentum".into());
                }
                if !weight_decay.is_finite() || weight_decay < 0.0 {
                    return bad(format!("weight decay {weight_decay} is negative"));
                }
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                if !unit(beta1) || !unit(beta2) {
                    return bad(format!("betas ({beta1}, {beta2}) are not in [0, 1)"));
                }
                if !eps.is_finite() || eps <= 0.0 {
                    return bad(format!("eps {eps} is not positive"));
                }
                if !weight_decay.is_finite() || weight_decay < 0.0 {
                    return bad(format!("weight decay {weight_decay} is negative"));
                }
            }
        }
        Ok(())
    }
}

/// Optimizer state for one model: a velocity (SGD) or two moments (Adam)
/// per parameter tensor, on the device.
pub struct Optimizer<B: Backend> {
    config: OptimizerConfig,
    first: Vec<Tensor<B>>,
    second: Vec<Tensor<B>>,
    steps: u64,
}

impl<B: Backend> Optimizer<B> {
    pub fn new(backend: &B, config: OptimizerConfig, model: &Model<B>) -> Result<Self> {
        config.validate()?;
        let zeros = |model: &Model<B>| -> Result<Vec<Tensor<B>>> {
            model
                .trainable_params()
                .map(|p| Tensor::zeros(backend, p.value.shape().clone()))
                .collect()
        };
        let first = zeros(model)?;
        let second = match config {
            OptimizerConfig::Adam { .. } => zeros(model)?,
            OptimizerConfig::Sgd { .. } => Vec::new(),
        };
        Ok(Optimizer {
            config,
            first,
            second,
            steps: 0,
        })
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Zeroes the state, as if freshly created.
    pub fn reset(&mut self, backend: &B) -> Result<()> {
        for t in self.first.iter_mut().chain(self.second.iter_mut()) {
            let n = t.numel();
            backend.fill(t.buf_mut(), n, 0.0)?;
        }
        self.steps = 0;
        Ok(())
    }

    /// Applies one update from the model's current gradients, with the
    /// learning rate `lr` (which a schedule may vary).
    pub fn step(&mut self, backend: &B, model: &mut Model<B>, lr: f32) -> Result<()> {
        self.apply(backend, model, lr)
    }

    /// [`Optimizer::step`] that changes nothing (parameters or state) once
    /// `guard` records a failed step; the host need not look first. Every
    /// tensor is updated by one fused call ([`Backend::sgd_step_all`],
    /// [`Backend::adam_step_all`]).
    pub fn step_guarded(
        &mut self,
        backend: &B,
        model: &mut Model<B>,
        lr: f32,
        guard: &B::Stats,
    ) -> Result<()> {
        if !lr.is_finite() || lr < 0.0 {
            return Err(KernelError::config("learning rate", format!("{lr}")));
        }
        self.steps += 1;
        let mut second = self.second.iter_mut();
        let mut tensors: Vec<UpdateTensor<'_, B::Buf>> = model
            .trainable_params_mut()
            .zip(self.first.iter_mut())
            .map(|(param, first)| {
                let len = param.numel();
                UpdateTensor {
                    param: param.value.buf_mut(),
                    grad: param.grad.buf(),
                    first: first.buf_mut(),
                    second: second.next().map(|s| s.buf_mut()),
                    len,
                }
            })
            .collect();
        match self.config {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                let hyper = SgdHyper {
                    lr,
                    momentum,
                    nesterov,
                    weight_decay,
                };
                backend.sgd_step_all(&hyper, &mut tensors, guard)
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                let hyper = AdamHyper {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    step: self.steps,
                };
                backend.adam_step_all(&hyper, &mut tensors, guard)
            }
        }
    }

    /// Sets the step counter back to `steps` (after a failed step that the
    /// guard skipped, so Adam's bias correction stays in line).
    pub fn rewind(&mut self, steps: u64) {
        self.steps = self.steps.min(steps);
    }

    fn apply(&mut self, backend: &B, model: &mut Model<B>, lr: f32) -> Result<()> {
        if !lr.is_finite() || lr < 0.0 {
            return Err(KernelError::config("learning rate", format!("{lr}")));
        }
        self.steps += 1;
        match self.config {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => {
                let hyper = SgdHyper {
                    lr,
                    momentum,
                    nesterov,
                    weight_decay,
                };
                for (param, v) in model.trainable_params_mut().zip(self.first.iter_mut()) {
                    let n = param.numel();
                    let (p, g) = (param.value.buf_mut(), param.grad.buf());
                    backend.sgd_step(&hyper, p, g, v.buf_mut(), n)?;
                }
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                let hyper = AdamHyper {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    step: self.steps,
                };
                let state = self.first.iter_mut().zip(self.second.iter_mut());
                for (param, (m, v)) in model.trainable_params_mut().zip(state) {
                    let n = param.numel();
                    let (p, g) = (param.value.buf_mut(), param.grad.buf());
                    backend.adam_step(&hyper, p, g, m.buf_mut(), v.buf_mut(), n)?;
                }
            }
        }
        Ok(())
    }
}
