//! A job's life as a stream: [`Client::follow_job`] long-polls
//! `/v1/jobs/{id}/events` and yields every event once, in order, plus a
//! [`JobUpdate::State`] whenever the job's state changes (a job that waits
//! for supply has no event of its own). The stream ends after the job's
//! `finished` or `failed` event. A node that is briefly unreachable is
//! retried; an error that will not go away ends the stream after being
//! yielded.

use std::collections::VecDeque;
use std::time::Duration;

use futures::Stream;

use crate::jobs::{JobEvent, JobEventKind, JobState};
use crate::{Client, Result, SdkError, check_job_id};

/// One item of a followed job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobUpdate {
    Event(JobEvent),
    /// The state the node reports changed (first item: the state at the
    /// time of the first poll).
    State(JobState),
}

#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Start after this event seq (0 = from the first event).
    pub after: u64,
    /// How long each long poll may wait (the node grants at most 30 s).
    pub wait_secs: u64,
    /// Transient failures (node unreachable, 5xx) tolerated in a row.
    pub max_retries: u32,
    /// Pause before the first retry; doubles up to 8x.
    pub retry_delay: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            after: 0,
            wait_secs: 20,
            max_retries: 5,
            retry_delay: Duration::from_millis(500),
        }
    }
}

impl JobState {
    /// Whether the job can change no more.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Finished | JobState::Failed)
    }
}

impl JobEventKind {
    /// The event that ends a job's story.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEventKind::Finished { .. } | JobEventKind::Failed { .. }
        )
    }
}

struct Follower {
    client: Client,
    job_id: String,
    options: FollowOptions,
    after: u64,
    pending: VecDeque<JobUpdate>,
    state: Option<JobState>,
    failures: u32,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<JobUpdate>> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                if let JobUpdate::Event(event) = &update
                    && event.kind.is_terminal()
                {
                    self.done = true;
                    self.pending.clear();
                }
                return Some(Ok(update));
            }
            if self.done {
                return None;
            }
            match self
                .client
                .job_events(&self.job_id, self.after, self.options.wait_secs)
                .await
            {
                Ok(batch) => {
                    self.failures = 0;
                    if self.state != Some(batch.state) {
                        self.state = Some(batch.state);
                        self.pending.push_back(JobUpdate::State(batch.state));
                    }
                    let fresh = batch.events.into_iter().filter(|e| e.seq > self.after);
                    let mut last = self.after;
                    for event in fresh {
                        last = last.max(event.seq);
                        self.pending.push_back(JobUpdate::Event(event));
                    }
                    if batch.next < last {
                        self.done = true;
                        return Some(Err(SdkError::Decode {
                            url: self.client.url(&format!("/v1/jobs/{}/events", self.job_id)),
                            reason: format!(
                                "next = {} is behind the last event seq {last}",
                                batch.next
                            ),
                        }));
                    }
                    let progressed = batch.next > self.after;
                    self.after = batch.next;
                    // A finished job whose terminal event was already read
                    // (e.g. `after` skipped it) has nothing more to say.
                    if batch.state.is_terminal() && !progressed && self.pending.len() <= 1 {
                        self.done = true;
                    }
                }
                Err(error) if error.is_transient() && self.failures < self.options.max_retries => {
                    let backoff = self.options.retry_delay * 2u32.pow(self.failures.min(3));
                    self.failures += 1;
                    tokio::time::sleep(backoff).await;
                }
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

impl Client {
    /// Follows a job from `options.after` until it finishes or fails.
    pub fn follow_job(
        &self,
        job_id: &str,
        options: FollowOptions,
    ) -> impl Stream<Item = Result<JobUpdate>> + Send + 'static {
        let bad_id = check_job_id(job_id).err();
        let follower = Follower {
            client: self.clone(),
            job_id: job_id.to_string(),
            after: options.after,
            options,
            pending: VecDeque::new(),
            state: None,
            failures: 0,
            done: false,
        };
        futures::stream::unfold((follower, bad_id), |(mut follower, bad_id)| async move {
            if let Some(error) = bad_id {
                follower.done = true;
                return Some((Err(error), (follower, None)));
            }
            let item = follower.next().await?;
            Some((item, (follower, None)))
        })
    }
}
