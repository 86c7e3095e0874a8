//! What the clearing order depends on besides the asks (step 4 of the
//! market rules): the bid root, the seed and each node's tie-break key.
//!
//! - `bid_root` = BLAKE3 in `derive_key` mode (context
//!   [`BID_ROOT_CONTEXT`]) over the concatenation of the valid bids' ids,
//!   sorted ascending, duplicates once. BLAKE3 is itself a Merkle tree over
//!   1 KiB chunks (32 ids each), so this is a Merkle root with chunk-level
//!   inclusion proofs, and the crate hashes the chunks of a long input in
//!   SIMD lanes: 2.7 ms for 100,000 ids with their sort, where version 1's
//!   binary tree of 200,000 single-block hashes took 39 ms.
//! - `seed` = BLAKE3(`prev_allocation` || `bid_root`).
//! - tie key of a node = the `r`-th little-endian u64 of the BLAKE3 XOF
//!   keyed by the seed over [`TIE_BREAK_INPUT`], where `r` is the rank of
//!   the node key among the distinct node keys of the valid bids
//!   (ascending). One XOF of 8 bytes per node replaces one hash per node
//!   (0.2 ms instead of 8 ms for 100,000 nodes; SipHash per node, the next
//!   fastest, 1.7 ms); the ranks come from the sort by node key that also
//!   finds a node that bid twice. Figures: `docs/benchmarks.md`.

use super::ValidBid;
use super::radix::{Packing, prefix_of, sort_by_prefix_with};
use crate::Hash32;
use crate::identity::NodeId;

/// BLAKE3 `derive_key` context of the bid root.
pub const BID_ROOT_CONTEXT: &str = "fairgrid/v1/bid-root";

/// Input of the seed-keyed BLAKE3 XOF that yields the tie-break keys.
pub const TIE_BREAK_INPUT: &[u8] = b"fairgrid/v1/tie-break";

/// H(a || b) over the 64-byte concatenation: one BLAKE3 block.
pub fn hash_pair(a: &[u8; 32], b: &[u8; 32]) -> Hash32 {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(a);
    buf[32..].copy_from_slice(b);
    Hash32::of(&buf)
}

/// seed = H(prev_allocation || bid_root).
pub fn seed_of(prev_allocation: &Hash32, bid_root: &Hash32) -> Hash32 {
    hash_pair(&prev_allocation.0, &bid_root.0)
}

/// Ids copied per `update` of the bid-root hasher: 16 KiB, what BLAKE3
/// hashes in one go with 16 SIMD lanes.
const IDS_PER_UPDATE: usize = 512;

/// The bid root of a bid set (see the module docs).
pub fn bid_root_of(bids: &[ValidBid]) -> Hash32 {
    let ids: Vec<Hash32> = bids.iter().map(|b| b.bid_id).collect();
    let packing = Packing::for_len(bids.len());
    let mut by_id: Vec<u64> = (ids.iter().enumerate())
        .map(|(i, id)| packing.pack(prefix_of(&id.0), i))
        .collect();
    root_of(&ids, &mut by_id, packing, &mut Vec::new())
}

/// The root over `ids`, given their packed prefixes. The ids are a compact
/// copy of the bids' ids: the hash reads them in sorted order, and random
/// reads of a small array are much cheaper than of the bids.
fn root_of(ids: &[Hash32], by_id: &mut [u64], packing: Packing, scratch: &mut Vec<u64>) -> Hash32 {
    sort_by_prefix_with(by_id, scratch, |&k| k);
    let mut hasher = blake3::Hasher::new_derive_key(BID_ROOT_CONTEXT);
    let mut buf = [0u8; IDS_PER_UPDATE * 32];
    let mut filled = 0;
    let mut push = |id: &Hash32| {
        buf[filled..filled + 32].copy_from_slice(&id.0);
        filled += 32;
        if filled == buf.len() {
            hasher.update(&buf);
            filled = 0;
        }
    };
    packing.for_runs(by_id, |run| match run {
        [k] => push(&ids[packing.index(*k)]),
        _ => {
            // Ids that share a prefix (rare): in order, each distinct id once.
            let mut run: Vec<&Hash32> = run.iter().map(|&k| &ids[packing.index(k)]).collect();
            run.sort_unstable();
            run.dedup();
            run.into_iter().for_each(&mut push);
        }
    });
    hasher.update(&buf[..filled]);
    Hash32(*hasher.finalize().as_bytes())
}

