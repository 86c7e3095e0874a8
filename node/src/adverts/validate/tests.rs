use std::collections::BTreeSet;

use fairgrid_protocol::{Keypair, OwnerCertificate, ResourceVec, Signed, TrustPolicy};

use super::*;
use crate::adverts::forge::{self, Forgery};

const NOW: u64 = 1_700_000_000_000;

fn cert(owner: &Keypair, node: &Keypair, serial: u64, cpu_max: u64) -> Signed<OwnerCertificate> {
    Signed::sign(
        owner,
        &OwnerCertificate {
            node: node.node_id(),
            owner: owner.owner_id(),
            label: "Univ A".into(),
            max_capacity: ResourceVec {
                cpu_milli: cpu_max,
                mem_mib: 1 << 20,
                ..Default::default()
            },
            valid_from: NOW - 1000,
            valid_until: NOW + 1_000_000,
            serial,
        },
    )
}

#[test]
fn each_forgery_is_rejected_with_its_own_reason() {
    let key = Keypair::from_seed(b"hostile");
    let policy = TrustPolicy::default();
    for forgery in Forgery::ALL {
        let bytes = forge::forge(forgery, &key, 5, NOW);
        let err = validate_advert(&bytes, NOW, &policy, |_| None).unwrap_err();
        assert_eq!(err.code(), forgery.expected_code(), "{forgery:?}: {err}");
    }
    assert!(validate_advert(&forge::good(&key, 5, NOW, 60_000), NOW, &policy, |_| None).is_ok());
}

#[test]
fn replayed_and_lower_seqs_are_rejected() {
    let key = Keypair::from_seed(b"n");
    let policy = TrustPolicy::default();
    let bytes = forge::good(&key, 7, NOW, 60_000);
    let err = validate_advert(&bytes, NOW, &policy, |_| Some(7)).unwrap_err();
    assert!(matches!(
        err,
        AdvertRejection::ReplayedSeq { got: 7, have: 7 }
    ));
    assert!(validate_advert(&bytes, NOW, &policy, |_| Some(6)).is_ok());
}

#[test]
fn certificates_decide_in_consortium_mode_and_revocation_bites() {
    let owner = Keypair::from_seed(b"owner");
    let node = Keypair::from_seed(b"node");
    let good_cert = cert(&owner, &node, 3, 4000);
    let mut policy = TrustPolicy {
        consortium: true,
        allowlist: BTreeSet::from([owner.owner_id()]),
        ..Default::default()
    };
    let uncertified = forge::good(&node, 1, NOW, 60_000);
    let err = validate_advert(&uncertified, NOW, &policy, |_| None).unwrap_err();
    assert_eq!(err.code(), "uncertified", "{err}");

    let certified = forge::certified(&node, good_cert.clone(), 1, NOW, 60_000);
    let ok = validate_advert(&certified, NOW, &policy, |_| None).unwrap();
    assert_eq!(ok.ownership.owner, owner.owner_id());

    let stranger = Keypair::from_seed(b"stranger");
    let foreign_cert = forge::certified(&node, cert(&stranger, &node, 1, 4000), 1, NOW, 60_000);
    let err = validate_advert(&foreign_cert, NOW, &policy, |_| None).unwrap_err();
    assert_eq!(err.code(), "uncertified", "{err}");

    policy.revoked.insert((owner.owner_id(), 3));
    let err = validate_advert(&certified, NOW, &policy, |_| None).unwrap_err();
    assert_eq!(err.code(), "revoked_certificate", "{err}");

    // The advert offers 2000 cpu_milli; a certificate capping it at 1000 refuses it.
    let small = forge::certified(&node, cert(&owner, &node, 4, 1000), 1, NOW, 60_000);
    let err = validate_advert(&small, NOW, &TrustPolicy::default(), |_| None).unwrap_err();
    assert_eq!(err.code(), "exceeds_certificate", "{err}");

    // A certificate for another node.
    let other = Keypair::from_seed(b"other");
    let stolen = forge::certified(&other, good_cert, 1, NOW, 60_000);
    let err = validate_advert(&stolen, NOW, &TrustPolicy::default(), |_| None).unwrap_err();
    assert_eq!(err.code(), "bad_certificate", "{err}");
}

#[test]
fn random_bytes_are_rejected_never_panic() {
    use rand::{Rng, RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let good = forge::good(&Keypair::from_seed(b"n"), 1, NOW, 60_000);
    for _ in 0..3000 {
        let mut bytes = if rng.random_bool(0.5) {
            let mut b = vec![0u8; rng.random_range(0..400)];
            rng.fill_bytes(&mut b);
            b
        } else {
            good.clone()
        };
        if !bytes.is_empty() {
            let i = rng.random_range(0..bytes.len());
            bytes[i] ^= 1 << rng.random_range(0..8);
        }
        assert!(validate_advert(&bytes, NOW, &TrustPolicy::default(), |_| None).is_err());
    }
}
