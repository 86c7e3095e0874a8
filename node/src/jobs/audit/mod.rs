//! Verification of work (issue 13): the coordinator audits a sample of
//! each round's accepted updates by recomputing them.
//!
//! - [`select`]: which updates, drawn after they are all in, at a rate that
//!   adapts to each node's record.
//! - [`assign`]: who recomputes each drawn update (another owner's node,
//!   or the coordinator).
//! - [`reconcile`]: which of an auditor's passes are rechecked, and what a
//!   disagreement with the coordinator's replay says about the auditor.
//! - [`replay`]: the recomputation and the verdict, a pure function of the
//!   round's inputs and what the worker revealed.
//!
//! A worker signs, with each update, how its shards were split over
//! devices and the hashes of the error-feedback residual before and after
//! encoding; asked, it reveals its raw delta and that residual. The
//! auditor checks the reveal encodes to the signed bytes, recomputes the
//! round and compares within [`replay::TOLERANCE_PPB`].

pub mod assign;
pub mod evidence;
pub mod reconcile;
pub mod replay;
pub mod select;
pub mod standing;

pub use evidence::Evidence;
pub use replay::{
    AuditCase, COARSE_TOLERANCE_PPB, TOLERANCE_PPB, Verdict, relative_distance, replay,
    tolerance_ppb,
};
pub use select::{AuditRate, draw_seed, is_drawn};
pub use standing::Standing;

#[cfg(test)]
mod tests;
