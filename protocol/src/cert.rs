//! Owner certificates, revocation lists and the consortium allowlist.
//!
//! An owner proves that a node is theirs by signing an
//! [`OwnerCertificate`]. A node without one is its own owner. The market
//! counts caps by owner, so a certificate is what stops one institution from
//! splitting itself into many nodes to dodge the cap.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::CertError;
use crate::identity::{NodeId, OwnerId};
use crate::resources::ResourceVec;
use crate::signed::{Signed, SignedMessage};

/// `{node key, owner label, max capacity, validity, serial}`, signed by the
/// owner key (the signer of the `Signed` envelope is the owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerCertificate {
    pub node: NodeId,
    pub owner: OwnerId,
    /// Human-readable owner name, e.g. "Univ A". At most 64 bytes.
    pub label: String,
    /// The most this node may ever claim, whatever it advertises.
    pub max_capacity: ResourceVec,
    /// Unix milliseconds.
    pub valid_from: u64,
    pub valid_until: u64,
    /// Unique per owner; what a revocation names.
    pub serial: u64,
}

impl SignedMessage for OwnerCertificate {
    const KIND: &'static str = "owner-cert";
    const MAX_BYTES: usize = 512;
}

pub const MAX_LABEL_BYTES: usize = 64;

/// Which owners may take part (consortium mode) and which certificates are
/// revoked. Empty `allowlist` with `consortium == false` means open mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustPolicy {
    /// In consortium mode only certified nodes of allowlisted owners count.
    pub consortium: bool,
    pub allowlist: BTreeSet<OwnerId>,
    /// Revoked `(owner, serial)` pairs.
    pub revoked: BTreeSet<(OwnerId, u64)>,
}

/// A signed list of serials an owner has revoked. Later lists (higher `seq`)
/// replace earlier ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub owner: OwnerId,
    pub seq: u64,
    pub serials: BTreeSet<u64>,
    pub issued_at: u64,
}

impl SignedMessage for Revocation {
    const KIND: &'static str = "revocation";
    const MAX_BYTES: usize = 64 * 1024;
}

impl Revocation {
    /// Verifies the list was signed by the owner it names.
    pub fn verify(signed: &Signed<Revocation>) -> Result<Revocation, CertError> {
        let (signer, list) = signed
            .verify_and_decode()
            .map_err(|e| CertError::Signature(e.to_string()))?;
        if signer != list.owner.0 {
            return Err(CertError::Signature(
                "revocation not signed by its owner".into(),
            ));
        }
        Ok(list)
    }
}

/// The outcome of checking a node's certificate: who owns it and the most
/// it may claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub owner: OwnerId,
    pub label: String,
    pub max_capacity: Option<ResourceVec>,
    pub serial: Option<u64>,
}

impl TrustPolicy {
    /// Resolves the owner of `node` from its (optional) certificate at time
    /// `now`, applying the revocation list and, in consortium mode, the
    /// allowlist. This is the single place where ownership is decided.
    pub fn resolve_owner(
        &self,
        node: &NodeId,
        cert: Option<&Signed<OwnerCertificate>>,
        now: u64,
    ) -> Result<Ownership, CertError> {
        let Some(signed) = cert else {
            if self.consortium {
                return Err(CertError::Missing);
            }
            return Ok(Ownership {
                owner: node.as_self_owner(),
                label: node.short(),
                max_capacity: None,
                serial: None,
            });
        };
        let (signer, cert) = signed
            .verify_and_decode()
            .map_err(|e| CertError::Signature(e.to_string()))?;
        if signer != cert.owner.0 {
            return Err(CertError::Signature(
                "certificate not signed by the owner it names".into(),
            ));
        }
        if cert.label.len() > MAX_LABEL_BYTES {
            return Err(CertError::Signature(format!(
                "label of {} bytes exceeds {MAX_LABEL_BYTES}",
                cert.label.len()
            )));
        }
        if cert.node != *node {
            return Err(CertError::WrongNode {
                cert_node: cert.node.to_string(),
                node: node.to_string(),
            });
        }
        if now < cert.valid_from {
            return Err(CertError::NotYetValid {
                valid_from: cert.valid_from,
                now,
            });
        }
        if now >= cert.valid_until {
            return Err(CertError::Expired {
                valid_until: cert.valid_until,
                now,
            });
        }
        if self.revoked.contains(&(cert.owner, cert.serial)) {
            return Err(CertError::Revoked {
                owner: cert.owner.to_string(),
                serial: cert.serial,
            });
        }
        if self.consortium && !self.allowlist.contains(&cert.owner) {
            return Err(CertError::NotAllowlisted {
                owner: cert.owner.to_string(),
            });
        }
        Ok(Ownership {
            owner: cert.owner,
            label: cert.label,
            max_capacity: Some(cert.max_capacity),
            serial: Some(cert.serial),
        })
    }

