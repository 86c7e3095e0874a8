//! A job that asks for a compressed result (`[result]`): its coordinator
//! prunes, fine-tunes and stores the final model as int8, and the report
//! says what that cost.

use std::time::Duration;

use fairgrid_kernels::CpuBackend;
use fairgrid_kernels::model::{self, Model};
use fairgrid_sdk::jobs::{ArchName, ResultChoice};

use super::cluster::{Cluster, LedgerKind};
use super::tests::{small_job, submit_to, wait_finished};
use crate::jobs::views;

#[test]
fn a_job_can_deliver_its_model_pruned_and_in_int8() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 2, LedgerKind::InMemory).unwrap();
    let mut request = small_job("compressed", 3);
    request.model.arch = ArchName::Mlp;
    request.model.hidden = Some(vec![64]);
    request.result = ResultChoice {
        prune: 0.5,
        finetune_steps: 20,
        finetune_lr: 0.01,
        int8: true,
    };
    let job = submit_to(&cluster, 0, request);
    let coordinated = wait_finished(&cluster, job, Duration::from_secs(180));
    let report = views::report(&coordinated);
    let c = report
        .compression
        .expect("the report says what compression cost");
    assert!(c.size_after * 3 < c.size_before, "{c:?}");
    assert!((c.weight_sparsity - 0.5).abs() < 0.01, "{c:?}");
    assert!(c.test_accuracy_after > 0.6, "{c:?}");
    assert_eq!(report.final_test_accuracy, Some(c.test_accuracy_before));
    // The result file is the compressed one, with the report's hash.
    let path = cluster.nodes[0].ctx().jobs.store.result_path(&job);
    let file = std::fs::read(path).unwrap();
    assert_eq!(file.len() as u64, c.size_after);
    assert_eq!(
        report.model_hash.as_deref(),
        Some(fairgrid_protocol::Hash32::of(&file).to_hex().as_str())
    );
    let spec = model::read_model_spec(&file).unwrap().unwrap();
    let backend = CpuBackend::new(1).unwrap();
    let mut loaded = Model::new(&backend, &spec, 0).unwrap();
    model::load_safetensors(&mut loaded, &backend, &file).unwrap();
}
