//! Trusting an auditor: which of its passes the coordinator rechecks, and
//! what a disagreement between its report and the coordinator's own
//! replay says about it. Tolerances differ by arithmetic (the exact rule
//! between x86 AVX2+FMA CPUs, 1e-2 elsewhere, 0.25 across GPU and CPU),
//! so a disagreement is held against the auditor only when the
//! coordinator judged by a rule at least as favourable to its report.

use fairgrid_protocol::ledger::ReportOutcome;
use fairgrid_protocol::messages::{Arithmetic, JobSpec};
use fairgrid_protocol::{Hash32, NodeId};

use super::replay::{Verdict, tolerance_ppb};
use super::select::is_drawn;
use crate::jobs::device::{Device, wants_gpu};

/// The tolerance an honest auditor judges a round by, from what the
/// coordinator knows of it: its own update this round declared its
/// arithmetic (a GPU job trained on its GPU replays there). The tolerance
/// a report states is the auditor's word and is not used.
pub fn auditor_tolerance(spec: &JobSpec, trained_with: Arithmetic, auditor: Arithmetic) -> u64 {
    let device = if auditor == Arithmetic::Gpu && wants_gpu(spec) {
        Device::Cuda { ordinal: 0 }
    } else {
        Device::Cpu { threads: 1 }
    };
    let cpu = match auditor {
        Arithmetic::Gpu => Arithmetic::X86Avx2Fma,
        other => other,
    };
    tolerance_ppb(spec, trained_with, device, cpu)
}

/// Whether the coordinator replays a round an auditor passed: drawn at
/// `rate_ppm` from the round's seed (which the auditor cannot know), so a
/// node that passes everything unseen is caught as a worker that cheats
/// would be.
pub fn rechecks_pass(seed: &Hash32, worker: &NodeId, rate_ppm: u32) -> bool {
    let seed = Hash32::of_parts(&[b"fairgrid/v1/recheck".as_slice(), seed.0.as_slice()]);
    is_drawn(&seed, worker, rate_ppm)
}

/// A report (`reported`, by an auditor whose rule is `reported_tolerance`
/// ppb, see [`auditor_tolerance`]) against the coordinator's replay of the
/// same evidence (`here`). The worker's verdict is always the
/// coordinator's when it replayed.
pub fn reconcile(reported: bool, reported_tolerance: u64, here: &Verdict) -> ReportOutcome {
    let blame = match (reported, here.passed) {
        (a, b) if a == b => return ReportOutcome::Upheld,
        // It failed what passed here under a rule as strict as its own.
        (false, true) => here.tolerance_ppb <= reported_tolerance,
        // It passed what failed here: under a rule as lenient as its own,
        // or on a check no arithmetic excuses (the reveal does not encode
        // to the signed update, the samples differ).
        (true, false) => here.distance_ppb.is_none() || here.tolerance_ppb >= reported_tolerance,
        _ => unreachable!("the equal cases returned"),
    };
    if blame {
        ReportOutcome::Overruled
    } else {
        ReportOutcome::Unconfirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::Keypair;

    const EXACT: u64 = 0;
    const CPU: u64 = 10_000_000;
    const COARSE: u64 = 250_000_000;

    fn here(passed: bool, tolerance_ppb: u64) -> Verdict {
        Verdict {
            passed,
            distance_ppb: Some(5_000_000),
            tolerance_ppb,
            detail: String::new(),
        }
    }

    #[test]
    fn agreement_is_upheld_and_disagreement_blamed_only_under_a_rule_as_favourable() {
        for tol in [EXACT, CPU, COARSE] {
            assert_eq!(
                reconcile(true, tol, &here(true, CPU)),
                ReportOutcome::Upheld
            );
            assert_eq!(
                reconcile(false, tol, &here(false, CPU)),
                ReportOutcome::Upheld
            );
        }
        // A failure reported under the exact rule; the coordinator passes
        // it within 1e-2 (one step short lands at 8e-4): not the auditor's
        // fault.
        let unconfirmed = ReportOutcome::Unconfirmed;
        assert_eq!(reconcile(false, EXACT, &here(true, CPU)), unconfirmed);
        assert_eq!(reconcile(false, CPU, &here(true, COARSE)), unconfirmed);
        // A failure the coordinator passes as strictly: a lie.
        let overruled = ReportOutcome::Overruled;
        assert_eq!(reconcile(false, CPU, &here(true, CPU)), overruled);
        assert_eq!(reconcile(false, COARSE, &here(true, EXACT)), overruled);
        // A pass the coordinator fails as leniently: a lie (or no work).
        assert_eq!(reconcile(true, CPU, &here(false, CPU)), overruled);
        assert_eq!(reconcile(true, EXACT, &here(false, COARSE)), overruled);
        // A pass within 1e-2 the exact rule fails here: the auditor's
        // rule allowed it.
        assert_eq!(reconcile(true, CPU, &here(false, EXACT)), unconfirmed);
        // But no rule passes a reveal that is not the signed update.
        let structural = Verdict {
            distance_ppb: None,
            ..here(false, EXACT)
        };
        assert_eq!(reconcile(true, COARSE, &structural), overruled);
    }

    #[test]
    fn an_auditors_rule_comes_from_its_own_update_not_its_report() {
        let spec = crate::jobs::testing::sample_spec(&Keypair::from_seed(b"c"));
        let x86 = Arithmetic::X86Avx2Fma;
        assert_eq!(auditor_tolerance(&spec, x86, x86), EXACT);
        assert_eq!(auditor_tolerance(&spec, x86, Arithmetic::OtherCpu), CPU);
        assert_eq!(auditor_tolerance(&spec, Arithmetic::OtherCpu, x86), CPU);
        // A CPU job: a worker that says it trained on a GPU is judged as
        // the CPU it ran on, and so is an auditor.
        assert_eq!(auditor_tolerance(&spec, x86, Arithmetic::Gpu), EXACT);
        let mut gpu_job = spec.clone();
        gpu_job.demand_per_shard.gpu_milli = 250;
        let gpu = Arithmetic::Gpu;
        assert_eq!(auditor_tolerance(&gpu_job, gpu, gpu), CPU);
        assert_eq!(auditor_tolerance(&gpu_job, gpu, x86), COARSE);
        assert_eq!(auditor_tolerance(&gpu_job, x86, gpu), COARSE);
    }

    #[test]
    fn passes_are_rechecked_at_the_rate_and_the_auditor_cannot_tell_which() {
        let worker = Keypair::from_seed(b"w").node_id();
        let mut rechecked = 0;
        for s in 0..20_000u32 {
            let seed = Hash32::of(&s.to_le_bytes());
            assert!(rechecks_pass(&seed, &worker, 1_000_000));
            assert!(!rechecks_pass(&seed, &worker, 0));
            rechecked += u32::from(rechecks_pass(&seed, &worker, 50_000));
            // Not the draw itself: a drawn update is not thereby rechecked.
        }
        assert!((850..1150).contains(&rechecked), "{rechecked}");
        let independent = (0..20_000u32)
            .filter(|s| {
                let seed = Hash32::of(&s.to_le_bytes());
                is_drawn(&seed, &worker, 500_000) && rechecks_pass(&seed, &worker, 500_000)
            })
            .count();
        assert!((4_500..5_500).contains(&independent), "{independent}");
    }
}
