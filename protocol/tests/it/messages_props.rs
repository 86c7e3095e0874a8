//! Every signed message kind round-trips through encode/decode and through
//! `Signed` sign/verify; a tampered signature, payload, signer, version or
//! domain tag is rejected.

use crate::samples;

use std::fmt::Debug;

use fairgrid_protocol::codec::{decode_exact, encode};
use fairgrid_protocol::messages::{Bid, Receipt};
use fairgrid_protocol::{Keypair, ProtocolError, Signed, SignedMessage};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use samples::Gen;

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Re-reads an envelope's bytes as a message of another kind.
fn relabel<T: SignedMessage, U: SignedMessage>(signed: &Signed<T>) -> Option<Signed<U>> {
    Signed::<U>::from_bytes(&signed.to_bytes()).ok()
}

fn round_trips_and_rejects_tampering<T>(make: fn(&mut Gen) -> T)
where
    T: SignedMessage + PartialEq + Debug + Clone,
{
    runner()
        .run(&(any::<u64>(), any::<u64>()), |(seed, flip)| {
            let mut g = Gen::new(seed);
            let message = make(&mut g);
            let bytes = encode(&message);
            let back: T = decode_exact(T::KIND, &bytes, usize::MAX).unwrap();
            prop_assert_eq!(&back, &message);

            let key = Keypair::from_seed(&seed.to_le_bytes());
            let signed = Signed::sign(&key, &message);
            let wire = Signed::<T>::from_bytes(&signed.to_bytes()).unwrap();
            prop_assert_eq!(&wire, &signed);
            let (signer, decoded) = wire.verify_and_decode().unwrap();
            prop_assert_eq!(signer, key.public());
            prop_assert_eq!(&decoded, &message);

            let mut bad_sig = signed.clone();
            bad_sig.signature.0[(flip % 64) as usize] ^= 1 << (flip % 8);
            let bad_sig_refused = matches!(
                bad_sig.verify_and_decode(),
                Err(ProtocolError::BadSignature { .. })
            );
            prop_assert!(bad_sig_refused);

            if !signed.payload.is_empty() {
                let mut bad_payload = signed.clone();
                let at = (flip as usize) % bad_payload.payload.len();
                bad_payload.payload[at] ^= 1 << (flip % 8);
                prop_assert!(bad_payload.verify_and_decode().is_err());
            }

            let mut other_signer = signed.clone();
            other_signer.signer = Keypair::from_seed(b"someone else").public();
            prop_assert!(other_signer.verify_and_decode().is_err());

            let mut future = signed.clone();
            future.version += 1;
            let future_refused = matches!(
                future.verify_and_decode(),
                Err(ProtocolError::UnsupportedVersion { .. })
            );
            prop_assert!(future_refused);

            // The same signed bytes presented as another kind of message.
            if T::KIND == Receipt::KIND {
                if let Some(as_bid) = relabel::<T, Bid>(&signed) {
                    prop_assert!(as_bid.verify_signature().is_err());
                }
            } else if let Some(as_receipt) = relabel::<T, Receipt>(&signed) {
                prop_assert!(as_receipt.verify_signature().is_err());
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", T::KIND));
}

#[test]
fn every_message_kind_round_trips_and_rejects_tampering() {
    for_each_kind!(round_trips_and_rejects_tampering);
}

#[test]
fn a_signature_never_verifies_under_another_domain_tag() {
    let key = Keypair::from_seed(b"k");
    let receipt = Gen::new(3).receipt();
    let signed = Signed::sign(&key, &receipt);
    // Same payload bytes, same signature, read as a bid envelope: the
    // signature covered "fairgrid/v1/receipt", not "fairgrid/v1/bid".
    let relabelled: Signed<Bid> = Signed::from_bytes(&signed.to_bytes()).unwrap();
    assert!(matches!(
        relabelled.verify_signature(),
        Err(ProtocolError::BadSignature { kind: "bid" })
    ));
    assert!(signed.verify_signature().is_ok());
}
