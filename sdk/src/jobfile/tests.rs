//! Job files, good and hostile.

use std::io::Write;
use std::path::Path;

use super::*;
use crate::jobs::{MarketChoice, TrainingChoice};

const MINIMAL: &str = r#"
name = "t"
[model]
arch = "cnn"
[data]
source = "builtin"
"#;

fn parse_str(text: &str) -> Result<JobRequest> {
    parse(text, Path::new("job.toml"))
}

fn check(text: &str) -> Result<JobPlan> {
    let request = parse_str(text)?;
    validate(&request, "job.toml", DataCheck::Local)
}

/// The field an `InvalidJob` error names, or a panic with the error.
fn invalid_field(text: &str) -> (String, String) {
    match check(text) {
        Err(SdkError::InvalidJob { field, reason, .. }) => (field, reason),
        other => panic!("expected InvalidJob, got {other:?}"),
    }
}

/// The message of a `JobFileSyntax` error, or a panic with the error.
fn syntax_error(text: &str) -> String {
    match check(text) {
        Err(SdkError::JobFileSyntax { message, .. }) => message,
        other => panic!("expected JobFileSyntax, got {other:?}"),
    }
}

fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

#[test]
fn minimal_file_takes_the_documented_defaults() {
    let request = parse_str(MINIMAL).unwrap();
    assert_eq!(request.training, TrainingChoice::default());
    assert_eq!(request.market, MarketChoice::default());
    assert_eq!(request.data.shard_size, 250);
    let plan = check(MINIMAL).unwrap();
    assert_eq!(plan.train_samples, Some(BUILTIN_TRAIN_SAMPLES));
    assert_eq!(plan.shards, Some(40));
    assert_eq!(plan.owner_cap, Some(13), "floor(0.34 x 40)");
    assert_eq!(plan.alpha_ppm, 340_000);
}

#[test]
fn the_documented_example_is_valid() {
    let text = include_str!("../../../docs/examples/job.toml");
    let request = parse_str(text).unwrap();
    let plan = validate(&request, "example", DataCheck::Local).unwrap();
    assert!(plan.owner_cap.unwrap() >= 1);
    // Every field of the format appears in the example, nested ones too.
    fn walk(prefix: &str, table: &toml::Table, text: &str) {
        for (key, value) in table {
            let path = format!("{prefix}{key}");
            match value.as_table() {
                Some(inner) => {
                    assert!(text.contains(&format!("[{path}]")), "[{path}] missing");
                    walk(&format!("{path}."), inner, text);
                }
                None => assert!(
                    text.contains(&format!("\n{key} = ")),
                    "{path} missing from docs/examples/job.toml"
                ),
            }
        }
    }
    walk("", &toml::Table::try_from(&request).unwrap(), text);
}

#[test]
fn unknown_fields_are_named_with_their_path_and_line() {
    for (extra, expected, line) in [
        ("colour = \"red\"\n", "colour", 7),
        (
            "[training]\nrounds = 3\nlr_max = 0.1\n",
            "training.lr_max",
            9,
        ),
        (
            "[market.demand_per_shard]\ngpus = 1\n",
            "market.demand_per_shard.gpus",
            8,
        ),
    ] {
        // Top-level keys must come before the tables: put them first.
        let text = if extra.starts_with('[') {
            with(extra)
        } else {
            format!("{extra}{MINIMAL}")
        };
        match parse_str(&text) {
            Err(SdkError::UnknownJobField {
                field,
                expected: one_of,
                location,
                ..
            }) => {
                assert_eq!(field, expected);
                assert!(!one_of.is_empty());
                if !extra.starts_with('[') {
                    assert_eq!(location, " (line 1)");
                } else {
                    assert_eq!(location, format!(" (line {line})"), "{text}");
                }
            }
            other => panic!("{extra:?}: {other:?}"),
        }
    }
    let err = parse_str(&with("[data2]\nx = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `data2`"), "{err}");
    assert!(err.contains("training"), "lists what is allowed: {err}");
}

