//! BLAKE3 content hashes. (The bid root, a BLAKE3 hash over the sorted
//! bid ids, is defined with the market: `market::bid_root_of`.)

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_unambiguous() {
        assert_ne!(
            Hash32::of_parts(&[b"ab", b"c"]),
            Hash32::of_parts(&[b"a", b"bc"])
        );
    }
}
