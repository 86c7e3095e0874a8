//! Keys and identities: ed25519 public keys, node and owner ids, keypairs.
//!
//! A node's key is also its libp2p identity, so [`NodeId::to_peer_id_string`]
//! produces exactly the `12D3KooW...` PeerId that libp2p prints for it.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::bytes::fixed_bytes;

fixed_bytes!(
    /// A raw ed25519 public key (32 bytes). Not checked to be a valid curve
    /// point until it verifies something.
    PublicKey,
    32
);

fixed_bytes!(
    /// A raw ed25519 signature (64 bytes).
    SignatureBytes,
    64
);

impl PublicKey {
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
}

/// Protobuf header of a libp2p ed25519 public key (`KeyType = Ed25519`,
/// 32-byte data field), prefixed by the identity-multihash header.
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// A node: one running daemon, identified by its node key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub PublicKey);

/// An owner: an institution or person with an owner key. Market caps count
/// by owner, never by node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OwnerId(pub PublicKey);

impl NodeId {
    /// The node's libp2p PeerId in its usual base58 form.
    pub fn to_peer_id_string(&self) -> String {
        let mut bytes = Vec::with_capacity(38);
        bytes.extend_from_slice(&PEER_ID_PREFIX);
        bytes.extend_from_slice(&self.0.0);
        bs58::encode(bytes).into_string()
    }

    /// Parses a base58 PeerId of an ed25519 key (the `12D3KooW...` form).
    pub fn from_peer_id_string(s: &str) -> Result<Self, IdParseError> {
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|_| IdParseError::NotBase58)?;
        if bytes.len() != 38 || bytes[..6] != PEER_ID_PREFIX {
            return Err(IdParseError::NotEd25519PeerId);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[6..]);
        Ok(NodeId(PublicKey(key)))
    }

    /// A node that has no certificate is its own owner.
    pub fn as_self_owner(&self) -> OwnerId {
        OwnerId(self.0)
    }

    /// A short human-readable form for logs and tables.
    pub fn short(&self) -> String {
        let full = self.to_peer_id_string();
        format!("..{}", &full[full.len() - 8..])
    }
}

impl OwnerId {
    pub fn short(&self) -> String {
        format!("owner:{}", &self.0.to_hex()[..12])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    #[error("not valid base58")]
    NotBase58,
    #[error("not the PeerId of an ed25519 key (expected 12D3KooW...)")]
    NotEd25519PeerId,
    #[error("not 64 hex digits")]
    NotHex,
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_peer_id_string())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::from_peer_id_string(s)
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

impl fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerId({})", &self.0.to_hex()[..12])
    }
}

impl FromStr for OwnerId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::from_hex(s)
            .map(OwnerId)
            .map_err(|_| IdParseError::NotHex)
    }
}

/// An ed25519 signing key (node key or owner key).
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random source is available");
        Self::from_secret_bytes(secret)
    }

    /// A key derived from a seed: deterministic keys for tests and the testnet.
    pub fn from_seed(seed: &[u8]) -> Self {
        Self::from_secret_bytes(blake3::derive_key("fairgrid/v1/test-key", seed))
    }

    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Keypair {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    pub fn node_id(&self) -> NodeId {
        NodeId(self.public())
    }

    pub fn owner_id(&self) -> OwnerId {
        OwnerId(self.public())
    }

    pub fn sign(&self, message: &[u8]) -> SignatureBytes {
        SignatureBytes(self.signing.sign(message).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_round_trips_and_has_libp2p_prefix() {
        let node = Keypair::from_seed(b"n1").node_id();
        let text = node.to_peer_id_string();
        assert!(text.starts_with("12D3KooW"), "{text}");
        assert_eq!(text.parse::<NodeId>().unwrap(), node);
        assert_eq!(
            "12D3Koo".parse::<NodeId>(),
            Err(IdParseError::NotEd25519PeerId)
        );
        assert_eq!("0OIl".parse::<NodeId>(), Err(IdParseError::NotBase58));
    }

    #[test]
    fn seeded_keys_are_deterministic_and_distinct() {
        assert_eq!(
            Keypair::from_seed(b"a").public(),
            Keypair::from_seed(b"a").public()
        );
        assert_ne!(
            Keypair::from_seed(b"a").public(),
            Keypair::from_seed(b"b").public()
        );
    }
}
