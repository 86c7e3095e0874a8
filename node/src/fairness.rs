//! Concentration metrics over the ledger: how much of the trained work
//! each owner did. It counts shard-rounds from `RoundCompleted` entries, or
//! credited shards from `Credit` entries when no round was recorded, and
//! computes the metrics with `fairgrid_protocol::fairness`.

pub mod history;

use std::collections::BTreeMap;

use fairgrid_protocol::OwnerId;
use fairgrid_protocol::fairness::FairnessReport;
use fairgrid_protocol::ledger::EntryBody;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnerShare {
    pub owner: String,
    pub units: u64,
    pub share_ppm: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concentration {
    /// "shard_rounds" or "credited_shards".
    pub basis: &'static str,
    pub total_units: u64,
    pub owners: Vec<OwnerShare>,
    pub max_owner_share_ppm: u64,
    /// Herfindahl-Hirschman index, 0..=10000.
    pub hhi: u64,
    pub gini: f64,
    /// Fewest owners holding more than 50% / 33% of the work.
    pub nakamoto_50: u32,
    pub nakamoto_33: u32,
    /// Jain's fairness index over equal entitlements (1 = perfectly even).
    pub jain: f64,
}

/// Computes the metrics from ledger entry bodies.
pub fn concentration<'a>(bodies: impl IntoIterator<Item = &'a EntryBody>) -> Concentration {
    let mut rounds: BTreeMap<OwnerId, u64> = BTreeMap::new();
    let mut credits: BTreeMap<OwnerId, u64> = BTreeMap::new();
    for body in bodies {
        match body {
            EntryBody::RoundCompleted { participants, .. } => {
                for p in participants {
                    *rounds.entry(p.owner).or_default() += p.shards.len() as u64;
                }
            }
            EntryBody::Credit { owner, shards, .. } => {
                *credits.entry(*owner).or_default() += u64::from(*shards);
            }
            _ => {}
        }
    }
    let (basis, units) = if rounds.values().any(|&u| u > 0) {
        ("shard_rounds", rounds)
    } else {
        ("credited_shards", credits)
    };
    from_units(basis, &units)
}

pub fn from_units(basis: &'static str, units: &BTreeMap<OwnerId, u64>) -> Concentration {
    let total: u64 = units.values().sum();
    let mut owners: Vec<OwnerShare> = units
        .iter()
        .filter(|(_, u)| **u > 0)
        .map(|(o, &u)| OwnerShare {
            owner: o.to_string(),
            units: u,
            share_ppm: (u * 1_000_000).checked_div(total).unwrap_or(0),
        })
        .collect();
    owners.sort_by(|a, b| b.units.cmp(&a.units).then(a.owner.cmp(&b.owner)));
    let values: Vec<u64> = owners.iter().map(|o| o.units).collect();
    // Every owner here is entitled equally: the ledger does not record
    // offered capacity per owner.
    let report = FairnessReport::new(&values, &vec![1; values.len()]);
    Concentration {
        basis,
        total_units: total,
        max_owner_share_ppm: owners.first().map_or(0, |o| o.share_ppm),
        owners,
        hhi: u64::from(report.hhi),
        gini: report.gini,
        nakamoto_50: report.nakamoto_50,
        nakamoto_33: report.nakamoto_33,
        jain: report.jain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::Keypair;

    fn owner(i: u8) -> OwnerId {
        Keypair::from_seed(&[i]).owner_id()
    }

    #[test]
    fn even_and_concentrated_distributions() {
        let even: BTreeMap<OwnerId, u64> = (0..4).map(|i| (owner(i), 25)).collect();
        let c = from_units("t", &even);
        assert_eq!((c.hhi, c.max_owner_share_ppm), (2500, 250_000));
        assert_eq!((c.nakamoto_50, c.nakamoto_33), (3, 2));
        assert!(c.gini.abs() < 1e-12 && (c.jain - 1.0).abs() < 1e-12);

        let skewed: BTreeMap<OwnerId, u64> = [(owner(0), 90), (owner(1), 10)].into();
        let c = from_units("t", &skewed);
        assert_eq!(c.hhi, 8200);
        assert_eq!((c.nakamoto_50, c.max_owner_share_ppm), (1, 900_000));
        assert!((c.gini - 0.4).abs() < 1e-12, "{}", c.gini);

        let empty = from_units("t", &BTreeMap::new());
        assert_eq!((empty.total_units, empty.hhi, empty.nakamoto_50), (0, 0, 0));
    }
}
