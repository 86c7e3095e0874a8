//! Who owns which node. Owner 0 is the big one: it runs every node beyond
//! one per owner, and its certificates allow twice the capacity of the
//! others, more than any job's cap lets one owner use. The others run one
//! node each. Each owner asks a different price, so the market has price
//! levels to sweep and VCG payments to compute.

use std::path::Path;

use anyhow::{Context, bail};

use crate::launcher::Launcher;

/// Owner names, in order; further owners are "Owner N".
const LABELS: [&str; 8] = [
    "Univ A", "Lab B", "Coop C", "Inst D", "Guild E", "Team F", "Club G", "Home H",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerPlan {
    pub nodes: usize,
    pub owners: usize,
    /// cpu_milli each certificate of owner 0 allows.
    pub big_cpu_milli: u64,
    /// cpu_milli each certificate of the others allows.
    pub small_cpu_milli: u64,
    pub mem_mib: u64,
    /// Ask of owner k's nodes: `base_price + k * price_step`.
    pub base_price: u64,
    pub price_step: u64,
    /// Whether certificates allow a GPU (all of one GPU's memory).
    pub gpu: bool,
}

impl OwnerPlan {
    pub fn new(nodes: usize, owners: usize) -> anyhow::Result<Self> {
        if nodes == 0 || nodes > 64 {
            bail!("--nodes must be in 1..=64");
        }
        if owners == 0 || owners > nodes {
            bail!("--owners must be in 1..=nodes ({nodes}): every owner runs a node");
        }
        Ok(OwnerPlan {
            nodes,
            owners,
            big_cpu_milli: 2000,
            small_cpu_milli: 1000,
            mem_mib: 4096,
            base_price: 100,
            price_step: 20,
            gpu: false,
        })
    }

    /// Owner 0 runs nodes 0..=(nodes - owners); owner k > 0 runs one.
    pub fn owner_of(&self, node: usize) -> usize {
        node.saturating_sub(self.nodes - self.owners)
    }

    pub fn label(&self, owner: usize) -> String {
        LABELS
            .get(owner)
            .map_or_else(|| format!("Owner {owner}"), |l| l.to_string())
    }

    pub fn price(&self, owner: usize) -> u64 {
        self.base_price + owner as u64 * self.price_step
    }

    pub fn cpu_milli(&self, owner: usize) -> u64 {
        if owner == 0 {
            self.big_cpu_milli
        } else {
            self.small_cpu_milli
        }
    }

    /// What owner k's certificates allow (`--max-capacity`).
    pub fn max_capacity(&self, owner: usize) -> String {
        let mut text = format!(
            "cpu_milli={},mem_mib={}",
            self.cpu_milli(owner),
            self.mem_mib
        );
        if self.gpu {
            // One GPU, whatever its memory (the node offers what it has).
            text.push_str(",gpu_milli=1000,gpu_mem_mib=1048576");
        }
        text
    }

    /// The node settings that follow from its owner.
    pub fn node_env(&self, owner: usize) -> Vec<(String, String)> {
        vec![(
            "FAIRGRID_OFFER_PRICE_FLOOR".to_string(),
            self.price(owner).to_string(),
        )]
    }

    /// `fairgrid owner new` for every owner, under `dir`.
    pub fn create(&self, launcher: &Launcher, dir: &Path) -> anyhow::Result<Vec<OwnerSetup>> {
        (0..self.owners)
            .map(|k| {
                let owner_dir = dir.join(format!("owner{k}"));
                let out = launcher.run([
                    "owner",
                    "new",
                    "--owner-dir",
                    &owner_dir.display().to_string(),
                ])?;
                let id = out
                    .lines()
                    .find_map(|l| l.strip_prefix("owner id:"))
                    .map(|s| s.trim().to_string())
                    .context("`fairgrid owner new` printed no owner id")?;
                Ok(OwnerSetup {
                    index: k,
                    label: self.label(k),
                    id,
                    dir: owner_dir.display().to_string(),
                    max_capacity: self.max_capacity(k),
                    price: self.price(k),
                })
            })
            .collect()
    }
}

/// An owner key on disk and what its certificates grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSetup {
    pub index: usize,
    pub label: String,
    /// Owner id, 64 hex digits.
    pub id: String,
    pub dir: String,
    pub max_capacity: String,
    pub price: u64,
}

impl OwnerSetup {
    /// `fairgrid owner certify` for one node, written to `out`.
    pub fn certify(&self, launcher: &Launcher, peer_id: &str, out: &Path) -> anyhow::Result<()> {
        launcher.run([
            "owner",
            "certify",
            "--owner-dir",
            &self.dir,
            "--node",
            peer_id,
            "--label",
            &self.label,
            "--max-capacity",
            &self.max_capacity,
            "--valid-days",
            "30",
            "--out",
            &out.display().to_string(),
        ])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_zero_runs_the_extra_nodes() {
        let plan = OwnerPlan::new(4, 3).unwrap();
        let owners: Vec<usize> = (0..4).map(|n| plan.owner_of(n)).collect();
        assert_eq!(owners, vec![0, 0, 1, 2]);
        let plan = OwnerPlan::new(3, 3).unwrap();
        assert_eq!(
            (0..3).map(|n| plan.owner_of(n)).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        let plan = OwnerPlan::new(5, 1).unwrap();
        assert!((0..5).all(|n| plan.owner_of(n) == 0));
        assert!(OwnerPlan::new(2, 3).is_err());
        assert!(OwnerPlan::new(0, 0).is_err());
        assert!(OwnerPlan::new(3, 0).is_err());
        assert_eq!(plan.label(9), "Owner 9");
        assert!(plan.cpu_milli(0) > plan.cpu_milli(1));
        assert!(plan.price(0) < plan.price(1));
    }
}
