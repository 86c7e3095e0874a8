//! A backend checked against the CPU on the declared architectures'
//! layers before a job trusts it with them: one training step of a small
//! model holding every such layer, logits and gradients compared. A
//! backend whose kernels have not been run on its device before (a GPU
//! fairgrid has not been tested on) is then caught at once, and the node
//! trains on its CPU instead of sending updates an audit would reject.

use super::arch::{LayerSpec, Op};
use super::{Arch, InputShape, Model, ModelSpec};
use crate::backend::Backend;
use crate::backend::cpu::CpuBackend;
use crate::error::{KernelError, Result};
use crate::layers::Pass;
use crate::tensor::{IndexTensor, Shape, Tensor};

/// Largest relative difference (to the largest reference value) accepted.
pub const TOLERANCE: f64 = 1e-3;

/// Whether `spec` uses a layer beyond the zoo's (conv, ReLU, max-pool,
/// flatten, linear).
pub fn uses_declared_layers(spec: &ModelSpec) -> bool {
    let beyond = |op: &Op| {
        !matches!(
            op,
            Op::Conv2d { .. } | Op::Relu | Op::MaxPool2d { .. } | Op::Flatten | Op::Linear { .. }
        )
    };
    spec.layer_list().iter().any(|l| match l {
        LayerSpec::Op(op) => beyond(op),
        LayerSpec::Residual(_) => true,
    })
}

/// The model the check trains: every declared layer, on 2x9x8 inputs.
fn probe_spec() -> ModelSpec {
    let op = LayerSpec::Op;
    let conv = |out_channels, kernel, stride, padding| Op::Conv2d {
        out_channels,
        kernel,
        stride,
        padding,
    };
    ModelSpec {
        arch: Arch::Layers(vec![
            // 40 channels: more than one block of 32 in the batch-norm sums.
            op(conv(40, 3, 1, 1)),
            op(Op::BatchNorm),
            op(Op::Gelu),
            LayerSpec::Residual(vec![conv(40, 3, 1, 1), Op::BatchNorm, Op::Tanh]),
            op(Op::AvgPool2d {
                kernel: 2,
                stride: 2,
            }),
            op(conv(4, 2, 2, 0)),
            op(Op::Flatten),
            op(Op::Dropout { p_ppm: 250_000 }),
            op(Op::Linear { out_features: 8 }),
            op(Op::BatchNorm),
            op(Op::Relu),
            op(Op::Linear { out_features: 5 }),
        ]),
        input: InputShape {
            channels: 2,
            height: 9,
            width: 8,
        },
        classes: 5,
    }
}

/// The probe model's logits after one training pass, then its gradients
/// and its parameters (running statistics included), each cut into its
/// tensors so that each is compared at its own scale.
fn one_step<B: Backend>(backend: &B) -> Result<Vec<(String, Vec<f32>)>> {
    let spec = probe_spec();
    let mut model = Model::new(backend, &spec, 7)?;
    model.set_pass(Pass::Train { seed: 11 });
    let n = 6;
    let x: Vec<f32> = (0..n * spec.input.numel())
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 5).collect();
    let xt = Tensor::from_host(backend, model.input_shape(n), &x)?;
    let logits = model.forward(backend, &xt)?.to_host(backend)?;
    let mut lab = IndexTensor::zeros(backend, n)?;
    lab.write_host(backend, &labels)?;
    let mut dl = Tensor::zeros(backend, Shape::new([n, spec.classes]))?;
    backend.softmax_xent(
        model.logits().buf(),
        lab.buf(),
        n,
        spec.classes,
        Some(dl.buf_mut()),
    )?;
    model.backward(backend, &xt, &dl)?;
    let (grads, params) = (model.grads_flat(backend)?, model.params_flat(backend)?);
    let mut out = vec![("logits".to_string(), logits)];
    for info in model.param_layout() {
        let range = info.offset..info.offset + info.len;
        if info.trainable {
            out.push((
                format!("gradient of {}", info.name),
                grads[range.clone()].to_vec(),
            ));
        }
        out.push((info.name.clone(), params[range].to_vec()));
    }
    Ok(out)
}

/// Checks `backend` against the CPU backend; the error says what differs.
pub fn agrees_with_cpu<B: Backend>(backend: &B) -> Result<()> {
    let want = one_step(&CpuBackend::new(1)?)?;
    let got = one_step(backend)?;
    for ((what, w), (_, g)) in want.iter().zip(&got) {
        let scale = w.iter().fold(1e-6f64, |m, v| m.max(f64::from(v.abs())));
        let worst = w
            .iter()
            .zip(g)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs() / scale)
            .fold(
                0.0f64,
                |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
            );
        if worst > TOLERANCE {
            return Err(mismatch(format!(
                "{} differs from the CPU on the declared layers: {what} off by {worst:.2e} (relative), more than {TOLERANCE:.0e}",
                backend.name()
            )));
        }
    }
    Ok(())
}

/// The error of a backend that computed something else (not one that
/// could not run: see [`is_mismatch`]).
fn mismatch(reason: String) -> KernelError {
    KernelError::Backend {
        backend: "self-check",
        reason,
    }
}

/// Whether `error` says the backend computed something else, a verdict
/// worth keeping, rather than that it could not run (out of memory, say).
pub fn is_mismatch(error: &KernelError) -> bool {
    matches!(
        error,
        KernelError::Backend {
            backend: "self-check",
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_agrees_with_itself_on_any_thread_count() {
        agrees_with_cpu(&CpuBackend::new(3).unwrap()).unwrap();
    }

    #[test]
    fn the_zoo_needs_no_check_and_declared_layers_do() {
        let zoo = ModelSpec::fashion_mnist(Arch::Cnn);
        assert!(!uses_declared_layers(&zoo));
        assert!(uses_declared_layers(&probe_spec()));
    }
}
