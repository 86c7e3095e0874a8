//! Which owners an entry is about, for the ledger's `owner` filter (the
//! dashboard links every owner's figures to these entries).

use fairgrid_protocol::OwnerId;
use fairgrid_protocol::ledger::EntryBody;

/// True when `owner` appears in the entry: as the advertiser, the
/// certificate's owner, a winner of an allocation, a participant of a
/// round, or the credited owner.
pub fn mentions_owner(body: &EntryBody, owner: &OwnerId) -> bool {
    match body {
        EntryBody::AdvertSeen { owner: o, .. }
        | EntryBody::CertificateUsed { owner: o, .. }
        | EntryBody::Credit { owner: o, .. } => o == owner,
        // Stored entries were checked when written; a payload that no
        // longer opens mentions no one.
        EntryBody::AllocationMade { allocation, .. } => allocation
            .verify_and_decode()
            .is_ok_and(|(_, a)| a.assignments.iter().any(|a| a.owner == *owner)),
        EntryBody::RoundCompleted { participants, .. } => {
            participants.iter().any(|p| p.owner == *owner)
        }
        EntryBody::JobSubmitted { .. }
        | EntryBody::Verification { .. }
        | EntryBody::JobFinished { .. }
        | EntryBody::JobFailed { .. } => false,
    }
}
