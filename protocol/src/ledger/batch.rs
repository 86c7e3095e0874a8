//! Batch verification of many ed25519 signatures by one signer.
//!
//! A chain has one author, so its signatures share the public key `A`.
//! ed25519-dalek's `verify_batch` checks, for random 128-bit `z_i`,
//!
//! ```text
//! -(sum z_i s_i) B + sum z_i R_i + sum (z_i h_i) A_i = 0,  h_i = SHA-512(R_i || A_i || M_i)
//! ```
//!
//! as one multiscalar multiplication over `2n + 1` points. With every
//! `A_i = A` the last sum is `(sum z_i h_i) A`, one point instead of `n`
//! full-width ones, which roughly halves the cost; that is all this module
//! changes. It is exact only when `A` lies in the prime-order subgroup
//! (scalars are reduced mod l), so a key with a torsion component, or of
//! small order, is not batched ([`SignerKey::batchable`]) and its
//! signatures are checked one by one by the caller.
//!
//! The `z_i` come from a BLAKE3 transcript of every input (the key, every
//! `h_i`, which covers `R_i` and the message, and every `s_i`), as
//! ed25519-dalek derives its own: a signer cannot choose signatures after
//! seeing them. Beyond dalek's batch, `R_i` must be canonically encoded and
//! not of small order, as `verify_strict` requires. As with any ed25519 batch
//! equation, a signature the key's owner crafts with a small-order part in
//! `R` can pass a batch that `verify_strict` would refuse; nobody without
//! the secret key can make one.

use std::iter::once;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

use crate::identity::{PublicKey, SignatureBytes};

/// Domain of the transcript the batch's random coefficients come from.
const TRANSCRIPT_CONTEXT: &str = "fairgrid 2026 ledger same-signer ed25519 batch v1";

/// A signer's public key, decompressed once for a whole chain.
pub(crate) struct SignerKey {
    bytes: [u8; 32],
    point: EdwardsPoint,
    batchable: bool,
}

impl SignerKey {
    /// None when the bytes are not a curve point (no signature by them can
    /// verify).
    pub(crate) fn new(key: &PublicKey) -> Option<SignerKey> {
        let point = CompressedEdwardsY(key.0).decompress()?;
        let batchable = canonical_y(&key.0) && !point.is_small_order() && point.is_torsion_free();
        Some(SignerKey {
            bytes: key.0,
            point,
            batchable,
        })
    }

    /// Whether [`verify_same_signer`] may be used for this key.
    pub(crate) fn batchable(&self) -> bool {
        self.batchable
    }
}

/// Whether a compressed point's y coordinate is below p = 2^255 - 19.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    let top_all_ones = bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff);
    !(top_all_ones && bytes[0] >= 0xed)
}

