//! Per-layer timing of one training step, for finding where the time goes
//! on a device (`fairgrid train --profile-steps`). Each layer's forward and
//! backward pass is bracketed by [`Backend::synchronize`], so the figures
//! include one device round trip each and the step runs slower than
//! unprofiled; they are for comparing layers, not for throughput.

use std::time::{Duration, Instant};

use super::Model;
use crate::backend::Backend;
use crate::error::{KernelError, Result};
use crate::tensor::Tensor;

/// Time spent in one layer (or stage) of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTiming {
    pub name: String,
    pub forward: Duration,
    pub backward: Duration,
}

impl<B: Backend> Model<B> {
    /// [`Model::forward`] then [`Model::backward`], timing every layer;
    /// `loss` computes `dlogits` from the logits between the two.
    pub fn profile(
        &mut self,
        backend: &B,
        x: &Tensor<B>,
        dlogits: &mut Tensor<B>,
        loss: &mut dyn FnMut(&B, &Tensor<B>, &mut Tensor<B>) -> Result<()>,
    ) -> Result<Vec<LayerTiming>> {
        let want = self.input_shape(x.shape().batch());
        if x.shape() != &want {
            return Err(KernelError::shape("Model::profile", &want, x.shape()));
        }
        let n = self.layers.len();
        let mut timings: Vec<LayerTiming> = self
            .layers
            .iter()
            .zip(&self.torch_index)
            .map(|(layer, index)| LayerTiming {
                name: format!("{index} {}", layer.describe()),
                forward: Duration::ZERO,
                backward: Duration::ZERO,
            })
            .collect();
        backend.synchronize()?;
        for i in 0..n {
            let started = Instant::now();
            let (before, rest) = self.layers.split_at_mut(i);
            let input = if i == 0 { x } else { before[i - 1].output() };
            rest[0].forward(backend, input, self.pass)?;
            backend.synchronize()?;
            timings[i].forward = started.elapsed();
        }
        let started = Instant::now();
        loss(backend, self.logits(), dlogits)?;
        backend.synchronize()?;
        timings.push(LayerTiming {
            name: "softmax cross-entropy".into(),
            forward: started.elapsed(),
            backward: Duration::ZERO,
        });
        for i in (self.first_trainable..n).rev() {
            let started = Instant::now();
            let (before, rest) = self.layers.split_at_mut(i);
            let (current, after) = rest.split_first_mut().expect("i < n");
            let dy = if i == n - 1 {
                &*dlogits
            } else {
                after[0].input_grad()
            };
            let input = if i == 0 { x } else { before[i - 1].output() };
            current.backward(backend, input, dy, i > self.first_trainable)?;
            backend.synchronize()?;
            timings[i].backward = started.elapsed();
        }
        Ok(timings)
    }
}
