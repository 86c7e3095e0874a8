//! Hostile bytes for every message kind: random, truncated and oversized
//! inputs and length prefixes claiming 2^32 elements return errors; nothing
//! panics and memory stays bounded.

use crate::samples;

use fairgrid_protocol::codec::{decode_exact, encode};
use fairgrid_protocol::{ProtocolError, Signed, SignedMessage};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use samples::Gen;

/// bincode varints claiming 2^32 (u64 form) and 2^32 - 1 (u32 form) elements.
const HUGE_PREFIXES: [&[u8]; 2] = [
    &[253, 0, 0, 0, 0, 1, 0, 0, 0],
    &[252, 0xff, 0xff, 0xff, 0xff],
];

/// Peak resident memory of this process, from /proc (Linux), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn survives_hostile_bytes<T: SignedMessage>(make: fn(&mut Gen) -> T) {
    let kind = T::KIND;
    // Random bytes, as an envelope and as a payload.
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..4096), |bytes| {
            if let Ok(envelope) = Signed::<T>::from_bytes(&bytes) {
                prop_assert!(envelope.verify_and_decode().is_err());
            }
            let _ = decode_exact::<T>(kind, &bytes, T::MAX_BYTES);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{kind}: {e}"));

    for seed in 0..4u64 {
        let message = make(&mut Gen::new(seed));
        let payload = encode(&message);
        let key = fairgrid_protocol::Keypair::from_seed(b"hostile");
        let envelope = Signed::sign(&key, &message).to_bytes();

        // Every strict prefix is an error.
        let stride = (payload.len() / 200).max(1);
        for n in (0..payload.len()).step_by(stride) {
            assert!(
                decode_exact::<T>(kind, &payload[..n], T::MAX_BYTES).is_err(),
                "{kind}: prefix {n}"
            );
        }
        for n in (0..envelope.len()).step_by((envelope.len() / 200).max(1)) {
            assert!(
                Signed::<T>::from_bytes(&envelope[..n]).is_err(),
                "{kind}: envelope prefix {n}"
            );
        }

        // A huge length prefix spliced in anywhere: no panic, no huge allocation.
        for prefix in HUGE_PREFIXES {
            for at in (0..=payload.len()).step_by(stride) {
                let mut spliced = payload[..at].to_vec();
                spliced.extend_from_slice(prefix);
                spliced.extend_from_slice(&payload[at..]);
                let _ = decode_exact::<T>(kind, &spliced, T::MAX_BYTES);
                let mut replaced = payload.clone();
                let end = (at + prefix.len()).min(replaced.len());
                replaced.splice(at..end, prefix.iter().copied());
                let _ = decode_exact::<T>(kind, &replaced, T::MAX_BYTES);
            }
            // Envelope whose payload claims 2^32 bytes: version, signer, length.
            let mut claim = vec![1u8];
            claim.extend_from_slice(&[7u8; 32]);
            claim.extend_from_slice(prefix);
            claim.extend_from_slice(&[0u8; 64]);
            assert!(
                Signed::<T>::from_bytes(&claim).is_err(),
                "{kind}: 2^32-byte payload claim"
            );
        }
    }

    // Oversized: one byte past the limit, as a payload and as an envelope.
    let big = vec![0u8; T::MAX_BYTES + 1];
    assert!(matches!(
        decode_exact::<T>(kind, &big, T::MAX_BYTES),
        Err(ProtocolError::Oversized { .. })
    ));
    let mut signed = Signed::sign(
        &fairgrid_protocol::Keypair::from_seed(b"x"),
        &make(&mut Gen::new(9)),
    );
    signed.payload = big;
    assert!(matches!(
        signed.verify_and_decode(),
        Err(ProtocolError::Oversized { .. })
    ));
    match Signed::<T>::from_bytes(&signed.to_bytes()) {
        Ok(envelope) => assert!(matches!(
            envelope.verify_and_decode(),
            Err(ProtocolError::Oversized { .. })
        )),
        Err(e) => assert!(matches!(e, ProtocolError::Oversized { .. }), "{kind}: {e}"),
    }
    let huge = vec![0u8; Signed::<T>::max_envelope_bytes() + 1];
    assert!(matches!(
        Signed::<T>::from_bytes(&huge),
        Err(ProtocolError::Oversized { .. })
    ));
}

#[test]
fn every_message_kind_survives_hostile_bytes_in_bounded_memory() {
    let before = peak_rss_kib();
    for_each_kind!(survives_hostile_bytes);
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        // The biggest legitimate buffer here is one 17 MiB oversized entry.
        assert!(
            after - before < 256 * 1024,
            "peak RSS grew from {before} KiB to {after} KiB"
        );
    }
}
