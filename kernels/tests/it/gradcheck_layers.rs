//! Gradient checks of the declared architectures' layers (GELU, tanh,
//! dropout, average pooling, batch norm, residual blocks) and of a whole
//! declared model, against f64 references, on every backend.

use crate::common::*;
use crate::gradcheck::{check_layer, randf, reference_model};
use fairgrid_kernels::backend::{Activation, Backend};
use fairgrid_kernels::init::Init;
use fairgrid_kernels::layers::{
    AvgPool2d, BATCHNORM_EPS, BatchNorm, Conv2d, Dropout, Layer, Pass, Relu, Residual, Smooth,
};
use fairgrid_kernels::model::{LayerSpec, Op};
use fairgrid_kernels::rng::{SplitMix64, dropout_keeps};
use fairgrid_kernels::tensor::IndexTensor;
use fairgrid_kernels::{Arch, InputShape, Model, ModelSpec, Result, Shape, Tensor, test_device};

pub const PASS_SEED: u64 = 77;

pub fn gelu(x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|&v| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)))
        .collect()
}

/// Abramowitz-Stegun 7.1.26 is too coarse for a 1e-4 check; this is the
/// series / continued fraction pair, accurate to ~1e-14.
fn erf(x: f64) -> f64 {
    if x.abs() < 2.5 {
        let mut sum = x;
        let mut term = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc by Lentz's continued fraction.
        let z = x.abs();
        let mut f = z;
        let mut c = z;
        let mut d = 0.0;
        for n in 1..300 {
            let a = n as f64 / 2.0;
            d = z + a * d;
            d = 1.0 / d;
            c = z + a / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        let erfc = (-z * z).exp() / (f * std::f64::consts::PI.sqrt());
        (1.0 - erfc).copysign(x)
    }
}

pub fn tanh(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v.tanh()).collect()
}

pub fn dropout(x: &[f64], layer: &Dropout<impl Backend>, seed: u64) -> Vec<f64> {
    let mask = layer.mask_for(seed);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if dropout_keeps(mask.seed, i as u64, mask.threshold) {
                v * f64::from(mask.scale)
            } else {
                0.0
            }
        })
        .collect()
}

pub fn avgpool(
    x: &[f64],
    (n, h, w, c): (usize, usize, usize, usize),
    k: usize,
    s: usize,
) -> Vec<f64> {
    let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
    let mut y = vec![0.0; n * oh * ow * c];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut sum = 0.0;
                    for ky in 0..k {
                        for kx in 0..k {
                            sum += x[((b * h + oy * s + ky) * w + ox * s + kx) * c + ch];
                        }
                    }
                    y[((b * oh + oy) * ow + ox) * c + ch] = sum / (k * k) as f64;
                }
            }
        }
    }
    y
}

/// Training-mode batch norm over `[rows, c]`.
pub fn batchnorm(x: &[f64], c: usize, gamma: &[f64], beta: &[f64]) -> Vec<f64> {
    let rows = x.len() / c;
    let mut y = vec![0.0; x.len()];
    for ch in 0..c {
        let mean = (0..rows).map(|r| x[r * c + ch]).sum::<f64>() / rows as f64;
        let var = (0..rows)
            .map(|r| (x[r * c + ch] - mean).powi(2))
            .sum::<f64>()
            / rows as f64;
        let inv = 1.0 / (var + f64::from(BATCHNORM_EPS)).sqrt();
        for r in 0..rows {
            y[r * c + ch] = (x[r * c + ch] - mean) * inv * gamma[ch] + beta[ch];
        }
    }
    y
}

fn smooth_gradients<B: Backend>(be: &B) -> Result<()> {
    for (kind, name, f) in [
        (Activation::Gelu, "gelu", gelu as fn(&[f64]) -> Vec<f64>),
        (Activation::Tanh, "tanh", tanh),
    ] {
        let mut layer = Layer::Smooth(Smooth::new(be, kind)?);
        check_layer(
            be,
            name,
            &mut layer,
            Shape::new([3, 40]),
            vec![],
            &|x, _| f(x),
        )?;
    }
    Ok(())
}
test_device!(smooth_gradients);

