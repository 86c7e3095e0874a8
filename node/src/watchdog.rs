//! A watchdog over storage calls. sled can stop making progress (its
//! `flush_async` deadlock, sled issues 1308 and 1412, hung a node for good:
//! every HTTP request waited behind a lock, the log went silent, the
//! process stayed alive). fairgrid no longer calls `flush_async`, but a
//! stuck storage call must never again leave a node that looks alive and
//! does nothing: each call is watched ([`watch`]), and one that has not
//! returned after the configured stall limit is logged with its name and
//! ends the process with [`STALLED_EXIT_CODE`], so that a supervisor
//! (systemd, the testnet) restarts it. Everything acknowledged is on disk
//! (the ledger and the job store acknowledge only after a flush).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The exit status of a node stopped by the watchdog (EX_SOFTWARE).
pub const STALLED_EXIT_CODE: i32 = 70;

/// Storage calls in progress, by when they started.
#[derive(Default)]
pub struct Watchdog {
    next: AtomicU64,
    calls: Mutex<BTreeMap<u64, (&'static str, Instant)>>,
}

/// A watched call; dropping it marks the call done.
pub struct Watched {
    id: u64,
    watchdog: &'static Watchdog,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.watchdog.lock().remove(&self.id);
    }
}

impl Watchdog {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (&'static str, Instant)>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&'static self, what: &'static str) -> Watched {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (what, Instant::now()));
        Watched { id, watchdog: self }
    }

    /// The longest-running call, if it has run for `limit` or more.
    pub fn stalled(&self, now: Instant, limit: Duration) -> Option<(&'static str, Duration)> {
        self.lock()
            .values()
            .map(|(what, since)| (*what, now.saturating_duration_since(*since)))
            .max_by_key(|(_, running)| *running)
            .filter(|(_, running)| *running >= limit)
    }
}

/// The process-wide watchdog.
pub fn global() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(Watchdog::default)
}

/// Watches a storage call named `what` until the result is dropped.
pub fn watch(what: &'static str) -> Watched {
    global().start(what)
}

/// Checks every second, on a thread of its own (so a stuck runtime cannot
/// stop it), and ends the process when a watched call stalls for `limit`.
pub fn start_monitor(limit: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("storage-watchdog".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if let Some((what, running)) = global().stalled(Instant::now(), limit) {
                    let message = format!(
                        "storage call {what} has not returned for {} s (limit {} s); \
                         stopping so that a supervisor can restart the node",
                        running.as_secs(),
                        limit.as_secs()
                    );
                    tracing::error!(target: "fairgrid::storage", %message);
                    eprintln!("fairgrid: {message}");
                    std::process::exit(STALLED_EXIT_CODE);
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_stalled_only_past_the_limit_and_only_until_it_returns() {
        let watchdog: &'static Watchdog = Box::leak(Box::default());
        let limit = Duration::from_secs(60);
        let start = Instant::now();
        assert!(watchdog.stalled(start, limit).is_none());
        let quick = watchdog.start("ledger commit");
        let slow = watchdog.start("job store write");
        assert!(
            watchdog
                .stalled(start + Duration::from_secs(59), limit)
                .is_none()
        );
        let (what, running) = watchdog
            .stalled(start + Duration::from_secs(61), limit)
            .expect("stalled");
        assert!(running >= limit);
        assert!(what == "ledger commit" || what == "job store write");
        drop(quick);
        drop(slow);
        assert!(
            watchdog
                .stalled(start + Duration::from_secs(600), limit)
                .is_none()
        );
    }
}
