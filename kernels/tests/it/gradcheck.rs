//! Finite-difference gradient checks: every layer, the loss and a whole
//! model, against f64 reference implementations, on every backend.

use crate::common;

use crate::gradcheck_layers::{self as more, PASS_SEED};
use common::*;
use fairgrid_kernels::backend::Backend;
use fairgrid_kernels::init::Init;
use fairgrid_kernels::layers::{Conv2d, Flatten, Layer, Linear, MaxPool2d, Pass, Relu};
use fairgrid_kernels::rng::SplitMix64;
use fairgrid_kernels::tensor::IndexTensor;
use fairgrid_kernels::{Arch, InputShape, Model, ModelSpec, Result, Shape, Tensor, test_device};

const TOL: f64 = 1e-4;

/// f32-representable random values, so both paths see the same numbers.
pub fn randf(seed: u64, len: usize, scale: f64) -> Vec<f64> {
    to_f64(&to_f32(&randn(seed, len, scale)))
}

/// A reference forward: `(input, parameters) -> output`, in f64.
type Reference<'a> = &'a dyn Fn(&[f64], &[Vec<f64>]) -> Vec<f64>;

fn set_params<B: Backend>(be: &B, layer: &mut Layer<B>, values: &[&[f64]]) -> Result<()> {
    for (p, v) in layer.params_mut().into_iter().zip(values) {
        p.value.write_host(be, &to_f32(v))?;
    }
    Ok(())
}

fn grads<B: Backend>(be: &B, layer: &Layer<B>) -> Result<Vec<Vec<f32>>> {
    layer
        .params()
        .iter()
        .map(|(_, p)| p.grad.to_host(be))
        .collect()
}

/// Checks a layer's backward pass against numeric gradients of
/// `L = sum(f(x, params) * r)` computed with the reference `f`.
pub fn check_layer<B: Backend>(
    be: &B,
    name: &str,
    layer: &mut Layer<B>,
    in_shape: Shape,
    params: Vec<Vec<f64>>,
    reference: Reference<'_>,
) -> Result<()> {
    let x = randf(1, in_shape.numel(), 1.0);
    let refs: Vec<&[f64]> = params.iter().map(|p| p.as_slice()).collect();
    set_params(be, layer, &refs)?;
    let xt = Tensor::from_host(be, in_shape, &to_f32(&x))?;
    layer.forward(be, &xt, Pass::Train { seed: PASS_SEED })?;
    let want_y = reference(&x, &params);
    assert_close(
        &format!("{name} forward"),
        &layer.output().to_host(be)?,
        &want_y,
        TOL,
    );
    let r = randf(2, want_y.len(), 1.0);
    let dy = Tensor::from_host(be, layer.output().shape().clone(), &to_f32(&r))?;
    layer.backward(be, &xt, &dy, true)?;
    let loss = |y: Vec<f64>| y.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>();
    let coords = sample_coords(x.len(), 60, 3);
    let want_dx = numeric_grad(&x, &coords, &|xv| loss(reference(xv, &params)));
    let got_dx = layer.input_grad().to_host(be)?;
    let got_dx: Vec<f32> = coords.iter().map(|&i| got_dx[i]).collect();
    assert_close(&format!("{name} dx"), &got_dx, &want_dx, TOL);
    let got = grads(be, layer)?;
    // Without the input gradient (a first layer), parameter gradients are
    // the same (backends may take another path for them).
    layer.backward(be, &xt, &dy, false)?;
    for (p, (alone, with_dx)) in grads(be, layer)?.iter().zip(&got).enumerate() {
        assert_close(
            &format!("{name} param {p} grad without dx"),
            alone,
            &to_f64(with_dx),
            TOL,
        );
    }
    for (p, got_p) in got.iter().enumerate() {
        let coords = sample_coords(params[p].len(), 60, 4 + p as u64);
        let want = numeric_grad(&params[p], &coords, &|pv| {
            let mut ps = params.clone();
            ps[p] = pv.to_vec();
            loss(reference(&x, &ps))
        });
        let got_sel: Vec<f32> = coords.iter().map(|&i| got_p[i]).collect();
        assert_close(&format!("{name} param {p} grad"), &got_sel, &want, TOL);
    }
    Ok(())
}

