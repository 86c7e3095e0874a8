//! Per-peer token buckets: how many requests or gossip messages each peer
//! may send us per second, with a burst allowance.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: HashMap<PeerId, Bucket>,
}

impl RateLimiter {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        RateLimiter {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from `peer`'s bucket at time `now`; false if empty.
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
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
    pub fn forget(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
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
}
