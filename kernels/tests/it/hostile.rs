//! Bad input from files and the network: every case gets its specific
//! error, never a panic, and nothing is half-applied.

use fairgrid_kernels::data::idx::{encode_idx, parse_idx};
use fairgrid_kernels::data::{Dataset, Shard, ShardSet};
use fairgrid_kernels::model::{load_safetensors, read_model_spec, save_safetensors};
use fairgrid_kernels::test_utils::cpu_backend;
use fairgrid_kernels::{
    Arch, Compression, Compressor, IdxFault, InputShape, KernelError, Model, ModelSpec,
    decode_update,
};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn idx_fault(bytes: &[u8]) -> IdxFault {
    match parse_idx(bytes, "test") {
        Err(KernelError::Idx { reason, .. }) => reason,
        other => panic!("expected an IDX error, got {other:?}"),
    }
}

#[test]
fn idx_files_that_lie_are_refused_specifically() {
    let good = encode_idx(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(parse_idx(&good, "ok").is_ok());
    assert_eq!(idx_fault(&[0, 0]), IdxFault::TooShort(2));
    assert!(matches!(
        idx_fault(&[0x50, 0x4b, 3, 4, 0, 0, 0, 1, 9]),
        IdxFault::BadMagic(_)
    ));
    assert!(matches!(
        idx_fault(&[0, 0, 8, 9, 0, 0, 0, 1]),
        IdxFault::BadMagic(_)
    ));
    assert_eq!(
        idx_fault(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
        IdxFault::UnsupportedType(0x0d)
    );
    // Truncated data, trailing garbage, a header cut short.
    assert_eq!(
        idx_fault(&good[..good.len() - 3]),
        IdxFault::Truncated {
            expected: 8,
            found: 5
        }
    );
    let mut long = good.clone();
    long.push(0);
    assert_eq!(idx_fault(&long), IdxFault::TrailingBytes(1));
    assert_eq!(idx_fault(&good[..9]), IdxFault::TooShort(9));
    // Absurd dimensions: a product that would be exabytes, and a zero.
    let huge = encode_idx(&[u32::MAX as usize, u32::MAX as usize, 16], &[]);
    assert!(matches!(idx_fault(&huge), IdxFault::AbsurdDims { .. }));
    let zero = encode_idx(&[0, 28, 28], &[]);
    assert!(matches!(idx_fault(&zero), IdxFault::AbsurdDims { .. }));
    // gzip: valid wrapper round-trips; a corrupt stream is a gzip error.
    assert_eq!(parse_idx(&gzip(&good), "gz").unwrap().data.len(), 8);
    let mut corrupt = gzip(&good);
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    corrupt.truncate(corrupt.len() - 4);
    assert!(matches!(idx_fault(&corrupt), IdxFault::Gzip(_)));
    // A truncated gzip stream.
    let gz = gzip(&good);
    assert!(matches!(idx_fault(&gz[..gz.len() / 2]), IdxFault::Gzip(_)));
}

#[test]
fn dataset_directory_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let err = fairgrid_kernels::FashionMnist::load_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, KernelError::DatasetFileMissing { .. }),
        "{err}"
    );
    // Image and label counts that disagree.
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte"),
        encode_idx(&[2, 2, 2], &[0; 8]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte.gz"),
        gzip(&encode_idx(&[3], &[0; 3])),
    )
    .unwrap();
    let err = fairgrid_kernels::FashionMnist::load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, KernelError::DatasetInvalid { .. }), "{err}");
    // A label outside the ten classes.
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte.gz"),
        gzip(&encode_idx(&[2], &[1, 10])),
    )
    .unwrap();
    let err = fairgrid_kernels::FashionMnist::load_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("label 10"), "{err}");
}

fn tiny_dataset(n: usize) -> Dataset {
    let shape = InputShape {
        channels: 1,
        height: 2,
        width: 3,
    };
    let images: Vec<u8> = (0..n * 6).map(|i| (i * 7 % 251) as u8).collect();
    let labels = (0..n).map(|i| (i % 4) as u8).collect();
    Dataset::new("tiny", shape, 4, images, labels).unwrap()
}