    /// Applies a verified revocation list.
    pub fn apply_revocation(&mut self, list: &Revocation) {
        for serial in &list.serials {
            self.revoked.insert((list.owner, *serial));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    fn cert_for(owner: &Keypair, node: NodeId, serial: u64) -> Signed<OwnerCertificate> {
        Signed::sign(
            owner,
            &OwnerCertificate {
                node,
                owner: owner.owner_id(),
                label: "Univ A".into(),
                max_capacity: ResourceVec {
                    cpu_milli: 4000,
                    ..Default::default()
                },
                valid_from: 100,
                valid_until: 200,
                serial,
            },
        )
    }

    #[test]
    fn certificate_checks_each_rule() {
        let owner = Keypair::from_seed(b"owner");
        let node = Keypair::from_seed(b"node").node_id();
        let other = Keypair::from_seed(b"other").node_id();
        let cert = cert_for(&owner, node, 7);
        let mut policy = TrustPolicy::default();

        let ok = policy.resolve_owner(&node, Some(&cert), 150).unwrap();
        assert_eq!(ok.owner, owner.owner_id());
        assert!(matches!(
            policy.resolve_owner(&other, Some(&cert), 150),
            Err(CertError::WrongNode { .. })
        ));
        assert!(matches!(
            policy.resolve_owner(&node, Some(&cert), 99),
            Err(CertError::NotYetValid { .. })
        ));
        assert!(matches!(
            policy.resolve_owner(&node, Some(&cert), 200),
            Err(CertError::Expired { .. })
        ));

        policy.consortium = true;
        assert!(matches!(
            policy.resolve_owner(&node, Some(&cert), 150),
            Err(CertError::NotAllowlisted { .. })
        ));
        assert_eq!(
            policy.resolve_owner(&node, None, 150),
            Err(CertError::Missing)
        );
        policy.allowlist.insert(owner.owner_id());
        assert!(policy.resolve_owner(&node, Some(&cert), 150).is_ok());

        policy.revoked.insert((owner.owner_id(), 7));
        assert!(matches!(
            policy.resolve_owner(&node, Some(&cert), 150),
            Err(CertError::Revoked { .. })
        ));
    }

    #[test]
    fn certificate_signed_by_someone_else_is_refused() {
        let owner = Keypair::from_seed(b"owner");
        let forger = Keypair::from_seed(b"forger");
        let node = Keypair::from_seed(b"node").node_id();
        let mut forged = cert_for(&owner, node, 1);
        let resigned: Signed<OwnerCertificate> =
            Signed::sign(&forger, &forged.verify_and_decode().unwrap().1);
        assert!(matches!(
            TrustPolicy::default().resolve_owner(&node, Some(&resigned), 150),
            Err(CertError::Signature(_))
        ));
        forged.payload[40] ^= 1;
        assert!(
            TrustPolicy::default()
                .resolve_owner(&node, Some(&forged), 150)
                .is_err()
        );
    }

    #[test]
    fn uncertified_node_is_its_own_owner_in_open_mode() {
        let node = Keypair::from_seed(b"node").node_id();
        let got = TrustPolicy::default()
            .resolve_owner(&node, None, 0)
            .unwrap();
        assert_eq!(got.owner, node.as_self_owner());
    }
}
