//! The coordinator's CPU work, on blocking threads: aggregating a round's
//! updates and evaluating the result (step 5), and writing the trained
//! model file (step 7). The machine decides what follows from each.

use std::sync::Arc;

use fairgrid_kernels::model::save_safetensors;
use fairgrid_kernels::model::shrink::{ShrinkOptions, shrink};
use fairgrid_kernels::{CpuBackend, OptimizerConfig, Shard, ShardSet, Trainer};
use fairgrid_protocol::Hash32;
use fairgrid_protocol::messages::PPM;

use super::machine::Input;
use super::round::{AcceptedUpdate, OuterStep, aggregate_with};
use super::{CompressionReport, CoordJob};
use crate::jobs::JobsContext;
use crate::jobs::data::JobData;
use crate::jobs::device::{JobTrainer, evaluator_device};
use crate::jobs::model;

/// One round's outer step, as the machine asked for it.
pub struct Step {
    pub round: u32,
    /// Evaluate the new parameters on the job's test set.
    pub evaluate: bool,
    pub params: Arc<Vec<f32>>,
    pub velocity: Arc<Vec<f32>>,
}

/// Applies the accepted updates and, when the step asks, evaluates the new
/// parameters on the job's test set.
pub async fn aggregate(
    ctx: &Arc<JobsContext>,
    job: &Arc<CoordJob>,
    step: Step,
    updates: Vec<AcceptedUpdate>,
) {
    let round = step.round;
    let result = match job.data() {
        None => Err("the job's data is gone".to_string()),
        Some(data) => {
            let evaluator = Arc::clone(&job.evaluator);
            let (spec, hyper) = (job.spec.model.clone(), job.spec.hyper.clone());
            let threads = model::threads(ctx.config.jobs.threads);
            let offers_gpus = ctx.host.offer(crate::ledger::now_ms()).0.gpu_milli > 0;
            let eval_batch = ctx.config.jobs.eval_batch as usize;
            let computed = tokio::task::spawn_blocking(move || {
                let refs: Vec<&AcceptedUpdate> = updates.iter().collect();
                let statistics = model::kernels_spec(&spec).statistics_ranges();
                let next = aggregate_with(
                    &step.params,
                    &refs,
                    OuterStep::of(&hyper),
                    &step.velocity,
                    hyper.aggregation,
                    &statistics,
                )?;
                if !step.evaluate {
                    return Ok((next, None));
                }
                let mut slot = evaluator.lock().expect("evaluator lock");
                if slot.is_none() {
                    // On a GPU when this node offers one (the CPU if it
                    // cannot be used after all).
                    let device = evaluator_device(offers_gpus, threads);
                    let (trainer, runs_on) =
                        JobTrainer::new_or_cpu(device, threads, &spec, &hyper, eval_batch)
                            .map_err(|e| e.to_string())?;
                    tracing::info!(target: "fairgrid::jobs", device = %runs_on, "evaluator built");
                    *slot = Some(trainer);
                }
                let trainer = slot.as_mut().expect("built above");
                trainer
                    .set_params_flat(&next.params)
                    .map_err(|e| e.to_string())?;
                let metrics = trainer.evaluate(&data.test).map_err(|e| e.to_string())?;
                Ok::<_, String>((next, Some(metrics.accuracy as f32)))
            })
            .await;
            computed.unwrap_or_else(|e| Err(format!("aggregation thread: {e}")))
        }
    };
    let _ = job.handle(Input::Aggregated { round, result });
}

/// Writes the trained model as safetensors next to the job's checkpoint,
/// compressed first when the job asks (`hyper.result`): pruning,
/// fine-tuning on the job's training shards, int8 storage, each measured
/// on its test set.
pub async fn write_model(ctx: &Arc<JobsContext>, job: &Arc<CoordJob>, params: Arc<Vec<f32>>) {
    let (spec, hyper) = (job.spec.model.clone(), job.spec.hyper.clone());
    let path = ctx.jobs.store.result_path(&job.id);
    let data = job.data();
    let threads = model::threads(ctx.config.jobs.threads);
    let written = tokio::task::spawn_blocking(move || {
        let compression = hyper.result;
        let compressed = match (compression.is_requested(), data) {
            (false, _) => None,
            (true, None) => Some(Err("the job's data is gone".to_string())),
            (true, Some(data)) => Some(compress_result(&spec, &hyper, &params, &data, threads)),
        };
        // A compression that fails must not cost the workers their credit
        // (written once the model is): the result is then the fp32 model
        // and the report has no compression part.
        let compressed = match compressed {
            Some(Err(error)) => {
                tracing::warn!(target: "fairgrid::jobs", %error, "compressing the result failed; delivering the fp32 model");
                None
            }
            other => other.map(|r| r.expect("errors handled above")),
        };
        let (file, report) = if let Some((file, report)) = compressed {
            (file, Some(report))
        } else {
            let mut trainer = model::trainer(&spec, &hyper, 1, 1).map_err(|e| e.to_string())?;
            trainer
                .set_params_flat(&params)
                .map_err(|e| e.to_string())?;
            let file =
                save_safetensors(trainer.model(), trainer.backend()).map_err(|e| e.to_string())?;
            (file, None)
        };
        crate::datadir::write_atomic(&path, &file).map_err(|e| e.to_string())?;
        Ok::<_, String>((Hash32::of(&file), report))
    })
    .await;
    let result = written.unwrap_or_else(|e| Err(format!("model thread: {e}")));
    let _ = job.handle(Input::ModelWritten { result });
}

/// The compressed model file and what compression cost.
fn compress_result(
    spec: &fairgrid_protocol::messages::ModelSpec,
    hyper: &fairgrid_protocol::messages::HyperParams,
    params: &[f32],
    data: &JobData,
    threads: usize,
) -> Result<(Vec<u8>, CompressionReport), String> {
    let c = hyper.result;
    let shards = data
        .shard_bytes
        .iter()
        .map(|bytes| Shard::from_bytes(bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("decoding the job's shards: {e}"))?;
    let train = ShardSet::new(shards.iter().collect()).map_err(|e| e.to_string())?;
    let mut trainer = Trainer::new(
        CpuBackend::new(threads).map_err(|e| e.to_string())?,
        &model::kernels_spec(spec),
        OptimizerConfig::sgd(c.finetune_lr.max(f32::MIN_POSITIVE), 0.9),
        FINETUNE_BATCH,
        hyper.seed,
    )
    .map_err(|e| e.to_string())?;
    trainer.set_params_flat(params).map_err(|e| e.to_string())?;
    let options = ShrinkOptions {
        prune: f64::from(c.prune_ppm) / f64::from(PPM),
        finetune_steps: c.finetune_steps,
        lr: c.finetune_lr.max(f32::MIN_POSITIVE),
        int8: c.int8,
        seed: hyper.seed,
    };
    let (file, r) =
        shrink(&mut trainer, &train, &data.test, &options).map_err(|e| e.to_string())?;
    tracing::info!(target: "fairgrid::jobs", size_before = r.size_before, size_after = r.size_after,
        accuracy_before = r.accuracy_before, accuracy_after = r.accuracy_after, "result compressed");
    Ok((
        file,
        CompressionReport {
            size_before: r.size_before,
            size_after: r.size_after,
            accuracy_before: r.accuracy_before as f32,
            accuracy_after: r.accuracy_after as f32,
            weight_sparsity: r.sparsity as f32,
        },
    ))
}

/// Batch of the result's fine-tuning steps (as `fairgrid model compress`).
const FINETUNE_BATCH: usize = 64;