#[test]
fn shard_bytes_follow_the_documented_layout() {
    let shard = Shard::new(tiny_dataset(3)).unwrap();
    let bytes = shard.to_bytes();
    let mut want = b"FGSHARD1".to_vec();
    for v in [3u32, 1, 2, 3, 4] {
        want.extend_from_slice(&v.to_le_bytes());
    }
    want.extend_from_slice(&shard.dataset().images().to_le_bytes());
    want.extend_from_slice(&[0, 1, 2]);
    assert_eq!(bytes, want);
    assert_eq!(shard.hash(), *blake3::hash(&want).as_bytes());
    assert_eq!(Shard::hash_bytes(&bytes), shard.hash());
    assert_eq!(Shard::from_bytes(&bytes).unwrap(), shard);
}

#[test]
fn hostile_shard_bytes_are_refused() {
    let bytes = Shard::new(tiny_dataset(3)).unwrap().to_bytes();
    let decode = |b: &[u8]| match Shard::from_bytes(b) {
        Err(KernelError::ShardDecode(reason)) => reason,
        other => panic!("expected a shard error, got {other:?}"),
    };
    assert!(decode(&bytes[..10]).contains("shorter"));
    assert!(decode(&bytes[..bytes.len() - 1]).contains("implies"));
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(decode(&extra).contains("implies"));
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(decode(&magic).contains("magic"));
    let patch = |field: usize, value: u32| {
        let mut b = bytes.clone();
        b[8 + 4 * field..12 + 4 * field].copy_from_slice(&value.to_le_bytes());
        b
    };
    assert!(decode(&patch(0, 0)).contains("samples"));
    assert!(decode(&patch(0, u32::MAX)).contains("samples"));
    assert!(decode(&patch(2, 100_000)).contains("shape"));
    assert!(decode(&patch(4, 1)).contains("classes"));
    assert!(decode(&patch(4, 2)).contains("label"));
}

/// Three samples of 4 tabular features (`4 x 1 x 1`, f32).
fn tiny_features() -> Dataset {
    let shape = InputShape {
        channels: 4,
        height: 1,
        width: 1,
    };
    let values: Vec<f32> = (0..12).map(|i| i as f32 * -0.5 + 1e-3).collect();
    Dataset::new("features", shape, 2, values, vec![0, 1, 1]).unwrap()
}

#[test]
fn f32_shards_follow_the_layout_and_hostile_ones_are_refused() {
    let shard = Shard::new(tiny_features()).unwrap();
    let bytes = shard.to_bytes();
    let mut want = b"FGSHARDF".to_vec();
    for v in [3u32, 4, 1, 1, 2] {
        want.extend_from_slice(&v.to_le_bytes());
    }
    for i in 0..12 {
        want.extend_from_slice(&(i as f32 * -0.5 + 1e-3).to_le_bytes());
    }
    want.extend_from_slice(&[0, 1, 1]);
    assert_eq!(bytes, want);
    let back = Shard::from_bytes(&bytes).unwrap();
    assert_eq!(back, shard);
    assert_eq!(back.hash(), shard.hash());

    let decode = |b: &[u8]| match Shard::from_bytes(b) {
        Err(KernelError::ShardDecode(reason)) => reason,
        other => panic!("expected a shard error, got {other:?}"),
    };
    // A NaN or an infinity among the values.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut b = bytes.clone();
        b[28 + 4 * 5..28 + 4 * 6].copy_from_slice(&bad.to_le_bytes());
        assert!(decode(&b).contains("not finite"), "{bad}");
    }
    // The byte magic on f32 values: the length no longer matches.
    let mut b = bytes.clone();
    b[..8].copy_from_slice(b"FGSHARD1");
    assert!(decode(&b).contains("implies"));
    // Features beyond the bound, and an image with too many channels.
    let mut b = bytes.clone();
    b[12..16].copy_from_slice(&5000u32.to_le_bytes());
    assert!(decode(&b).contains("5000 features"));
    let mut b = bytes.clone();
    b[12..16].copy_from_slice(&20u32.to_le_bytes());
    b[16..20].copy_from_slice(&2u32.to_le_bytes());
    assert!(decode(&b).contains("larger than 16x512x512"));
    // A set mixing byte and f32 shards is refused by kind.
    let bytes_shard = Shard::new(tiny_dataset(2)).unwrap();
    let err = ShardSet::new(vec![&shard, &bytes_shard]).err().unwrap();
    assert!(err.to_string().contains("float32"), "{err}");
}

