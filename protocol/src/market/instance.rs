//! A human-written JSON market instance (`fairgrid market clear --input`):
//! a job, a policy and bids that name nodes and owners by human names.
//!
//! Keys and ids are derived deterministically from the names, the bids are
//! really signed (owner certificates by the owner keys, bids by the node
//! keys) and cleared by [`clear`](super::clear), so an instance exercises
//! exactly the code a node runs. The format is documented in
//! `docs/protocol.md` ("Market instance format").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MAX_MARKET_SHARDS, MarketError, MarketJob, MarketPolicy, PPM, WindowUsage};
use crate::Hash32;
use crate::cert::{OwnerCertificate, TrustPolicy};
use crate::identity::{Keypair, NodeId, OwnerId};
use crate::messages::Bid;
use crate::resources::ResourceVec;
use crate::signed::Signed;

/// Largest instance file the parser accepts.
pub const MAX_INSTANCE_BYTES: usize = 64 * 1024 * 1024;
/// Longest node or owner name.
pub const MAX_NAME_BYTES: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFile {
    pub job: JobSection,
    #[serde(default)]
    pub policy: PolicySection,
    pub bids: Vec<BidSection>,
    /// Unix milliseconds recorded as the clearing time.
    #[serde(default)]
    pub cleared_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    pub name: String,
    /// Number of shards; the job's shard indices are `0..shards`.
    #[serde(default)]
    pub shards: Option<u32>,
    /// Explicit shard indices (strictly ascending), instead of `shards`.
    #[serde(default)]
    pub shard_indices: Option<Vec<u32>>,
    pub demand_per_shard: ResourceVec,
    pub limit_price: u64,
    #[serde(default)]
    pub attempt: u32,
    /// Hex hash of the allocation this one follows (default all zeros).
    #[serde(default)]
    pub prev_allocation: Option<Hash32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default = "full_ppm")]
    pub alpha_ppm: u32,
    #[serde(default = "full_ppm")]
    pub beta_ppm: u32,
    #[serde(default)]
    pub window: WindowSection,
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            alpha_ppm: PPM,
            beta_ppm: PPM,
            window: WindowSection::default(),
        }
    }
}

