//! How a job ends, and the entries it leaves: `JobFailed` with a reason,
//! or the credits (see [`crate::jobs::credits`]) and `JobFinished`; every
//! entry written ahead into the checkpoint before it is appended; the last
//! checkpoint once every entry is in the ledger.

use std::collections::BTreeMap;

use fairgrid_protocol::Hash32;
use fairgrid_protocol::ledger::EntryBody;
use fairgrid_sdk::jobs::{JobEventKind, JobState};

use super::super::{CompressionReport, CreditRecord, JobResult};
use super::{Busy, Coordinator, Output, Step};
use crate::jobs::credits::{self, RoundWork};

/// Longest failure reason a `JobFailed` entry carries, in bytes.
const MAX_REASON: usize = 900;

impl Coordinator {
    /// Moves the job to Failed with `reason` (once), writing `JobFailed` ahead.
    pub(super) fn fail(&mut self, now: u64, reason: String, out: &mut Vec<Output>) {
        if self.state.is_terminal() {
            return;
        }
        self.busy = None;
        self.round = None;
        let st = &mut self.state;
        st.phase = JobState::Failed;
        st.error = Some(reason.clone());
        st.updated_at = now;
        let mut clipped = reason.clone();
        crate::text::clip(&mut clipped, MAX_REASON);
        let entry = EntryBody::JobFailed {
            job_id: self.id,
            rounds: st.rounds.len() as u32,
            reason: clipped,
        };
        out.push(Output::Event(JobEventKind::Failed { reason }));
        self.write_ahead(vec![entry], out);
    }

    /// Holds `entries` as unrecorded, checkpoints, then has them appended.
    pub(super) fn write_ahead(&mut self, entries: Vec<EntryBody>, out: &mut Vec<Output>) {
        self.unrecorded.extend(entries.iter().cloned());
        self.recording += 1;
        out.push(Output::WriteAhead {
            entries,
            check_ledger: false,
        });
    }

    pub(super) fn on_write_ahead_done(
        &mut self,
        now: u64,
        recorded: Vec<EntryBody>,
        error: Option<String>,
        out: &mut Vec<Output>,
    ) {
        self.recording = self.recording.saturating_sub(1);
        for entry in recorded {
            if let Some(i) = self.unrecorded.iter().position(|e| *e == entry) {
                self.unrecorded.remove(i);
            }
            if let EntryBody::RoundCompleted { round, .. } = entry {
                self.announce_round(round, out);
            }
        }
        if let Some(error) = error {
            // Once ended, the entries wait in the checkpoint for the next start.
            self.fail(now, format!("recording the job's entries: {error}"), out);
        }
    }

    /// The model is written: the credits and `JobFinished`, written ahead.
    pub(super) fn on_model_written(
        &mut self,
        now: u64,
        result: Result<(Hash32, Option<CompressionReport>), String>,
        out: &mut Vec<Output>,
    ) {
        if !matches!(self.busy, Some(Busy::WritingModel)) {
            return;
        }
        self.busy = None;
        let (model_hash, compression) = match result {
            Ok(written) => written,
            Err(e) => return self.fail(now, format!("writing the model: {e}"), out),
        };
        let owed = self.credits_owed();
        let st = &mut self.state;
        let rounds = st.rounds.len() as u32;
        let accuracy = st
            .rounds
            .last()
            .and_then(|r| r.test_accuracy)
            .unwrap_or(0.0);
        let mut entries: Vec<EntryBody> = owed
            .iter()
            .map(|c| EntryBody::Credit {
                job_id: self.id,
                owner: c.owner,
                amount: c.amount,
                shards: c.shards,
                clearing_price: c.clearing_price,
                allocation: c.allocation,
            })
            .collect();
        entries.push(EntryBody::JobFinished {
            job_id: self.id,
            rounds,
            model_hash,
            test_accuracy_ppm: (f64::from(accuracy) * 1e6).round() as u32,
            bytes_moved: st.bytes_up + st.bytes_down,
        });
        st.phase = JobState::Finished;
        st.updated_at = now;
        self.finished_here = true;
        st.result = Some(JobResult {
            model_hash,
            test_accuracy: accuracy,
            compression,
            credits: owed
                .iter()
                .map(|c| CreditRecord {
                    owner: c.owner,
                    amount: c.amount,
                    audits: c.audits,
                    shards: c.shards,
                })
                .collect(),
        });
        out.push(Output::Event(JobEventKind::Finished {
            test_accuracy: accuracy,
            rounds,
        }));
        self.write_ahead(entries, out);
    }

    /// What each owner earned: its accepted shards in each round.
    fn credits_owed(&self) -> Vec<credits::OwnerCredit> {
        let allocations: Vec<_> = self
            .state
            .allocations
            .iter()
            .map(|a| a.allocation.clone())
            .collect();
        let work: Vec<RoundWork> = self
            .state
            .rounds
            .iter()
            .map(|r| {
                let mut accepted = BTreeMap::new();
                for (_, owner, shards) in &r.accepted {
                    *accepted.entry(*owner).or_insert(0) += shards;
                }
                RoundWork {
                    allocation: r.allocation,
                    accepted_shards: accepted,
                    audited: r.audited.clone(),
                }
            })
            .collect();
        credits::credits(&allocations, &work, self.spec.hyper.rounds)
    }

    /// An ended job stops once the shell has answered every write-ahead.
    /// Entries whose append failed stay in the last checkpoint and are
    /// appended on the next start.
    pub(super) fn try_end(&mut self, out: &mut Vec<Output>) -> Step {
        if self.recording > 0 {
            return Step::Stopped;
        }
        self.ended = true;
        self.persist(out);
        if self.finished_here {
            out.push(Output::SyncLedger {
                participants: self.state.participants(),
            });
        }
        out.push(Output::Ended);
        Step::Stopped
    }
}
