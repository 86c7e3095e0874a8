//! The node API's request and response bodies (JSON).

use serde::{Deserialize, Serialize};

/// Every error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: String,
    pub owner: String,
    pub owner_label: String,
    pub certified: bool,
    pub consortium: bool,
    pub version: String,
    pub uptime_secs: u64,
    pub listen_addrs: Vec<String>,
    pub peers: usize,
    pub live_adverts: usize,
    pub own_advert: Option<AdvertInfo>,
    pub ledger: LedgerSummary,
    /// Why the node offers nothing now (its owner needs the machine, or it
    /// is outside `offer.idle_hours`); absent while it offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_offering: Option<String>,
    /// Whether peers outside can dial this node, as AutoNAT v2 found:
    /// "public", "private" (reach it through a relay) or "unknown".
    #[serde(default)]
    pub reachability: String,
    /// The relay slots this node holds: addresses that reach it through a
    /// relay (`.../p2p-circuit/p2p/NODE`).
    #[serde(default)]
    pub relayed_addrs: Vec<String>,
    /// UPnP port mapping (`network.upnp`): "off", "searching", "gateway",
    /// "no_gateway" or "non_routable_gateway".
    #[serde(default)]
    pub upnp: String,
    /// External addresses the LAN's router forwards to this node (UPnP).
    #[serde(default)]
    pub upnp_addrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSummary {
    pub entries: u64,
    pub head: Option<String>,
    pub foreign_entries: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub addresses: Vec<String>,
    pub agent: Option<String>,
    pub rtt_ms: Option<u64>,
    /// Gossipsub peer score (negative after invalid messages).
    pub gossip_score: Option<f64>,
    pub connections: u32,
    pub connected_for_ms: u64,
    /// In consortium mode: whether the peer proved a valid certificate.
    pub admitted: bool,
    /// How this node is connected to the peer, one entry per open
    /// connection: `tcp`, `quic` or `relayed` (through a relay).
    #[serde(default)]
    pub transports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_milli: u64,
    pub mem_mib: u64,
    pub gpu_milli: u64,
    pub gpu_mem_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuView {
    pub model: String,
    pub mem_mib: u64,
    pub gflops: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareView {
    pub cpu_cores: u32,
    pub cpu_gflops: u32,
    pub mem_mib: u64,
    pub gpus: Vec<GpuView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertInfo {
    pub node_id: String,
    pub advert_id: String,
    pub owner: String,
    pub owner_label: String,
    pub certified: bool,
    pub seq: u64,
    pub issued_at: u64,
    pub expires_at: u64,
    pub received_at: u64,
    /// The peer it arrived from ("self" for the node's own advert).
    pub from: String,
    pub hardware: HardwareView,
    pub offered: Resources,
    pub price_floor: u64,
    /// How the node says it is reached: "direct", "relayed" or "unknown".
    #[serde(default)]
    pub reach: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialRequest {
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialAccepted {
    pub dialing: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntryView {
    pub seq: u64,
    pub id: String,
    pub author: String,
    pub own: bool,
    pub timestamp: u64,
    pub prev: String,
    pub kind: String,
    /// The entry's body as JSON (hashes and keys in hex).
    pub body: serde_json::Value,
    /// The signed envelope, hex, for offline re-verification.
    pub signed_hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntryView>,
    /// Pass as `after` to get the next page; None at the end.
    pub next_after: Option<u64>,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub own_entries: u64,
    pub foreign_entries: u64,
    pub head: Option<String>,
    pub error: Option<String>,
    pub millis: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerShareView {
    pub owner: String,
    pub units: u64,
    pub share_ppm: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairnessReport {
    pub job: Option<String>,
    pub basis: String,
    pub total_units: u64,
    pub owners: Vec<OwnerShareView>,
    pub max_owner_share_ppm: u64,
    pub hhi: u64,
    pub gini: f64,
    pub nakamoto_50: u32,
    pub nakamoto_33: u32,
    pub jain: f64,
}

/// `POST /v1/ui/links`: a one-time dashboard login link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiLink {
    pub code: String,
    /// The link's path and fragment, `/#code=...`: append it to the API's
    /// base URL.
    pub path: String,
    pub expires_in_secs: u64,
}

/// `POST /v1/ui/redeem` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiRedeem {
    pub code: String,
}

/// `POST /v1/ui/redeem` answer: the API token, for the page's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiToken {
    pub token: String,
}

/// `GET /v1/fairness/history`: each owner's cumulative share of the work
/// after each recorded round (at most `max_points`, evenly thinned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairnessHistory {
    pub job: Option<String>,
    /// The cap the shares are held to: the job's alpha, or the node's
    /// network cap (beta) over all jobs.
    pub cap_ppm: u32,
    /// Owners in the order of `share_ppm` in every point.
    pub owners: Vec<String>,
    pub points: Vec<FairnessPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FairnessPoint {
    /// The `RoundCompleted` entry this point ends with: its ledger seq
    /// (own chain) and author, and its timestamp.
    pub seq: u64,
    pub author: String,
    pub timestamp: u64,
    pub total_units: u64,
    pub share_ppm: Vec<u64>,
}