#[test]
fn alpha_outside_zero_one_is_refused() {
    for alpha in ["0.0", "-0.1", "1.5", "nan", "inf", "1e-9"] {
        let (field, reason) = invalid_field(&with(&format!("[market]\nalpha = {alpha}\n")));
        assert_eq!(field, "market.alpha", "{alpha}");
        assert!(!reason.is_empty());
    }
    assert!(check(&with("[market]\nalpha = 1.0\n")).is_ok());
}

#[test]
fn a_cap_below_one_shard_is_impossible() {
    // 10 000 samples in shards of 1000 = 10 shards; alpha 0.05 -> 0 each.
    let (field, reason) = invalid_field(&with("[market]\nalpha = 0.05\n").replace(
        "source = \"builtin\"",
        "source = \"builtin\"\nshard_size = 1000",
    ));
    assert_eq!(field, "market.alpha");
    assert!(reason.contains("impossible cap"), "{reason}");
    assert!(reason.contains("10 shards"), "{reason}");
    assert!(
        reason.contains("0.1"),
        "names the least alpha that works: {reason}"
    );
    // alpha = 0.1 of 10 shards is exactly one.
    let ok = with("[market]\nalpha = 0.1\n").replace(
        "source = \"builtin\"",
        "source = \"builtin\"\nshard_size = 1000",
    );
    assert_eq!(check(&ok).unwrap().owner_cap, Some(1));
}

#[test]
fn unknown_architectures_are_refused() {
    let message = syntax_error(&MINIMAL.replace("\"cnn\"", "\"resnet50\""));
    assert!(
        message.starts_with("model.arch: unknown variant `resnet50`"),
        "{message}"
    );
    assert!(
        message.contains("`cnn`, `mlp`, `logreg`, `layers` (line 4)"),
        "{message}"
    );
    let (field, _) =
        invalid_field(&MINIMAL.replace("arch = \"cnn\"", "arch = \"cnn\"\nhidden = [8]"));
    assert_eq!(field, "model.hidden");
    let (field, _) =
        invalid_field(&MINIMAL.replace("arch = \"cnn\"", "arch = \"mlp\"\nhidden = []"));
    assert_eq!(field, "model.hidden");
    let (field, _) =
        invalid_field(&MINIMAL.replace("arch = \"cnn\"", "arch = \"mlp\"\nhidden = [9000]"));
    assert_eq!(field, "model.hidden");
    assert!(check(&MINIMAL.replace("arch = \"cnn\"", "arch = \"mlp\"\nhidden = [64, 32]")).is_ok());
}

#[test]
fn zero_sizes_are_refused_by_name() {
    for (text, field) in [
        (
            MINIMAL.replace(
                "source = \"builtin\"",
                "source = \"builtin\"\nshard_size = 0",
            ),
            "data.shard_size",
        ),
        (
            MINIMAL.replace(
                "source = \"builtin\"",
                "source = \"builtin\"\nmax_train_samples = 0",
            ),
            "data.max_train_samples",
        ),
        (with("[training]\nrounds = 0\n"), "training.rounds"),
        (
            with("[training]\nlocal_steps = 0\n"),
            "training.local_steps",
        ),
        (with("[training]\nbatch_size = 0\n"), "training.batch_size"),
        (with("[training]\nint8_block = 0\n"), "training.int8_block"),
        (
            with("[training]\ncompression = \"topk\"\ntopk_permille = 0\n"),
            "training.topk_permille",
        ),
        (
            with("[market]\nbid_window_secs = 0\n"),
            "market.bid_window_secs",
        ),
        (
            with("[market]\nround_timeout_secs = 0\n"),
            "market.round_timeout_secs",
        ),
        (
            with("[market.demand_per_shard]\ncpu_milli = 0\nmem_mib = 0\n"),
            "market.demand_per_shard",
        ),
    ] {
        let (got, reason) = invalid_field(&text);
        assert_eq!(got, field, "{reason}");
    }
}