fn full_ppm() -> u32 {
    PPM
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSection {
    #[serde(default)]
    pub total: u64,
    /// Shards per owner name in the trailing window.
    #[serde(default)]
    pub by_owner: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BidSection {
    pub node: String,
    /// Owner name; a node without one is its own owner.
    #[serde(default)]
    pub owner: Option<String>,
    pub ask: u64,
    pub capacity: ResourceVec,
    /// The certificate's maximum capacity (default: unbounded).
    #[serde(default)]
    pub max_capacity: Option<ResourceVec>,
    /// Measured speed, thousandths of a sample per second (default 0:
    /// none).
    #[serde(default)]
    pub speed_milli: u64,
}

/// A parsed, checked instance with its derived keys and signed bids.
#[derive(Debug, Clone)]
pub struct Instance {
    pub file: InstanceFile,
    pub job: MarketJob,
    pub policy: MarketPolicy,
    pub bids: Vec<Signed<Bid>>,
    pub trust: TrustPolicy,
    /// Human names of the nodes and owners, by key.
    pub node_names: BTreeMap<NodeId, String>,
    pub owner_names: BTreeMap<OwnerId, String>,
}

/// The node key an instance derives from a node name.
pub fn node_key(name: &str) -> Keypair {
    Keypair::from_seed(format!("fairgrid/instance/node/{name}").as_bytes())
}

/// The owner key an instance derives from an owner name.
pub fn owner_key(name: &str) -> Keypair {
    Keypair::from_seed(format!("fairgrid/instance/owner/{name}").as_bytes())
}

/// The job id an instance derives from the job name.
pub fn job_id(name: &str) -> Hash32 {
    Hash32::of_parts(&[b"fairgrid/instance/job", name.as_bytes()])
}

impl Instance {
    /// Parses and checks an instance. Errors name the offending field,
    /// e.g. `bids[3].ask`.
    pub fn from_json(text: &str) -> Result<Self, MarketError> {
        // Editors on some systems start UTF-8 files with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.len() > MAX_INSTANCE_BYTES {
            return Err(MarketError::instance(
                "(file)",
                format!(
                    "{} bytes exceed the {MAX_INSTANCE_BYTES}-byte limit",
                    text.len()
                ),
            ));
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let file: InstanceFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(document)".to_string()
            } else {
                path
            };
            MarketError::instance(field, e.into_inner().to_string())
        })?;
        de.end()
            .map_err(|e| MarketError::instance("(document)", e.to_string()))?;
        Self::from_file(file)
    }

    /// Checks a deserialised instance and signs its bids.
    pub fn from_file(file: InstanceFile) -> Result<Self, MarketError> {
        let job = check_job(&file.job)?;
        let policy = check_policy(&file.policy)?;
        let mut node_names = BTreeMap::new();
        let mut owner_names = BTreeMap::new();
        for name in file.policy.window.by_owner.keys() {
            owner_names.insert(owner_key(name).owner_id(), name.clone());
        }
        let mut first_bid: BTreeMap<&str, usize> = BTreeMap::new();
        let mut bids = Vec::with_capacity(file.bids.len());
        for (i, bid) in file.bids.iter().enumerate() {
            let at = |field: &str| format!("bids[{i}].{field}");
            check_name(&bid.node, &at("node"))?;
            if let Some(first) = first_bid.insert(&bid.node, i) {
                return Err(MarketError::instance(
                    at("node"),
                    format!(
                        "node {:?} already bids in bids[{first}]; one bid per node",
                        bid.node
                    ),
                ));
            }
            if bid.ask > job.limit_price {
                return Err(MarketError::instance(
                    at("ask"),
                    format!("{} exceeds job.limit_price {}", bid.ask, job.limit_price),
                ));
            }
            let node = node_key(&bid.node);
            node_names.insert(node.node_id(), bid.node.clone());
            let owner_cert = match &bid.owner {
                Some(owner) => {
                    check_name(owner, &at("owner"))?;
                    let key = owner_key(owner);
                    owner_names.insert(key.owner_id(), owner.clone());
                    Some(certificate(&key, owner, node.node_id(), bid.max_capacity))
                }
                None => {
                    if bid.max_capacity.is_some() {
                        return Err(MarketError::instance(
                            at("max_capacity"),
                            "a maximum capacity needs an owner to certify it",
                        ));
                    }
                    // Its own owner: named so that it cannot be mistaken
                    // for a certified owner of the same name.
                    owner_names.insert(
                        node.node_id().as_self_owner(),
                        format!("{} (uncertified)", bid.node),
                    );
                    None
                }
            };
            let signed = Signed::sign(
                &node,
                &Bid {
                    job_id: job.job_id,
                    node: node.node_id(),
                    owner_cert,
                    ask: bid.ask,
                    capacity: bid.capacity,
                    speed_milli: bid.speed_milli,
                    nonce: 0,
                    issued_at: file.cleared_at,
                },
            );
            bids.push(signed);
        }
        Ok(Instance {
            file,
            job,
            policy,
            bids,
            trust: TrustPolicy::default(),
            node_names,
            owner_names,
        })
    }

    /// A node's human name (or its short PeerId if unnamed).
    pub fn node_name(&self, node: &NodeId) -> String {
        self.node_names
            .get(node)
            .cloned()
            .unwrap_or_else(|| node.short())
    }

    pub fn owner_name(&self, owner: &OwnerId) -> String {
        self.owner_names
            .get(owner)
            .cloned()
            .unwrap_or_else(|| owner.short())
    }
}

fn certificate(
    owner: &Keypair,
    label: &str,
    node: NodeId,
    max: Option<ResourceVec>,
) -> Signed<OwnerCertificate> {
    let unbounded = ResourceVec::from_array([u64::MAX; 4]);
    Signed::sign(
        owner,
        &OwnerCertificate {
            node,
            owner: owner.owner_id(),
            label: label.to_string(),
            max_capacity: max.unwrap_or(unbounded),
            valid_from: 0,
            valid_until: u64::MAX,
            serial: 0,
        },
    )
}

