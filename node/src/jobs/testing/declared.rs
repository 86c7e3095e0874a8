//! A job whose model is declared layer by layer, through the real
//! coordinator and workers in one process: it trains, and every audited
//! round (batch norm and dropout included) recomputes exactly.

use std::time::Duration;

use fairgrid_protocol::ledger::{EntryBody, EntryKind};
use fairgrid_sdk::jobs::{ArchName, JobRequest, LayerChoice};

use super::cluster::{Cluster, LedgerKind};
use super::tests::{count, entries_once_finished, small_job, submit_to, wait_finished};

fn declared_layers() -> Vec<LayerChoice> {
    vec![
        LayerChoice::Conv2d {
            out_channels: 4,
            kernel: 3,
            stride: 2,
            padding: 1,
        },
        LayerChoice::BatchNorm,
        LayerChoice::Relu,
        LayerChoice::Residual {
            layers: vec![
                LayerChoice::Conv2d {
                    out_channels: 4,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                },
                LayerChoice::Gelu,
            ],
        },
        LayerChoice::AvgPool2d {
            kernel: 2,
            stride: None,
        },
        LayerChoice::Flatten,
        LayerChoice::Dropout { p: 0.1 },
        LayerChoice::Linear { out_features: 10 },
    ]
}

#[test]
fn a_declared_model_trains_across_nodes_and_its_audits_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3, LedgerKind::InMemory).unwrap();
    let mut request = small_job("declared", 4);
    request.model.arch = ArchName::Layers;
    request.model.layers = Some(declared_layers());
    let accuracy = run_with_clean_audits(&cluster, request, 4);
    assert!(accuracy > 0.5, "accuracy {accuracy} after 4 rounds");
}

/// Submits `request` to node 0, waits until its `rounds` rounds are done,
/// and checks that rounds were audited (new nodes are, often: the
/// recomputation really ran) and every audit passed. Returns the last
/// round's test accuracy.
pub(super) fn run_with_clean_audits(cluster: &Cluster, request: JobRequest, rounds: usize) -> f32 {
    let job = submit_to(cluster, 0, request);
    let coordinated = wait_finished(cluster, job, Duration::from_secs(180));
    let state = coordinated.state();
    assert_eq!(state.rounds.len(), rounds);
    let accuracy = state
        .rounds
        .last()
        .and_then(|r| r.test_accuracy)
        .expect("the last round is evaluated");
    drop(state);
    let entries = entries_once_finished(cluster, 0, &job);
    assert_eq!(count(&entries, EntryKind::JobFinished), 1);
    let mut audits = 0;
    for entry in &entries {
        if let EntryBody::Audit {
            passed,
            detail,
            distance_ppb,
            ..
        } = entry
        {
            assert!(*passed, "an honest round failed its audit: {detail}");
            // CPU rounds replay bit for bit on the CPU (u64::MAX: decided
            // by an earlier check, which an honest update never fails).
            assert_eq!(*distance_ppb, 0, "an honest CPU round replayed inexactly");
            audits += 1;
        }
    }
    assert!(audits > 0, "no round was audited");
    accuracy
}
