//! An MSD radix sort for the book's sorts: 100,000s of hash prefixes, node
//! keys and asks per clearing. Integer keys sort several times faster by
//! digits than by comparisons, and one pass on the top 16 bits of uniformly
//! spread keys (hashes) leaves buckets of one or two, so most of the work
//! is a single counting pass and a single scatter.
//!
//! [`sort_by_prefix`] sorts items by their `Ord`, given a `u64` prefix key
//! that orders like it (`key(a) < key(b)` implies `a < b`). Each level
//! buckets on up to 16 bits starting at the highest bit where the bucket's
//! keys differ (so shared leading bits, like the top bits of small asks,
//! cost nothing); small buckets, and buckets whose keys are all equal, are
//! finished by a comparison sort on the items themselves. The result is
//! exactly `items.sort()`: the unit tests check it against the standard
//! sort on skewed, equal and colliding keys.
//!
//! The callers sort `u64`s that carry the item's index in their low bits
//! ([`Packing`]): 8 bytes per item instead of a 16-byte `(key, index)`
//! pair halves the memory each pass moves, and a caller's scratch buffer
//! can serve several sorts ([`sort_by_prefix_with`]).

/// Buckets at most this large are sorted by insertion.
const SMALL: usize = 24;
/// Most bits one level buckets on (a 256 KiB count table).
const MAX_BITS: u32 = 16;

/// Sorts `items` by their `Ord` (see the module docs for `key`'s contract).
pub(crate) fn sort_by_prefix<T: Copy + Ord>(items: &mut [T], key: impl Fn(&T) -> u64) {
    sort_by_prefix_with(items, &mut Vec::new(), key);
}

/// [`sort_by_prefix`] with a caller's scratch buffer, so that several
/// sorts in a row reuse one allocation (fresh memory costs a page fault
/// per 4 KiB).
pub(crate) fn sort_by_prefix_with<T: Copy + Ord>(
    items: &mut [T],
    scratch: &mut Vec<T>,
    key: impl Fn(&T) -> u64,
) {
    if items.len() <= SMALL {
        insertion_sort(items);
        return;
    }
    scratch.clear();
    scratch.extend_from_slice(items);
    sort_level(items, scratch, &key);
}

fn sort_level<T: Copy + Ord>(items: &mut [T], scratch: &mut [T], key: &impl Fn(&T) -> u64) {
    let n = items.len();
    let first = key(&items[0]);
    let differ = items.iter().fold(0u64, |acc, t| acc | (key(t) ^ first));
    if differ == 0 {
        // One key: the items' own order decides (a run of equal prefixes).
        items.sort_unstable();
        return;
    }
    // Bucket on `bits` bits ending just below the highest differing bit;
    // about one bucket per item.
    let top = 64 - differ.leading_zeros();
    let bits = (usize::BITS - n.leading_zeros()).min(MAX_BITS).min(top);
    let shift = top - bits;
    let mask = (1u64 << bits) - 1;
    let digit = |t: &T| ((key(t) >> shift) & mask) as usize;

    let mut count = vec![0u32; 1 << bits];
    for t in items.iter() {
        count[digit(t)] += 1;
    }
    let mut offset = 0u32;
    for c in count.iter_mut() {
        let k = *c;
        *c = offset;
        offset += k;
    }
    let scratch = &mut scratch[..n];
    for &t in items.iter() {
        let d = digit(&t);
        scratch[count[d] as usize] = t;
        count[d] += 1;
    }
    items.copy_from_slice(scratch);
    // count[d] is now the end of bucket d.
    let mut start = 0usize;
    for &end in &count {
        let end = end as usize;
        match end - start {
            0 | 1 => {}
            len if len <= SMALL => insertion_sort(&mut items[start..end]),
            _ => sort_level(&mut items[start..end], &mut scratch[start..end], key),
        }
        start = end;
    }
}

/// The standard insertion sort: fastest for the few items of a bucket.
fn insertion_sort<T: Copy + Ord>(items: &mut [T]) {
    for i in 1..items.len() {
        let item = items[i];
        let mut j = i;
        while j > 0 && items[j - 1] > item {
            items[j] = items[j - 1];
            j -= 1;
        }
        items[j] = item;
    }
}

/// Sort keys that carry an item's index in their low bits, so that a sort
/// moves 8 bytes per item instead of 16: `pack(key, index)` keeps the key's
/// top `64 - bits` bits. Sorted packed keys order by those bits, then by
/// index; items whose kept bits are equal form a run that the caller
/// settles by whole keys ([`for_runs`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packing {
    bits: u32,
}