#[test]
fn shards_are_deterministic_cover_the_data_and_chain_as_a_set() {
    let data = tiny_dataset(10);
    let a = data.shards(4, 7).unwrap();
    let b = data.shards(4, 7).unwrap();
    let c = data.shards(4, 8).unwrap();
    assert_eq!(
        a.iter().map(Shard::hash).collect::<Vec<_>>(),
        b.iter().map(Shard::hash).collect::<Vec<_>>()
    );
    assert_ne!(a[0].hash(), c[0].hash());
    assert_eq!(
        a.iter()
            .map(|s| s.dataset().labels().len())
            .collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    let set = ShardSet::new(a.iter().collect()).unwrap();
    use fairgrid_kernels::Samples;
    assert_eq!(set.len(), 10);
    let bytes = |s: fairgrid_kernels::data::SampleRef<'_>| match s {
        fairgrid_kernels::data::SampleRef::U8(v) => v.to_vec(),
        other => panic!("byte images expected, got {other:?}"),
    };
    let mut seen: Vec<Vec<u8>> = (0..10).map(|i| bytes(set.image(i))).collect();
    let mut all: Vec<Vec<u8>> = (0..10).map(|i| bytes(data.image(i))).collect();
    seen.sort();
    all.sort();
    assert_eq!(seen, all, "shards hold every sample exactly once");
    assert!(data.shards(0, 1).is_err());
}

