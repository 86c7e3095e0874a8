//! int8 inference against fp32 on a trained CNN.

use fairgrid_kernels::data::builtin;
use fairgrid_kernels::model::int8::Int8Model;
use fairgrid_kernels::model::{LayerSpec, Op};
use fairgrid_kernels::{Arch, CpuBackend, Model, ModelSpec, OptimizerConfig, Samples, Trainer};

fn trained(arch: Arch) -> (Trainer<CpuBackend>, fairgrid_kernels::FashionMnist) {
    let data = builtin::fashion_mnist().unwrap();
    let spec = ModelSpec::fashion_mnist(arch);
    let mut t = Trainer::new(
        CpuBackend::new(2).unwrap(),
        &spec,
        OptimizerConfig::sgd(0.05, 0.9),
        64,
        1,
    )
    .unwrap();
    let train = data.train.take(3000);
    t.train_epoch(&train, 1, &|_| 0.05, &mut |_, _| true)
        .unwrap();
    (t, data)
}

fn int8_of(t: &Trainer<CpuBackend>) -> Int8Model {
    let backend = CpuBackend::new(2).unwrap();
    let mut model = Model::new(&backend, t.model().spec(), 0).unwrap();
    model
        .set_params_flat(&backend, &t.params_flat().unwrap())
        .unwrap();
    Int8Model::new(model, backend, 2).unwrap()
}

#[test]
fn int8_inference_keeps_the_cnn_s_accuracy() {
    let (mut t, data) = trained(Arch::Cnn);
    let test = data.test.take(1000);
    let fp32 = t.evaluate(&test).unwrap().accuracy;
    let int8 = int8_of(&t).evaluate(&test, 128).unwrap().accuracy;
    assert!(fp32 > 0.6, "{fp32}");
    assert!((fp32 - int8).abs() <= 0.01, "fp32 {fp32}, int8 {int8}");
}

#[test]
fn int8_inference_runs_declared_models_and_agrees_with_fp32() {
    let op = LayerSpec::Op;
    let layers = vec![
        op(Op::Conv2d {
            out_channels: 8,
            kernel: 3,
            stride: 2,
            padding: 1,
        }),
        op(Op::BatchNorm),
        op(Op::Relu),
        LayerSpec::Residual(vec![
            Op::Conv2d {
                out_channels: 8,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            Op::Relu,
        ]),
        op(Op::AvgPool2d {
            kernel: 2,
            stride: 2,
        }),
        op(Op::Flatten),
        op(Op::Dropout { p_ppm: 100_000 }),
        op(Op::Linear { out_features: 10 }),
    ];
    let (mut t, data) = trained(Arch::Layers(layers));
    let test = data.test.take(500);
    let fp32 = t.evaluate(&test).unwrap().accuracy;
    let int8 = int8_of(&t).evaluate(&test, 100).unwrap().accuracy;
    assert!(fp32 > 0.5, "{fp32}");
    assert!((fp32 - int8).abs() <= 0.02, "fp32 {fp32}, int8 {int8}");
    assert_eq!(test.len(), 500);
}
