//! Sainte-Laguë (Webster) highest-averages apportionment, quota-bounded.
//!
//! Each participant `i` has weight `k_i`, which is also the most seats it
//! may take; its Sainte-Laguë quotients are `k_i / (2s + 1)`. Classic
//! Sainte-Laguë gives seat after seat to the highest quotient. It can, in
//! rare skewed cases, leave a large participant more than one seat below
//! its proportional quota `q_i = k_i r / K`. fairgrid promises every node
//! stays within one shard of its quota, so [`webster`] applies the method
//! within the quota bounds: every participant first gets `floor(q_i)`, and
//! the remaining seats (fewer than the participants) go to the highest
//! quotients `k_i / (2 floor(q_i) + 1)` among those whose quota is
//! fractional, ties to the lower rank (the clearing order). Whenever the
//! classic result respects quota (almost always) the two agree; the unit
//! tests check this against the seat-by-seat definition. Owner caps are
//! handled by [`apportion_capped`]. Integer arithmetic only.
//!
//! The weight need not be the bound: [`webster_bounded`] gives seats in
//! proportion to a weight (a node's measured training speed) and at most
//! a bound (the shards its offer holds). Participants whose quota exceeds
//! their bound get their bound and leave; the rest is apportioned again
//! among the others, until no bound binds. With weight = bound it is
//! [`webster`].

use std::cmp::Ordering;

/// The quotient `k / (2s + 1)` of participant `pos` (rank `rank`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quotient {
    k: u64,
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

/// Gives `r` seats to participants `(k_i, rank_i)` in proportion to `k_i`,
/// each within one seat of its quota and at most `k_i`; returns the seats
/// per participant. Ranks must be distinct. If `r >= sum k` everyone gets
/// `k_i`.
pub fn webster(items: &[(u32, u32)], r: u64) -> Vec<u32> {
    let total: u64 = items.iter().map(|&(k, _)| k as u64).sum();
    if r >= total {
        return items.iter().map(|&(k, _)| k).collect();
    }
    let weighted: Vec<(u64, u32)> = items.iter().map(|&(k, rank)| (k as u64, rank)).collect();
    by_quota(&weighted, r)
}

/// Quota-bounded Sainte-Laguë over `(weight, rank)` with no other bound:
/// `r` seats, each participant within one of `weight r / total`. The
/// total weight must be positive.
fn by_quota(items: &[(u64, u32)], r: u64) -> Vec<u32> {
    let total: u128 = items.iter().map(|&(w, _)| w as u128).sum();
    let (r128, total128) = (r as u128, total.max(1));
    // Lower quotas; floor(k r / K) < k because r < K.
    let mut seats: Vec<u32> = items
        .iter()
        .map(|&(w, _)| (w as u128 * r128 / total128) as u32)
        .collect();
    let given: u64 = seats.iter().map(|&s| s as u64).sum();
    let left = (r - given) as usize;
    if left == 0 {
        return seats;
    }
    // Participants with a fractional quota may get one more seat.
    let mut candidates: Vec<Quotient> = items
        .iter()
        .enumerate()
        .filter(|&(_, &(w, _))| !(w as u128 * r128).is_multiple_of(total128))
        .map(|(pos, &(w, rank))| Quotient {
            k: w,
            s: seats[pos],
            rank,
            pos: pos as u32,
        })
        .collect();
    // sum of fractional parts = left, so there are more than `left` candidates
    // unless every fraction is large; either way select the best `left`.
    if left < candidates.len() {
        candidates.select_nth_unstable_by(left - 1, |a, b| b.cmp(a));
    }
    for q in candidates.iter().take(left) {
        seats[q.pos as usize] += 1;
    }
    seats
}

/// One participant of a weighted apportionment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Seats go in proportion to this (positive).
    pub weight: u64,
    /// The most seats the participant may take.
    pub bound: u32,
    /// The tie-break order (distinct).
    pub rank: u32,
}

/// Gives `r` seats in proportion to the weights, each participant at most
/// its bound: those whose share would pass their bound get the bound, and
/// the rest is apportioned again among the others. If `r >= sum bound`
/// everyone gets its bound. With weight = bound this is [`webster`].
pub fn webster_bounded(items: &[Claim], r: u64) -> Vec<u32> {
    let mut seats = vec![0u32; items.len()];
    let total: u64 = items.iter().map(|c| c.bound as u64).sum();
    if r >= total {
        for (seat, c) in seats.iter_mut().zip(items) {
            *seat = c.bound;
        }
        return seats;
    }
    let mut active: Vec<usize> = (0..items.len()).filter(|&i| items[i].bound > 0).collect();
    let mut left = r;
    loop {
        let weighted: Vec<(u64, u32)> = active
            .iter()
            .map(|&i| (items[i].weight.max(1), items[i].rank))
            .collect();
        let got = by_quota(&weighted, left);
        let bound_binds = |(&i, &s): (&usize, &u32)| s > items[i].bound;
        if !active.iter().zip(&got).any(bound_binds) {
            for (&i, s) in active.iter().zip(got) {
                seats[i] = s;
            }
            return seats;
        }
        // Terminates: each pass settles at least one participant, and
        // `left` stays within the remaining bounds (r < sum of bounds).
        let mut still = Vec::with_capacity(active.len());
        for (&i, &s) in active.iter().zip(&got) {
            if s > items[i].bound {
                seats[i] = items[i].bound;
                left -= items[i].bound as u64;
            } else {
                still.push(i);
            }
        }
        active = still;
    }
}

