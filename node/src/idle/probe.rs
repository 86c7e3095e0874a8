//! What the idle gate looks at: the CPU used by programs other than this
//! node (`/proc/stat` less `/proc/self/stat`), and how long the user has
//! been idle (systemd-logind's IdleHint, which works on Wayland, X11 and
//! text consoles, read with `loginctl`). A probe that cannot tell says so
//! with `None`; the gate then does not act on that rule.

use std::process::Command;

/// CPU time counters at one moment, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub total: u64,
    pub idle: u64,
    /// This process (all its threads).
    pub own: u64,
}

/// The machine's total and idle ticks from `/proc/stat`'s first line.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if ticks.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks[3] + ticks[4];
    Some((total, idle))
}

/// utime + stime (ticks) from `/proc/<pid>/stat`. The command name may
/// hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_self_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the file, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn read_cpu_times() -> Option<CpuTimes> {
    let (total, idle) = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let own = parse_self_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(CpuTimes { total, idle, own })
}

/// The share of the whole machine's CPU (0 to 100) that programs other
/// than this one used between two readings.
pub fn other_cpu_percent(before: CpuTimes, after: CpuTimes) -> Option<f32> {
    let total = after.total.checked_sub(before.total)?;
    if total == 0 {
        return None;
    }
    let busy = total.saturating_sub(after.idle.saturating_sub(before.idle));
    let others = busy.saturating_sub(after.own.saturating_sub(before.own));
    Some((others as f64 * 100.0 / total as f64) as f32)
}

/// What `loginctl show-session -p Class -p IdleHint
/// -p IdleSinceHintMonotonic` says of one session: `None` for a session
/// that is not a user's (greeters, managers), else whether it is idle and
/// since when (µs of the monotonic clock).
pub fn parse_session(text: &str) -> Option<(bool, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::trim)
    };
    if field("Class")? != "user" {
        return None;
    }
    let idle = field("IdleHint")? == "yes";
    let since = field("IdleSinceHintMonotonic")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some((idle, since))
}

/// Seconds since the last user input over every local user session: 0 if
/// one is active; `u64::MAX` when nobody is logged in; `None` when logind
/// cannot be asked.
pub fn user_idle_secs() -> Option<u64> {
    let list = Command::new("loginctl")
        .args(["list-sessions", "--no-legend"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let ids: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let now_us = monotonic_us()?;
    let mut idle_for = u64::MAX;
    for id in ids {
        let out = Command::new("loginctl")
            .args(["show-session", &id, "-p", "Class", "-p", "IdleHint"])
            .args(["-p", "IdleSinceHintMonotonic"])
            .output()
            .ok()?;
        match parse_session(&String::from_utf8_lossy(&out.stdout)) {
            Some((false, _)) => return Some(0),
            Some((true, since)) => {
                idle_for = idle_for.min(now_us.saturating_sub(since) / 1_000_000)
            }
            None => {}
        }
    }
    Some(idle_for)
}

fn monotonic_us() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_totals_and_idle() {
        let text = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 50 2 25 400 10 0 1 1 0 0\n";
        assert_eq!(parse_proc_stat(text), Some((981, 820)));
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
        assert_eq!(parse_proc_stat("cpu  1 x 3 4 5"), None);
    }

    #[test]
    fn own_ticks_survive_a_name_with_spaces_and_parentheses() {
        let text =
            "4242 (fair grid) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 700 300 0 0 20 0 9 0";
        assert_eq!(parse_self_stat(text), Some(1000));
        assert_eq!(parse_self_stat("4242 (x) S 1"), None);
    }

    #[test]
    fn others_are_what_is_busy_less_this_process() {
        let before = CpuTimes {
            total: 1000,
            idle: 600,
            own: 100,
        };
        let after = CpuTimes {
            total: 2000,
            idle: 1100,
            own: 300,
        };
        // 1000 ticks: 500 idle, 500 busy of which 200 ours.
        assert_eq!(other_cpu_percent(before, after), Some(30.0));
        assert_eq!(other_cpu_percent(after, after), None);
    }

    #[test]
    fn logind_sessions_of_users_only() {
        let active = "Class=user\nIdleHint=no\nIdleSinceHintMonotonic=0\n";
        assert_eq!(parse_session(active), Some((false, 0)));
        let idle = "IdleHint=yes\nClass=user\nIdleSinceHintMonotonic=5000000\n";
        assert_eq!(parse_session(idle), Some((true, 5_000_000)));
        assert_eq!(parse_session("Class=greeter\nIdleHint=no\n"), None);
        assert_eq!(parse_session(""), None);
    }

    #[test]
    fn this_machine_can_be_read() {
        let before = read_cpu_times().expect("/proc is readable");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = read_cpu_times().unwrap();
        assert!(after.own >= before.own && after.total >= before.total);
    }
}
