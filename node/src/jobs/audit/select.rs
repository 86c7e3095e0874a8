//! Which of a round's accepted updates are audited: drawn after every
//! update is in, from randomness no worker can know when it sends, at a
//! rate that falls as a node's streak of clean audits grows.

use fairgrid_protocol::{Hash32, Keypair, NodeId};

/// Parts per million.
pub const PPM: u64 = 1_000_000;

/// How often updates are audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRate {
    /// The lowest rate, however long a node's clean streak (ppm). At 5%
    /// a node cheating in every round of a 60-round job is audited at
    /// least once with probability 1 - 0.95^60 = 95.4%.
    pub floor_ppm: u32,
}

impl Default for AuditRate {
    fn default() -> Self {
        AuditRate { floor_ppm: 50_000 }
    }
}

impl AuditRate {
    /// BOINC's adaptive replication: a node with `streak` clean audits in
    /// a row is audited with probability 1 / (streak + 1), never below
    /// the floor. A new node (or one that just failed) is audited at once.
    pub fn rate_ppm(&self, streak: u32) -> u32 {
        let adaptive = PPM / (u64::from(streak) + 1);
        adaptive.max(u64::from(self.floor_ppm)).min(PPM) as u32
    }
}

/// The round's draw: a deterministic function of every accepted update
/// (node and update hash, in node order) and the coordinator's signature
/// over them. A worker cannot know the other updates, nor the signature,
/// when it sends its own; anyone with the signature can check the draw.
pub fn draw_seed(key: &Keypair, job: &Hash32, round: u32, updates: &[(NodeId, Hash32)]) -> Hash32 {
    let mut sorted = updates.to_vec();
    sorted.sort();
    let mut message = Vec::with_capacity(40 + 64 * sorted.len());
    message.extend_from_slice(b"fairgrid/v1/audit-draw");
    message.extend_from_slice(&job.0);
    message.extend_from_slice(&round.to_le_bytes());
    for (node, hash) in &sorted {
        message.extend_from_slice(node.0.as_bytes());
        message.extend_from_slice(&hash.0);
    }
    let signature = key.sign(&message);
    Hash32::of_parts(&[b"fairgrid/v1/audit-seed", &message, &signature.0])
}

/// Whether `node` is audited under `seed` at `rate_ppm`.
pub fn is_drawn(seed: &Hash32, node: &NodeId, rate_ppm: u32) -> bool {
    let x = Hash32::of_parts(&[seed.0.as_slice(), node.0.as_bytes()]).prefix_u64();
    // x / 2^64 < rate / 10^6, in integers.
    u128::from(x) * u128::from(PPM) < u128::from(rate_ppm) << 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_falls_with_the_streak_down_to_the_floor() {
        let rate = AuditRate::default();
        assert_eq!(rate.rate_ppm(0), 1_000_000);
        assert_eq!(rate.rate_ppm(1), 500_000);
        assert_eq!(rate.rate_ppm(9), 100_000);
        assert_eq!(rate.rate_ppm(19), 50_000);
        assert_eq!(rate.rate_ppm(1_000), 50_000);
        assert_eq!(AuditRate { floor_ppm: 0 }.rate_ppm(u32::MAX), 0);
    }

    #[test]
    fn the_draw_follows_the_rate_and_every_update() {
        let key = Keypair::from_seed(b"coordinator");
        let job = Hash32::of(b"job");
        let node = Keypair::from_seed(b"w").node_id();
        let other = Keypair::from_seed(b"x").node_id();
        let mut drawn = 0;
        let trials = 20_000u32;
        for round in 0..trials {
            let updates = [
                (node, Hash32::of(&round.to_le_bytes())),
                (other, Hash32::ZERO),
            ];
            let seed = draw_seed(&key, &job, round, &updates);
            assert!(is_drawn(&seed, &node, 1_000_000));
            assert!(!is_drawn(&seed, &node, 0));
            drawn += u32::from(is_drawn(&seed, &node, 50_000));
        }
        // 5% of 20,000: 1,000, standard deviation 31.
        assert!((850..1150).contains(&drawn), "{drawn} drawn");
        // Another update of the round changes the draw.
        let a = draw_seed(&key, &job, 0, &[(node, Hash32::ZERO)]);
        let b = draw_seed(
            &key,
            &job,
            0,
            &[(node, Hash32::ZERO), (other, Hash32::ZERO)],
        );
        assert_ne!(a, b);
        // Order does not matter.
        let c = draw_seed(
            &key,
            &job,
            0,
            &[(other, Hash32::ZERO), (node, Hash32::ZERO)],
        );
        assert_eq!(b, c);
    }
}
