//! How the testnet runs the node's CLI. `cargo run -p fairgrid-testnet`
//! does not build the `fairgrid` binary, so the testnet binary re-executes
//! itself with a hidden `node --` subcommand that hands the rest of its
//! arguments to `fairgrid_node::cli::main_with`: the very same code as
//! `fairgrid ...`.
//!
//! Daemons are started in their own process group (a Ctrl-C at the
//! terminal reaches the testnet alone, which then stops them in order)
//! and with a parent-death signal, so that even a testnet killed with
//! SIGKILL leaves no node behind.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// The hidden subcommand that runs the node CLI.
pub const NODE_SUBCOMMAND: &str = "node";

#[derive(Debug, Clone)]
pub struct Launcher {
    program: PathBuf,
}

impl Launcher {
    /// `program` is a `fairgrid-testnet` binary (this process's own, or
    /// `CARGO_BIN_EXE_fairgrid-testnet` in tests).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Launcher {
            program: program.into(),
        }
    }

    /// The running testnet binary itself.
    pub fn current() -> anyhow::Result<Self> {
        Ok(Launcher::new(
            std::env::current_exe().context("finding the testnet binary")?,
        ))
    }

    /// `fairgrid ARGS...` as a command.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.program);
        cmd.arg(NODE_SUBCOMMAND).arg("--").args(args);
        // The nodes log to files; keep the caller's RUST_LOG out of them.
        cmd.env_remove("RUST_LOG");
        cmd
    }

    /// Runs `fairgrid ARGS...` to completion; its stdout, or an error with
    /// its stderr.
    pub fn run<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
        let out = self
            .command(&args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.program.display()))?;
        if !out.status.success() {
            bail!(
                "`fairgrid {}` failed ({}): {}",
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `fairgrid ARGS...` as a daemon, stdout and stderr to `log`.
    pub fn spawn<I, S>(
        &self,
        args: I,
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_in(None, args, env, log)
    }

    /// [`Launcher::spawn`] inside the network namespace `netns` (an open
    /// `/run/netns/NAME`; see [`crate::wan::netns::Netns::open`]).
    pub fn spawn_in<I, S>(
        &self,
        netns: Option<&std::fs::File>,
        args: I,
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let netns_fd = netns.map(std::os::fd::AsRawFd::as_raw_fd);
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = self.command(args);
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0);
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls
        // (prctl, getppid, setns) run, and nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                // Die with the thread that spawned us (this is why the
                // testnet spawns nodes from long-lived threads only).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the testnet exited"));
                }
                if let Some(fd) = netns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
            .with_context(|| format!("starting {}", self.program.display()))
    }
}

/// Whether a process with this pid exists (a zombie counts as gone).
pub fn process_alive(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    match status {
        // Field 3, after the parenthesised command name, is the state.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