fn conv_gradients<B: Backend>(be: &B) -> Result<()> {
    let geometries = [
        Conv {
            n: 3,
            h: 6,
            w: 5,
            c: 3,
            o: 4,
            k: 3,
            stride: 1,
            pad: 1,
        },
        Conv {
            n: 2,
            h: 7,
            w: 7,
            c: 2,
            o: 5,
            k: 3,
            stride: 2,
            pad: 0,
        },
        Conv {
            n: 2,
            h: 4,
            w: 4,
            c: 1,
            o: 3,
            k: 1,
            stride: 1,
            pad: 0,
        },
        Conv {
            n: 5,
            h: 9,
            w: 8,
            c: 4,
            o: 8,
            k: 5,
            stride: 1,
            pad: 2,
        },
    ];
    for g in geometries {
        let mut rng = SplitMix64::new(9);
        let conv = Conv2d::new(
            be,
            g.c,
            g.o,
            g.k,
            g.stride,
            g.pad,
            Init::KaimingNormal,
            &mut rng,
        )?;
        let mut layer = Layer::Conv2d(conv);
        let w = randf(5, g.o * g.k * g.k * g.c, 0.5);
        let b = randf(6, g.o, 0.5);
        check_layer(
            be,
            &format!("conv {g:?}"),
            &mut layer,
            Shape::new([g.n, g.h, g.w, g.c]),
            vec![w, b],
            &|x, p| conv2d(&g, x, &p[0], &p[1]),
        )?;
    }
    Ok(())
}
test_device!(conv_gradients);

fn linear_gradients<B: Backend>(be: &B) -> Result<()> {
    for (n, i, o) in [(4, 7, 3), (1, 1, 1), (33, 65, 17)] {
        let mut rng = SplitMix64::new(9);
        let mut layer = Layer::Linear(Linear::new(be, i, o, Init::XavierUniform, &mut rng)?);
        check_layer(
            be,
            &format!("linear {n}x{i}->{o}"),
            &mut layer,
            Shape::new([n, i]),
            vec![randf(5, o * i, 0.5), randf(6, o, 0.5)],
            &|x, p| linear(x, &p[0], &p[1], n, i, o),
        )?;
    }
    Ok(())
}
test_device!(linear_gradients);

fn relu_gradients<B: Backend>(be: &B) -> Result<()> {
    let mut layer = Layer::Relu(Relu::new(be)?);
    check_layer(
        be,
        "relu",
        &mut layer,
        Shape::new([3, 50]),
        vec![],
        &|x, _| relu(x),
    )
}
test_device!(relu_gradients);

fn maxpool_gradients<B: Backend>(be: &B) -> Result<()> {
    for (n, h, w, c, k, s) in [(2, 6, 6, 3, 2, 2), (2, 7, 5, 2, 2, 2), (1, 7, 7, 4, 3, 2)] {
        let mut layer = Layer::MaxPool2d(MaxPool2d::new(be, k, s)?);
        check_layer(
            be,
            &format!("maxpool {h}x{w}x{c} k{k} s{s}"),
            &mut layer,
            Shape::new([n, h, w, c]),
            vec![],
            &|x, _| maxpool(x, n, h, w, c, k, s),
        )?;
    }
    Ok(())
}
test_device!(maxpool_gradients);

fn flatten_gradients<B: Backend>(be: &B) -> Result<()> {
    let mut layer = Layer::Flatten(Flatten::new(be)?);
    check_layer(
        be,
        "flatten",
        &mut layer,
        Shape::new([2, 3, 4, 5]),
        vec![],
        &|x, _| x.to_vec(),
    )?;
    assert_eq!(layer.output().shape(), &Shape::new([2, 60]));
    assert_eq!(layer.input_grad().shape(), &Shape::new([2, 3, 4, 5]));
    Ok(())
}
test_device!(flatten_gradients);