/// True when every `(message, signature)` verifies under `key`, where
/// each message is `prefix` followed by the item's bytes. False when at
/// least one does not (the caller then finds which, one by one). `key`
/// must be [`batchable`](SignerKey::batchable).
pub(crate) fn verify_same_signer(
    key: &SignerKey,
    prefix: &[u8],
    items: &[(&[u8], &SignatureBytes)],
) -> bool {
    debug_assert!(key.batchable);
    let mut transcript = blake3::Hasher::new_derive_key(TRANSCRIPT_CONTEXT);
    transcript.update(&key.bytes);
    transcript.update(&(items.len() as u64).to_le_bytes());
    let mut hrams = Vec::with_capacity(items.len());
    let mut ss = Vec::with_capacity(items.len());
    for (message, signature) in items {
        let (r, s) = signature.0.split_at(32);
        let s: [u8; 32] = s.try_into().expect("a signature is 64 bytes");
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
            return false;
        };
        let hram: [u8; 64] = Sha512::new()
            .chain_update(r)
            .chain_update(key.bytes)
            .chain_update(prefix)
            .chain_update(message)
            .finalize()
            .into();
        transcript.update(&hram);
        transcript.update(s.as_bytes());
        hrams.push(Scalar::from_bytes_mod_order_wide(&hram));
        ss.push(s);
    }
    let mut rng = transcript.finalize_xof();
    let mut b_coefficient = Scalar::ZERO;
    let mut a_coefficient = Scalar::ZERO;
    let mut zs = Vec::with_capacity(items.len());
    for (s, hram) in ss.iter().zip(&hrams) {
        let mut z = [0u8; 16];
        rng.fill(&mut z);
        let z = Scalar::from(u128::from_le_bytes(z));
        b_coefficient += z * s;
        a_coefficient += z * hram;
        zs.push(z);
    }
    let mut rs = Vec::with_capacity(items.len());
    for (_, signature) in items {
        let r: [u8; 32] = signature.0[..32]
            .try_into()
            .expect("a signature is 64 bytes");
        if !canonical_y(&r) {
            return false;
        }
        match CompressedEdwardsY(r).decompress() {
            Some(point) if !point.is_small_order() => rs.push(point),
            _ => return false,
        }
    }
    EdwardsPoint::vartime_multiscalar_mul(
        once(-b_coefficient).chain(once(a_coefficient)).chain(zs),
        once(ED25519_BASEPOINT_POINT)
            .chain(once(key.point))
            .chain(rs),
    )
    .is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;
    use crate::signed::signing_input;

    const PREFIX: &[u8] = b"prefix/";

    /// Changes a batch of `(message, signature)` items.
    type Damage = dyn Fn(&mut Vec<(Vec<u8>, SignatureBytes)>);

    fn signed(key: &Keypair, n: usize) -> Vec<(Vec<u8>, SignatureBytes)> {
        (0..n)
            .map(|i| {
                let message = format!("message {i}").into_bytes();
                let mut input = PREFIX.to_vec();
                input.extend_from_slice(&message);
                (message, key.sign(&input))
            })
            .collect()
    }

    fn check(key: &Keypair, items: &[(Vec<u8>, SignatureBytes)]) -> bool {
        let signer = SignerKey::new(&key.public()).unwrap();
        assert!(signer.batchable());
        let refs: Vec<(&[u8], &SignatureBytes)> =
            items.iter().map(|(m, s)| (m.as_slice(), s)).collect();
        verify_same_signer(&signer, PREFIX, &refs)
    }

    /// What `verify_strict` says of each item, for comparison.
    fn strict(key: &Keypair, items: &[(Vec<u8>, SignatureBytes)]) -> bool {
        let vk = key.public().verifying_key().unwrap();
        items.iter().all(|(m, s)| {
            let mut input = PREFIX.to_vec();
            input.extend_from_slice(m);
            vk.verify_strict(&input, &ed25519_dalek::Signature::from_bytes(&s.0))
                .is_ok()
        })
    }

    #[test]
    fn a_valid_batch_passes_and_each_kind_of_damage_fails_it() {
        let key = Keypair::from_seed(b"batch");
        let good = signed(&key, 300);
        assert!(check(&key, &good));
        assert!(check(&key, &good[..1]));

        let damage: Vec<(&str, Box<Damage>)> = vec![
            ("flipped bit in s", Box::new(|b| b[123].1.0[40] ^= 1)),
            ("flipped bit in R", Box::new(|b| b[7].1.0[3] ^= 1)),
            ("changed message", Box::new(|b| b[299].0.push(0))),
            (
                "signatures swapped",
                Box::new(|b| {
                    let s = b[1].1;
                    b[1].1 = b[2].1;
                    b[2].1 = s;
                }),
            ),
            (
                "s + l (non-canonical scalar)",
                Box::new(|b| {
                    // l = 2^252 + 27742317777372353535851937790883648493
                    let l: [u8; 32] = [
                        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2,
                        0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
                    ];
                    let s = &mut b[50].1.0[32..];
                    let mut carry = 0u16;
                    for (x, y) in s.iter_mut().zip(l) {
                        let sum = *x as u16 + y as u16 + carry;
                        *x = sum as u8;
                        carry = sum >> 8;
                    }
                }),
            ),
            (
                "small-order R (identity)",
                Box::new(|b| {
                    b[9].1.0[..32].copy_from_slice(&{
                        let mut id = [0u8; 32];
                        id[0] = 1;
                        id
                    })
                }),
            ),
            (
                "non-canonical R encoding",
                Box::new(|b| b[11].1.0[..32].copy_from_slice(&[0xff; 32])),
            ),
            (
                "signed by another key",
                Box::new(|b| {
                    let other = signed(&Keypair::from_seed(b"other"), 300);
                    b[200] = other[200].clone();
                }),
            ),
        ];
        for (what, damage) in damage {
            let mut bad = good.clone();
            damage(&mut bad);
            assert!(!check(&key, &bad), "{what} passed the batch");
            assert!(!strict(&key, &bad), "{what} passed verify_strict");
        }
    }

    #[test]
    fn the_batch_agrees_with_verify_strict_on_real_envelopes() {
        let key = Keypair::from_seed(b"envelopes");
        let prefix = signing_input("ledger-entry", crate::PROTOCOL_VERSION, &[]);
        let payloads: Vec<Vec<u8>> = (0..64u32).map(|i| i.to_le_bytes().repeat(20)).collect();
        let sigs: Vec<SignatureBytes> = payloads
            .iter()
            .map(|p| key.sign(&signing_input("ledger-entry", crate::PROTOCOL_VERSION, p)))
            .collect();
        let signer = SignerKey::new(&key.public()).unwrap();
        let items: Vec<(&[u8], &SignatureBytes)> =
            payloads.iter().map(Vec::as_slice).zip(&sigs).collect();
        assert!(verify_same_signer(&signer, &prefix, &items));
        assert!(!verify_same_signer(&signer, &prefix[1..], &items));
    }

    #[test]
    fn keys_outside_the_prime_order_subgroup_are_not_batched() {
        // The identity point (small order) and a point with a torsion part:
        // the basepoint plus a point of order 8.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = SignerKey::new(&PublicKey(identity)).unwrap();
        assert!(!weak.batchable());

        let torsion = curve25519_dalek::constants::EIGHT_TORSION[1];
        let mixed = (ED25519_BASEPOINT_POINT + torsion).compress().to_bytes();
        assert!(!SignerKey::new(&PublicKey(mixed)).unwrap().batchable());

        let honest = Keypair::from_seed(b"honest").public();
        assert!(SignerKey::new(&honest).unwrap().batchable());
        assert!(canonical_y(&honest.0));
        assert!(!canonical_y(&[0xff; 32]));
        let mut p = [0xff; 32];
        p[0] = 0xec; // p - 1 is canonical, p is not
        assert!(canonical_y(&p));
        p[0] = 0xed;
        assert!(!canonical_y(&p));
    }
}
