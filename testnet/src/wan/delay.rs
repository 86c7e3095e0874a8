//! Added latency without `netem` (these kernels do not have it): every
//! packet a site's router forwards goes to an NFQUEUE (`iptables -j
//! NFQUEUE` in the router's namespace), and a thread of the testbed that
//! entered that namespace holds its verdict for the delay before accepting
//! it. Only the packet's metadata crosses to user space (copy mode
//! "meta"); the packet itself waits in the kernel. Both directions pass
//! the router's FORWARD hook, so a site's link gets the delay each way:
//! two hosts behind two delayed sites see `2 × (delay_a + delay_b)` of
//! round trip.
//!
//! Precision: the thread polls the queue every [`POLL`], so a packet
//! waits between the delay and the delay plus [`POLL`] (the `nfq` crate
//! does not expose its socket to wait on). A queue that overflows
//! ([`MAX_HELD`] packets) drops packets, as a router's buffer would; a
//! delay line that stopped drops everything it would have carried, so a
//! broken line shows as lost connectivity, never as a silently undelayed
//! link.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::netns::Netns;

/// How often the delay thread looks at the queue.
pub const POLL: Duration = Duration::from_micros(500);

/// Packets held at once before the kernel drops new ones: a few times the
/// bandwidth-delay product of 100 Mbit/s × 100 ms in full-size packets.
pub const MAX_HELD: u32 = 8192;

/// What a delay line did, read while it runs.
#[derive(Debug, Default)]
pub struct DelayCounters {
    pub packets: AtomicU64,
    /// Longest a packet was held beyond the delay, microseconds.
    pub max_overshoot_us: AtomicU64,
    pub errors: AtomicU64,
}

/// One site router's added delay; stops (and lets held packets go) when
/// dropped.
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub counters: Arc<DelayCounters>,
}

impl DelayLine {
    /// Delays every packet `router` forwards by `delay`, through NFQUEUE
    /// number `queue` of that namespace.
    pub fn start(router: &Netns, queue: u16, delay: Duration) -> anyhow::Result<DelayLine> {
        let netns = router.open()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(DelayCounters::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let name = router.name().to_string();
        let thread = {
            let stop = Arc::clone(&stop);
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name(format!("delay-{name}"))
                .spawn(move || {
                    // SAFETY: setns on this thread only, with a valid fd.
                    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        let why = std::io::Error::last_os_error();
                        let _ = ready_tx.send(Err(format!("entering {name}: {why}")));
                        return;
                    }
                    let mut nfqueue = match open_queue(queue) {
                        Ok(q) => q,
                        Err(why) => {
                            let _ = ready_tx.send(Err(format!("NFQUEUE {queue}: {why}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    hold_and_release(&mut nfqueue, delay, &stop, &counters);
                })?
        };
        let line = DelayLine {
            stop,
            thread: Some(thread),
            counters,
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => bail!("the delay line of {} did not start: {why}", router.name()),
            Err(_) => bail!("the delay line of {} did not start in 10 s", router.name()),
        }
        // Only now that a reader is bound: packets queued to a queue
        // nobody reads are dropped.
        router
            .exec(
                "iptables",
                [
                    "-w",
                    "-A",
                    "FORWARD",
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    &queue.to_string(),
                ],
            )
            .context("queueing forwarded packets (apt-get install iptables)")?;
        Ok(line)
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open_queue(queue: u16) -> std::io::Result<nfq::Queue> {
    let mut nfqueue = nfq::Queue::open()?;
    nfqueue.bind(queue)?;
    nfqueue.set_copy_range(queue, 0)?;
    nfqueue.set_recv_gso(queue, true)?;
    nfqueue.set_queue_max_len(queue, MAX_HELD)?;
    nfqueue.set_fail_open(queue, false)?;
    nfqueue.set_nonblocking(true);
    Ok(nfqueue)
}

/// Until `stop`: takes in what the kernel queued, accepts each packet
/// `delay` after it came, then lets everything still held go.
fn hold_and_release(
    nfqueue: &mut nfq::Queue,
    delay: Duration,
    stop: &AtomicBool,
    counters: &DelayCounters,
) {
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        loop {
            match nfqueue.recv() {
                Ok(packet) => held.push_back((Instant::now() + delay, packet)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (due, packet) = held.pop_front().expect("front exists");
            let late = now.duration_since(due).as_micros() as u64;
            counters.max_overshoot_us.fetch_max(late, Ordering::Relaxed);
            release(nfqueue, packet, counters);
        }
        let wait = held.front().map_or(POLL, |(due, _)| {
            due.saturating_duration_since(now).min(POLL)
        });
        std::thread::sleep(wait);
    }
    for (_, packet) in held {
        release(nfqueue, packet, counters);
    }
}

fn release(nfqueue: &mut nfq::Queue, mut packet: nfq::Message, counters: &DelayCounters) {
    packet.set_verdict(nfq::Verdict::Accept);
    match nfqueue.verdict(packet) {
        Ok(()) => counters.packets.fetch_add(1, Ordering::Relaxed),
        Err(_) => counters.errors.fetch_add(1, Ordering::Relaxed),
    };
}