#[test]
fn nonsense_values_are_refused_by_name() {
    for (extra, field) in [
        ("[training]\nlr = nan\n", "training.lr"),
        ("[training]\nlr = -1.0\n", "training.lr"),
        ("[training]\nouter_lr = inf\n", "training.outer_lr"),
        ("[training]\nmomentum = 1.0\n", "training.momentum"),
        ("[training]\neval_every = 0\n", "training.eval_every"),
        ("[market]\ndeadline_secs = 3\n", "market.deadline_secs"),
    ] {
        let (got, reason) = invalid_field(&with(extra));
        assert_eq!(got, field, "{extra}: {reason}");
    }
    // Names outside their lists are refused by the parser, with the path.
    for (extra, field) in [
        ("[training]\noptimizer = \"lbfgs\"\n", "training.optimizer"),
        ("[training]\nschedule = \"step\"\n", "training.schedule"),
        (
            "[training]\ncompression = \"zip\"\n",
            "training.compression",
        ),
        (
            "[market]\non_shortfall = \"panic\"\n",
            "market.on_shortfall",
        ),
    ] {
        let message = syntax_error(&with(extra));
        assert!(
            message.starts_with(&format!("{field}: unknown variant")),
            "{message}"
        );
    }
    for name in ["", "   ", "tab\there", &"x".repeat(129)] {
        let text = MINIMAL.replace("name = \"t\"", &format!("name = {name:?}"));
        assert_eq!(invalid_field(&text).0, "name", "{name:?}");
    }
}

#[test]
fn wrong_types_and_broken_toml_name_the_place() {
    for (text, needle) in [
        (with("[training]\nrounds = -1\n"), "training.rounds"),
        (
            with("[training]\nrounds = 99999999999\n"),
            "training.rounds",
        ),
        (with("[training]\nrounds = \"ten\"\n"), "training.rounds"),
        (with("[training]\nlr = \"fast\"\n"), "training.lr"),
        (
            MINIMAL.replace("[model]\narch = \"cnn\"\n", ""),
            "missing field `model`",
        ),
        (String::new(), "missing field `name`"),
        (with("[training\nrounds = 1\n"), "line 7, column 10"),
        (with("[training]\nrounds = 1\nrounds = 2\n"), "line 9"),
        ("name = \"a\nb\"\n".to_string(), "line 2"),
    ] {
        match parse_str(&text) {
            Err(e @ SdkError::JobFileSyntax { .. }) => {
                let message = e.to_string();
                assert!(message.contains(needle), "{needle}: {message}");
            }
            other => panic!("{needle}: {other:?}"),
        }
    }
}

#[test]
fn hostile_files_are_refused_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        path
    };
    let big = write("big.toml", &vec![b'#'; MAX_JOB_FILE_BYTES as usize + 1]);
    let err = load(&big, DataCheck::Local).unwrap_err().to_string();
    assert!(err.contains("at most 65536"), "{err}");

    let binary = write("bin.toml", &[0xff, 0xfe, 0x00, 0x41, 0x80]);
    let err = load(&binary, DataCheck::Local).unwrap_err().to_string();
    assert!(err.contains("not UTF-8"), "{err}");

    // Deep nesting within the size limit: an error, not a stack overflow.
    let deep = format!("name = {}{}\n", "[".repeat(30_000), "]".repeat(30_000));
    let deep = write("deep.toml", deep.as_bytes());
    assert!(load(&deep, DataCheck::Local).is_err());
    let deep_tables = format!(
        "{}\n",
        (0..3000).map(|i| format!("[a{i}]\n")).collect::<String>()
    );
    assert!(parse_str(&deep_tables).is_err());
    let dotted = format!("{} = 1\n", vec!["k"; 10_000].join("."));
    assert!(parse_str(&dotted).is_err());

    let nul = write("nul.toml", b"name = \"a\0b\"\n");
    assert!(load(&nul, DataCheck::Local).is_err());

    assert!(matches!(
        load(dir.path(), DataCheck::Local),
        Err(SdkError::JobFileSyntax { .. })
    ));
    assert!(matches!(
        load(&dir.path().join("absent.toml"), DataCheck::Local),
        Err(SdkError::Io { .. })
    ));
}

