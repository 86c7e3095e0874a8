//! The bid book: the latest bid of each node, bounded; a worker that
//! missed work and bids again rejoins at the next clearing; a worker in
//! the open round that bids again has restarted and gets the round again.

use fairgrid_protocol::messages::Bid;
use fairgrid_protocol::{NodeId, OwnerId, Signed};
use fairgrid_sdk::jobs::{JobEventKind, JobState};

use super::{Coordinator, Output};

/// Prefix of the refusal a bid for an ended job gets; a worker that sees
/// it exchanges the job's ledger entries instead.
pub const JOB_ENDED: &str = "job ended";

impl Coordinator {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_bid(
        &mut self,
        now: u64,
        from: NodeId,
        signed: Signed<Bid>,
        bid: Bid,
        owner: OwnerId,
        label: String,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        let st = &mut self.state;
        if st.is_terminal() {
            return Err(format!("{JOB_ENDED}: {:?}", st.phase));
        }
        if st.banned.contains(&from) {
            return Err("excluded from this job".into());
        }
        if let Some(old) = st.bids.get(&from)
            && let Ok((_, old)) = old.verify_and_decode()
            && old.nonce >= bid.nonce
        {
            return Err(format!("nonce {} is not above {}", bid.nonce, old.nonce));
        }
        if !st.bids.contains_key(&from) && st.bids.len() >= self.max_bids {
            return Err("this job's bid book is full".into());
        }
        st.bids.insert(from, signed);
        st.owners.insert(from, (owner, label));
        let mut resend = false;
        let was_missing = st.missing.remove(&from);
        if matches!(st.phase, JobState::Training | JobState::Waiting) {
            if was_missing {
                st.needs_reclear = Some(format!("{from} rejoined"));
                if st.phase == JobState::Waiting {
                    st.bidding_until = st.bidding_until.min(now);
                }
            } else {
                resend = true;
            }
        }
        self.note_ask(bid.ask, from);
        out.push(Output::Event(JobEventKind::BidReceived {
            node: from.to_string(),
            owner: owner.to_string(),
            ask: bid.ask,
        }));
        // A worker in the round that bids again has restarted: it gets the
        // round's start again if it still owes an update.
        if resend
            && let Some(round) = self
                .round
                .as_ref()
                .filter(|r| r.orders.contains_key(&from) && !r.outcomes.contains_key(&from))
        {
            out.push(Output::SendStart {
                node: from,
                round: round.round,
            });
        }
        self.persist(out);
        Ok(())
    }

    /// Remembers the cheapest ask seen, for the message a job that no bid
    /// can serve ends with.
    pub(super) fn note_ask(&mut self, ask: u64, from: NodeId) {
        let st = &mut self.state;
        if st.cheapest_ask.is_none_or(|(c, _)| ask < c) {
            st.cheapest_ask = Some((ask, from));
        }
    }
}
