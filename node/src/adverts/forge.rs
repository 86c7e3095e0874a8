//! Adverts, good and deliberately bad, for tests, benchmarks and the
//! hostile-peer scenarios. Nothing in the daemon uses this module.

use fairgrid_protocol::messages::{CapacityAdvert, GpuInfo, Hardware};
use fairgrid_protocol::{Keypair, OwnerCertificate, ResourceVec, Signed, signing_input};

/// The kinds of bad advert a hostile peer can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    BadSignature,
    WrongDomainTag,
    Expired,
    NotYetValid,
    Oversized,
    Malformed,
    SignerMismatch,
}

impl Forgery {
    pub const ALL: [Forgery; 7] = [
        Forgery::BadSignature,
        Forgery::WrongDomainTag,
        Forgery::Expired,
        Forgery::NotYetValid,
        Forgery::Oversized,
        Forgery::Malformed,
        Forgery::SignerMismatch,
    ];

    /// The rejection code a receiver must report.
    pub fn expected_code(self) -> &'static str {
        match self {
            Forgery::BadSignature => "bad_signature",
            Forgery::WrongDomainTag => "wrong_domain_tag",
            Forgery::Expired => "expired",
            Forgery::NotYetValid => "not_yet_valid",
            Forgery::Oversized => "oversized",
            Forgery::Malformed => "malformed",
            Forgery::SignerMismatch => "signer_mismatch",
        }
    }
}

/// A plausible advert for `key`'s node.
pub fn advert(
    key: &Keypair,
    cert: Option<Signed<OwnerCertificate>>,
    seq: u64,
    issued_at: u64,
    lifetime_ms: u64,
) -> CapacityAdvert {
    CapacityAdvert {
        node: key.node_id(),
        owner_cert: cert,
        hardware: Hardware {
            cpu_cores: 4,
            cpu_gflops: 50,
            mem_mib: 8192,
            gpus: Vec::new(),
        },
        offered: ResourceVec {
            cpu_milli: 2000,
            mem_mib: 4096,
            ..Default::default()
        },
        price_floor: 0,
        seq,
        issued_at,
        expires_at: issued_at + lifetime_ms,
        reach: fairgrid_protocol::messages::Reach::Unknown,
    }
}

/// The wire bytes of a correctly signed advert.
pub fn good(key: &Keypair, seq: u64, now: u64, lifetime_ms: u64) -> Vec<u8> {
    Signed::sign(key, &advert(key, None, seq, now, lifetime_ms)).to_bytes()
}

/// The wire bytes of a correctly signed advert carrying a certificate.
pub fn certified(
    key: &Keypair,
    cert: Signed<OwnerCertificate>,
    seq: u64,
    now: u64,
    lifetime_ms: u64,
) -> Vec<u8> {
    Signed::sign(key, &advert(key, Some(cert), seq, now, lifetime_ms)).to_bytes()
}

/// The wire bytes of a bad advert of kind `forgery`, signed by `key`.
pub fn forge(forgery: Forgery, key: &Keypair, seq: u64, now: u64) -> Vec<u8> {
    let hour = 3_600_000;
    match forgery {
        Forgery::BadSignature => {
            let mut signed = Signed::sign(key, &advert(key, None, seq, now, hour));
            signed.signature.0[10] ^= 0x40;
            signed.to_bytes()
        }
        Forgery::WrongDomainTag => {
            let mut signed = Signed::sign(key, &advert(key, None, seq, now, hour));
            signed.signature = key.sign(&signing_input("bid", signed.version, &signed.payload));
            signed.to_bytes()
        }
        Forgery::Expired => {
            Signed::sign(key, &advert(key, None, seq, now - 2 * hour, hour)).to_bytes()
        }
        Forgery::NotYetValid => {
            Signed::sign(key, &advert(key, None, seq, now + 2 * hour, hour)).to_bytes()
        }
        Forgery::Oversized => {
            let mut a = advert(key, None, seq, now, hour);
            a.hardware.gpus = (0..48)
                .map(|i| GpuInfo {
                    model: format!("{i:0>240}"),
                    mem_mib: 1,
                    gflops: 1,
                })
                .collect();
            Signed::sign(key, &a).to_bytes()
        }
        Forgery::Malformed => {
            let mut bytes = good(key, seq, now, hour);
            bytes.truncate(bytes.len() / 2);
            bytes
        }
        Forgery::SignerMismatch => {
            let other = Keypair::from_seed(b"someone else's node");
            Signed::sign(key, &advert(&other, None, seq, now, hour)).to_bytes()
        }
    }
}