/// A dataset directory with the four IDX files (labels header only
/// matters to the client).
fn dataset_dir(root: &Path, samples: u32, gz: bool) -> std::path::PathBuf {
    let dir = root.join("fmnist");
    std::fs::create_dir_all(&dir).unwrap();
    for file in dataset::IDX_FILES {
        let mut bytes = if file.contains("labels") {
            vec![0, 0, 8, 1]
        } else {
            vec![0, 0, 8, 3]
        };
        bytes.extend_from_slice(&samples.to_be_bytes());
        if gz {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&bytes).unwrap();
            std::fs::write(dir.join(format!("{file}.gz")), enc.finish().unwrap()).unwrap();
        } else {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
    }
    dir
}

#[test]
fn dataset_directories_are_checked_and_counted() {
    let root = tempfile::tempdir().unwrap();
    let dir = dataset_dir(root.path(), 1200, true);
    let job = root.path().join("job.toml");
    std::fs::write(
        &job,
        MINIMAL.replace("\"builtin\"", "\"fmnist\"\nshard_size = 100"),
    )
    .unwrap();
    let (request, plan) = load(&job, DataCheck::Local).unwrap();
    assert_eq!(
        Path::new(&request.data.source),
        std::path::absolute(&dir).unwrap(),
        "resolved against the job file's directory"
    );
    assert_eq!(plan.train_samples, Some(1200));
    assert_eq!(plan.shards, Some(12));
    assert_eq!(plan.owner_cap, Some(4));

    // Uncompressed files with max_train_samples.
    let raw = tempfile::tempdir().unwrap();
    let dir = dataset_dir(raw.path(), 1000, false);
    let text = MINIMAL.replace(
        "\"builtin\"",
        &format!(
            "{:?}\nmax_train_samples = 500\nshard_size = 100",
            dir.display().to_string()
        ),
    );
    assert_eq!(check(&text).unwrap().shards, Some(5));

    // Missing directory, missing file, wrong magic.
    let missing = MINIMAL.replace("\"builtin\"", "\"/nonexistent/fairgrid-data\"");
    let (field, reason) = invalid_field(&missing);
    assert_eq!(field, "data.source");
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(check(&missing.replace("[data]", "[data]\n")).is_err());
    let request = parse_str(&missing).unwrap();
    assert!(
        validate(&request, "remote", DataCheck::Skip).is_ok(),
        "a remote node's directory is not looked for here"
    );

    std::fs::remove_file(dir.join("t10k-images-idx3-ubyte")).unwrap();
    let text = MINIMAL.replace("\"builtin\"", &format!("{:?}", dir.display().to_string()));
    let (_, reason) = invalid_field(&text);
    assert!(reason.contains("t10k-images-idx3-ubyte"), "{reason}");
    let bad_magic = tempfile::tempdir().unwrap();
    let dir = dataset_dir(bad_magic.path(), 10, false);
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        [0, 0, 8, 3, 0, 0, 0, 1],
    )
    .unwrap();
    let text = MINIMAL.replace("\"builtin\"", &format!("{:?}", dir.display().to_string()));
    let (_, reason) = invalid_field(&text);
    assert!(reason.contains("not an IDX labels file"), "{reason}");
    std::fs::write(dir.join("train-labels-idx1-ubyte"), [0, 0, 8]).unwrap();
    let (_, reason) = invalid_field(&text);
    assert!(reason.contains("IDX header"), "{reason}");
}

#[test]
fn too_many_shards_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = dataset_dir(root.path(), 60_000, false);
    let text = MINIMAL.replace(
        "\"builtin\"",
        &format!("{:?}\nshard_size = 2", dir.display().to_string()),
    );
    let (field, reason) = invalid_field(&text);
    assert_eq!(field, "data.shard_size");
    assert!(reason.contains("30000 shards"), "{reason}");
}