fn dropout_gradients<B: Backend>(be: &B) -> Result<()> {
    let reference = Dropout::new(be, 0.3, 5)?;
    let mut layer = Layer::Dropout(Dropout::new(be, 0.3, 5)?);
    check_layer(
        be,
        "dropout",
        &mut layer,
        Shape::new([4, 50]),
        vec![],
        &|x, _| dropout(x, &reference, PASS_SEED),
    )?;
    // Evaluation is the identity.
    let x = Tensor::from_host(be, Shape::new([1, 3]), &[1.0, -2.0, 3.0])?;
    layer.forward(be, &x, Pass::Eval)?;
    assert_eq!(layer.output().to_host(be)?, [1.0, -2.0, 3.0]);
    Ok(())
}
test_device!(dropout_gradients);

fn avgpool_gradients<B: Backend>(be: &B) -> Result<()> {
    for (n, h, w, c, k, s) in [(2, 6, 6, 3, 2, 2), (2, 7, 5, 2, 3, 1), (1, 8, 8, 9, 4, 4)] {
        let mut layer = Layer::AvgPool2d(AvgPool2d::new(be, k, s)?);
        check_layer(
            be,
            &format!("avgpool {n}x{h}x{w}x{c} k{k} s{s}"),
            &mut layer,
            Shape::new([n, h, w, c]),
            vec![],
            &|x, _| avgpool(x, (n, h, w, c), k, s),
        )?;
    }
    Ok(())
}
test_device!(avgpool_gradients);

fn batchnorm_gradients<B: Backend>(be: &B) -> Result<()> {
    for shape in [Shape::new([4, 3, 3, 5]), Shape::new([6, 7])] {
        let c = *shape.dims().last().unwrap();
        let mut layer = Layer::BatchNorm(BatchNorm::new(be, c)?);
        let gamma = randf(11, c, 1.0);
        let beta = randf(12, c, 1.0);
        // The running statistics are parameters without gradients; their
        // values do not affect a training pass.
        check_layer(
            be,
            &format!("batchnorm {shape}"),
            &mut layer,
            shape.clone(),
            vec![gamma, beta, vec![0.0; c], vec![1.0; c]],
            &|x, p| batchnorm(x, c, &p[0], &p[1]),
        )?;
    }
    Ok(())
}
test_device!(batchnorm_gradients);

