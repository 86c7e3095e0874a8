//! Audits by other owners' nodes, through the real coordinator and
//! workers in one process (each node is its own owner): once a node has
//! passed an audit, the coordinator sends it other workers' rounds to
//! replay; its upheld reports are paid, and a node whose report the
//! coordinator's own replay contradicts leaves the job while the worker
//! it accused keeps its credit.

use std::time::Duration;

use fairgrid_protocol::ledger::{EntryBody, EntryKind, ReportOutcome};
use fairgrid_protocol::{NodeId, OwnerId};

use super::cluster::{Cluster, LedgerKind, test_config, test_offer};
use super::tests::{count, entries_once_finished, small_job, submit_to, wait_finished};
use crate::jobs::audit::standing::SILENT_AUDITOR;
use crate::jobs::coordinator::submit;
use crate::jobs::credits;
use crate::jobs::device::cpu_arithmetic;
use fairgrid_protocol::messages::Arithmetic;

/// Three nodes that audit every update (floor 100%), asking enough per
/// shard that an audit's pay survives the rounding to milli-credits.
fn cluster_auditing_everything(dir: &std::path::Path) -> Cluster {
    let mut config = test_config();
    config.jobs.audit_floor_ppm = 1_000_000;
    Cluster::start_priced(dir, 3, LedgerKind::InMemory, test_offer(), config, 200).unwrap()
}

/// The reports in the coordinator's ledger: (auditor, worker, outcome),
/// each checked to be signed by its auditor and not of the worker's owner.
fn reports(entries: &[EntryBody]) -> Vec<(NodeId, NodeId, ReportOutcome)> {
    entries
        .iter()
        .filter_map(|e| match e {
            EntryBody::AuditReported {
                report,
                auditor_owner,
                worker_owner,
                outcome,
                ..
            } => {
                let (signer, r) = report.verify_and_decode().expect("a signed report");
                assert_eq!(signer, r.auditor.0, "signed by its auditor");
                assert_ne!(auditor_owner, worker_owner, "an owner judged itself");
                assert_eq!(*auditor_owner, OwnerId(r.auditor.0));
                Some((r.auditor, r.worker, *outcome))
            }
            _ => None,
        })
        .collect()
}

