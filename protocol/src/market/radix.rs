//! A stable LSD radix sort for `(u64 key, u32 index)` pairs: the book sorts
//! 100,000s of hash prefixes and asks per clearing, and integer keys sort
//! several times faster by digits than by comparisons. Only the digits
//! below the largest key are sorted, and a digit where every key agrees is
//! skipped. Hash prefixes are sorted on their top 33 bits (three passes);
//! the callers settle the rare equal prefixes with full comparisons.

const BITS: u32 = 11;
const BUCKETS: usize = 1 << BITS;
const MASK: u64 = (BUCKETS - 1) as u64;

/// Sorts by key, keeping the input order of equal keys.
pub(crate) fn radix_sort(items: &mut Vec<(u64, u32)>) {
    let max = items.iter().map(|&(key, _)| key).max().unwrap_or(0);
    radix_sort_bits(items, 64 - max.leading_zeros());
}

/// Sorts by key when every key is below `2^bits`, in `ceil(bits / 11)` passes.
pub(crate) fn radix_sort_bits(items: &mut Vec<(u64, u32)>, bits: u32) {
    if items.len() < 64 {
        items.sort_by_key(|&(key, _)| key);
        return;
    }
    let mut scratch = vec![(0u64, 0u32); items.len()];
    let mut shift = 0;
    while shift < bits {
        let mut count = [0usize; BUCKETS];
        for &(key, _) in items.iter() {
            count[((key >> shift) & MASK) as usize] += 1;
        }
        // Every key has the same digit here: nothing to do for this pass.
        if count.contains(&items.len()) {
            shift += BITS;
            continue;
        }
        let mut offset = 0;
        for c in count.iter_mut() {
            let n = *c;
            *c = offset;
            offset += n;
        }
        for &item in items.iter() {
            let digit = ((item.0 >> shift) & MASK) as usize;
            scratch[count[digit]] = item;
            count[digit] += 1;
        }
        std::mem::swap(items, &mut scratch);
        shift += BITS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_stably_like_the_standard_sort() {
        let mut state = 1u64;
        for n in [0usize, 1, 63, 64, 1000, 5000] {
            for spread in [3u64, 1 << 20, u64::MAX] {
                let mut items: Vec<(u64, u32)> = (0..n as u32)
                    .map(|i| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                        ((state >> 7) % spread.max(1), i)
                    })
                    .collect();
                let mut expected = items.clone();
                expected.sort_by_key(|&(k, _)| k);
                let mut by_bits = items.clone();
                radix_sort(&mut items);
                assert_eq!(items, expected);
                radix_sort_bits(&mut by_bits, 64);
                assert_eq!(by_bits, expected);
            }
        }
    }
}
