//! Sainte-Laguë (Webster) highest-averages apportionment with bounds.
//!
//! Each participant `i` has weight `k_i`, which is also the most seats it
//! may take; its quotients are `k_i / (2s + 1)` for `s = 0..k_i`. Seat by
//! seat, the method gives the next seat to the highest quotient, ties to the
//! lower rank (the clearing order). The result is therefore exactly the top
//! `r` quotients of all participants in the total order
//! (quotient descending, rank ascending), which is what [`webster`] computes
//! without going seat by seat: it starts from the rounded quotas, which are
//! already a threshold set of that order, and adds or removes the few seats
//! the rounding left over through a heap. Owner caps are handled by
//! [`apportion_capped`]. Integer arithmetic only.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// The quotient `k / (2s + 1)` of participant `pos` (rank `rank`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quotient {
    k: u32,
    s: u32,
    rank: u32,
    pos: u32,
}

impl Ord for Quotient {
    /// Greater means "earlier in the seat order".
    fn cmp(&self, other: &Self) -> Ordering {
        let lhs = self.k as u128 * (2 * other.s as u128 + 1);
        let rhs = other.k as u128 * (2 * self.s as u128 + 1);
        lhs.cmp(&rhs).then(other.rank.cmp(&self.rank))
    }
}

impl PartialOrd for Quotient {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Gives `r` seats to participants `(k_i, rank_i)`, each bounded by `k_i`;
/// returns the seats per participant. Ranks must be distinct.
/// If `r >= sum k` everyone gets `k_i`.
pub fn webster(items: &[(u32, u32)], r: u64) -> Vec<u32> {
    let total: u64 = items.iter().map(|&(k, _)| k as u64).sum();
    if r >= total {
        return items.iter().map(|&(k, _)| k).collect();
    }
    if r == 0 {
        return vec![0; items.len()];
    }
    // Rounded quota floor(k r / K + 1/2) <= k because r < K: the set of
    // quotients >= K / (2r), a threshold set of the seat order.
    let (r128, total128) = (r as u128, total as u128);
    let mut seats: Vec<u32> = items
        .iter()
        .map(|&(k, _)| ((2 * k as u128 * r128 + total128) / (2 * total128)) as u32)
        .collect();
    let given: u64 = seats.iter().map(|&s| s as u64).sum();
    let quotient = |pos: usize, s: u32| Quotient {
        k: items[pos].0,
        s,
        rank: items[pos].1,
        pos: pos as u32,
    };
    if given < r {
        // Add the best quotients not yet taken.
        let mut next: BinaryHeap<Quotient> = (0..items.len())
            .filter(|&p| seats[p] < items[p].0)
            .map(|p| quotient(p, seats[p]))
            .collect();
        for _ in given..r {
            let Some(best) = next.pop() else { break };
            let p = best.pos as usize;
            seats[p] += 1;
            if seats[p] < items[p].0 {
                next.push(quotient(p, seats[p]));
            }
        }
    } else if given > r {
        // Give back the worst quotients taken.
        let mut last: BinaryHeap<Reverse<Quotient>> = (0..items.len())
            .filter(|&p| seats[p] > 0)
            .map(|p| Reverse(quotient(p, seats[p] - 1)))
            .collect();
        for _ in r..given {
            let Some(Reverse(worst)) = last.pop() else {
                break;
            };
            let p = worst.pos as usize;
            seats[p] -= 1;
            if seats[p] > 0 {
                last.push(Reverse(quotient(p, seats[p] - 1)));
            }
        }
    }
    seats
}

/// Webster with owner caps: the seat order skips quotients of an owner that
/// has reached its cap. `items[i] = (k_i, owner_i)` in rank order; `caps`
/// is indexed by owner. `r` must not exceed the capped supply
/// `sum over owners of min(cap_o, sum of its k_i)`.
pub fn apportion_capped(items: &[(u32, u32)], caps: &[u32], r: u64) -> Vec<u32> {
    let mut seats = vec![0u32; items.len()];
    // Participants whose owner has room; owners already capped drop out.
    let mut active: Vec<usize> = (0..items.len())
        .filter(|&i| caps[items[i].1 as usize] > 0)
        .collect();
    let mut owner_sum = vec![0u64; caps.len()];
    let mut left = r;
    loop {
        let ranked: Vec<(u32, u32)> = active.iter().map(|&i| (items[i].0, i as u32)).collect();
        let got = webster(&ranked, left);
        let mut over: Vec<u32> = Vec::new();
        for (&i, &s) in active.iter().zip(&got) {
            let o = items[i].1 as usize;
            if owner_sum[o] == 0 && s > 0 {
                over.push(o as u32);
            }
            owner_sum[o] += s as u64;
        }
        over.retain(|&o| owner_sum[o as usize] > caps[o as usize] as u64);
        for &i in &active {
            owner_sum[items[i].1 as usize] = 0;
        }
        if over.is_empty() {
            for (&i, s) in active.iter().zip(got) {
                seats[i] = s;
            }
            return seats;
        }
        // These owners reach their cap before the threshold: they get their
        // own top-cap quotients, and the rest is re-apportioned.
        over.sort_unstable();
        for &o in &over {
            let theirs: Vec<usize> = active
                .iter()
                .copied()
                .filter(|&i| items[i].1 == o)
                .collect();
            let ranked: Vec<(u32, u32)> = theirs.iter().map(|&i| (items[i].0, i as u32)).collect();
            for (&i, s) in theirs.iter().zip(webster(&ranked, caps[o as usize] as u64)) {
                seats[i] = s;
            }
            left -= caps[o as usize] as u64;
        }
        active.retain(|&i| over.binary_search(&items[i].1).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seat by seat, the definition.
    fn naive(items: &[(u32, u32)], caps: &[u32], r: u64) -> Vec<u32> {
        let mut seats = vec![0u32; items.len()];
        let mut room: Vec<u32> = caps.to_vec();
        for _ in 0..r {
            let best = (0..items.len())
                .filter(|&i| seats[i] < items[i].0 && room[items[i].1 as usize] > 0)
                .map(|i| Quotient {
                    k: items[i].0,
                    s: seats[i],
                    rank: i as u32,
                    pos: i as u32,
                })
                .max();
            let Some(q) = best else { break };
            seats[q.pos as usize] += 1;
            room[items[q.pos as usize].1 as usize] -= 1;
        }
        seats
    }

    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    #[test]
    fn matches_seat_by_seat_definition() {
        let mut rng = 7u64;
        for _ in 0..3000 {
            let n = 1 + lcg(&mut rng) as usize % 9;
            let owners = 1 + lcg(&mut rng) as usize % 4;
            let items: Vec<(u32, u32)> = (0..n)
                .map(|_| {
                    (
                        (lcg(&mut rng) % 12) as u32,
                        (lcg(&mut rng) % owners as u64) as u32,
                    )
                })
                .collect();
            let caps: Vec<u32> = (0..owners).map(|_| (lcg(&mut rng) % 20) as u32).collect();
            let mut supply = vec![0u64; owners];
            for &(k, o) in &items {
                supply[o as usize] += k as u64;
            }
            let capped: u64 = (0..owners).map(|o| supply[o].min(caps[o] as u64)).sum();
            let r = lcg(&mut rng) % (capped + 1);
            assert_eq!(
                apportion_capped(&items, &caps, r),
                naive(&items, &caps, r),
                "items {items:?} caps {caps:?} r {r}"
            );
        }
    }

    #[test]
    fn equal_weights_tie_to_the_earlier_rank() {
        assert_eq!(webster(&[(5, 0), (5, 1), (5, 2)], 4), vec![2, 1, 1]);
        assert_eq!(webster(&[(5, 2), (5, 1), (5, 0)], 4), vec![1, 1, 2]);
    }

    #[test]
    fn large_apportionment_is_proportional() {
        let items: Vec<(u32, u32)> = (0..1000).map(|i| (10 + (i % 7), i)).collect();
        let total: u64 = items.iter().map(|&(k, _)| k as u64).sum();
        let r = total * 3 / 5;
        let seats = webster(&items, r);
        assert_eq!(seats.iter().map(|&s| s as u64).sum::<u64>(), r);
        for (&(k, _), &s) in items.iter().zip(&seats) {
            let quota = k as f64 * r as f64 / total as f64;
            assert!(
                (s as f64 - quota).abs() <= 1.0,
                "k {k} seats {s} quota {quota}"
            );
        }
    }
}
