//! Shards: the fixed slices of a dataset that are auctioned and trained,
//! content-addressed by the BLAKE3 hash of a canonical byte layout.
//!
//! Canonical layout (integers little-endian); the shard's hash, the
//! protocol's `ShardInfo.hash`, is `BLAKE3(bytes)`:
//! ```text
//! offset      size        field
//! 0           8           magic "FGSHARD1" (byte values) or "FGSHARDF" (f32)
//! 8           4           samples N (>= 1)
//! 12          4           channels C (1..=16; 1..=4096 when H = W = 1)
//! 16          4           height H (1..=512)
//! 20          4           width W (1..=512)
//! 24          4           classes K (2..=256)
//! 28          N*H*W*C*B   values, sample by sample, each row-major (h, w, c):
//!                         B = 1 (bytes) or 4 (f32 little-endian, finite)
//! 28+N*H*W*C*B N          labels, one byte each, < K
//! ```
//! Byte shards are what they were before f32 values existed, so their
//! hashes did not change.
//! A worker that fetched shard bytes recomputes the hash and then decodes
//! with [`Shard::from_bytes`], which checks every field.

use super::dataset::{Dataset, Samples};
use super::pixels::{PixelKind, Pixels, SampleRef};
use crate::error::{KernelError, Result};
use crate::model::InputShape;

const MAGIC: &[u8; 8] = b"FGSHARD1";
const MAGIC_F32: &[u8; 8] = b"FGSHARDF";
const HEADER: usize = 28;
/// Most samples one shard may hold.
pub const MAX_SHARD_SAMPLES: usize = 1 << 20;

/// One shard's samples. Two shards are equal when their contents are
/// (names do not count).
#[derive(Debug, Clone)]
pub struct Shard {
    data: Dataset,
}

impl PartialEq for Shard {
    fn eq(&self, other: &Self) -> bool {
        self.data.shape() == other.data.shape()
            && self.data.classes() == other.data.classes()
            && self.data.labels() == other.data.labels()
            && self.data.images() == other.data.images()
    }
}

impl Eq for Shard {}

impl Shard {
    /// Wraps a dataset as a shard (it must fit the layout's limits).
    pub fn new(data: Dataset) -> Result<Self> {
        let s = data.shape();
        if data.is_empty() || data.len() > MAX_SHARD_SAMPLES {
            return Err(KernelError::config(
                "shard",
                format!("{} samples, need 1..={MAX_SHARD_SAMPLES}", data.len()),
            ));
        }
        if let Err(reason) = s.check_bounds() {
            return Err(KernelError::config("shard", reason));
        }
        Ok(Shard { data })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.data
    }

    /// The canonical bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let s = self.data.shape();
        let n = self.data.len();
        let images = self.data.images();
        let mut out = Vec::with_capacity(HEADER + images.len() * images.kind().bytes() + n);
        out.extend_from_slice(match images.kind() {
            PixelKind::U8 => MAGIC,
            PixelKind::F32 => MAGIC_F32,
        });
        for v in [n, s.channels, s.height, s.width, self.data.classes()] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        out.extend_from_slice(&images.to_le_bytes());
        out.extend_from_slice(self.data.labels());
        out
    }

    /// BLAKE3 of [`Shard::to_bytes`].
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }

    /// Hash of bytes as received, before decoding them.
    pub fn hash_bytes(bytes: &[u8]) -> [u8; 32] {
        *blake3::hash(bytes).as_bytes()
    }

    /// Decodes canonical bytes from an untrusted source.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let fail = |reason: String| Err(KernelError::ShardDecode(reason));
        if bytes.len() < HEADER {
            return fail(format!(
                "{} bytes, shorter than the {HEADER}-byte header",
                bytes.len()
            ));
        }
        let kind = match &bytes[..8] {
            m if m == MAGIC => PixelKind::U8,
            m if m == MAGIC_F32 => PixelKind::F32,
            other => return fail(format!("bad magic {other:02x?}")),
        };
        let field = |i: usize| {
            u32::from_le_bytes(bytes[8 + 4 * i..12 + 4 * i].try_into().expect("4 bytes")) as usize
        };
        let (n, c, h, w, k) = (field(0), field(1), field(2), field(3), field(4));
        if n == 0 || n > MAX_SHARD_SAMPLES {
            return fail(format!("{n} samples, need 1..={MAX_SHARD_SAMPLES}"));
        }
        let shape = InputShape {
            channels: c,
            height: h,
            width: w,
        };
        if let Err(reason) = shape.check_bounds() {
            return fail(format!("sample shape: {reason}"));
        }
        if !(2..=256).contains(&k) {
            return fail(format!("{k} classes, need 2..=256"));
        }
        // At most 2^20 samples of 2^22 values of 4 bytes: fits in u64.
        let values = n * c * h * w;
        let value_bytes = values * kind.bytes();
        let want = HEADER + value_bytes + n;
        if bytes.len() != want {
            return fail(format!("{} bytes, the header implies {want}", bytes.len()));
        }
        let raw = &bytes[HEADER..HEADER + value_bytes];
        let images = match kind {
            PixelKind::U8 => Pixels::U8(raw.to_vec()),
            PixelKind::F32 => Pixels::F32(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect(),
            ),
        };
        let labels = bytes[HEADER + value_bytes..].to_vec();
        if let Some(i) = labels.iter().position(|&l| l as usize >= k) {
            return fail(format!(
                "label {} of sample {i} is not below {k}",
                labels[i]
            ));
        }
        let name = format!("shard {}", hex_prefix(&Shard::hash_bytes(bytes)));
        let data = Dataset::new(name, shape, k, images, labels)
            .map_err(|e| KernelError::ShardDecode(e.to_string()))?;
        Ok(Shard { data })
    }
}

fn hex_prefix(hash: &[u8; 32]) -> String {
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Samples for Shard {
    fn shape(&self) -> InputShape {
        self.data.shape()
    }
    fn classes(&self) -> usize {
        self.data.classes()
    }
    fn len(&self) -> usize {
        self.data.len()
    }
    fn kind(&self) -> PixelKind {
        self.data.kind()
    }
    fn image(&self, i: usize) -> SampleRef<'_> {
        self.data.image(i)
    }
    fn label(&self, i: usize) -> u8 {
        self.data.label(i)
    }
}
