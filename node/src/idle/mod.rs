//! Contribution only while the owner does not need the machine
//! (`[offer]` `user_idle_secs`, `max_other_cpu_percent`,
//! `resume_after_secs`; the hours of `idle_hours` are the advert's).
//!
//! - [`gate`]: the decision, pure;
//! - [`probe`]: what it looks at (`/proc`, systemd-logind);
//! - [`gpu`]: who else uses the offered GPUs (NVML);
//! - [`monitor`]: the task that looks every 250 ms (CPU) and every second
//!   (logind) and acts: busy withdraws from every job at once (training
//!   stops before its next step, the coordinators are told, signed, and
//!   re-clear), idle again offers again.

pub mod gate;
pub mod gpu;
pub mod monitor;
pub mod probe;
