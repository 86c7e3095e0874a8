//! A job's event log: numbered events for the API's long poll, bounded
//! (the oldest are dropped; sequence numbers keep counting), with a watch
//! channel that wakes waiting pollers.

use std::collections::VecDeque;
use std::sync::Mutex;

use fairgrid_sdk::jobs::{JobEvent, JobEventKind};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Events kept per job.
pub const MAX_EVENTS: usize = 2000;
/// Most events one poll returns.
pub const MAX_EVENTS_PER_POLL: usize = 500;

/// The part of the log that is checkpointed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventRecord {
    /// Sequence number of the last event (0: none yet).
    pub last_seq: u64,
    pub events: VecDeque<EventJson>,
}

/// An event as checkpointed (JSON of the API type, so the checkpoint
/// does not depend on serde's handling of flattened enums in bincode).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventJson(pub String);

pub struct EventLog {
    inner: Mutex<EventRecord>,
    seq: watch::Sender<u64>,
}

impl EventLog {
    pub fn new() -> Self {
        Self::restore(EventRecord::default())
    }

    pub fn restore(record: EventRecord) -> Self {
        let (seq, _) = watch::channel(record.last_seq);
        EventLog {
            inner: Mutex::new(record),
            seq,
        }
    }

    /// Appends an event at `at_ms` and wakes pollers; returns its seq.
    pub fn push(&self, at_ms: u64, kind: JobEventKind) -> u64 {
        let mut inner = self.inner.lock().expect("event log lock");
        inner.last_seq += 1;
        let event = JobEvent {
            seq: inner.last_seq,
            at_ms,
            kind,
        };
        let json = serde_json::to_string(&event).expect("events serialise");
        inner.events.push_back(EventJson(json));
        while inner.events.len() > MAX_EVENTS {
            inner.events.pop_front();
        }
        let seq = inner.last_seq;
        drop(inner);
        self.seq.send_replace(seq);
        seq
    }

    pub fn last_seq(&self) -> u64 {
        self.inner.lock().expect("event log lock").last_seq
    }

    /// Events with seq > `after`, at most [`MAX_EVENTS_PER_POLL`].
    pub fn after(&self, after: u64) -> Vec<JobEvent> {
        let inner = self.inner.lock().expect("event log lock");
        inner
            .events
            .iter()
            .filter_map(|e| serde_json::from_str::<JobEvent>(&e.0).ok())
            .filter(|e| e.seq > after)
            .take(MAX_EVENTS_PER_POLL)
            .collect()
    }

    pub fn record(&self) -> EventRecord {
        self.inner.lock().expect("event log lock").clone()
    }

    /// A receiver that changes whenever an event is pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_numbered() {
        let log = EventLog::new();
        for i in 0..(MAX_EVENTS as u32 + 10) {
            log.push(i as u64, JobEventKind::Submitted { shards: i });
        }
        assert_eq!(log.last_seq(), MAX_EVENTS as u64 + 10);
        let all = log.after(0);
        assert_eq!(all.len(), MAX_EVENTS_PER_POLL);
        assert_eq!(all[0].seq, 11, "the oldest ten were dropped");
        let tail = log.after(MAX_EVENTS as u64 + 8);
        assert_eq!(tail.len(), 2);
        let restored = EventLog::restore(log.record());
        assert_eq!(restored.after(MAX_EVENTS as u64 + 8), tail);
    }

    #[tokio::test]
    async fn push_wakes_subscribers() {
        let log = std::sync::Arc::new(EventLog::new());
        let mut rx = log.subscribe();
        let l2 = log.clone();
        tokio::spawn(async move {
            l2.push(1, JobEventKind::Submitted { shards: 3 });
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*rx.borrow(), 1);
    }
}
