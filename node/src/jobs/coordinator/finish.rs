//! The coordinator's CPU work, on blocking threads: aggregating a round's
//! updates and evaluating the result (step 5), and writing the trained
//! model file (step 7). The machine decides what follows from each.

use std::sync::Arc;

use fairgrid_kernels::model::save_safetensors;
use fairgrid_protocol::Hash32;

use super::CoordJob;
use super::machine::Input;
use super::round::{AcceptedUpdate, OuterStep, aggregate_with};
use crate::jobs::JobsContext;
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
                let next = aggregate_with(
                    &step.params,
                    &refs,
                    OuterStep::of(&hyper),
                    &step.velocity,
                    hyper.aggregation,
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

/// Writes the trained model as safetensors next to the job's checkpoint.
pub async fn write_model(ctx: &Arc<JobsContext>, job: &Arc<CoordJob>, params: Arc<Vec<f32>>) {
    let (spec, hyper) = (job.spec.model.clone(), job.spec.hyper.clone());
    let path = ctx.jobs.store.result_path(&job.id);
    let written = tokio::task::spawn_blocking(move || {
        let mut trainer = model::trainer(&spec, &hyper, 1, 1).map_err(|e| e.to_string())?;
        trainer
            .set_params_flat(&params)
            .map_err(|e| e.to_string())?;
        let file =
            save_safetensors(trainer.model(), trainer.backend()).map_err(|e| e.to_string())?;
        crate::datadir::write_atomic(&path, &file).map_err(|e| e.to_string())?;
        Ok::<_, String>(Hash32::of(&file))
    })
    .await;
    let result = written.unwrap_or_else(|e| Err(format!("model thread: {e}")));
    let _ = job.handle(Input::ModelWritten { result });
}