#[test]
fn update_bytes_from_a_peer_are_checked_field_by_field() {
    let update: Vec<f32> = (0..1000)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 1000.0)
        .collect();
    for scheme in [
        Compression::Fp32,
        Compression::Int8 { block: 64 },
        Compression::TopK { permille: 50 },
    ] {
        let bytes = Compressor::new(scheme).unwrap().encode(&update).unwrap();
        assert_eq!(bytes.len(), scheme.encoded_len(update.len()));
        assert!(decode_update(&bytes, 1000).is_ok());
        let reason = |b: &[u8], len: usize| match decode_update(b, len) {
            Err(KernelError::UpdateDecode(r)) => r,
            other => panic!("{scheme:?}: expected an update error, got {other:?}"),
        };
        assert!(reason(&bytes, 999).contains("parameters"));
        assert!(reason(&bytes[..bytes.len() - 1], 1000).contains("expected"));
        assert!(reason(&bytes[..5], 1000).contains("header"));
        let mut b = bytes.clone();
        b[4] = 9;
        assert!(reason(&b, 1000).contains("version"));
        let mut b = bytes.clone();
        b[5] = 7;
        assert!(reason(&b, 1000).contains("scheme"));
        let mut b = bytes.clone();
        b[6] = 1;
        assert!(reason(&b, 1000).contains("reserved"));
    }
    // Scheme-specific poison: a NaN scale, a -128 code, an index out of
    // range or out of order, a NaN value.
    let int8 = Compressor::new(Compression::Int8 { block: 64 })
        .unwrap()
        .encode(&update)
        .unwrap();
    let mut b = int8.clone();
    b[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(decode_update(&b, 1000).is_err());
    let mut b = int8.clone();
    let last = b.len() - 1;
    b[last] = 0x80;
    assert!(decode_update(&b, 1000).is_err());
    let mut b = int8;
    b[16..20].copy_from_slice(&0u32.to_le_bytes());
    assert!(decode_update(&b, 1000).is_err(), "zero block size");
    let topk = Compressor::new(Compression::TopK { permille: 50 })
        .unwrap()
        .encode(&update)
        .unwrap();
    let mut b = topk.clone();
    b[20..24].copy_from_slice(&5000u32.to_le_bytes());
    assert!(decode_update(&b, 1000).is_err());
    let mut b = topk.clone();
    let second = b[24..28].to_vec();
    b[20..24].copy_from_slice(&second);
    assert!(decode_update(&b, 1000).is_err(), "repeated index");
    let mut b = topk.clone();
    let values = 20 + 4 * 50;
    b[values..values + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    assert!(decode_update(&b, 1000).is_err());
    let mut b = topk;
    b[16..20].copy_from_slice(&2000u32.to_le_bytes());
    assert!(decode_update(&b, 1000).is_err(), "k above len");
    let mut fp = Compressor::new(Compression::Fp32)
        .unwrap()
        .encode(&update)
        .unwrap();
    fp[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(decode_update(&fp, 1000).is_err());
}

#[test]
fn non_finite_updates_are_refused_before_the_residual_changes() {
    let mut c = Compressor::new(Compression::Int8 { block: 8 }).unwrap();
    c.encode(&[0.5; 16]).unwrap();
    let before = c.residual().to_vec();
    let mut bad = vec![0.1; 16];
    bad[3] = f32::NAN;
    assert!(matches!(c.encode(&bad), Err(KernelError::NonFinite { .. })));
    assert_eq!(c.residual(), before.as_slice());
}

/// Tensors as (name, shape, values), for building model files by hand.
type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn cnn_spec() -> ModelSpec {
    ModelSpec {
        arch: Arch::Cnn,
        input: InputShape {
            channels: 3,
            height: 12,
            width: 10,
        },
        classes: 5,
    }
}

#[test]
fn safetensors_round_trip_keeps_every_parameter() {
    let be = cpu_backend();
    for spec in [
        cnn_spec(),
        ModelSpec::fashion_mnist(Arch::Mlp {
            hidden: vec![16, 8],
        }),
    ] {
        let model = Model::new(&be, &spec, 3).unwrap();
        let bytes = save_safetensors(&model, &be).unwrap();
        assert_eq!(read_model_spec(&bytes).unwrap(), Some(spec.clone()));
        let mut other = Model::new(&be, &spec, 4).unwrap();
        assert_ne!(
            other.params_flat(&be).unwrap(),
            model.params_flat(&be).unwrap()
        );
        load_safetensors(&mut other, &be, &bytes).unwrap();
        assert_eq!(
            other.params_flat(&be).unwrap(),
            model.params_flat(&be).unwrap()
        );
    }
}

#[test]
fn safetensors_uses_pytorch_names_and_layouts() {
    let be = cpu_backend();
    let model = Model::new(&be, &cnn_spec(), 3).unwrap();
    let bytes = save_safetensors(&model, &be).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<(String, Vec<usize>)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    names.sort();
    let want: Vec<(String, Vec<usize>)> = [
        ("0.bias", vec![32]),
        ("0.weight", vec![32, 3, 3, 3]),
        ("10.bias", vec![128]),
        ("10.weight", vec![128, 128]),
        ("12.bias", vec![5]),
        ("12.weight", vec![5, 128]),
        ("3.bias", vec![64]),
        ("3.weight", vec![64, 32, 3, 3]),
        ("6.bias", vec![128]),
        ("6.weight", vec![128, 64, 3, 3]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(names, want);
    // OIHW: element [o, i, ky, kx] of the file is our [o, ky, kx, i].
    let flat = model.params_flat(&be).unwrap();
    let w0 = file.tensor("0.weight").unwrap();
    let at = |o: usize, i: usize, ky: usize, kx: usize| {
        let j = ((o * 3 + i) * 3 + ky) * 3 + kx;
        f32::from_le_bytes(w0.data()[4 * j..4 * j + 4].try_into().unwrap())
    };
    assert_eq!(at(5, 2, 1, 0), flat[((5 * 3 + 1) * 3) * 3 + 2]);
    assert_eq!(
        model.pytorch_modules()[..4],
        [
            "Conv2d(3, 32, kernel_size=3, stride=1, padding=1)".to_string(),
            "ReLU()".into(),
            "MaxPool2d(2, stride=2)".into(),
            "Conv2d(32, 64, kernel_size=3, stride=1, padding=1)".into()
        ]
    );
}

#[test]
fn bad_model_files_are_refused_and_leave_the_model_untouched() {
    let be = cpu_backend();
    let spec = cnn_spec();
    let source = Model::new(&be, &spec, 3).unwrap();
    let mut target = Model::new(&be, &spec, 4).unwrap();
    let before = target.params_flat(&be).unwrap();
    let save = |tensors: Vec<(&str, Vec<usize>, Vec<f32>)>| {
        let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(n, s, d)| {
                (
                    n.to_string(),
                    s,
                    d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
            .iter()
            .map(|(n, s, d)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                        .unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    };
    let good = save_safetensors(&source, &be).unwrap();
    let file = safetensors::SafeTensors::deserialize(&good).unwrap();
    let all: Tensors = file
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, v.shape().to_vec(), data)
        })
        .collect();
    let variant = |f: &dyn Fn(&mut Tensors)| {
        let mut t = all.clone();
        f(&mut t);
        save(
            t.iter()
                .map(|(n, s, d)| (n.as_str(), s.clone(), d.clone()))
                .collect(),
        )
    };
    // Missing tensor.
    let missing = variant(&|t| t.retain(|(n, _, _)| n != "6.bias"));
    assert!(matches!(
        load_safetensors(&mut target, &be, &missing),
        Err(KernelError::MissingTensor { name }) if name == "6.bias"
    ));
    // Wrong shape (transposed linear weight).
    let wrong = variant(&|t| {
        for e in t.iter_mut().filter(|e| e.0 == "12.weight") {
            e.1 = vec![128, 5];
        }
    });
    assert!(matches!(
        load_safetensors(&mut target, &be, &wrong),
        Err(KernelError::TensorMismatch { name, .. }) if name == "12.weight"
    ));
    // An extra tensor.
    let extra = variant(&|t| t.push(("13.weight".into(), vec![1], vec![0.0])));
    assert!(matches!(
        load_safetensors(&mut target, &be, &extra),
        Err(KernelError::UnexpectedTensor { name }) if name == "13.weight"
    ));
    // A NaN weight.
    let nan = variant(&|t| t[0].2[0] = f32::NAN);
    assert!(matches!(
        load_safetensors(&mut target, &be, &nan),
        Err(KernelError::NonFinite { .. })
    ));
    // Garbage and truncation.
    assert!(matches!(
        load_safetensors(&mut target, &be, b"not a model"),
        Err(KernelError::ModelFileFormat(_))
    ));
    assert!(matches!(
        load_safetensors(&mut target, &be, &good[..good.len() - 10]),
        Err(KernelError::ModelFileFormat(_))
    ));
    assert_eq!(
        target.params_flat(&be).unwrap(),
        before,
        "nothing was half-applied"
    );
}

#[test]
fn api_shape_mismatches_are_errors() {
    let be = cpu_backend();
    let mut model = Model::new(&be, &cnn_spec(), 1).unwrap();
    let n = model.param_count();
    assert!(matches!(
        model.set_params_flat(&be, &vec![0.0; n - 1]),
        Err(KernelError::ShapeMismatch { .. })
    ));
    let wrong_input =
        fairgrid_kernels::Tensor::zeros(&be, fairgrid_kernels::Shape::new([2, 12, 10, 1])).unwrap();
    assert!(matches!(
        model.forward(&be, &wrong_input),
        Err(KernelError::ShapeMismatch { .. })
    ));
    let bad_spec = ModelSpec {
        arch: Arch::Cnn,
        input: InputShape {
            channels: 1,
            height: 4,
            width: 4,
        },
        classes: 10,
    };
    assert!(matches!(
        Model::new(&be, &bad_spec, 1),
        Err(KernelError::InvalidConfig { .. })
    ));
}

#[test]
fn a_batch_too_large_for_memory_is_refused_up_front() {
    use fairgrid_kernels::{OptimizerConfig, Trainer};
    let spec = ModelSpec::fashion_mnist(Arch::Cnn);
    let err = Trainer::new(
        cpu_backend(),
        &spec,
        OptimizerConfig::sgd(0.1, 0.9),
        65_536,
        1,
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("MiB"), "{err}");
    let huge = ModelSpec::fashion_mnist(Arch::Mlp {
        hidden: vec![8192; 8],
    });
    let err = Trainer::new(cpu_backend(), &huge, OptimizerConfig::sgd(0.1, 0.9), 1, 1)
        .err()
        .expect("refused before allocating");
    assert!(err.to_string().contains("model size"), "{err}");
    let model = Model::new(&cpu_backend(), &spec, 1).unwrap();
    // Batch 64: about 40 MiB of activations, the figure the bench reports.
    let mib = model.training_bytes(64) >> 20;
    assert!((20..80).contains(&mib), "{mib} MiB");
}
