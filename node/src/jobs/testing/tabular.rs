//! A job on tabular data (NumPy features, f32 shards) through the real
//! coordinator and workers in one process: f32 shards travel, train, are
//! evaluated, and every audited round recomputes exactly.

use fairgrid_kernels::data::npy::encode_npy;
use fairgrid_kernels::rng::SplitMix64;
use fairgrid_sdk::jobs::{ArchName, LayerChoice};

use super::cluster::{Cluster, LedgerKind};
use super::declared::run_with_clean_audits;
use super::tests::small_job;

/// `n` samples of 5 features around one of two centres (the label).
fn write_split(dir: &std::path::Path, split: &str, n: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut values = Vec::with_capacity(n * 5 * 4);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % 2) as u8;
        let centre = if label == 0 { -1.0f32 } else { 1.0 };
        for _ in 0..5 {
            let noise = rng.below(1 << 16) as f32 / 65536.0 * 3.0 - 1.5;
            values.extend_from_slice(&(centre + noise).to_le_bytes());
        }
        labels.push(label);
    }
    let features = encode_npy("<f4", &[n, 5], &values);
    std::fs::write(dir.join(format!("{split}_features.npy")), features).unwrap();
    let labels = encode_npy("|u1", &[n], &labels);
    std::fs::write(dir.join(format!("{split}_labels.npy")), labels).unwrap();
}

#[test]
fn a_tabular_job_trains_across_nodes_and_its_audits_pass() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tabular");
    std::fs::create_dir(&data).unwrap();
    write_split(&data, "train", 2000, 1);
    write_split(&data, "test", 400, 2);
    let cluster = Cluster::start(dir.path(), 3, LedgerKind::InMemory).unwrap();
    let mut request = small_job("tabular", 4);
    request.data.source = data.display().to_string();
    request.data.max_train_samples = None;
    request.model.arch = ArchName::Layers;
    request.model.layers = Some(vec![
        LayerChoice::Linear { out_features: 16 },
        LayerChoice::BatchNorm,
        LayerChoice::Relu,
        LayerChoice::Linear { out_features: 2 },
    ]);
    let accuracy = run_with_clean_audits(&cluster, request, 4);
    assert!(accuracy > 0.8, "accuracy {accuracy} after 4 rounds");
}
