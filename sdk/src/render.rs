//! Plain-text views of jobs for terminals: the allocation table (shards
//! per owner against the cap, the concentration metrics), the per-round
//! table, credits. The CLI and the testnet print the same tables.

use std::fmt::Write;

use crate::jobs::{AllocationView, CreditView, JobState, JobStatus, RoundReport};

/// `12D3KooWAbCd...wXyZ`: enough of an id to tell nodes apart.
pub fn short(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 16 {
        return id.to_string();
    }
    let head: String = chars[..10].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}..{tail}")
}

/// 1234567 -> "1.2 MB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

pub fn state(state: JobState) -> &'static str {
    match state {
        JobState::Bidding => "bidding",
        JobState::Training => "training",
        JobState::Waiting => "waiting",
        JobState::Finished => "finished",
        JobState::Failed => "failed",
    }
}

/// Who got how many shards, against the cap, and what it cost.
pub fn allocation_table(a: &AllocationView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "allocation {} (attempt {}): {} shards, {} placed, shortfall {}",
        short(&a.allocation_hash),
        a.attempt,
        a.shards,
        a.shards.saturating_sub(a.shortfall),
        a.shortfall
    );
    let _ = writeln!(
        out,
        "owner cap: alpha {} -> at most {} shards per owner",
        a.alpha, a.owner_cap
    );
    let _ = writeln!(
        out,
        "{:<18} {:>6} {:>5} {:>7}  {:<20} {:>8} {:>8}",
        "owner", "shards", "cap", "share", "", "cost", "payment"
    );
    let width = 20usize;
    for o in &a.owners {
        let filled = if a.shards == 0 {
            0
        } else {
            (o.shards as usize * width / a.shards as usize).min(width)
        };
        let cap_mark = if a.shards == 0 {
            width
        } else {
            (a.owner_cap as usize * width / a.shards as usize).min(width)
        };
        let bar: String = (0..width)
            .map(|i| match (i < filled, i == cap_mark) {
                (_, true) => '|',
                (true, false) => '#',
                (false, false) => '.',
            })
            .collect();
        let label = if o.label.is_empty() {
            short(&o.owner)
        } else {
            o.label.chars().take(18).collect()
        };
        let _ = writeln!(
            out,
            "{:<18} {:>6} {:>5} {:>7}  {bar} {:>8} {:>8}",
            label,
            o.shards,
            o.cap,
            percent(o.share),
            o.cost,
            o.payment
        );
    }
    let _ = writeln!(
        out,
        "max owner share {} (cap {}), HHI {}, Gini {:.3}, Nakamoto {} (50%) {} (33%)",
        percent(a.max_owner_share),
        percent(a.alpha),
        a.hhi,
        a.gini,
        a.nakamoto_50,
        a.nakamoto_33
    );
    if !a.nodes.is_empty() {
        let _ = writeln!(
            out,
            "{:<20} {:<18} {:>6} {:>6}",
            "node", "owner", "ask", "shards"
        );
        for n in &a.nodes {
            let owner = a
                .owners
                .iter()
                .find(|o| o.owner == n.owner)
                .map_or_else(|| short(&n.owner), |o| o.label.chars().take(18).collect());
            let _ = writeln!(
                out,
                "{:<20} {:<18} {:>6} {:>6}",
                short(&n.node),
                owner,
                n.ask,
                n.shards
            );
        }
    }
    out
}

/// Loss and accuracy per round.
pub fn rounds_table(rounds: &[RoundReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} {:>10} {:>9} {:>7} {:>10} {:>10} {:>8}",
        "round", "train_loss", "test_acc", "workers", "up", "down", "secs"
    );
    for r in rounds {
        let _ = writeln!(
            out,
            "{:>5} {:>10.4} {:>9} {:>7} {:>10} {:>10} {:>8.2}",
            r.round,
            r.train_loss,
            r.test_accuracy
                .map_or("-".into(), |a| percent(f64::from(a))),
            r.participants,
            bytes(r.bytes_up),
            bytes(r.bytes_down),
            r.duration_ms as f64 / 1000.0
        );
    }
    out
}

pub fn credits_table(credits: &[CreditView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:>6} {:>10} {:>12}",
        "owner", "shards", "credits", "for audits"
    );
    for c in credits {
        let label = if c.label.is_empty() {
            short(&c.owner)
        } else {
            c.label.chars().take(18).collect()
        };
        let _ = writeln!(
            out,
            "{label:<18} {:>6} {:>10} {:>12}",
            c.shards, c.amount, c.audit_amount
        );
    }
    out
}

/// One line per job, for `fairgrid job list`.
pub fn jobs_table(jobs: &[JobStatus]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<64}  {:<9} {:<7} {:>7} {:>9} {:<20}",
        "job", "state", "model", "round", "accuracy", "name"
    );
    for j in jobs {
        let _ = writeln!(
            out,
            "{:<64}  {:<9} {:<7} {:>7} {:>9} {:<20}",
            j.job_id,
            state(j.state),
            j.model,
            format!("{}/{}", j.round, j.rounds),
            j.last_accuracy
                .map_or("-".into(), |a| percent(f64::from(a))),
            j.name.chars().take(20).collect::<String>()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{NodeShareView, OwnerAllocationView};

    #[test]
    fn sizes_and_ids_read_well() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_234_567), "1.2 MB");
        assert_eq!(
            short("12D3KooWAbcdefghijklmnopqrstuvwxyz"),
            "12D3KooWAb..wxyz"
        );
        assert_eq!(short("short"), "short");
        assert_eq!(short("ééééééééééééééééééé"), "éééééééééé..éééé");
    }

    #[test]
    fn allocation_table_shows_owners_against_the_cap() {
        let view = AllocationView {
            job_id: "j".into(),
            attempt: 1,
            allocation_hash: "ab".repeat(32),
            shards: 12,
            shortfall: 0,
            alpha: 0.34,
            owner_cap: 4,
            nodes: vec![NodeShareView {
                node: "12D3KooWnode0000000000".into(),
                owner: "o1".into(),
                ask: 100,
                shards: 4,
            }],
            owners: vec![OwnerAllocationView {
                owner: "o1".into(),
                label: "Univ A".into(),
                shards: 4,
                cap: 4,
                share: 4.0 / 12.0,
                cost: 400,
                payment: 480,
            }],
            hhi: 3333,
            gini: 0.0,
            nakamoto_50: 2,
            nakamoto_33: 1,
            max_owner_share: 4.0 / 12.0,
        };
        let text = allocation_table(&view);
        assert!(text.contains("Univ A"), "{text}");
        assert!(text.contains("at most 4 shards per owner"), "{text}");
        assert!(text.contains("max owner share 33.3% (cap 34.0%)"), "{text}");
        assert!(text.contains("HHI 3333"), "{text}");
        let row = text.lines().find(|l| l.starts_with("Univ A")).unwrap();
        assert!(row.contains("######|......"), "{row}");
    }
}
