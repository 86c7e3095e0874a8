//! Validation of an incoming advert, in the order that makes each
//! rejection specific: size, envelope, version, signature (and, when it
//! fails, whether it verifies under another message kind's domain tag),
//! payload, signer, time window, certificate, and the node's sequence.

use std::fmt;

use ed25519_dalek::Signature;
use fairgrid_protocol::cert::Ownership;
use fairgrid_protocol::messages::CapacityAdvert;
use fairgrid_protocol::messages::{MAX_ADVERT_LIFETIME_MS, MAX_CLOCK_SKEW_MS};
use fairgrid_protocol::{
    CertError, Hash32, PROTOCOL_VERSION, ProtocolError, Signed, SignedMessage, TrustPolicy,
    signing_input,
};

/// The domain tags of every other signed kind, to tell "signed as
/// something else" from "not signed".
const OTHER_KINDS: [&str; 9] = [
    "owner-cert",
    "revocation",
    "ledger-entry",
    "job",
    "bid",
    "allocation",
    "round-start",
    "round-update",
    "receipt",
];

/// Why an advert was refused. Each variant has a stable code for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertRejection {
    Oversized { len: usize, max: usize },
    Malformed(String),
    UnsupportedVersion(u16),
    BadSignature,
    WrongDomainTag(&'static str),
    SignerMismatch,
    Expired { expires_at: u64, now: u64 },
    NotYetValid { issued_at: u64, now: u64 },
    BadLifetime { issued_at: u64, expires_at: u64 },
    ReplayedSeq { got: u64, have: u64 },
    Uncertified(String),
    RevokedCertificate(String),
    BadCertificate(String),
    ExceedsCertificate,
}

impl AdvertRejection {
    pub const CODES: [&'static str; 14] = [
        "oversized",
        "malformed",
        "unsupported_version",
        "bad_signature",
        "wrong_domain_tag",
        "signer_mismatch",
        "expired",
        "not_yet_valid",
        "bad_lifetime",
        "replayed_seq",
        "uncertified",
        "revoked_certificate",
        "bad_certificate",
        "exceeds_certificate",
    ];

    pub fn code(&self) -> &'static str {
        use AdvertRejection::*;
        match self {
            Oversized { .. } => "oversized",
            Malformed(_) => "malformed",
            UnsupportedVersion(_) => "unsupported_version",
            BadSignature => "bad_signature",
            WrongDomainTag(_) => "wrong_domain_tag",
            SignerMismatch => "signer_mismatch",
            Expired { .. } => "expired",
            NotYetValid { .. } => "not_yet_valid",
            BadLifetime { .. } => "bad_lifetime",
            ReplayedSeq { .. } => "replayed_seq",
            Uncertified(_) => "uncertified",
            RevokedCertificate(_) => "revoked_certificate",
            BadCertificate(_) => "bad_certificate",
            ExceedsCertificate => "exceeds_certificate",
        }
    }
}

impl fmt::Display for AdvertRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use AdvertRejection::*;
        match self {
            Oversized { len, max } => write!(f, "oversized: {len} bytes, limit {max}"),
            Malformed(r) => write!(f, "malformed: {r}"),
            UnsupportedVersion(v) => write!(
                f,
                "unsupported protocol version {v} (this node speaks {PROTOCOL_VERSION})"
            ),
            BadSignature => write!(f, "bad signature"),
            WrongDomainTag(kind) => write!(
                f,
                "wrong domain tag: signed as a {kind:?} message, not an advert"
            ),
            SignerMismatch => write!(f, "signed by a key other than the node it describes"),
            Expired { expires_at, now } => write!(f, "expired at {expires_at} (now {now})"),
            NotYetValid { issued_at, now } => {
                write!(f, "not yet valid: issued at {issued_at}, now {now}")
            }
            BadLifetime {
                issued_at,
                expires_at,
            } => write!(
                f,
                "lifetime {issued_at}..{expires_at} is empty or over 24 h"
            ),
            ReplayedSeq { got, have } => {
                write!(f, "replayed or lower seq {got} (already have {have})")
            }
            Uncertified(r) => write!(f, "uncertified in consortium mode: {r}"),
            RevokedCertificate(r) => write!(f, "revoked certificate: {r}"),
            BadCertificate(r) => write!(f, "invalid certificate: {r}"),
            ExceedsCertificate => write!(f, "offers more than its certificate allows"),
        }
    }
}

