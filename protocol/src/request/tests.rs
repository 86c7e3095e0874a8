use super::*;
use crate::messages::{Compression, ModelArch};

fn request() -> JobRequest {
    serde_json::from_str(
        r#"{"name": "t", "model": {"arch": "logreg"}, "data": {"source": "builtin"}}"#,
    )
    .unwrap()
}

fn err(f: impl FnOnce(&mut JobRequest)) -> FieldError {
    let mut r = request();
    f(&mut r);
    r.check().unwrap_err()
}

fn parse_error(json: &str) -> String {
    let de = &mut serde_json::Deserializer::from_str(json);
    let e = serde_path_to_error::deserialize::<_, JobRequest>(de).unwrap_err();
    format!("{}: {}", e.path(), e.inner())
}

#[test]
fn the_defaults_check() {
    let checked = request().check().unwrap();
    assert_eq!(checked.alpha_ppm, 340_000);
    assert_eq!(checked.shard_size, 250);
    assert_eq!(checked.arch, ModelArch::LogReg);
    assert_eq!(checked.hyper.compression, Compression::Int8 { block: 256 });
    assert_eq!(checked.deadline_ms, 3_600_000);
}

#[test]
fn the_json_names_are_the_api_s() {
    let json = r#"{"name": "n", "model": {"arch": "mlp", "hidden": [32]},
        "data": {"source": "/d", "shard_size": 10},
        "training": {"optimizer": "nesterov", "compression": "topk", "schedule": "cosine"},
        "market": {"on_shortfall": "wait"}}"#;
    let r: JobRequest = serde_json::from_str(json).unwrap();
    let checked = r.check().unwrap();
    assert_eq!(checked.arch, ModelArch::Mlp { hidden: vec![32] });
    assert_eq!(
        checked.hyper.compression,
        Compression::TopK { permille: 10 }
    );
    let back = serde_json::to_value(&r).unwrap();
    assert_eq!(back["training"]["optimizer"], "nesterov");
    assert_eq!(back["market"]["on_shortfall"], "wait");
    assert_eq!(back["model"]["arch"], "mlp");
}