#[test]
fn the_seed_cifar10_example_is_valid() {
    let text = include_str!("../../../docs/examples/cifar10-seed.toml");
    let request = parse_str(text).unwrap();
    // The data is the user's to download: only the rest is checked here.
    let plan = validate(&request, "seed example", DataCheck::Skip).unwrap();
    assert_eq!(request.model.arch, crate::jobs::ArchName::Cnn);
    assert!(plan.owner_cap.is_none() || plan.owner_cap.unwrap() >= 1);
}

#[test]
fn cifar_and_numpy_directories_are_recognised_before_sending() {
    let root = tempfile::tempdir().unwrap();
    let cifar = root.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&cifar).unwrap();
    for b in 1..=5 {
        std::fs::write(
            cifar.join(format!("data_batch_{b}.bin")),
            vec![0u8; 3073 * 7],
        )
        .unwrap();
    }
    std::fs::write(cifar.join("test_batch.bin"), vec![0u8; 3073 * 2]).unwrap();
    let facts = dataset::dataset_facts(cifar.to_str().unwrap(), DataCheck::Local)
        .unwrap()
        .unwrap();
    assert_eq!(facts.train_samples, Some(35));
    // A truncated batch is named.
    std::fs::write(cifar.join("data_batch_4.bin"), vec![0u8; 3073 * 3 - 1]).unwrap();
    let (field, reason) =
        dataset::dataset_facts(cifar.to_str().unwrap(), DataCheck::Local).unwrap_err();
    assert_eq!(field, "data.source");
    assert!(
        reason.contains("data_batch_4.bin") && reason.contains("3073-byte CIFAR records"),
        "{reason}"
    );

    let arrays = root.path().join("arrays");
    std::fs::create_dir_all(&arrays).unwrap();
    for file in &dataset::NPY_FILES[..3] {
        std::fs::write(arrays.join(file), b"\x93NUMPY").unwrap();
    }
    let (_, reason) =
        dataset::dataset_facts(arrays.to_str().unwrap(), DataCheck::Local).unwrap_err();
    assert!(reason.contains("no test_labels.npy"), "{reason}");
    std::fs::write(arrays.join("test_labels.npy"), b"\x93NUMPY").unwrap();
    let facts = dataset::dataset_facts(arrays.to_str().unwrap(), DataCheck::Local)
        .unwrap()
        .unwrap();
    assert_eq!(facts.train_samples, None, "the node reads the headers");

    // Tabular features instead of images; safetensors arrays.
    let tabular = root.path().join("tabular");
    std::fs::create_dir_all(&tabular).unwrap();
    for file in ["train_features.npy", "train_labels.npy", "test_labels.npy"] {
        std::fs::write(tabular.join(file), b"\x93NUMPY").unwrap();
    }
    let (_, reason) =
        dataset::dataset_facts(tabular.to_str().unwrap(), DataCheck::Local).unwrap_err();
    assert!(
        reason.contains("no test_images.npy (or test_features.npy)"),
        "{reason}"
    );
    std::fs::write(tabular.join("test_features.npy"), b"\x93NUMPY").unwrap();
    assert!(dataset::dataset_facts(tabular.to_str().unwrap(), DataCheck::Local).is_ok());
    let tensors = root.path().join("tensors");
    std::fs::create_dir_all(&tensors).unwrap();
    std::fs::write(tensors.join("train.safetensors"), b"{}").unwrap();
    let (_, reason) =
        dataset::dataset_facts(tensors.to_str().unwrap(), DataCheck::Local).unwrap_err();
    assert!(reason.contains("no test.safetensors"), "{reason}");
    std::fs::write(tensors.join("test.safetensors"), b"{}").unwrap();
    assert!(dataset::dataset_facts(tensors.to_str().unwrap(), DataCheck::Local).is_ok());

    // An empty directory names every format it could have held.
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (_, reason) =
        dataset::dataset_facts(empty.to_str().unwrap(), DataCheck::Local).unwrap_err();
    assert!(
        reason.contains("CIFAR-10") && reason.contains("train_images.npy"),
        "{reason}"
    );
}
