//! Whether a program other than fairgrid uses one of the GPUs this node
//! offers (NVML's running compute and graphics processes), for
//! `offer.yield_gpus`. NVML is loaded at run time: on a machine without
//! NVIDIA's driver [`GpuWatch::open`] says why and the rule is not applied.
//! Which processes count is a pure function ([`others`]), tested without a
//! GPU.

use std::path::{Path, PathBuf};

use nvml_wrapper::Nvml;

/// A process outside fairgrid on an offered GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuUser {
    pub gpu: u32,
    pub pid: u32,
    /// Its command name, when `/proc` tells.
    pub name: Option<String>,
}

impl GpuUser {
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("GPU {} is used by {name} (pid {})", self.gpu, self.pid),
            None => format!("GPU {} is used by pid {}", self.gpu, self.pid),
        }
    }
}

/// The processes on the GPUs, minus fairgrid's own: this process and any
/// other fairgrid node (several nodes of one machine may share a GPU).
pub fn others(
    processes: &[(u32, u32)],
    own_pid: u32,
    is_fairgrid: impl Fn(u32) -> bool,
    name_of: impl Fn(u32) -> Option<String>,
) -> Vec<GpuUser> {
    let mut out: Vec<GpuUser> = processes
        .iter()
        .filter(|(_, pid)| *pid != own_pid && !is_fairgrid(*pid))
        .map(|&(gpu, pid)| GpuUser {
            gpu,
            pid,
            name: name_of(pid),
        })
        .collect();
    out.sort_by_key(|u| (u.gpu, u.pid));
    out.dedup_by_key(|u| (u.gpu, u.pid));
    out
}

/// NVML, opened once, and the GPUs it watches.
pub struct GpuWatch {
    nvml: Nvml,
    gpus: u32,
    own_exe: Option<PathBuf>,
}

impl GpuWatch {
    /// Opens NVML and watches the first `offered` GPUs (0: all of them),
    /// in NVML's order (PCI bus order, as CUDA with
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`).
    pub fn open(offered: u32) -> Result<GpuWatch, String> {
        let nvml = Nvml::init().map_err(|e| format!("NVML is not available ({e})"))?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML cannot count the GPUs ({e})"))?;
        if count == 0 {
            return Err("NVML sees no GPU".into());
        }
        let gpus = if offered == 0 {
            count
        } else {
            offered.min(count)
        };
        Ok(GpuWatch {
            nvml,
            gpus,
            own_exe: std::env::current_exe().ok(),
        })
    }

    /// Programs other than fairgrid on the watched GPUs; `Err` when NVML
    /// could not be asked this time.
    pub fn others(&self) -> Result<Vec<GpuUser>, String> {
        let mut processes = Vec::new();
        for index in 0..self.gpus {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(|e| format!("NVML device {index}: {e}"))?;
            let compute = device
                .running_compute_processes()
                .map_err(|e| format!("NVML processes of GPU {index}: {e}"))?;
            let graphics = device.running_graphics_processes().unwrap_or_default();
            processes.extend(compute.iter().chain(&graphics).map(|p| (index, p.pid)));
        }
        Ok(others(
            &processes,
            std::process::id(),
            |pid| same_program(pid, self.own_exe.as_deref()),
            command_name,
        ))
    }
}

/// Whether `pid` runs the same executable as this node (another fairgrid
/// node), by `/proc/PID/exe`.
fn same_program(pid: u32, own_exe: Option<&Path>) -> bool {
    let Some(own) = own_exe else { return false };
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == own)
}

fn command_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_programs_outside_fairgrid_count() {
        let processes = [(0, 10), (0, 11), (1, 12), (1, 10), (0, 13), (0, 13)];
        let fairgrid = |pid| pid == 11;
        let found = others(&processes, 10, fairgrid, |pid| {
            (pid == 12).then(|| "python3".into())
        });
        assert_eq!(
            found,
            vec![
                GpuUser {
                    gpu: 0,
                    pid: 13,
                    name: None
                },
                GpuUser {
                    gpu: 1,
                    pid: 12,
                    name: Some("python3".into())
                },
            ]
        );
        assert_eq!(found[1].describe(), "GPU 1 is used by python3 (pid 12)");
        assert!(others(&[(0, 10), (1, 11)], 10, fairgrid, |_| None).is_empty());
    }

    #[test]
    fn another_fairgrid_node_is_recognised_by_its_executable() {
        let me = std::env::current_exe().unwrap();
        assert!(same_program(std::process::id(), Some(&me)));
        assert!(!same_program(1, Some(Path::new("/nonexistent/fairgrid"))));
        assert!(!same_program(std::process::id(), None));
    }

    /// On a machine without NVIDIA's driver (this one, in CI) NVML does
    /// not load: the watch says so instead of panicking. Where a GPU is
    /// present it opens and lists what runs there.
    #[test]
    fn without_nvml_the_watch_says_why() {
        match GpuWatch::open(0) {
            Err(why) => {
                eprintln!("no GPU watch on this machine: {why}");
                assert!(why.contains("NVML"), "{why}");
            }
            Ok(watch) => {
                eprintln!("GPU watch open: {:?}", watch.others());
                assert!(watch.others().is_ok());
            }
        }
    }
}