impl Packing {
    /// Room for indices `0..len` (at most 32 bits).
    pub(crate) fn for_len(len: usize) -> Self {
        let bits = u64::BITS - (len.saturating_sub(1) as u64).leading_zeros();
        Packing { bits: bits.max(1) }
    }

    pub(crate) fn pack(self, key: u64, index: usize) -> u64 {
        (key >> self.bits << self.bits) | index as u64
    }

    pub(crate) fn index(self, packed: u64) -> usize {
        (packed & ((1 << self.bits) - 1)) as usize
    }

    /// Calls `f` on the indices of each run of sorted packed keys whose
    /// kept bits are equal (usually runs of one).
    pub(crate) fn for_runs(self, sorted: &[u64], mut f: impl FnMut(&[u64])) {
        let mut start = 0;
        while start < sorted.len() {
            let kept = sorted[start] >> self.bits;
            let mut end = start + 1;
            while end < sorted.len() && sorted[end] >> self.bits == kept {
                end += 1;
            }
            f(&sorted[start..end]);
            start = end;
        }
    }
}

/// The first eight bytes of a 32-byte key as a big-endian integer: a
/// prefix key that orders like the whole key.
pub(crate) fn prefix_of(bytes: &[u8; 32]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(state: &mut u64) -> u64 {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        *state >> 7
    }

    #[test]
    fn pairs_sort_like_the_standard_sort() {
        let mut state = 1u64;
        for n in [0usize, 1, 31, 32, 33, 64, 1000, 5000, 70_000] {
            for spread in [1u64, 3, 1 << 20, u64::MAX] {
                let mut items: Vec<(u64, u32)> = (0..n as u32)
                    .map(|i| (lcg(&mut state).wrapping_mul(0x9E37_79B9) % spread, i))
                    .collect();
                let mut expected = items.clone();
                expected.sort();
                sort_by_prefix(&mut items, |t| t.0);
                assert_eq!(items, expected, "n {n} spread {spread}");
            }
        }
    }

    #[test]
    fn skewed_keys_with_long_shared_prefixes() {
        let mut state = 3u64;
        // Most keys share their top 50 bits, a few are far apart, and the
        // low bits collide often.
        let mut items: Vec<(u64, u32)> = (0..20_000u32)
            .map(|i| {
                let r = lcg(&mut state);
                let key = match r % 10 {
                    0 => r << 20,
                    _ => (0xDEAD_BEEF_u64 << 30) | (r % 97),
                };
                (key, i)
            })
            .collect();
        items.push((u64::MAX, 20_000));
        items.push((0, 20_001));
        let mut expected = items.clone();
        expected.sort();
        sort_by_prefix(&mut items, |t| t.0);
        assert_eq!(items, expected);
    }

    #[test]
    fn packed_keys_keep_the_top_bits_and_the_index() {
        let packing = Packing::for_len(100_000);
        assert_eq!(packing.bits, 17);
        let packed = packing.pack(u64::MAX - 5, 99_999);
        assert_eq!(packing.index(packed), 99_999);
        assert_eq!(packed >> 17, (u64::MAX - 5) >> 17);
        assert_eq!(Packing::for_len(0).bits, 1);
        assert_eq!(Packing::for_len(2).bits, 1);
        assert_eq!(Packing::for_len(3).bits, 2);
        let sorted = [
            packing.pack(5 << 17, 3),
            packing.pack(5 << 17, 9),
            packing.pack(6 << 17, 1),
        ];
        let mut runs = Vec::new();
        packing.for_runs(&sorted, |run| {
            runs.push(run.iter().map(|&p| packing.index(p)).collect::<Vec<_>>())
        });
        assert_eq!(runs, vec![vec![3, 9], vec![1]]);
    }

    #[test]
    fn byte_keys_with_colliding_prefixes_sort_by_the_whole_key() {
        let mut state = 5u64;
        let mut keys: Vec<[u8; 32]> = (0..3000)
            .map(|_| {
                let mut k = [0u8; 32];
                k[0] = (lcg(&mut state) % 3) as u8;
                k[5] = (lcg(&mut state) % 2) as u8;
                k[20] = (lcg(&mut state) % 2) as u8;
                k[31] = (lcg(&mut state) % 5) as u8;
                k
            })
            .collect();
        let mut expected = keys.clone();
        expected.sort();
        sort_by_prefix(&mut keys, prefix_of);
        assert_eq!(keys, expected);
    }
}