/// Webster with owner caps: the seat order skips quotients of an owner that
/// has reached its cap. `items[i] = (k_i, owner_i)` in rank order; `caps`
/// is indexed by owner. `r` must not exceed the capped supply
/// `sum over owners of min(cap_o, sum of its k_i)`.
pub fn apportion_capped(items: &[(u32, u32)], caps: &[u32], r: u64) -> Vec<u32> {
    let weighted: Vec<(u64, u32, u32)> = items.iter().map(|&(k, o)| (k as u64, k, o)).collect();
    apportion_weighted(&weighted, caps, r)
}

/// [`apportion_capped`] with weights apart from bounds: `items[i] =
/// (weight_i, bound_i, owner_i)` in rank order. Seats follow the weights
/// within the bounds ([`webster_bounded`]) and the owner caps. `r` must not
/// exceed the capped supply `sum over owners of min(cap_o, sum of its
/// bounds)`.
pub fn apportion_weighted(items: &[(u64, u32, u32)], caps: &[u32], r: u64) -> Vec<u32> {
    let claims = |of: &[usize]| -> Vec<Claim> {
        of.iter()
            .map(|&i| Claim {
                weight: items[i].0,
                bound: items[i].1,
                rank: i as u32,
            })
            .collect()
    };
    let mut seats = vec![0u32; items.len()];
    // Participants whose owner has room; owners already capped drop out.
    let mut active: Vec<usize> = (0..items.len())
        .filter(|&i| caps[items[i].2 as usize] > 0)
        .collect();
    let mut owner_sum = vec![0u64; caps.len()];
    let mut left = r;
    loop {
        let got = webster_bounded(&claims(&active), left);
        let mut over: Vec<u32> = Vec::new();
        for (&i, &s) in active.iter().zip(&got) {
            let o = items[i].2 as usize;
            if owner_sum[o] == 0 && s > 0 {
                over.push(o as u32);
            }
            owner_sum[o] += s as u64;
        }
        over.retain(|&o| owner_sum[o as usize] > caps[o as usize] as u64);
        for &i in &active {
            owner_sum[items[i].2 as usize] = 0;
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
                .filter(|&i| items[i].2 == o)
                .collect();
            let cap = caps[o as usize] as u64;
            for (&i, s) in theirs.iter().zip(webster_bounded(&claims(&theirs), cap)) {
                seats[i] = s;
            }
            left -= cap;
        }
        active.retain(|&i| over.binary_search(&items[i].2).is_err());
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
                    k: items[i].0 as u64,
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

    fn supply(items: &[(u32, u32)], caps: &[u32]) -> u64 {
        let mut by_owner = vec![0u64; caps.len()];
        for &(k, o) in items {
            by_owner[o as usize] += k as u64;
        }
        (0..caps.len())
            .map(|o| by_owner[o].min(caps[o] as u64))
            .sum()
    }

    #[test]
    fn agrees_with_seat_by_seat_whenever_that_respects_quota() {
        let mut rng = 7u64;
        let (mut compared, mut violations) = (0, 0);
        for _ in 0..4000 {
            let n = 1 + lcg(&mut rng) as usize % 9;
            let items: Vec<(u32, u32)> = (0..n).map(|_| ((lcg(&mut rng) % 25) as u32, 0)).collect();
            let total: u64 = items.iter().map(|&(k, _)| k as u64).sum();
            let r = lcg(&mut rng) % (total + 1);
            let classic = naive(&items, &[u32::MAX], r);
            let within = items.iter().zip(&classic).all(|(&(k, _), &s)| {
                let q = k as u128 * r as u128;
                let t = total.max(1) as u128;
                (s as u128) * t + t > q && q + t > (s as u128) * t
            });
            if within {
                compared += 1;
                assert_eq!(webster(&items, r), classic, "items {items:?} r {r}");
            } else {
                violations += 1;
            }
        }
        assert!(
            compared > 3000,
            "{compared} compared, {violations} quota violations"
        );
    }

    #[test]
    fn fixes_the_classic_quota_violation() {
        // Classic Sainte-Lague gives the big node 5 of 10 seats (quota 6.25).
        let items = [(10, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6)];
        assert_eq!(naive(&items, &[u32::MAX; 7], 10)[0], 5);
        let seats = webster(&items, 10);
        assert_eq!(seats, vec![6, 1, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn capped_apportionment_respects_every_bound() {
        let mut rng = 11u64;
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
            let r = lcg(&mut rng) % (supply(&items, &caps) + 1);
            let seats = apportion_capped(&items, &caps, r);
            assert_eq!(seats.iter().map(|&s| s as u64).sum::<u64>(), r);
            let mut used = vec![0u64; owners];
            for (&(k, o), &s) in items.iter().zip(&seats) {
                assert!(s <= k);
                used[o as usize] += s as u64;
            }
            for o in 0..owners {
                assert!(
                    used[o] <= caps[o] as u64,
                    "items {items:?} caps {caps:?} r {r}"
                );
            }
            // Without binding caps it is plain quota-bounded Sainte-Lague.
            let free = vec![u32::MAX; owners];
            assert_eq!(
                apportion_capped(&items, &free, r),
                webster(&ranked(&items), r)
            );
        }
    }

    fn ranked(items: &[(u32, u32)]) -> Vec<(u32, u32)> {
        items
            .iter()
            .enumerate()
            .map(|(i, &(k, _))| (k, i as u32))
            .collect()
    }

    #[test]
    fn weights_equal_to_bounds_are_plain_webster() {
        let mut rng = 5u64;
        for _ in 0..2000 {
            let n = 1 + lcg(&mut rng) as usize % 9;
            let items: Vec<(u32, u32)> = (0..n as u32)
                .map(|i| ((lcg(&mut rng) % 25) as u32, i))
                .collect();
            let total: u64 = items.iter().map(|&(k, _)| k as u64).sum();
            let r = lcg(&mut rng) % (total + 2);
            let claims: Vec<Claim> = items
                .iter()
                .map(|&(k, rank)| Claim {
                    weight: k as u64,
                    bound: k,
                    rank,
                })
                .collect();
            assert_eq!(webster_bounded(&claims, r), webster(&items, r));
        }
    }

    #[test]
    fn seats_follow_weights_within_bounds() {
        let mut rng = 9u64;
        for _ in 0..3000 {
            let n = 1 + lcg(&mut rng) as usize % 8;
            let claims: Vec<Claim> = (0..n as u32)
                .map(|rank| Claim {
                    weight: 1 + lcg(&mut rng) % 5000,
                    bound: (lcg(&mut rng) % 20) as u32,
                    rank,
                })
                .collect();
            let supply: u64 = claims.iter().map(|c| c.bound as u64).sum();
            let r = lcg(&mut rng) % (supply + 1);
            let seats = webster_bounded(&claims, r);
            assert_eq!(seats.iter().map(|&s| s as u64).sum::<u64>(), r);
            // Within bounds; and among those below their bound, no one is
            // short of its weight's share by a seat compared with another:
            // s_i + 1 > w_i / w_j * (s_j - 1) for every pair below bound.
            for (c, &s) in claims.iter().zip(&seats) {
                assert!(s <= c.bound, "{claims:?} r {r} seats {seats:?}");
            }
            for (a, &sa) in claims.iter().zip(&seats) {
                for (b, &sb) in claims.iter().zip(&seats) {
                    if sa < a.bound && sb > 0 {
                        let lhs = (sa as u128 + 1) * b.weight as u128;
                        let rhs = (sb as u128 - 1) * a.weight as u128;
                        assert!(lhs >= rhs, "{claims:?} r {r} seats {seats:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_twice_as_fast_node_gets_twice_the_shards() {
        // Speeds 2:1:1, bounds ample: 12 shards go 6/3/3, though the
        // bounds (the offers) are equal.
        let claims = [
            Claim {
                weight: 2000,
                bound: 12,
                rank: 0,
            },
            Claim {
                weight: 1000,
                bound: 12,
                rank: 1,
            },
            Claim {
                weight: 1000,
                bound: 12,
                rank: 2,
            },
        ];
        assert_eq!(webster_bounded(&claims, 12), vec![6, 3, 3]);
        // A bound that binds passes its seats to the others by weight.
        let tight = [
            Claim {
                bound: 4,
                ..claims[0]
            },
            claims[1],
            claims[2],
        ];
        assert_eq!(webster_bounded(&tight, 12), vec![4, 4, 4]);
        // Owner caps on top: owner 0 holds nodes 0 and 1, capped at 6.
        let items = [(2000, 12, 0), (1000, 12, 0), (1000, 12, 1)];
        let seats = apportion_weighted(&items, &[6, 12], 12);
        assert_eq!(seats, vec![4, 2, 6]);
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