#[test]
fn batchnorm_running_statistics_follow_pytorch() {
    let be = fairgrid_kernels::CpuBackend::new(1).unwrap();
    let mut layer = BatchNorm::new(&be, 1).unwrap();
    let x = Tensor::from_host(&be, Shape::new([4, 1]), &[1.0, 2.0, 3.0, 6.0]).unwrap();
    layer.forward(&be, &x, Pass::Train { seed: 0 }).unwrap();
    let params = Layer::BatchNorm(layer);
    let stats: Vec<Vec<f32>> = params
        .params()
        .iter()
        .map(|(_, p)| p.value.to_host(&be).unwrap())
        .collect();
    // torch.nn.BatchNorm1d(1) on [1, 2, 3, 6]: mean 3, unbiased var 14/3.
    assert!((stats[2][0] - 0.3).abs() < 1e-6, "{:?}", stats[2]);
    assert!(
        (stats[3][0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6,
        "{:?}",
        stats[3]
    );
}

/// One sample of features: one value per channel says nothing of the
/// variance, so the running statistics stay (they would decay toward a
/// variance of 0); two values move them.
fn batchnorm_one_row_keeps_the_running_statistics<B: Backend>(be: &B) -> Result<()> {
    let stats_after = |rows: &[f32]| -> Result<Vec<Vec<f32>>> {
        let mut layer = BatchNorm::new(be, 2)?;
        let x = Tensor::from_host(be, Shape::new([rows.len() / 2, 2]), rows)?;
        layer.forward(be, &x, Pass::Train { seed: 0 })?;
        let layer = Layer::BatchNorm(layer);
        layer
            .params()
            .iter()
            .map(|(_, p)| p.value.to_host(be))
            .collect()
    };
    let one = stats_after(&[5.0, -3.0])?;
    assert_eq!((&one[2], &one[3]), (&vec![0.0, 0.0], &vec![1.0, 1.0]));
    let two = stats_after(&[5.0, -3.0, 7.0, -3.0])?;
    assert_eq!(two[2], vec![0.6, -0.3]);
    assert!((two[3][0] - (0.9 + 0.1 * 2.0)).abs() < 1e-6 && two[3][1] == 0.9);
    Ok(())
}
test_device!(batchnorm_one_row_keeps_the_running_statistics);

fn residual_gradients<B: Backend>(be: &B) -> Result<()> {
    let mut rng = SplitMix64::new(3);
    let conv = Conv2d::new(be, 3, 3, 3, 1, 1, Init::KaimingNormal, &mut rng)?;
    let inner = vec![Layer::Conv2d(conv), Layer::Relu(Relu::new(be)?)];
    let mut layer = Layer::Residual(Residual::new(be, inner)?);
    let g = Conv {
        n: 2,
        h: 5,
        w: 4,
        c: 3,
        o: 3,
        k: 3,
        stride: 1,
        pad: 1,
    };
    check_layer(
        be,
        "residual(conv, relu)",
        &mut layer,
        Shape::new([2, 5, 4, 3]),
        vec![randf(5, 81, 0.5), randf(6, 3, 0.5)],
        &|x, p| {
            let f = relu(&conv2d(&g, x, &p[0], &p[1]));
            x.iter().zip(f).map(|(a, b)| a + b).collect()
        },
    )
}
test_device!(residual_gradients);

/// Every kind of layer in one declared model.
pub fn every_layer() -> Vec<LayerSpec> {
    let op = LayerSpec::Op;
    vec![
        op(Op::Conv2d {
            out_channels: 4,
            kernel: 3,
            stride: 1,
            padding: 1,
        }),
        op(Op::BatchNorm),
        op(Op::Gelu),
        LayerSpec::Residual(vec![
            Op::Conv2d {
                out_channels: 4,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            Op::BatchNorm,
            Op::Relu,
        ]),
        op(Op::AvgPool2d {
            kernel: 2,
            stride: 2,
        }),
        op(Op::Conv2d {
            out_channels: 3,
            kernel: 2,
            stride: 2,
            padding: 0,
        }),
        op(Op::Relu),
        op(Op::MaxPool2d {
            kernel: 2,
            stride: 1,
        }),
        op(Op::Flatten),
        op(Op::Dropout { p_ppm: 250_000 }),
        op(Op::Linear { out_features: 6 }),
        op(Op::Tanh),
        op(Op::BatchNorm),
        op(Op::Linear { out_features: 4 }),
    ]
}

fn declared_model_gradients<B: Backend>(be: &B) -> Result<()> {
    let input = InputShape {
        channels: 2,
        height: 9,
        width: 8,
    };
    let spec = ModelSpec {
        arch: Arch::Layers(every_layer()),
        input,
        classes: 4,
    };
    let mut model = Model::new(be, &spec, 5)?;
    model.set_pass(Pass::Train { seed: PASS_SEED });
    let n = 5;
    let x = randf(21, n * input.numel(), 1.0);
    let labels: Vec<u32> = vec![0, 3, 2, 1, 1];
    let flat = to_f64(&model.params_flat(be)?);
    let xt = Tensor::from_host(be, model.input_shape(n), &to_f32(&x))?;
    let logits = model.forward(be, &xt)?.to_host(be)?;
    let want = reference_model(&model, &flat, &x, n);
    assert_close("declared model logits", &logits, &want, 1e-4);
    let mut lab = IndexTensor::zeros(be, n)?;
    lab.write_host(be, &labels)?;
    let mut dl = Tensor::zeros(be, Shape::new([n, 4]))?;
    be.softmax_xent(model.logits().buf(), lab.buf(), n, 4, Some(dl.buf_mut()))?;
    model.backward(be, &xt, &dl)?;
    let got = model.grads_flat(be)?;
    let coords = sample_coords(flat.len(), 120, 8);
    let numeric = numeric_grad(&flat, &coords, &|p| {
        xent(&reference_model(&model, p, &x, n), &labels, 4)
    });
    let got_sel: Vec<f32> = coords.iter().map(|&i| got[i]).collect();
    assert_close("declared model gradients", &got_sel, &numeric, 1e-4);
    Ok(())
}
test_device!(declared_model_gradients);