fn loss_gradient<B: Backend>(be: &B) -> Result<()> {
    let (rows, classes) = (7, 5);
    let logits = randf(11, rows * classes, 3.0);
    let labels: Vec<u32> = (0..rows as u32).map(|r| (r * 3) % classes as u32).collect();
    let lt = Tensor::from_host(be, Shape::new([rows, classes]), &to_f32(&logits))?;
    let mut lab = IndexTensor::zeros(be, rows)?;
    lab.write_host(be, &labels)?;
    let mut grad = Tensor::zeros(be, Shape::new([rows, classes]))?;
    let stats = be.softmax_xent(lt.buf(), lab.buf(), rows, classes, Some(grad.buf_mut()))?;
    let want = xent(&logits, &labels, classes);
    assert!(
        (stats.loss_sum / rows as f64 - want).abs() < 1e-5,
        "{} vs {want}",
        stats.loss_sum
    );
    let all: Vec<usize> = (0..logits.len()).collect();
    let numeric = numeric_grad(&logits, &all, &|l| xent(l, &labels, classes));
    assert_close("softmax-xent grad", &grad.to_host(be)?, &numeric, TOL);
    let argmax_right = (0..rows)
        .filter(|&r| {
            let row = &logits[r * classes..(r + 1) * classes];
            let best = (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            best == labels[r] as usize
        })
        .count();
    assert_eq!(stats.correct, argmax_right as u64);
    Ok(())
}
test_device!(loss_gradient);

/// f64 forward of a whole model from its flat parameters, by walking the
/// layer list (so it checks the model's wiring, not just the layers).
/// Dropout masks are those of a training pass with [`PASS_SEED`].
pub fn reference_model<B: Backend>(
    model: &Model<B>,
    flat: &[f64],
    x: &[f64],
    n: usize,
) -> Vec<f64> {
    let layout = model.param_layout();
    let mut act = x.to_vec();
    for (index, layer) in model.layers().iter().enumerate() {
        let dims = model.layer_input_shape(index).dims().to_vec();
        let params: Vec<&[f64]> = layout
            .iter()
            .filter(|p| p.layer == index)
            .map(|p| &flat[p.offset..p.offset + p.len])
            .collect();
        act = reference_layer(layer, &dims, &params, act, n);
    }
    act
}

/// One layer of [`reference_model`]; `dims` is its input shape for a
/// batch of one and `params` its tensors in order.
fn reference_layer<B: Backend>(
    layer: &Layer<B>,
    dims: &[usize],
    params: &[&[f64]],
    act: Vec<f64>,
    n: usize,
) -> Vec<f64> {
    match layer {
        Layer::Conv2d(c) => {
            let g = Conv {
                n,
                h: dims[1],
                w: dims[2],
                c: dims[3],
                o: c.out_channels(),
                k: c.kernel(),
                stride: c.stride(),
                pad: c.pad(),
            };
            conv2d(&g, &act, params[0], params[1])
        }
        Layer::Linear(l) => linear(
            &act,
            params[0],
            params[1],
            n,
            l.in_features(),
            l.out_features(),
        ),
        Layer::Relu(_) => relu(&act),
        Layer::MaxPool2d(p) => maxpool(&act, n, dims[1], dims[2], dims[3], p.kernel(), p.stride()),
        Layer::AvgPool2d(p) => {
            more::avgpool(&act, (n, dims[1], dims[2], dims[3]), p.kernel(), p.stride())
        }
        Layer::Flatten(_) => act,
        Layer::Smooth(s) => match s.kind() {
            fairgrid_kernels::backend::Activation::Gelu => more::gelu(&act),
            fairgrid_kernels::backend::Activation::Tanh => more::tanh(&act),
        },
        Layer::Dropout(d) => more::dropout(&act, d, PASS_SEED),
        Layer::BatchNorm(b) => more::batchnorm(&act, b.channels(), params[0], params[1]),
        Layer::Residual(r) => {
            let mut inner_act = act.clone();
            let mut shape = Shape::new(dims.to_vec());
            let mut used = 0;
            for inner in r.inner() {
                let count = inner.params().len();
                let inner_params = &params[used..used + count];
                used += count;
                inner_act = reference_layer(inner, shape.dims(), inner_params, inner_act, n);
                shape = inner.output_shape(&shape).expect("checked model");
            }
            act.iter().zip(inner_act).map(|(a, b)| a + b).collect()
        }
    }
}

fn model_gradients<B: Backend>(be: &B) -> Result<()> {
    let input = InputShape {
        channels: 2,
        height: 9,
        width: 8,
    };
    for arch in [Arch::Cnn, Arch::Mlp { hidden: vec![7, 5] }, Arch::LogReg] {
        let spec = ModelSpec {
            arch: arch.clone(),
            input,
            classes: 4,
        };
        let mut model = Model::new(be, &spec, 5)?;
        let n = 3;
        let x = randf(21, n * input.numel(), 1.0);
        let labels: Vec<u32> = vec![0, 3, 2];
        let flat = to_f64(&model.params_flat(be)?);
        let xt = Tensor::from_host(be, model.input_shape(n), &to_f32(&x))?;
        let logits = model.forward(be, &xt)?.to_host(be)?;
        let want = reference_model(&model, &flat, &x, n);
        assert_close(&format!("{arch} logits"), &logits, &want, TOL);
        let mut lab = IndexTensor::zeros(be, n)?;
        lab.write_host(be, &labels)?;
        let mut dl = Tensor::zeros(be, Shape::new([n, 4]))?;
        be.softmax_xent(model.logits().buf(), lab.buf(), n, 4, Some(dl.buf_mut()))?;
        model.backward(be, &xt, &dl)?;
        let got = model.grads_flat(be)?;
        let coords = sample_coords(flat.len(), 80, 8);
        let numeric = numeric_grad(&flat, &coords, &|p| {
            xent(&reference_model(&model, p, &x, n), &labels, 4)
        });
        let got_sel: Vec<f32> = coords.iter().map(|&i| got[i]).collect();
        assert_close(
            &format!("{arch} parameter gradients"),
            &got_sel,
            &numeric,
            TOL,
        );
    }
    Ok(())
}
test_device!(model_gradients);
