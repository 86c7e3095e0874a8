//! `--explain`: a readable account of why each owner got what it got.

use std::fmt::Write;

use super::report::{Binding, Outcome, OwnerOutcome};

/// Levels listed before the rest are summarised.
const MAX_LEVELS_SHOWN: usize = 40;

fn percent(ppm: u32) -> String {
    format!("{}.{:02}%", ppm / 10_000, ppm % 10_000 / 100)
}

/// Renders the outcome as text.
pub fn explain(outcome: &Outcome) -> String {
    let mut s = String::new();
    let job = &outcome.job;
    let _ = writeln!(
        s,
        "Job {:?}: {} shards, limit price {} per shard, alpha {} (cap {} shards per owner), beta {}.",
        job.name,
        job.shards,
        job.limit_price,
        percent(job.alpha_ppm),
        outcome.owners.first().map_or(0, |o| o.alpha_cap),
        if job.beta_ppm >= 1_000_000 {
            "off (no network cap)".to_string()
        } else {
            percent(job.beta_ppm)
        },
    );
    let _ = writeln!(
        s,
        "Placed {} of {} shards{}; total cost {}, total payments {}.",
        outcome.assigned,
        job.shards,
        match outcome.clearing_price {
            Some(p) => format!(" at asks up to {p}"),
            None => String::new(),
        },
        outcome.total_cost,
        outcome.total_payment
    );
    if outcome.shortfall > 0 {
        let _ = writeln!(
            s,
            "Shortfall: {} shards could not be placed without breaking a cap or a node's capacity.",
            outcome.shortfall
        );
    }

    let _ = writeln!(s, "\nPrice levels, cheapest first:");
    for level in outcome.levels.iter().take(MAX_LEVELS_SHOWN) {
        let how = if level.marginal {
            format!(
                "marginal: the last {} shards were apportioned by Sainte-Lague in proportion to {}",
                level.taken,
                if level.by_speed {
                    "measured speed, within capacity"
                } else {
                    "capacity"
                }
            )
        } else if level.taken == 0 {
            "nothing taken (every owner here is at its cap)".to_string()
        } else {
            format!("taken whole ({} shards)", level.taken)
        };
        let capped = if level.cap_bound.is_empty() {
            String::new()
        } else {
            format!("; capped owners: {}", level.cap_bound.join(", "))
        };
        let _ = writeln!(
            s,
            "  ask {:>8}: {} node(s), capacity {}, within caps {}, {} still needed -> {}{}",
            level.ask,
            level.nodes,
            level.supply,
            level.capped_supply,
            level.remaining_before,
            how,
            capped
        );
    }
    if outcome.levels.len() > MAX_LEVELS_SHOWN {
        let _ = writeln!(
            s,
            "  ... {} more levels",
            outcome.levels.len() - MAX_LEVELS_SHOWN
        );
    }

    let _ = writeln!(s, "\nOwners:");
    for owner in &outcome.owners {
        let _ = writeln!(
            s,
            "  {}: {} shards. {}",
            owner.owner,
            owner.shards,
            why(owner, outcome)
        );
        if owner.shards > 0 {
            let _ = writeln!(
                s,
                "    paid {} for an ask total of {}: without {}, its {} shards would cost {} from the \
                 other owners' leftover supply (and the reserve at {}), so VCG pays that.",
                owner.payment,
                owner.cost,
                owner.owner,
                owner.shards,
                owner.payment,
                job.limit_price
            );
        }
    }

    let f = &outcome.fairness;
    let _ = writeln!(
        s,
        "\nConcentration: max owner share {}, HHI {}, Gini {:.3}, Nakamoto 50% {}, 33% {}, Jain {:.3} (share / entitlement).",
        percent(f.max_share_ppm),
        f.hhi,
        f.gini,
        f.nakamoto_50,
        f.nakamoto_33,
        f.jain
    );
    s
}

fn why(owner: &OwnerOutcome, outcome: &Outcome) -> String {
    let cap_source = match owner.network_room {
        Some(room) if room < owner.alpha_cap as u64 => {
            format!(
                "its room under the network cap beta is {room} (alpha alone would allow {})",
                owner.alpha_cap
            )
        }
        _ => format!("alpha allows {} shards per owner", owner.alpha_cap),
    };
    match owner.binding {
        Binding::OwnerCap => format!(
            "Owner cap binding: its cap is {} ({cap_source}), while its {} node(s) could hold {} at asks from {}.",
            owner.cap, owner.nodes, owner.offered, owner.cheapest_ask
        ),
        Binding::Capacity if owner.offered == 0 => {
            "No capacity: its nodes cannot hold a single shard of this job's demand.".to_string()
        }
        Binding::Capacity => format!(
            "Capacity binding: its {} node(s) can hold {} shards and all were taken (cap {}).",
            owner.nodes, owner.offered, owner.cap
        ),
        Binding::Marginal => format!(
            "Marginal price level {}: the remaining shards at that price were split among that level's nodes \
             in proportion to capacity (Sainte-Lague), within its cap {} and its capacity {}.",
            outcome.clearing_price.unwrap_or(0),
            owner.cap,
            owner.offered
        ),
        Binding::Price if owner.shards > 0 => format!(
            "Price: its nodes at or below the clearing price were filled; its other nodes ask more{}.",
            match outcome.clearing_price {
                Some(p) => format!(" than the clearing price {p}"),
                None => String::new(),
            }
        ),
        Binding::Price => format!(
            "Price: its cheapest ask is {}; the demand was met by cheaper asks{}.",
            owner.cheapest_ask,
            match outcome.clearing_price {
                Some(p) => format!(" (clearing price {p})"),
                None => String::new(),
            }
        ),
    }
}
