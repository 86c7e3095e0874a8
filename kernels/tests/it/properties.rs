//! Property tests: round-trips hold for all inputs, and decoders of
//! untrusted bytes never panic, whatever the bytes.

use fairgrid_kernels::data::idx::parse_idx;
use fairgrid_kernels::{Compression, Compressor, Dataset, InputShape, Shard, decode_update};
use proptest::prelude::*;

fn scheme() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::Fp32),
        (1u32..600).prop_map(|block| Compression::Int8 { block }),
        (1u32..=1000).prop_map(|permille| Compression::TopK { permille }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn encoded_updates_decode_within_their_error_bound(
        values in prop::collection::vec(-1e3f32..1e3, 1..700),
        scheme in scheme(),
    ) {
        let mut c = Compressor::new(scheme).unwrap();
        let bytes = c.encode(&values).unwrap();
        prop_assert_eq!(bytes.len(), scheme.encoded_len(values.len()));
        let back = decode_update(&bytes, values.len()).unwrap();
        // Whatever was not sent is exactly what the residual holds.
        for ((v, b), r) in values.iter().zip(&back).zip(c.residual()) {
            prop_assert!((v - b - r).abs() <= 1e-3 * v.abs().max(1.0), "{} {} {}", v, b, r);
        }
        match scheme {
            Compression::Fp32 => prop_assert_eq!(&back, &values),
            Compression::Int8 { block } => {
                for (chunk, back_chunk) in values.chunks(block as usize).zip(back.chunks(block as usize)) {
                    let max = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    for (v, b) in chunk.iter().zip(back_chunk) {
                        prop_assert!((v - b).abs() <= max / 254.0 * 1.001 + 1e-30);
                    }
                }
            }
            Compression::TopK { .. } => {}
        }
    }

    #[test]
    fn update_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), len in 0usize..64) {
        let _ = decode_update(&bytes, len);
    }

    #[test]
    fn shard_round_trips(n in 1usize..20, c in 1usize..4, h in 1usize..6, w in 1usize..6, k in 2usize..12, seed: u64) {
        let mut rng = fairgrid_kernels::rng::SplitMix64::new(seed);
        let images: Vec<u8> = (0..n * c * h * w).map(|_| rng.below(256) as u8).collect();
        let labels = (0..n).map(|_| rng.below(k as u64) as u8).collect();
        let shape = InputShape { channels: c, height: h, width: w };
        let shard = Shard::new(Dataset::new("p", shape, k, images, labels).unwrap()).unwrap();
        let bytes = shard.to_bytes();
        let back = Shard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(back.hash(), shard.hash());
        prop_assert_eq!(back, shard);
    }

    #[test]
    fn shard_and_idx_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Shard::from_bytes(&bytes);
        let _ = parse_idx(&bytes, "fuzz");
        let mut with_magic = b"FGSHARD1".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = Shard::from_bytes(&with_magic);
        let mut idx = vec![0, 0, 8, (bytes.len() % 5) as u8];
        idx.extend_from_slice(&bytes);
        let _ = parse_idx(&idx, "fuzz");
    }
}
