//! Trusting an auditor: which of its passes the coordinator rechecks, and
//! what a disagreement between its report and the coordinator's own
//! replay says about it. Tolerances differ by arithmetic (the exact rule
//! between x86 AVX2+FMA CPUs, 1e-2 elsewhere, 0.25 across GPU and CPU),
//! so a disagreement is held against the auditor only when the
//! coordinator judged by a rule at least as favourable to its report.

use fairgrid_protocol::ledger::ReportOutcome;
use fairgrid_protocol::{Hash32, NodeId};

use super::select::is_drawn;

/// Whether the coordinator replays a round an auditor passed: drawn at
/// `rate_ppm` from the round's seed (which the auditor cannot know), so a
/// node that passes everything unseen is caught as a worker that cheats
/// would be.
pub fn rechecks_pass(seed: &Hash32, worker: &NodeId, rate_ppm: u32) -> bool {
    let seed = Hash32::of_parts(&[b"fairgrid/v1/recheck".as_slice(), seed.0.as_slice()]);
    is_drawn(&seed, worker, rate_ppm)
}

/// A report (`reported`, judged within `reported_tolerance` ppb) against
/// the coordinator's replay of the same evidence (`here`, within
/// `here_tolerance`). The worker's verdict is always the coordinator's
/// when it replayed.
pub fn reconcile(
    reported: bool,
    reported_tolerance: u64,
    here: bool,
    here_tolerance: u64,
) -> ReportOutcome {
    let blame = match (reported, here) {
        (a, b) if a == b => return ReportOutcome::Upheld,
        // It failed what passed here under a rule as strict as its own.
        (false, true) => here_tolerance <= reported_tolerance,
        // It passed what failed here under a rule as lenient as its own.
        (true, false) => here_tolerance >= reported_tolerance,
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

    #[test]
    fn agreement_is_upheld_and_disagreement_blamed_only_under_a_rule_as_favourable() {
        for tol in [EXACT, CPU, COARSE] {
            assert_eq!(reconcile(true, tol, true, CPU), ReportOutcome::Upheld);
            assert_eq!(reconcile(false, tol, false, CPU), ReportOutcome::Upheld);
        }
        // A failure reported under the exact rule; the coordinator passes
        // it within 1e-2 (one step short lands at 8e-4): not the auditor's
        // fault.
        assert_eq!(
            reconcile(false, EXACT, true, CPU),
            ReportOutcome::Unconfirmed
        );
        assert_eq!(
            reconcile(false, CPU, true, COARSE),
            ReportOutcome::Unconfirmed
        );
        // A failure the coordinator passes as strictly: a lie.
        assert_eq!(reconcile(false, CPU, true, CPU), ReportOutcome::Overruled);
        assert_eq!(
            reconcile(false, COARSE, true, EXACT),
            ReportOutcome::Overruled
        );
        // A pass the coordinator fails as leniently: a lie (or no work).
        assert_eq!(reconcile(true, CPU, false, CPU), ReportOutcome::Overruled);
        assert_eq!(
            reconcile(true, EXACT, false, COARSE),
            ReportOutcome::Overruled
        );
        // A pass within 1e-2 the exact rule fails here: the auditor's
        // rule allowed it.
        assert_eq!(
            reconcile(true, CPU, false, EXACT),
            ReportOutcome::Unconfirmed
        );
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