fn check_name(name: &str, field: &str) -> Result<(), MarketError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(MarketError::instance(
            field,
            format!(
                "a name must have 1..={MAX_NAME_BYTES} bytes, got {}",
                name.len()
            ),
        ));
    }
    // Names end up in terminals and logs: no line breaks or escapes.
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(MarketError::instance(
            field,
            format!("a name must be printable text; it holds {c:?}"),
        ));
    }
    Ok(())
}

fn check_job(job: &JobSection) -> Result<MarketJob, MarketError> {
    check_name(&job.name, "job.name")?;
    let shards = match (&job.shards, &job.shard_indices) {
        (Some(_), Some(_)) => {
            return Err(MarketError::instance(
                "job.shard_indices",
                "give either job.shards or job.shard_indices, not both",
            ));
        }
        (None, None) => {
            return Err(MarketError::instance(
                "job.shards",
                "missing: give the number of shards (or job.shard_indices)",
            ));
        }
        (Some(n), None) => {
            if *n == 0 || *n as usize > MAX_MARKET_SHARDS {
                return Err(MarketError::instance(
                    "job.shards",
                    format!("{n} is not in 1..={MAX_MARKET_SHARDS}"),
                ));
            }
            (0..*n).collect()
        }
        (None, Some(list)) => {
            if list.is_empty() || list.len() > MAX_MARKET_SHARDS {
                return Err(MarketError::instance(
                    "job.shard_indices",
                    format!("{} indices, need 1..={MAX_MARKET_SHARDS}", list.len()),
                ));
            }
            if let Some(i) = list.windows(2).position(|w| w[0] >= w[1]) {
                return Err(MarketError::instance(
                    format!("job.shard_indices[{}]", i + 1),
                    format!(
                        "{} does not follow {} in strictly ascending order",
                        list[i + 1],
                        list[i]
                    ),
                ));
            }
            list.clone()
        }
    };
    if job.demand_per_shard.is_zero() {
        return Err(MarketError::instance(
            "job.demand_per_shard",
            "a shard must need some resource",
        ));
    }
    let m = shards.len() as u128;
    if m * job.limit_price as u128 > u64::MAX as u128 {
        return Err(MarketError::instance(
            "job.limit_price",
            format!("{} shards at {} overflow a u64 budget", m, job.limit_price),
        ));
    }
    Ok(MarketJob {
        job_id: job_id(&job.name),
        shards,
        demand_per_shard: job.demand_per_shard,
        limit_price: job.limit_price,
        attempt: job.attempt,
        prev_allocation: job.prev_allocation.unwrap_or(Hash32::ZERO),
    })
}

fn check_policy(policy: &PolicySection) -> Result<MarketPolicy, MarketError> {
    for (field, value) in [
        ("policy.alpha_ppm", policy.alpha_ppm),
        ("policy.beta_ppm", policy.beta_ppm),
    ] {
        if value == 0 || value > PPM {
            return Err(MarketError::instance(
                field,
                format!("{value} is not in 1..=1000000 (parts per million)"),
            ));
        }
    }
    let mut by_owner = BTreeMap::new();
    let mut sum = 0u64;
    for (name, &used) in &policy.window.by_owner {
        check_name(name, &format!("policy.window.by_owner.{name}"))?;
        sum = sum.checked_add(used).ok_or_else(|| {
            MarketError::instance(format!("policy.window.by_owner.{name}"), "usage overflows")
        })?;
        by_owner.insert(owner_key(name).owner_id(), used);
    }
    if sum > policy.window.total {
        return Err(MarketError::instance(
            "policy.window.total",
            format!(
                "{} is less than the sum of by_owner ({sum})",
                policy.window.total
            ),
        ));
    }
    Ok(MarketPolicy {
        alpha_ppm: policy.alpha_ppm,
        beta_ppm: policy.beta_ppm,
        window: WindowUsage {
            total: policy.window.total,
            by_owner,
        },
    })
}