#[test]
fn an_unknown_name_is_refused_with_its_path() {
    let e = parse_error(r#"{"name": "t", "model": {"arch": "gpt"}, "data": {"source": "b"}}"#);
    assert!(e.starts_with("model.arch: unknown variant `gpt`"), "{e}");
    let e = parse_error(
        r#"{"name": "t", "model": {"arch": "cnn"}, "data": {"source": "b"}, "training": {"optimizer": "lion"}}"#,
    );
    assert!(
        e.starts_with("training.optimizer: unknown variant `lion`"),
        "{e}"
    );
    let e = parse_error(
        r#"{"name": "t", "model": {"arch": "cnn"}, "data": {"source": "b"}, "market": {"alpah": 0.5}}"#,
    );
    assert!(e.contains("unknown field `alpah`"), "{e}");
}

#[test]
fn each_bad_field_is_named() {
    let field = |f: fn(&mut JobRequest)| err(f).field;
    assert_eq!(field(|r| r.name = " ".into()), "name");
    assert_eq!(field(|r| r.name = "a\u{1b}[31m".into()), "name");
    assert_eq!(field(|r| r.name = "x".repeat(129)), "name");
    assert_eq!(field(|r| r.model.hidden = Some(vec![8])), "model.hidden");
    assert_eq!(
        field(|r| {
            r.model.arch = ArchName::Mlp;
            r.model.hidden = Some(vec![0]);
        }),
        "model.hidden"
    );
    assert_eq!(field(|r| r.data.source = String::new()), "data.source");
    assert_eq!(field(|r| r.data.shard_size = 0), "data.shard_size");
    assert_eq!(
        field(|r| r.data.shard_size = MAX_SHARD_SAMPLES + 1),
        "data.shard_size"
    );
    assert_eq!(
        field(|r| r.data.max_train_samples = Some(0)),
        "data.max_train_samples"
    );
    assert_eq!(field(|r| r.training.rounds = 0), "training.rounds");
    assert_eq!(
        field(|r| r.training.local_steps = 10_001),
        "training.local_steps"
    );
    assert_eq!(field(|r| r.training.batch_size = 0), "training.batch_size");
    assert_eq!(field(|r| r.training.lr = -1.0), "training.lr");
    assert_eq!(
        field(|r| r.training.outer_lr = f32::NAN),
        "training.outer_lr"
    );
    assert_eq!(field(|r| r.training.momentum = 1.0), "training.momentum");
    assert_eq!(
        field(|r| r.training.outer_momentum = -0.1),
        "training.outer_momentum"
    );
    assert_eq!(
        field(|r| r.training.outer_momentum = f32::INFINITY),
        "training.outer_momentum"
    );
    assert_eq!(field(|r| r.training.eval_every = 0), "training.eval_every");
    assert_eq!(
        field(|r| {
            r.market.exact_audits = true;
            r.market.demand_per_shard.gpu_milli = 1000;
        }),
        "market.exact_audits"
    );
    assert_eq!(
        field(|r| r.training.eval_every = u32::MAX),
        "training.eval_every"
    );
    assert_eq!(field(|r| r.training.int8_block = 0), "training.int8_block");
    assert_eq!(
        field(|r| {
            r.training.compression = CompressionName::Topk;
            r.training.topk_permille = 1001;
        }),
        "training.topk_permille"
    );
    assert_eq!(field(|r| r.market.alpha = 0.0), "market.alpha");
    assert_eq!(field(|r| r.market.alpha = 1.5), "market.alpha");
    assert_eq!(field(|r| r.market.alpha = f64::NAN), "market.alpha");
    assert_eq!(field(|r| r.market.alpha = 1e-9), "market.alpha");
    assert_eq!(
        field(|r| {
            r.market.demand_per_shard = ShardDemand {
                cpu_milli: 0,
                mem_mib: 0,
                gpu_milli: 0,
                gpu_mem_mib: 0,
            }
        }),
        "market.demand_per_shard"
    );
    assert_eq!(
        field(|r| r.market.bid_window_secs = 0),
        "market.bid_window_secs"
    );
    assert_eq!(
        field(|r| r.market.round_timeout_secs = 0),
        "market.round_timeout_secs"
    );
    assert_eq!(
        field(|r| r.market.deadline_secs = 3),
        "market.deadline_secs"
    );
}

#[test]
fn the_shard_count_and_the_cap_need_the_data() {
    let mut r = request();
    r.data.shard_size = 100;
    r.data.max_train_samples = Some(1_000);
    let checked = r.check().unwrap();
    assert_eq!(checked.shards(60_000).unwrap(), 10);
    assert_eq!(checked.shards(950).unwrap(), 10);
    assert_eq!(checked.shards(0).unwrap_err().field, "data");
    r.data.max_train_samples = None;
    r.data.shard_size = 1;
    assert_eq!(
        r.check().unwrap().shards(60_000).unwrap_err().field,
        "data.shard_size"
    );
    assert_eq!(owner_cap(340_000, 10).unwrap(), 3);
    let e = owner_cap(10_000, 40).unwrap_err();
    assert_eq!(e.field, "market.alpha");
    assert!(e.reason.contains("at least 0.025000"), "{e}");
}

#[test]
fn a_robust_aggregation_is_chosen_by_name_and_checked() {
    use crate::messages::Aggregation;
    let with = |training: &str| {
        let json = format!(
            r#"{{"name": "n", "model": {{"arch": "cnn"}}, "data": {{"source": "/d", "shard_size": 10}}, "training": {training}}}"#
        );
        serde_json::from_str::<JobRequest>(&json).unwrap().check()
    };
    assert_eq!(with("{}").unwrap().hyper.aggregation, Aggregation::Mean);
    assert_eq!(
        with(r#"{"aggregation": "trimmed_mean", "trim": 2}"#)
            .unwrap()
            .hyper
            .aggregation,
        Aggregation::TrimmedMean { trim: 2 }
    );
    assert_eq!(
        with(r#"{"aggregation": "centered_clip"}"#)
            .unwrap()
            .hyper
            .aggregation,
        Aggregation::CenteredClip
    );
    let e = with(r#"{"aggregation": "trimmed_mean", "trim": 0}"#).unwrap_err();
    assert!(e.to_string().contains("training.trim"), "{e}");
}

#[test]
fn declared_layers_parse_from_toml_with_pytorch_defaults() {
    let toml = r#"
        name = "declared"
        [model]
        arch = "layers"
        layers = [
          { type = "conv2d", out_channels = 8, kernel = 3, padding = 1 },
          { type = "batch_norm" },
          { type = "relu" },
          { type = "max_pool2d", kernel = 2 },
          { type = "residual", layers = [ { type = "conv2d", out_channels = 8, kernel = 3, padding = 1 }, { type = "gelu" } ] },
          { type = "flatten" },
          { type = "dropout", p = 0.25 },
          { type = "linear", out_features = 10 },
        ]
        [data]
        source = "builtin"
    "#;
    let r: JobRequest = toml::from_str(toml).unwrap();
    let ModelArch::Layers(layers) = r.check().unwrap().arch else {
        panic!("not a declared model");
    };
    use crate::messages::{Layer, LayerOp};
    assert_eq!(layers.len(), 8);
    assert_eq!(
        layers[0],
        Layer::Op(LayerOp::Conv2d {
            out_channels: 8,
            kernel: 3,
            stride: 1,
            padding: 1
        })
    );
    assert_eq!(
        layers[3],
        Layer::Op(LayerOp::MaxPool2d {
            kernel: 2,
            stride: 2
        })
    );
    assert!(matches!(&layers[4], Layer::Residual(inner) if inner.len() == 2));
    assert_eq!(layers[6], Layer::Op(LayerOp::Dropout { p_ppm: 250_000 }));
}

#[test]
fn bad_declared_layers_name_their_field() {
    use super::LayerChoice as L;
    let declared = |layers: Option<Vec<L>>| {
        move |r: &mut JobRequest| {
            r.model.arch = ArchName::Layers;
            r.model.layers = layers;
        }
    };
    assert_eq!(err(declared(None)).field, "model.layers");
    let e = err(declared(Some(vec![L::Flatten, L::Dropout { p: 1.0 }])));
    assert_eq!(e.field, "model.layers[1].p");
    let nested = L::Residual {
        layers: vec![L::Residual {
            layers: vec![L::Relu],
        }],
    };
    let e = err(declared(Some(vec![nested])));
    assert_eq!(e.field, "model.layers[0][0]");
    assert!(e.reason.contains("do not nest"), "{e}");
    let e = err(declared(Some(vec![L::Relu; 65])));
    assert_eq!(e.field, "model.layers");
    let e = err(|r| r.model.layers = Some(vec![L::Relu]));
    assert_eq!(e.field, "model.layers");
    assert!(e.reason.contains("arch = \"layers\""), "{e}");
    let e = parse_error(
        r#"{"name": "t", "model": {"arch": "layers", "layers": [{"type": "conv3d"}]}, "data": {"source": "b"}}"#,
    );
    assert!(e.contains("unknown variant `conv3d`"), "{e}");
    let e = parse_error(
        r#"{"name": "t", "model": {"arch": "layers", "layers": [{"type": "linear", "out_features": 3, "bias": false}]}, "data": {"source": "b"}}"#,
    );
    assert!(e.contains("bias"), "{e}");
}

#[test]
fn a_compressed_result_is_asked_for_in_its_own_table() {
    let r: JobRequest = toml::from_str(
        "name = \"c\"\n[model]\narch = \"cnn\"\n[data]\nsource = \"builtin\"\n[result]\nprune = 0.5\nfinetune_steps = 200\nint8 = true\n",
    )
    .unwrap();
    let result = r.check().unwrap().hyper.result;
    assert_eq!(result.prune_ppm, 500_000);
    assert_eq!(result.finetune_steps, 200);
    assert!(result.int8 && result.is_requested());
    assert!(!request().check().unwrap().hyper.result.is_requested());
    assert_eq!(err(|r| r.result.prune = 1.0).field, "result.prune");
    assert_eq!(err(|r| r.result.prune = f64::NAN).field, "result.prune");
    assert_eq!(
        err(|r| r.result.finetune_steps = 10).field,
        "result.finetune_steps"
    );
    assert_eq!(
        err(|r| {
            r.result.prune = 0.5;
            r.result.finetune_steps = 10_001;
        })
        .field,
        "result.finetune_steps"
    );
    assert_eq!(
        err(|r| r.result.finetune_lr = -1.0).field,
        "result.finetune_lr"
    );
}
