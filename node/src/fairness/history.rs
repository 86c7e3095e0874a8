//! Each owner's cumulative share of the trained work after each recorded
//! round, for the dashboard's share-against-cap chart. Shard-rounds from
//! `RoundCompleted` entries, as [`super::concentration`] counts them, so
//! the last point agrees with `/v1/fairness`.

use std::collections::BTreeMap;

use fairgrid_protocol::ledger::EntryBody;
use fairgrid_protocol::{NodeId, OwnerId};

/// A recorded round: the entry's seq, author and timestamp, and its body.
pub struct RoundEntry<'a> {
    pub seq: u64,
    pub author: NodeId,
    pub timestamp: u64,
    pub body: &'a EntryBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub seq: u64,
    pub author: NodeId,
    pub timestamp: u64,
    pub total_units: u64,
    /// Parts per million of the total, one per owner of [`History::owners`].
    pub share_ppm: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    /// Every owner that did any work, in id order.
    pub owners: Vec<OwnerId>,
    pub points: Vec<Point>,
}

/// The history over `entries` (other kinds are skipped), ordered by
/// timestamp then seq, thinned evenly to at most `max_points` (the last
/// point always kept).
pub fn history<'a>(
    entries: impl IntoIterator<Item = RoundEntry<'a>>,
    max_points: usize,
) -> History {
    let mut rounds: Vec<RoundEntry<'a>> = entries
        .into_iter()
        .filter(|e| matches!(e.body, EntryBody::RoundCompleted { .. }))
        .collect();
    rounds.sort_by_key(|e| (e.timestamp, e.seq));
    let mut units: BTreeMap<OwnerId, u64> = BTreeMap::new();
    for e in &rounds {
        for (owner, _) in round_units(e.body) {
            units.entry(owner).or_default();
        }
    }
    let owners: Vec<OwnerId> = units.keys().copied().collect();
    let keep = kept_indices(rounds.len(), max_points);
    let mut points = Vec::with_capacity(keep.len());
    let mut next_kept = keep.iter().peekable();
    for (i, e) in rounds.iter().enumerate() {
        for (owner, n) in round_units(e.body) {
            *units.entry(owner).or_default() += n;
        }
        if next_kept.peek() == Some(&&i) {
            next_kept.next();
            let total: u64 = units.values().sum();
            points.push(Point {
                seq: e.seq,
                author: e.author,
                timestamp: e.timestamp,
                total_units: total,
                share_ppm: owners
                    .iter()
                    .map(|o| (units[o] * 1_000_000).checked_div(total).unwrap_or(0))
                    .collect(),
            });
        }
    }
    History { owners, points }
}

fn round_units(body: &EntryBody) -> Vec<(OwnerId, u64)> {
    match body {
        EntryBody::RoundCompleted { participants, .. } => participants
            .iter()
            .map(|p| (p.owner, p.shards.len() as u64))
            .collect(),
        _ => Vec::new(),
    }
}

/// `max_points` indices of `0..n` spread evenly, the last included.
fn kept_indices(n: usize, max_points: usize) -> Vec<usize> {
    if n <= max_points {
        return (0..n).collect();
    }
    if max_points <= 1 {
        return vec![n - 1];
    }
    let mut out: Vec<usize> = (0..max_points)
        .map(|k| k * (n - 1) / (max_points - 1))
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::Hash32;
    use fairgrid_protocol::Keypair;
    use fairgrid_protocol::ledger::RoundParticipant;

    fn owner(i: u8) -> OwnerId {
        Keypair::from_seed(&[i]).owner_id()
    }

    fn round(shards: &[(u8, usize)]) -> EntryBody {
        EntryBody::RoundCompleted {
            job_id: Hash32([0; 32]),
            round: 0,
            participants: shards
                .iter()
                .map(|&(o, n)| RoundParticipant {
                    node: Keypair::from_seed(&[100 + o]).node_id(),
                    owner: owner(o),
                    shards: (0..n as u32).collect(),
                    samples: 1,
                    update_hash: Hash32([0; 32]),
                })
                .collect(),
            model_hash: Hash32([0; 32]),
            train_loss_micro: 0,
            test_accuracy_ppm: None,
        }
    }

    fn entries(bodies: &[EntryBody]) -> Vec<RoundEntry<'_>> {
        let author = Keypair::from_seed(&[9]).node_id();
        bodies
            .iter()
            .enumerate()
            .map(|(i, body)| RoundEntry {
                seq: i as u64,
                author,
                // Out of seq order on purpose: points follow the clock.
                timestamp: 1000 - i as u64,
                body,
            })
            .collect()
    }

    #[test]
    fn shares_accumulate_round_by_round_and_end_at_the_totals() {
        let bodies = [round(&[(0, 3), (1, 1)]), round(&[(1, 4)])];
        let h = history(entries(&bodies), 100);
        let (a, b) = (owner(0), owner(1));
        let ia = h.owners.iter().position(|o| *o == a).unwrap();
        let ib = h.owners.iter().position(|o| *o == b).unwrap();
        assert_eq!(h.points.len(), 2);
        // The later timestamp is seq 0: it comes last.
        assert_eq!(h.points[0].seq, 1);
        assert_eq!(h.points[0].share_ppm[ib], 1_000_000);
        let last = &h.points[1];
        assert_eq!(last.total_units, 8);
        assert_eq!((last.share_ppm[ia], last.share_ppm[ib]), (375_000, 625_000));
    }

    #[test]
    fn thinning_keeps_the_last_point_and_the_bound() {
        let bodies: Vec<EntryBody> = (0..1000).map(|i| round(&[((i % 3) as u8, 1)])).collect();
        let h = history(entries(&bodies), 50);
        assert_eq!(h.points.len(), 50);
        assert_eq!(h.points.last().unwrap().total_units, 1000);
        assert_eq!(h.points.first().unwrap().total_units, 1);
        let others = [EntryBody::JobFailed {
            job_id: Hash32([0; 32]),
            rounds: 0,
            reason: String::new(),
        }];
        assert_eq!(history(entries(&others), 50), History::default());
    }
}
