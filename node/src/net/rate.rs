//! Token buckets per sender: how many requests or gossip messages each
//! peer may send us per second, with a burst allowance (and, in the API,
//! how many failed authentications each client address may make).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

use libp2p::PeerId;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct RateLimiter<K = PeerId> {
    per_sec: f64,
    burst: f64,
    buckets: HashMap<K, Bucket>,
    /// Most senders tracked at once (see [`RateLimiter::allow`]).
    max_senders: usize,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self::with_max_senders(per_sec, burst, usize::MAX)
    }

    /// A limiter that tracks at most `max_senders` senders: for senders
    /// nobody forgets (client addresses), so the map stays bounded.
    pub fn with_max_senders(per_sec: u32, burst: u32, max_senders: usize) -> Self {
        RateLimiter {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
            max_senders: max_senders.max(1),
        }
    }

    /// Takes one token from `sender`'s bucket at time `now`; false if
    /// empty. At `max_senders`, buckets that have refilled (they hold
    /// nothing a new bucket would not) are dropped first; if every one is
    /// still in use, a new sender is refused until some refill.
    pub fn allow(&mut self, sender: K, now: Instant) -> bool {
        if !self.buckets.contains_key(&sender) && self.buckets.len() >= self.max_senders {
            let (per_sec, burst) = (self.per_sec, self.burst);
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_sec < burst
            });
            if self.buckets.len() >= self.max_senders {
                return false;
            }
        }
        let bucket = self.buckets.entry(sender).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets a disconnected peer (bounds the map by connected peers).
    pub fn forget(&mut self, sender: &K) {
        self.buckets.remove(sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_sustained_rate() {
        let mut limiter = RateLimiter::new(10, 5);
        let peer = PeerId::random();
        let other = PeerId::random();
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| limiter.allow(peer, t0)).count(), 5);
        assert!(limiter.allow(other, t0), "buckets are per peer");
        // 0.5 s later, 5 more tokens.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..8).filter(|_| limiter.allow(peer, t1)).count(), 5);
        limiter.forget(&peer);
        assert!(limiter.allow(peer, t1));
    }

    #[test]
    fn at_most_max_senders_are_tracked() {
        let mut limiter = RateLimiter::<u32>::with_max_senders(1, 2, 2);
        let t0 = Instant::now();
        assert!(limiter.allow(1, t0) && limiter.allow(1, t0));
        assert!(limiter.allow(2, t0));
        // Both buckets in use: a third sender waits.
        assert!(!limiter.allow(3, t0));
        // Sender 2 refills after 1 s and makes room; sender 1 has not.
        let t1 = t0 + Duration::from_millis(1000);
        assert!(limiter.allow(3, t1));
        assert_eq!(limiter.buckets.len(), 2);
        assert!(limiter.buckets.contains_key(&1));
    }
}
