//! The idle monitor: samples the probes (CPU and GPUs every 250 ms, logind
//! every second), feeds the gate, and withdraws or offers again on its
//! changes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::gate::{Change, Gate, Observation};
use super::gpu::GpuWatch;
use super::probe;
use crate::jobs::JobsContext;
use crate::jobs::worker;
use crate::ledger::now_ms;

const TARGET: &str = "fairgrid::idle";
/// How often the CPU is sampled.
const CPU_EVERY: Duration = Duration::from_millis(250);
/// How often logind is asked (it runs `loginctl`).
const USER_EVERY_TICKS: u32 = 4;

/// Runs until `stop`; does nothing when no idle rule is configured.
pub async fn run(ctx: Arc<JobsContext>, mut stop: watch::Receiver<bool>) {
    let policy = ctx.config.offer.idle_policy();
    let gpus = if policy.yield_gpus {
        let offered = ctx.config.offer.gpus;
        match tokio::task::spawn_blocking(move || GpuWatch::open(offered)).await {
            Ok(Ok(watch)) => Some(Arc::new(watch)),
            Ok(Err(why)) => {
                info!(target: TARGET, %why, "offer.yield_gpus is not applied");
                None
            }
            Err(_) => None,
        }
    } else {
        None
    };
    if policy.user_idle_secs.is_none() && policy.max_other_cpu_percent.is_none() && gpus.is_none() {
        return;
    }
    let mut gate = Gate::new(policy);
    let mut before = probe::read_cpu_times();
    let mut user_idle = None;
    let mut warned = false;
    let mut tick = 0u32;
    let mut interval = tokio::time::interval(CPU_EVERY);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        if policy.user_idle_secs.is_some() && tick.is_multiple_of(USER_EVERY_TICKS) {
            user_idle = tokio::task::spawn_blocking(probe::user_idle_secs)
                .await
                .ok()
                .flatten();
            if user_idle.is_none() && !warned {
                warned = true;
                warn!(target: TARGET, "cannot ask systemd-logind whether the user is idle (loginctl); offer.user_idle_secs is not applied");
            }
        }
        tick = tick.wrapping_add(1);
        let now_times = probe::read_cpu_times();
        let other_cpu_percent = match (before, now_times) {
            (Some(b), Some(a)) => probe::other_cpu_percent(b, a),
            _ => None,
        };
        before = now_times;
        let gpu_users = match &gpus {
            Some(watch) => {
                let watch = Arc::clone(watch);
                match tokio::task::spawn_blocking(move || watch.others()).await {
                    Ok(Ok(users)) => Some(users),
                    Ok(Err(why)) => {
                        debug!(target: TARGET, %why, "asking NVML");
                        None
                    }
                    Err(_) => None,
                }
            }
            None => None,
        };
        let seen = Observation {
            user_idle_secs: user_idle,
            other_cpu_percent,
            gpu_users,
        };
        match gate.observe(now_ms(), &seen) {
            Some(Change::Busy(reason)) => {
                info!(target: TARGET, %reason, "the owner needs the machine: withdrawing from every job");
                worker::withdraw_all(&ctx, reason).await;
            }
            Some(Change::Idle) => {
                info!(target: TARGET, "the machine is idle again: offering");
                worker::offer_again(&ctx);
            }
            None => {}
        }
    }
}
