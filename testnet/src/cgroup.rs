//! A CPU quota on one node process, to make a slower node on one machine
//! (`fairgrid-testnet hetero`). It is a cgroup (v1 `cpu` controller at
//! /sys/fs/cgroup/cpu, or v2 with `cpu` enabled at /sys/fs/cgroup), so it
//! needs root; without it the scenario stops with that reason. Dropping
//! the guard moves the process back and removes the group.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// CFS period the quota is a share of.
const PERIOD_US: u64 = 100_000;

pub struct CpuQuota {
    group: PathBuf,
    /// Where the process goes back to.
    parent_procs: PathBuf,
}

impl CpuQuota {
    /// Holds process `pid` (all its threads, and those it starts later)
    /// to `percent` of one core.
    pub fn apply(pid: u32, percent: u32) -> anyhow::Result<CpuQuota> {
        if !(1..=100).contains(&percent) {
            bail!("a CPU quota of {percent}% is not in 1..=100");
        }
        let quota_us = PERIOD_US * u64::from(percent) / 100;
        let name = format!("fairgrid-testnet-{}-{pid}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let v2 = Path::new("/sys/fs/cgroup");
        let (root, settings): (&Path, Vec<(&str, String)>) = if v1.join("cpu.cfs_quota_us").exists()
        {
            (
                v1,
                vec![
                    ("cpu.cfs_period_us", PERIOD_US.to_string()),
                    ("cpu.cfs_quota_us", quota_us.to_string()),
                ],
            )
        } else if std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        {
            (v2, vec![("cpu.max", format!("{quota_us} {PERIOD_US}"))])
        } else {
            bail!(
                "no cgroup CPU controller found (/sys/fs/cgroup/cpu or cgroup v2 with cpu enabled): cannot slow a node down"
            );
        };
        let group = root.join(name);
        std::fs::create_dir(&group).with_context(|| {
            format!(
                "creating cgroup {} (a CPU quota needs root)",
                group.display()
            )
        })?;
        let guard = CpuQuota {
            group,
            parent_procs: root.join("cgroup.procs"),
        };
        for (file, value) in settings {
            write(&guard.group.join(file), &value)?;
        }
        write(&guard.group.join("cgroup.procs"), &pid.to_string())?;
        Ok(guard)
    }
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value} to {}", path.display()))
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // A group can only go once it is empty: move back whatever is left.
        if let Ok(procs) = std::fs::read_to_string(self.group.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(&self.parent_procs, pid);
            }
        }
        let _ = std::fs::remove_dir(&self.group);
    }
}