/// `count` tie-break keys: the first `count` little-endian u64s of the
/// XOF keyed by `seed`; entry `r` belongs to the node of rank `r`.
pub fn tie_keys(seed: &Hash32, count: usize) -> Vec<u64> {
    let mut hasher = blake3::Hasher::new_keyed(&seed.0);
    hasher.update(TIE_BREAK_INPUT);
    let mut xof = hasher.finalize_xof();
    let mut keys = Vec::with_capacity(count);
    // 4 KiB at a time: 64 output blocks, enough for the SIMD lanes.
    let mut block = [0u8; 4096];
    while keys.len() < count {
        let bytes = &mut block[..((count - keys.len()) * 8).min(4096)];
        xof.fill(bytes);
        keys.extend(
            bytes
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
        );
    }
    keys
}

/// Per bid, the rank of its node key among the distinct node keys of
/// `bids` (ascending; bids of one node share a rank), and how many
/// distinct node keys there are.
pub fn node_ranks(bids: &[ValidBid]) -> (Vec<u32>, usize) {
    let packing = Packing::for_len(bids.len());
    let mut by_node: Vec<u64> = (bids.iter().enumerate())
        .map(|(i, b)| packing.pack(prefix_of(&b.node.0.0), i))
        .collect();
    ranks_of(bids, &mut by_node, packing, &mut Vec::new())
}

fn ranks_of(
    bids: &[ValidBid],
    by_node: &mut [u64],
    packing: Packing,
    scratch: &mut Vec<u64>,
) -> (Vec<u32>, usize) {
    sort_by_prefix_with(by_node, scratch, |&k| k);
    let mut rank = vec![0u32; bids.len()];
    let mut distinct = 0u32;
    packing.for_runs(by_node, |run| match run {
        [k] => {
            rank[packing.index(*k)] = distinct;
            distinct += 1;
        }
        _ => {
            // Equal prefixes (rare, or one node twice): whole keys decide.
            let mut run: Vec<(&NodeId, usize)> = run
                .iter()
                .map(|&k| (&bids[packing.index(k)].node, packing.index(k)))
                .collect();
            run.sort_unstable();
            for (j, &(node, i)) in run.iter().enumerate() {
                if j == 0 || run[j - 1].0 != node {
                    distinct += 1;
                }
                rank[i] = distinct - 1;
            }
        }
    });
    (rank, distinct as usize)
}

/// The bid root, the seed, and per bid its node's rank and tie key. It is
/// a function of the bid set and the previous allocation only, so a
/// coordinator can compute it once per bid set (the benchmarks time it
/// apart from the sort and sweep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub bid_root: Hash32,
    pub seed: Hash32,
    /// Per bid, in input order: the rank of its node key among the
    /// distinct node keys (bids of one node share a rank).
    pub node_rank: Vec<u32>,
    /// Per bid, in input order: its node's tie-break key.
    pub ties: Vec<u64>,
}

impl Digest {
    pub fn new(prev_allocation: &Hash32, bids: &[ValidBid]) -> Self {
        // One pass over the bids for everything the digest reads.
        let packing = Packing::for_len(bids.len());
        let mut ids = Vec::with_capacity(bids.len());
        let mut by_id = Vec::with_capacity(bids.len());
        let mut by_node = Vec::with_capacity(bids.len());
        for (i, bid) in bids.iter().enumerate() {
            ids.push(bid.bid_id);
            by_id.push(packing.pack(prefix_of(&bid.bid_id.0), i));
            by_node.push(packing.pack(prefix_of(&bid.node.0.0), i));
        }
        let mut scratch = Vec::new();
        let bid_root = root_of(&ids, &mut by_id, packing, &mut scratch);
        drop((ids, by_id));
        let seed = seed_of(prev_allocation, &bid_root);
        let (node_rank, distinct) = ranks_of(bids, &mut by_node, packing, &mut scratch);
        let keys = tie_keys(&seed, distinct);
        let ties = node_rank.iter().map(|&r| keys[r as usize]).collect();
        Digest {
            bid_root,
            seed,
            node_rank,
            ties,
        }
    }
}
