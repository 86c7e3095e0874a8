//! BLAKE3 content hashes and the Merkle root used for bid sets.

use crate::bytes::fixed_bytes;

fixed_bytes!(
    /// A BLAKE3 hash: message ids, shard hashes, chain links.
    Hash32,
    32
);

impl Default for Hash32 {
    fn default() -> Self {
        Hash32::ZERO
    }
}

impl Hash32 {
    pub const ZERO: Hash32 = Hash32([0; 32]);

    pub fn of(bytes: &[u8]) -> Self {
        Hash32(*blake3::hash(bytes).as_bytes())
    }

    /// Hash of several byte strings, each length-prefixed so that
    /// `("ab","c")` and `("a","bc")` differ.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        Hash32(*hasher.finalize().as_bytes())
    }

    /// The first eight bytes as a big-endian integer: a cheap, uniformly
    /// distributed sort key derived from the hash.
    pub fn prefix_u64(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

impl std::fmt::Display for Hash32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Merkle root over leaves in the given order (callers sort first).
/// Leaves and inner nodes use distinct prefixes so a leaf can never be
/// confused with an inner node; an odd node is carried up unchanged.
/// The root of no leaves is `Hash32::ZERO`.
pub fn merkle_root(leaves: &[Hash32]) -> Hash32 {
    if leaves.is_empty() {
        return Hash32::ZERO;
    }
    let mut level: Vec<Hash32> = leaves.iter().map(leaf_hash).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node_hash(left, right),
                [odd] => *odd,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
    }
    level[0]
}

/// `of_parts(&[b"leaf", leaf])`, hashed from one stack buffer (the same
/// bytes, without a streaming hasher: this runs once per bid).
fn leaf_hash(leaf: &Hash32) -> Hash32 {
    let mut buf = [0u8; 8 + 4 + 8 + 32];
    buf[..8].copy_from_slice(&4u64.to_le_bytes());
    buf[8..12].copy_from_slice(b"leaf");
    buf[12..20].copy_from_slice(&32u64.to_le_bytes());
    buf[20..].copy_from_slice(&leaf.0);
    Hash32::of(&buf)
}

/// `of_parts(&[b"node", &left.0, &right.0])` from one stack buffer.
fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut buf = [0u8; 8 + 4 + 2 * (8 + 32)];
    buf[..8].copy_from_slice(&4u64.to_le_bytes());
    buf[8..12].copy_from_slice(b"node");
    buf[12..20].copy_from_slice(&32u64.to_le_bytes());
    buf[20..52].copy_from_slice(&left.0);
    buf[52..60].copy_from_slice(&32u64.to_le_bytes());
    buf[60..].copy_from_slice(&right.0);
    Hash32::of(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merkle_root_depends_on_every_leaf_and_order() {
        let leaves: Vec<Hash32> = (0u8..5).map(|i| Hash32::of(&[i])).collect();
        let root = merkle_root(&leaves);
        let mut swapped = leaves.clone();
        swapped.swap(1, 2);
        assert_ne!(root, merkle_root(&swapped));
        assert_ne!(root, merkle_root(&leaves[..4]));
        assert_eq!(merkle_root(&[]), Hash32::ZERO);
        assert_ne!(merkle_root(&leaves[..1]), leaves[0]);
    }

    #[test]
    fn fast_merkle_hashes_equal_the_of_parts_definition() {
        let (a, b) = (Hash32::of(b"a"), Hash32::of(b"b"));
        assert_eq!(leaf_hash(&a), Hash32::of_parts(&[b"leaf", &a.0]));
        assert_eq!(node_hash(&a, &b), Hash32::of_parts(&[b"node", &a.0, &b.0]));
    }

    #[test]
    fn parts_are_unambiguous() {
        assert_ne!(
            Hash32::of_parts(&[b"ab", b"c"]),
            Hash32::of_parts(&[b"a", b"bc"])
        );
    }
}