/// An advert that passed every check.
#[derive(Debug, Clone)]
pub struct AcceptedAdvert {
    pub id: Hash32,
    pub signed: Signed<CapacityAdvert>,
    pub advert: CapacityAdvert,
    pub ownership: Ownership,
}

/// Validates `data` at time `now`. `last_seq` is the highest seq already
/// accepted from the advert's node (None if none).
pub fn validate_advert(
    data: &[u8],
    now: u64,
    policy: &TrustPolicy,
    last_seq: impl FnOnce(&fairgrid_protocol::NodeId) -> Option<u64>,
) -> Result<AcceptedAdvert, AdvertRejection> {
    use AdvertRejection::*;
    let max = Signed::<CapacityAdvert>::max_envelope_bytes();
    if data.len() > max {
        return Err(Oversized {
            len: data.len(),
            max,
        });
    }
    let signed = Signed::<CapacityAdvert>::from_bytes(data).map_err(|e| match e {
        ProtocolError::Oversized { len, max, .. } => Oversized { len, max },
        other => Malformed(other.to_string()),
    })?;
    if let Err(e) = signed.verify_signature() {
        return Err(match e {
            ProtocolError::UnsupportedVersion { got, .. } => UnsupportedVersion(got),
            ProtocolError::Oversized { len, max, .. } => Oversized { len, max },
            ProtocolError::BadSignature { .. } => match other_kind_tag(&signed) {
                Some(kind) => WrongDomainTag(kind),
                None => BadSignature,
            },
            _ => BadSignature,
        });
    }
    let advert: CapacityAdvert = fairgrid_protocol::codec::decode_exact(
        CapacityAdvert::KIND,
        &signed.payload,
        CapacityAdvert::MAX_BYTES,
    )
    .map_err(|e| Malformed(e.to_string()))?;
    if signed.signer != advert.node.0 {
        return Err(SignerMismatch);
    }
    if advert.expires_at <= advert.issued_at
        || advert.expires_at - advert.issued_at > MAX_ADVERT_LIFETIME_MS
    {
        return Err(BadLifetime {
            issued_at: advert.issued_at,
            expires_at: advert.expires_at,
        });
    }
    if advert.issued_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(NotYetValid {
            issued_at: advert.issued_at,
            now,
        });
    }
    if advert.expires_at <= now {
        return Err(Expired {
            expires_at: advert.expires_at,
            now,
        });
    }
    // The protocol's own stateless check must agree with the above.
    CapacityAdvert::check(&signed, now).map_err(|e| Malformed(e.to_string()))?;
    let ownership = policy
        .resolve_owner(&advert.node, advert.owner_cert.as_ref(), now)
        .map_err(|e| match e {
            CertError::Revoked { .. } => RevokedCertificate(e.to_string()),
            CertError::Missing | CertError::NotAllowlisted { .. } => Uncertified(e.to_string()),
            other => BadCertificate(other.to_string()),
        })?;
    if let Some(max) = &ownership.max_capacity
        && fairgrid_protocol::ResourceVec::min(&advert.offered, max) != advert.offered
    {
        return Err(ExceedsCertificate);
    }
    if let Some(have) = last_seq(&advert.node)
        && advert.seq <= have
    {
        return Err(ReplayedSeq {
            got: advert.seq,
            have,
        });
    }
    Ok(AcceptedAdvert {
        id: Hash32::of(data),
        signed,
        advert,
        ownership,
    })
}

/// The kind whose domain tag the signature verifies under, if any.
fn other_kind_tag(signed: &Signed<CapacityAdvert>) -> Option<&'static str> {
    let key = signed.signer.verifying_key()?;
    let signature = Signature::from_bytes(&signed.signature.0);
    OTHER_KINDS.into_iter().find(|kind| {
        key.verify_strict(
            &signing_input(kind, signed.version, &signed.payload),
            &signature,
        )
        .is_ok()
    })
}

#[cfg(test)]
mod tests;
