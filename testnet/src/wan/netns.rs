//! Network namespaces the testbed makes and unmakes (`ip netns`), and
//! running code or commands inside one. Dropping a [`Netns`] kills what
//! still runs in it and deletes it, so a failed or interrupted test
//! leaves nothing behind. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with its loopback up. A namespace of the same
    /// name left by a killed earlier run is replaced.
    pub fn create(name: &str) -> anyhow::Result<Netns> {
        if std::path::Path::new("/run/netns").join(name).exists() {
            kill_all_in(name);
            let _ = sh("ip", ["netns", "del", name]);
        }
        sh("ip", ["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`.
    pub fn ip<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), self.name.clone().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        sh("ip", all)
    }

    /// `ip netns exec NAME PROGRAM ARGS...` (sysctl, nft, tc).
    pub fn exec<I, S>(&self, program: &str, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> =
            vec!["netns".into(), "exec".into(), self.name.clone().into()];
        all.push(program.into());
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        sh("ip", all)
    }

    /// `nft -f -` with `ruleset` on stdin, inside the namespace.
    pub fn nft(&self, ruleset: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft (apt-get install nftables)")?;
        child
            .stdin
            .take()
            .context("nft's stdin")?
            .write_all(ruleset.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {} refused the ruleset: {}\n{ruleset}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The namespace as a file, for `setns(2)` (see
    /// [`crate::launcher::Launcher::spawn_in`]).
    pub fn open(&self) -> anyhow::Result<std::fs::File> {
        open_netns(&self.name)
    }

    /// Runs `work` on a thread that has entered the namespace: sockets it
    /// opens (an SDK client's, say) live there. It builds its own runtime
    /// if it needs one.
    pub fn run_inside<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        T: Send,
        F: FnOnce() -> anyhow::Result<T> + Send,
    {
        let file = self.open()?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on this thread only, with a valid fd.
                    let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    if entered != 0 {
                        return Err(std::io::Error::last_os_error())
                            .with_context(|| format!("entering network namespace {}", self.name));
                    }
                    work()
                })
                .join()
                .map_err(|_| anyhow::anyhow!("a thread in namespace {} panicked", self.name))?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        let _ = sh("ip", ["netns", "del", &self.name]);
    }
}

/// The namespace named `name` (`ip netns`) as a file, for `setns(2)`.
pub fn open_netns(name: &str) -> anyhow::Result<std::fs::File> {
    let path = std::path::Path::new("/run/netns").join(name);
    std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))
}

/// Deletes the namespaces `{prefix}PIDxN-*` of testbeds whose process is
/// gone (killed before its guards ran: a SIGKILL, a Ctrl-C).
pub fn sweep_stale(prefix: &str) {
    let Ok(list) = sh("ip", ["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split(['x', '-']).next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !crate::launcher::process_alive(pid) {
            kill_all_in(name);
            let _ = sh("ip", ["netns", "del", name]);
        }
    }
}

/// SIGKILL to every process in namespace `name`.
fn kill_all_in(name: &str) {
    let Ok(pids) = sh("ip", ["netns", "pids", name]) else {
        return;
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        // SAFETY: kill(2); at worst the pid is already gone.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Runs a command to completion: its stdout, or an error with its stderr.
pub fn sh<I, S>(program: &str, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let out = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why the testbed cannot run here, if it cannot: it needs root and the
/// `ip`, `nft`, `tc` and `iptables` (the delay lines' NFQUEUE) programs.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "the wide-area testbed needs root (network namespaces, NAT rules, shaping)".into(),
        );
    }
    for (program, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("tc", "iproute2"),
        ("iptables", "iptables"),
    ] {
        let found = Command::new(program)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "the wide-area testbed needs `{program}` (apt-get install {package})"
            ));
        }
    }
    None
}
