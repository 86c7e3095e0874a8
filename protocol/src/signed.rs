//! `Signed<T>`: a payload signed under a per-kind domain tag.
//!
//! The signature covers `fairgrid/v1/<kind>`, a zero byte, the protocol
//! version and the payload bytes, so a signature made for one kind of
//! message can never be replayed as another kind.

use std::fmt;
use std::marker::PhantomData;

use ed25519_dalek::Signature;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{decode_exact, encode};
use crate::error::{ProtocolError, Result};
use crate::identity::{Keypair, PublicKey, SignatureBytes};
use crate::{Hash32, PROTOCOL_VERSION};

/// A message kind that travels signed.
pub trait SignedMessage: Serialize + DeserializeOwned {
    /// Short name used in the domain tag and in errors, e.g. `"advert"`.
    const KIND: &'static str;
    /// Largest accepted payload, in bytes.
    const MAX_BYTES: usize;
}

/// Bytes the envelope adds around the payload (version, key, signature,
/// length prefix), rounded up.
const ENVELOPE_OVERHEAD: usize = 128;

/// A signed payload of type `T`. Construct with [`Signed::sign`]; read with
/// [`Signed::verify_and_decode`].
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    pub version: u16,
    pub signer: PublicKey,
    pub payload: Vec<u8>,
    pub signature: SignatureBytes,
    #[serde(skip)]
    marker: PhantomData<fn() -> T>,
}

impl<T: SignedMessage> Signed<T> {
    pub fn sign(keypair: &Keypair, message: &T) -> Self {
        Self::sign_with_version(keypair, message, PROTOCOL_VERSION)
    }

    /// Signs under an explicit version (tests use this to make messages
    /// from the future).
    pub fn sign_with_version(keypair: &Keypair, message: &T, version: u16) -> Self {
        let payload = encode(message);
        let signature = keypair.sign(&signing_input(T::KIND, version, &payload));
        Signed {
            version,
            signer: keypair.public(),
            payload,
            signature,
            marker: PhantomData,
        }
    }

    /// Signs bytes that are already the canonical encoding of a `T`, so a
    /// caller can encode (cheap, in order) apart from signing (costly, on
    /// any thread). The ledger's writer signs a batch of entries this way.
    pub(crate) fn sign_encoded(keypair: &Keypair, payload: Vec<u8>) -> Self {
        let signature = keypair.sign(&signing_input(T::KIND, PROTOCOL_VERSION, &payload));
        Signed {
            version: PROTOCOL_VERSION,
            signer: keypair.public(),
            payload,
            signature,
            marker: PhantomData,
        }
    }

    /// Checks the version, the size, the signature under `T`'s domain tag,
    /// and decodes the payload exactly. Nothing is returned unless all pass.
    pub fn verify_and_decode(&self) -> Result<(PublicKey, T)> {
        self.verify_signature()?;
        let message = decode_exact(T::KIND, &self.payload, T::MAX_BYTES)?;
        Ok((self.signer, message))
    }

    /// Signature and version checks only (the payload is not decoded).
    pub fn verify_signature(&self) -> Result<()> {
        let kind = T::KIND;
        if self.version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion {
                kind,
                got: self.version,
                supported: PROTOCOL_VERSION,
            });
        }
        if self.payload.len() > T::MAX_BYTES {
            return Err(ProtocolError::Oversized {
                kind,
                len: self.payload.len(),
                max: T::MAX_BYTES,
            });
        }
        let key = self
            .signer
            .verifying_key()
            .ok_or(ProtocolError::BadPublicKey { kind })?;
        let signature = Signature::from_bytes(&self.signature.0);
        key.verify_strict(&self.signing_input(), &signature)
            .map_err(|_| ProtocolError::BadSignature { kind })
    }

    /// The exact bytes the signature covers.
    pub fn signing_input(&self) -> Vec<u8> {
        signing_input(T::KIND, self.version, &self.payload)
    }

    /// Canonical encoding of the whole envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes an envelope (not yet verified) from untrusted bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        decode_exact(T::KIND, bytes, Self::max_envelope_bytes())
    }

    pub fn max_envelope_bytes() -> usize {
        T::MAX_BYTES + ENVELOPE_OVERHEAD
    }

    /// The message id: BLAKE3 of the envelope's canonical bytes.
    pub fn id(&self) -> Hash32 {
        Hash32::of(&self.to_bytes())
    }
}

/// The domain-separated bytes a signature covers.
pub fn signing_input(kind: &str, version: u16, payload: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(16 + kind.len() + 3 + payload.len());
    input.extend_from_slice(b"fairgrid/v1/");
    input.extend_from_slice(kind.as_bytes());
    input.push(0);
    input.extend_from_slice(&version.to_le_bytes());
    input.extend_from_slice(payload);
    input
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Signed {
            version: self.version,
            signer: self.signer,
            payload: self.payload.clone(),
            signature: self.signature,
            marker: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.signer == other.signer
            && self.payload == other.payload
            && self.signature == other.signature
    }
}

impl<T> Eq for Signed<T> {}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("kind", &std::any::type_name::<T>())
            .field("signer", &self.signer)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}