fn failed_audits(entries: &[EntryBody]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| match e {
            EntryBody::Audit {
                passed: false,
                detail,
                ..
            } => Some(detail.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn other_owners_nodes_audit_rounds_and_are_paid_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_auditing_everything(dir.path());
    // A job of exact audits where this CPU replays bit for bit; elsewhere
    // such a job is refused (said loudly) and an ordinary one runs.
    let exact = cpu_arithmetic() == Arithmetic::X86Avx2Fma;
    let mut request = small_job("audited by others", 4);
    request.market.exact_audits = true;
    if !exact {
        eprintln!(
            "this CPU is {:?}: no job of exact audits here",
            cpu_arithmetic()
        );
        let ctx = cluster.nodes[0].ctx().clone();
        let refused = cluster.on(0, {
            let request = request.clone();
            async move { submit::submit(&ctx, request).await }
        });
        let e = refused.expect_err("an exact job on a CPU of another class");
        assert!(format!("{e:?}").contains("market.exact_audits"), "{e:?}");
        request.market.exact_audits = false;
    }
    let job = submit_to(&cluster, 0, request);
    let coordinated = wait_finished(&cluster, job, Duration::from_secs(180));
    let entries = entries_once_finished(&cluster, 0, &job);
    assert_eq!(failed_audits(&entries), Vec::<String>::new());
    if exact {
        // Every replay, here or by an auditor, was judged bit for bit.
        for e in &entries {
            if let EntryBody::Audit { tolerance_ppb, .. } = e {
                assert_eq!(*tolerance_ppb, 0, "{e:?}");
            }
            if let EntryBody::AuditReported { report, .. } = e {
                let (_, r) = report.verify_and_decode().unwrap();
                assert_eq!(r.tolerance_ppb, 0, "{r:?}");
            }
        }
    }
    let reports = reports(&entries);
    assert!(!reports.is_empty(), "no round was audited by another node");
    let coordinator = cluster.nodes[0].node_id();
    for (auditor, worker, outcome) in &reports {
        assert_eq!(*outcome, ReportOutcome::Upheld, "an honest report");
        assert_ne!(auditor, worker);
        assert_ne!(*auditor, coordinator, "the coordinator is the fallback");
    }
    // Round 0 has no auditor with a clean audit yet: the coordinator
    // replays it all.
    let first_round_reports = entries
        .iter()
        .filter(|e| matches!(e, EntryBody::AuditReported { round: 0, .. }))
        .count();
    assert_eq!(first_round_reports, 0);
    // The reports are paid: the credits recorded are those of the
    // rounds with the audits, and differ from those without.
    let state = coordinated.state();
    let audited: usize = state.rounds.iter().map(|r| r.audited.len()).sum();
    assert_eq!(audited, reports.len());
    let allocations: Vec<_> = state
        .allocations
        .iter()
        .map(|a| a.allocation.clone())
        .collect();
    let work = |with_audits: bool| -> Vec<credits::RoundWork> {
        state
            .rounds
            .iter()
            .map(|r| {
                let mut accepted = std::collections::BTreeMap::new();
                for (_, owner, shards) in &r.accepted {
                    *accepted.entry(*owner).or_insert(0) += shards;
                }
                credits::RoundWork {
                    allocation: r.allocation,
                    accepted_shards: accepted,
                    audited: if with_audits {
                        r.audited.clone()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect()
    };
    let rounds = state.rounds.len() as u32;
    let paid: u64 = credits::credits(&allocations, &work(true), rounds)
        .iter()
        .map(|c| c.amount)
        .sum();
    let unpaid: u64 = credits::credits(&allocations, &work(false), rounds)
        .iter()
        .map(|c| c.amount)
        .sum();
    let recorded: u64 = entries
        .iter()
        .filter_map(|e| match e {
            EntryBody::Credit { amount, .. } => Some(*amount),
            _ => None,
        })
        .sum();
    assert_eq!(recorded, paid);
    assert!(paid > unpaid, "audits earned nothing: {paid} vs {unpaid}");
    assert_eq!(count(&entries, EntryKind::JobFinished), 1);
}

#[test]
fn an_auditor_that_fails_honest_work_is_overruled_and_leaves_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_auditing_everything(dir.path());
    let liar = cluster.nodes[2].node_id();
    cluster.nodes[2]
        .ctx()
        .jobs
        .lying_auditor
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let job = submit_to(&cluster, 0, small_job("a lying auditor", 4));
    let coordinated = wait_finished(&cluster, job, Duration::from_secs(180));
    let entries = entries_once_finished(&cluster, 0, &job);
    // Every worker it accused passed the coordinator's replay.
    assert_eq!(failed_audits(&entries), Vec::<String>::new());
    let reports = reports(&entries);
    let overruled: Vec<_> = reports
        .iter()
        .filter(|(_, _, outcome)| *outcome != ReportOutcome::Upheld)
        .collect();
    assert!(!overruled.is_empty(), "the liar never audited: {reports:?}");
    assert!(
        overruled
            .iter()
            .all(|(auditor, _, outcome)| *auditor == liar && *outcome == ReportOutcome::Overruled),
        "{overruled:?}"
    );
    let state = coordinated.state();
    assert!(state.banned.contains(&liar), "the liar stays in the job");
    // No round after its report counted it, and its overruled reports
    // were not paid.
    let last_report = entries
        .iter()
        .filter_map(|e| match e {
            EntryBody::AuditReported { round, .. } => Some(*round),
            _ => None,
        })
        .max()
        .unwrap();
    for r in state.rounds.iter().filter(|r| r.round > last_report) {
        assert!(r.accepted.iter().all(|(n, _, _)| *n != liar));
    }
    assert!(
        state
            .rounds
            .iter()
            .flat_map(|r| &r.audited)
            .all(|a| a.auditor_owner != OwnerId(liar.0))
    );
    assert_eq!(state.rounds.len(), 4, "the job went on without it");
    // Its owner now counts a failure here.
    assert_eq!(
        cluster.nodes[0]
            .ctx()
            .jobs
            .standing
            .failures(&OwnerId(liar.0)),
        1
    );
}

/// A node that takes evidence and never reports holds up one audit for
/// its wait, then the coordinator replays the round and asks it no more.
#[test]
fn an_auditor_that_never_reports_is_asked_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_auditing_everything(dir.path());
    let silent = cluster.nodes[2].node_id();
    cluster.nodes[2]
        .ctx()
        .jobs
        .silent_auditor
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let to_silent = crate::jobs::transport::peer_id(&silent).unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&asked);
    cluster.net.hold(Box::new(move |to, request| {
        if *to == to_silent && matches!(request, crate::net::Request::AuditReplay { .. }) {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        false
    }));
    let job = submit_to(&cluster, 0, small_job("a silent auditor", 4));
    wait_finished(&cluster, job, Duration::from_secs(180));
    let entries = entries_once_finished(&cluster, 0, &job);
    assert_eq!(failed_audits(&entries), Vec::<String>::new());
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        reports(&entries)
            .iter()
            .all(|(auditor, _, _)| *auditor != silent)
    );
    // The silence is in the ledger, so a restarted coordinator keeps it.
    let silences: Vec<_> = entries
        .iter()
        .filter(|e| {
            matches!(e, EntryBody::Verification { node, passed: false, detail, .. }
                if *node == silent && detail.starts_with(SILENT_AUDITOR))
        })
        .collect();
    assert_eq!(silences.len(), 1, "{silences:?}");
}

/// What an auditor is sent is checked before it is judged: bytes that are
/// no evidence, evidence from anyone but the job's coordinator, evidence
/// whose parts do not match what the update signed, and a node's own
/// update are refused, never reported as a failure of the worker.
#[test]
fn an_auditor_refuses_hostile_evidence_and_judges_only_what_holds_together() {
    use crate::jobs::audit::Evidence;
    use crate::jobs::worker::auditor::on_audit_replay;
    use crate::net::{Request, Response};

    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_auditing_everything(dir.path());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(None));
    let noted = std::sync::Arc::clone(&asked);
    cluster.net.hold(Box::new(move |to, request| {
        let audit = matches!(request, Request::AuditReplay { .. });
        if audit {
            *noted.lock().unwrap() = Some(*to);
        }
        audit
    }));
    let job = submit_to(&cluster, 0, small_job("hostile evidence", 3));
    super::tests::wait_held(&cluster, 1, "no audit was sent to another node");
    let to = asked.lock().unwrap().expect("the auditor asked");
    let a = (0..3)
        .find(|&i| crate::jobs::transport::peer_id(&cluster.nodes[i].node_id()).unwrap() == to)
        .unwrap();
    let coordinator = cluster.nodes[0].node_id();
    // The round-1 evidence the coordinator kept, by worker: every worker
    // is drawn (floor 100%); the others' audits go on while one is held.
    let store = &cluster.nodes[0].ctx().jobs.store;
    let read_all = || -> Vec<(NodeId, Vec<u8>)> {
        (0..3)
            .filter_map(|w| {
                let worker = cluster.nodes[w].node_id();
                std::fs::read(store.evidence_path(&job, 1, &worker))
                    .ok()
                    .map(|b| (worker, b))
            })
            .collect()
    };
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let mut kept = read_all();
    while kept.len() < 3 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        kept = read_all();
    }
    let auditor = cluster.nodes[a].node_id();
    let (_, other) = kept
        .iter()
        .find(|(w, _)| *w != auditor)
        .expect("another worker's evidence");
    let ask = |from: NodeId, bytes: Vec<u8>| {
        let ctx = cluster.nodes[a].ctx().clone();
        cluster.on(a, async move { on_audit_replay(&ctx, from, bytes).await })
    };
    let refused = |answer: Response, why: &str| match answer {
        Response::Refused { reason } => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a refusal ({why}), got {other:?}"),
    };
    refused(
        ask(coordinator, b"FGEVIDENCE but not".to_vec()),
        "not an audit evidence file",
    );
    refused(ask(coordinator, Vec::new()), "not an audit evidence file");
    let outsider = cluster.nodes[(1..3).find(|&i| i != a).unwrap()].node_id();
    refused(ask(outsider, other.clone()), "only the coordinator");
    let mut tampered = Evidence::from_bytes(other).unwrap();
    tampered.params[0] += 1.0;
    refused(
        ask(coordinator, tampered.to_bytes()),
        "the parameters are not the ones the update started from",
    );
    let mut tampered = Evidence::from_bytes(other).unwrap();
    if let Some(shard) = tampered.shards.first_mut() {
        let last = shard.len() - 1;
        shard[last] ^= 1;
    }
    refused(ask(coordinator, tampered.to_bytes()), "is not the job's");
    // Every worker is drawn (floor 100%): the auditor's own round is kept.
    let (_, own) = kept
        .iter()
        .find(|(w, _)| *w == auditor)
        .expect("the auditor's own evidence");
    refused(ask(coordinator, own.clone()), "its own update");
    // What holds together is taken; the report goes to the coordinator
    // as a request of its own.
    assert!(matches!(
        ask(coordinator, other.clone()),
        Response::Accepted
    ));
    cluster.net.release();
    wait_finished(&cluster, job, Duration::from_secs(180));
    let entries = entries_once_finished(&cluster, 0, &job);
    assert_eq!(failed_audits(&entries), Vec::<String>::new());
}
