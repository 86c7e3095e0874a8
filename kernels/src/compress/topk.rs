//! Top-k sparsification with error feedback: send the `k` entries of
//! largest magnitude exactly, keep the rest in the residual.

/// How many entries `permille`/1000 of `len` keeps (at least one when
/// `len > 0`).
pub fn kept(len: usize, permille: u32) -> usize {
    if len == 0 {
        return 0;
    }
    let k = (len as u128 * u128::from(permille)).div_ceil(1000) as usize;
    k.clamp(1, len)
}

/// Picks the `k` largest-magnitude entries of `residual` (ties broken by
/// lower index, so the choice is deterministic), returns their indices in
/// increasing order with their values, and zeroes them in the residual.
pub fn select(residual: &mut [f32], k: usize) -> (Vec<u32>, Vec<f32>) {
    let k = k.min(residual.len());
    if k == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut order: Vec<u32> = (0..residual.len() as u32).collect();
    let key = |i: &u32| (residual[*i as usize].abs(), std::cmp::Reverse(*i));
    // Largest first: compare keys descending. Magnitudes are finite (the
    // caller checked), so `total_cmp` is a plain order here.
    order.select_nth_unstable_by(k - 1, |a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0).then(kb.1.cmp(&ka.1))
    });
    let mut chosen = order[..k].to_vec();
    chosen.sort_unstable();
    let values = chosen
        .iter()
        .map(|&i| std::mem::take(&mut residual[i as usize]))
        .collect();
    (chosen, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_largest_magnitudes() {
        let mut r = vec![0.1, -5.0, 0.3, 4.0, -0.2];
        let (idx, val) = select(&mut r, 2);
        assert_eq!(idx, vec![1, 3]);
        assert_eq!(val, vec![-5.0, 4.0]);
        assert_eq!(r, vec![0.1, 0.0, 0.3, 0.0, -0.2]);
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let mut r = vec![1.0, 1.0, 1.0];
        let (idx, _) = select(&mut r, 2);
        assert_eq!(idx, vec![0, 1]);
    }

    #[test]
    fn kept_rounds_up_and_bounds() {
        assert_eq!(kept(1000, 10), 10);
        assert_eq!(kept(5, 1), 1);
        assert_eq!(kept(5, 1000), 5);
        assert_eq!(kept(0, 500), 0);
    }
}
