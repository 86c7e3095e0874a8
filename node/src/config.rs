//! The node's configuration: a TOML file in the data dir, overridden by
//! `FAIRGRID_<SECTION>_<FIELD>` environment variables, overridden by flags.
//!
//! Every field has a default, so an empty file is a valid config. Unknown
//! fields are an error (a typo must not silently fall back to a default).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{NodeError, Result};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub network: NetworkConfig,
    pub api: ApiConfig,
    pub advert: AdvertConfig,
    pub offer: OfferConfig,
    pub trust: TrustConfig,
    pub jobs: JobsConfig,
    pub worker: WorkerConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
}

/// The node's disk stores (ledger, jobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// A storage call that has not returned after this long stops the node
    /// (exit status 70) so that a supervisor restarts it, instead of a
    /// node that looks alive and answers nothing.
    pub stall_secs: u64,
    /// sled's page cache for the ledger, in MiB. The cache fills as the
    /// ledger grows and then stays at this size: most of a long-running
    /// node's resident memory above its working set.
    pub ledger_cache_mib: u64,
    /// sled's page cache for the job store (checkpoints), in MiB.
    pub jobs_cache_mib: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            stall_secs: 120,
            ledger_cache_mib: 32,
            jobs_cache_mib: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Multiaddrs (with `/p2p/PEERID`) of peers to bootstrap Kademlia from.
    pub bootstrap: Vec<String>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Dial discovered peers until this many are connected.
    pub target_peers: u32,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub max_pending_incoming: u32,
    /// Incoming handshakes in progress from any one IP address.
    pub max_pending_incoming_per_ip: u32,
    /// Established incoming connections from any one IP address (a lab
    /// behind one NAT address runs many nodes: keep it well above one).
    pub max_established_incoming_per_ip: u32,
    /// A connection must complete its handshake (dial, noise, yamux) this
    /// soon, or it is dropped.
    pub handshake_timeout_secs: u64,
    /// Inbound request-response requests each peer may make per second
    /// (sustained) and in a burst.
    pub request_rate_per_sec: u32,
    pub request_burst: u32,
    /// Gossip messages each peer may forward to us per second and in a burst.
    pub gossip_rate_per_sec: u32,
    pub gossip_burst: u32,
    /// Close connections that carry nothing for this long.
    pub idle_timeout_secs: u64,
    /// Gossipsub heartbeat.
    pub gossip_heartbeat_ms: u64,
    /// Relays (multiaddrs with `/p2p/PEERID`) this node reserves a slot on
    /// and announces: how a node behind a NAT or a firewall that only
    /// dials out can be reached.
    pub relays: Vec<String>,
    /// Addresses others reach this node at, when it knows them (a public
    /// IP, a forwarded port); announced as confirmed. A relay with none
    /// announces its listen addresses.
    pub external_addrs: Vec<String>,
    /// Serve as a relay for other nodes (run it on a publicly reachable
    /// machine).
    pub relay_server: bool,
    /// A relay in consortium mode serves only admitted peers, with these
    /// limits per relayed connection (enough for training traffic); in
    /// open mode it keeps libp2p's defaults (2 minutes, 128 KiB).
    pub relay_consortium_circuit_secs: u64,
    pub relay_consortium_circuit_mib: u64,
    /// Learn whether this node is reachable from outside (AutoNAT v2: peers
    /// dial its candidate addresses back), and answer such probes.
    pub autonat: bool,
    /// Ask the LAN's router for port mappings (UPnP IGD) so that peers
    /// outside can dial this node. Off by default: it multicasts SSDP on
    /// the LAN, which campus networks and tests must not see.
    pub upnp: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            target_peers: 25,
            max_connections: 256,
            max_connections_per_peer: 2,
            max_pending_incoming: 64,
            max_pending_incoming_per_ip: 8,
            max_established_incoming_per_ip: 64,
            handshake_timeout_secs: 10,
            request_rate_per_sec: 20,
            request_burst: 40,
            gossip_rate_per_sec: 100,
            gossip_burst: 200,
            idle_timeout_secs: 300,
            gossip_heartbeat_ms: 700,
            relays: Vec::new(),
            external_addrs: Vec::new(),
            relay_server: false,
            relay_consortium_circuit_secs: 3600,
            relay_consortium_circuit_mib: 1024,
            autonat: true,
            upnp: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the HTTP API. Keep it on loopback unless a proxy with TLS
    /// sits in front of it.
    pub listen: String,
    /// Open API connections at most; at the cap a new connection closes
    /// the oldest one that is not in a request.
    pub max_connections: u32,
    /// A client must send a whole request head within this long (also
    /// between requests on a kept-alive connection).
    pub header_timeout_secs: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:7444".into(),
            max_connections: 256,
            header_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvertConfig {
    /// How long each capacity advert is valid.
    pub lifetime_secs: u64,
    /// Re-issue once this share of the lifetime has passed (1..=90).
    pub reissue_after_percent: u32,
    /// Wall time of the CPU benchmark behind the advertised GFLOP/s.
    pub probe_ms: u64,
    /// Most adverts kept in the live table (one per node).
    pub max_table_entries: u32,
}

impl Default for AdvertConfig {
    fn default() -> Self {
        AdvertConfig {
            lifetime_secs: 600,
            reissue_after_percent: 50,
            probe_ms: 300,
            max_table_entries: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfferConfig {
    /// CPU cores offered to the market (0 = every core).
    pub cpu_cores: u32,
    /// Host memory offered, in MiB (0 = 80% of the total).
    pub memory_mib: u64,
    /// GPUs offered (0 = every detected GPU).
    pub gpus: u32,
    /// Lowest ask per shard, in milli-credits.
    pub price_floor: u64,
    /// Offer capacity only during these UTC hours, e.g. "22-07" (empty = always).
    pub idle_hours: String,
    /// Contribute only once the user has been idle this long (systemd-
    /// logind's IdleHint); 0 = whether or not someone uses the machine.
    pub user_idle_secs: u64,
    /// Stop contributing while programs other than fairgrid use more than
    /// this share of the CPU, in percent; 0 = never.
    pub max_other_cpu_percent: u32,
    /// Stop contributing while a program other than fairgrid uses one of
    /// the offered GPUs (NVML; no effect without NVIDIA's driver).
    pub yield_gpus: bool,
    /// After the machine was needed, contribute again once the rules
    /// above have held this long.
    pub resume_after_secs: u64,
}

impl Default for OfferConfig {
    fn default() -> Self {
        OfferConfig {
            cpu_cores: 0,
            memory_mib: 0,
            gpus: 0,
            price_floor: 0,
            idle_hours: String::new(),
            user_idle_secs: 0,
            max_other_cpu_percent: 0,
            yield_gpus: true,
            resume_after_secs: 60,
        }
    }
}

impl OfferConfig {
    /// The idle rules as the gate takes them.
    pub fn idle_policy(&self) -> crate::idle::gate::IdlePolicy {
        crate::idle::gate::IdlePolicy {
            user_idle_secs: (self.user_idle_secs > 0).then_some(self.user_idle_secs),
            max_other_cpu_percent: (self.max_other_cpu_percent > 0)
                .then_some(self.max_other_cpu_percent),
            yield_gpus: self.yield_gpus,
            resume_after_secs: self.resume_after_secs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// Consortium mode: only nodes certified by an allowlisted owner take part.
    pub consortium: bool,
    /// Owner ids (64 hex digits) allowed in consortium mode.
    pub allowlist: Vec<String>,
    /// This node's owner certificate (empty = `node.cert` in the data dir if
    /// present, else the node is its own owner).
    pub certificate: String,
    /// Signed revocation lists from `fairgrid owner revoke`.
    pub revocation_files: Vec<String>,
    /// Peers must present a valid certificate this soon after connecting
    /// (consortium mode).
    pub hello_timeout_ms: u64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            consortium: false,
            allowlist: Vec::new(),
            certificate: String::new(),
            revocation_files: Vec::new(),
            hello_timeout_ms: 5000,
        }
    }
}

/// The coordinator side: jobs submitted to this node's API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs this node coordinates at once (bidding or training).
    pub max_jobs: u32,
    /// Bids kept per job (one per node; later nonces replace earlier ones).
    pub max_bids_per_job: u32,
    /// Network-wide owner cap over the trailing window, parts per million
    /// (1000000 = no network cap).
    pub beta_ppm: u32,
    /// Length of the trailing window the network cap counts over.
    pub window_secs: u64,
    /// How long an allocation must have been known before a worker holds
    /// a recorded window to it (gossip takes about a second).
    pub window_settle_ms: u64,
    /// Samples per evaluation batch on the coordinator.
    pub eval_batch: u32,
    /// Threads the coordinator uses to evaluate (0 = one per core).
    pub threads: u32,
    /// Ended jobs kept whole in memory; older ones are read back from
    /// disk when asked about, with only a summary kept in memory.
    pub ended_in_memory: u32,
    /// Audit a sample of every round's updates by recomputing them.
    pub audits: bool,
    /// The lowest audit rate, however long a node's clean record, in
    /// parts per million (new nodes are audited more often).
    pub audit_floor_ppm: u32,
    /// Failed audits after which an owner's bids are refused by this
    /// coordinator (0: never refused).
    pub refuse_owner_after_failed_audits: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            max_jobs: 8,
            max_bids_per_job: 1024,
            beta_ppm: 1_000_000,
            window_secs: 86_400,
            window_settle_ms: 10_000,
            eval_batch: 256,
            threads: 0,
            ended_in_memory: 16,
            audits: true,
            audit_floor_ppm: 50_000,
            refuse_owner_after_failed_audits: 1,
        }
    }
}

/// The worker side: bidding on other nodes' jobs and training their shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Bid on jobs and train them.
    pub enabled: bool,
    /// Also bid on jobs this node coordinates.
    pub work_own_jobs: bool,
    /// Ask per shard, in milli-credits (0 = the offer's price_floor).
    pub ask: u64,
    /// Jobs this node works on at once; further job offers get no bid.
    pub max_jobs: u32,
    /// Training threads per job (0 = one per core).
    pub threads: u32,
    /// Disk kept for fetched shards, in MiB (oldest evicted first).
    pub shard_cache_mib: u64,
    /// How long the node gathers the jobs it hears of before it bids, so
    /// that jobs heard of together are served in weighted-DRF order.
    pub admission_delay_ms: u64,
    /// Measure how fast this node trains a job's model before bidding
    /// (about 1 s, once per model) and put it in the bid, so that the
    /// job's shards follow speed rather than cores.
    pub measure_speed: bool,
    /// Weights of submitters in the DRF admission order, by the
    /// submitting node's id (1..=1000; an unlisted submitter weighs 1). A
    /// consortium gives every node the same table, so that every node
    /// computes the same order.
    pub submitter_weights: BTreeMap<String, u32>,
}

/// Most entries in `worker.submitter_weights`, and the largest weight.
const MAX_WEIGHTED_SUBMITTERS: usize = 10_000;
const MAX_SUBMITTER_WEIGHT: u32 = 1000;

impl WorkerConfig {
    /// The submitter weights, by node (checked by [`Config::validate`]).
    pub fn weights(&self) -> BTreeMap<fairgrid_protocol::NodeId, u32> {
        self.submitter_weights
            .iter()
            .filter_map(|(node, &w)| Some((node.parse().ok()?, w)))
            .collect()
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            enabled: true,
            work_own_jobs: true,
            ask: 0,
            max_jobs: 4,
            threads: 0,
            shard_cache_mib: 1024,
            admission_delay_ms: 200,
            measure_speed: true,
            submitter_weights: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "human" or "json".
    pub format: String,
    /// A tracing filter, e.g. "info,fairgrid::net=debug".
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "human".into(),
            filter: "info".into(),
        }
    }
}

impl Config {
    /// Loads `path` (missing file = defaults), then applies `FAIRGRID_*`
    /// variables from `env`.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(NodeError::io(path, e)),
        };
        Self::from_toml_and_env(&text, &path.display().to_string(), env)
    }

    pub fn from_toml_and_env(
        text: &str,
        origin: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Config> {
        // Editors on some systems start UTF-8 files with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut table: toml::Table = toml::from_str(text).map_err(|e| NodeError::Config {
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
        apply_env(&mut table, env)?;
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| NodeError::Config {
                    origin: format!("{origin} (with FAIRGRID_* overrides)"),
                    reason: e.to_string(),
                })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |reason: String| {
            Err(NodeError::Config {
                origin: origin.to_string(),
                reason,
            })
        };
        if !(1..=90).contains(&self.advert.reissue_after_percent) {
            return bad("advert.reissue_after_percent must be in 1..=90".into());
        }
        let max_life = fairgrid_protocol::messages::MAX_ADVERT_LIFETIME_MS / 1000;
        if self.advert.lifetime_secs == 0 || self.advert.lifetime_secs > max_life {
            return bad(format!("advert.lifetime_secs must be in 1..={max_life}"));
        }
        if !matches!(self.log.format.as_str(), "human" | "json") {
            return bad(format!(
                "log.format is {:?}, expected \"human\" or \"json\"",
                self.log.format
            ));
        }
        if self.network.max_connections_per_peer == 0
            || self.network.max_connections == 0
            || self.network.max_pending_incoming_per_ip == 0
            || self.network.max_established_incoming_per_ip == 0
        {
            return bad("network connection limits must be positive".into());
        }
        if !(1..=300).contains(&self.network.handshake_timeout_secs) {
            return bad("network.handshake_timeout_secs must be in 1..=300".into());
        }
        if self.network.request_rate_per_sec == 0 || self.network.gossip_rate_per_sec == 0 {
            return bad("network rate limits must be positive".into());
        }
        if let Err(e) = crate::adverts::IdleHours::parse(&self.offer.idle_hours) {
            return bad(format!("offer.idle_hours: {e}"));
        }
        if self.offer.max_other_cpu_percent > 100 {
            return bad("offer.max_other_cpu_percent must be in 0..=100".into());
        }
        if self.offer.resume_after_secs > 86_400 || self.offer.user_idle_secs > 86_400 * 30 {
            return bad(
                "offer.resume_after_secs must be at most 86400 and offer.user_idle_secs at most 2592000"
                    .into(),
            );
        }
        if !(1..=86_400).contains(&self.storage.stall_secs) {
            return bad("storage.stall_secs must be in 1..=86400".into());
        }
        for (name, mib) in [
            ("storage.ledger_cache_mib", self.storage.ledger_cache_mib),
            ("storage.jobs_cache_mib", self.storage.jobs_cache_mib),
        ] {
            if !(1..=65_536).contains(&mib) {
                return bad(format!("{name} must be in 1..=65536"));
            }
        }
        if self.api.max_connections == 0 {
            return bad("api.max_connections must be positive".into());
        }
        if !(1..=3600).contains(&self.api.header_timeout_secs) {
            return bad("api.header_timeout_secs must be in 1..=3600".into());
        }
        if self.jobs.max_jobs == 0 {
            return bad("jobs.max_jobs must be positive".into());
        }
        let most_bids = crate::net::wire::MAX_NOTICE_BIDS;
        if self.jobs.max_bids_per_job == 0 || self.jobs.max_bids_per_job as usize > most_bids {
            return bad(format!("jobs.max_bids_per_job must be in 1..={most_bids}"));
        }
        if self.jobs.beta_ppm == 0 || self.jobs.beta_ppm > 1_000_000 {
            return bad("jobs.beta_ppm must be in 1..=1000000".into());
        }
        if self.jobs.window_settle_ms > 3_600_000 {
            return bad("jobs.window_settle_ms must be at most 3600000 (an hour)".into());
        }
        if self.jobs.eval_batch == 0 || self.jobs.eval_batch > 65_536 {
            return bad("jobs.eval_batch must be in 1..=65536".into());
        }
        if self.jobs.audit_floor_ppm > 1_000_000 {
            return bad("jobs.audit_floor_ppm must be at most 1000000".into());
        }
        if self.jobs.ended_in_memory > 4096 {
            return bad("jobs.ended_in_memory must be at most 4096".into());
        }
        if self.worker.admission_delay_ms > 10_000 {
            return bad("worker.admission_delay_ms must be at most 10000".into());
        }
        if self.worker.max_jobs == 0 {
            return bad("worker.max_jobs must be positive".into());
        }
        if self.worker.submitter_weights.len() > MAX_WEIGHTED_SUBMITTERS {
            return bad(format!(
                "worker.submitter_weights has {} entries, at most {MAX_WEIGHTED_SUBMITTERS}",
                self.worker.submitter_weights.len()
            ));
        }
        for (node, &weight) in &self.worker.submitter_weights {
            if node.parse::<fairgrid_protocol::NodeId>().is_err() {
                return bad(format!(
                    "worker.submitter_weights: {node:?} is not a node id (12D3KooW...)"
                ));
            }
            if !(1..=MAX_SUBMITTER_WEIGHT).contains(&weight) {
                return bad(format!(
                    "worker.submitter_weights: {node}'s weight {weight} is not in 1..={MAX_SUBMITTER_WEIGHT}"
                ));
            }
        }
        for owner in &self.trust.allowlist {
            if owner.parse::<fairgrid_protocol::OwnerId>().is_err() {
                return bad(format!(
                    "trust.allowlist entry {owner:?} is not an owner id (64 hex digits)"
                ));
            }
        }
        Ok(())
    }

    /// The `FAIRGRID_*` variables of the process environment.
    pub fn process_env() -> BTreeMap<String, String> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with("FAIRGRID_"))
            .collect()
    }
}

/// Sets `table[section][field]` from `FAIRGRID_SECTION_FIELD` for every
/// field the defaults know, parsed as the default's type. Lists are
/// comma-separated.
fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<()> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialise");
    for (section, fields) in &defaults {
        let Some(fields) = fields.as_table() else {
            continue;
        };
        for (field, default) in fields {
            let var = format!("FAIRGRID_{}_{}", section, field).to_uppercase();
            let Some(raw) = env.get(&var) else {
                continue;
            };
            let bad = |what: &str| NodeError::Config {
                origin: format!("environment variable {var}"),
                reason: format!("{raw:?} is not {what}"),
            };
            let value = match default {
                toml::Value::Boolean(_) => {
                    toml::Value::Boolean(raw.parse().map_err(|_| bad("true or false"))?)
                }
                toml::Value::Integer(_) => {
                    toml::Value::Integer(raw.parse().map_err(|_| bad("an integer"))?)
                }
                toml::Value::Array(_) => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_string()))
                        .collect(),
                ),
                _ => toml::Value::String(raw.clone()),
            };
            let section_table = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match section_table.as_table_mut() {
                Some(t) => {
                    t.insert(field.clone(), value);
                }
                None => {
                    return Err(NodeError::Config {
                        origin: "config file".into(),
                        reason: format!("[{section}] must be a table"),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The documented config file `fairgrid init` writes. Every value shown is
/// the default; a test checks that this text parses to `Config::default()`
/// except for the listen addresses, which `init` fills in.
pub fn documented_template(listen: &[String], api_listen: &str) -> String {
    let listen = listen
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let d = Config::default();
    format!(
        r#"# fairgrid node configuration. Every field is optional; the values below
# are the defaults. Environment variables FAIRGRID_<SECTION>_<FIELD>
# (e.g. FAIRGRID_NETWORK_MDNS=false) override this file, and command-line
# flags override both. See docs/operations.md.

[network]
# Multiaddrs to listen on: TCP (/tcp/N) and QUIC (/udp/N/quic-v1).
listen = [{listen}]
# Peers to bootstrap from, e.g. "/ip4/192.0.2.7/tcp/4001/p2p/12D3KooW...".
bootstrap = []
# Find peers on the local network with mDNS.
mdns = {mdns}
# Dial discovered peers until this many are connected.
target_peers = {target_peers}
# Connection limits.
max_connections = {max_connections}
max_connections_per_peer = {per_peer}
max_pending_incoming = {pending}
# Of which from any one IP address (junk from one host cannot fill them).
max_pending_incoming_per_ip = {pending_per_ip}
# Established incoming connections from any one IP address (a lab behind one
# NAT address runs many nodes).
max_established_incoming_per_ip = {established_per_ip}
# A connection must finish its handshake (noise, yamux) this soon.
handshake_timeout_secs = {handshake}
# Per-peer rate limits (sustained per second, and burst) for requests and gossip.
request_rate_per_sec = {req_rate}
request_burst = {req_burst}
gossip_rate_per_sec = {gossip_rate}
gossip_burst = {gossip_burst}
# Close connections idle for this long.
idle_timeout_secs = {idle}
# Gossipsub heartbeat interval.
gossip_heartbeat_ms = {heartbeat}
# Relays to reserve a slot on and announce, for a node behind a NAT or a
# firewall, e.g. "/ip4/198.51.100.7/tcp/4001/p2p/12D3KooW..." (see
# docs/operations.md, "Behind a NAT or a firewall").
relays = []
# Addresses others reach this node at, if known (public IP, forwarded port),
# e.g. "/ip4/198.51.100.7/tcp/4001"; announced as confirmed.
external_addrs = []
# Serve as a relay (on a publicly reachable machine; without external_addrs
# it announces its listen addresses). In consortium mode it
# serves only admitted peers, with these limits per relayed connection; in
# open mode libp2p's defaults (2 minutes, 128 KiB) hold.
relay_server = {relay_server}
relay_consortium_circuit_secs = {relay_secs}
relay_consortium_circuit_mib = {relay_mib}
# Learn whether this node is reachable from outside (AutoNAT v2), and
# answer other nodes' probes.
autonat = {autonat}
# Ask the router for port mappings (UPnP IGD: home routers); the mapped
# address is announced when the router's own address is public.
upnp = {upnp}

[api]
# HTTP API address. Requests need "Authorization: Bearer <api.token>".
listen = "{api_listen}"
# Open connections at most (at the cap a new one closes the oldest idle
# one), and how long a client has to send a request head.
max_connections = {api_max_connections}
header_timeout_secs = {api_header_timeout}

[advert]
# Lifetime of each signed capacity advert; re-issued after this share of it.
lifetime_secs = {lifetime}
reissue_after_percent = {reissue}
# Wall time of the CPU benchmark whose GFLOP/s figure is advertised.
probe_ms = {probe}
# Most adverts kept in the live table.
max_table_entries = {max_table}

[offer]
# What this node offers to the market. 0 means "all of it" (memory: 80%).
cpu_cores = 0
memory_mib = 0
gpus = 0
# Lowest ask per shard, in milli-credits.
price_floor = 0
# Offer only during these UTC hours, e.g. "22-07". Empty means always.
idle_hours = ""
# Contribute only once the user has been idle this long (systemd-logind's
# IdleHint); 0 = whether or not someone uses the machine.
user_idle_secs = 0
# Stop contributing while other programs use more than this share of the
# CPU (percent); 0 = never.
max_other_cpu_percent = 0
# Stop contributing while a program other than fairgrid uses one of the
# offered GPUs (NVML; no effect on machines without NVIDIA's driver).
yield_gpus = true
# Contribute again once the rules above have held this long.
resume_after_secs = 60

[trust]
# Consortium mode: refuse nodes without a valid certificate from an
# allowlisted owner (connections and messages).
consortium = false
# Owner ids (64 hex digits, from `fairgrid owner new`).
allowlist = []
# This node's certificate file; empty means node.cert in the data dir if it
# exists, else the node is its own owner.
certificate = ""
# Signed revocation lists (files from `fairgrid owner revoke`).
revocation_files = []
# In consortium mode, peers must prove their certificate this soon.
hello_timeout_ms = 5000

[jobs]
# Coordinator side: jobs submitted to this node's API.
# Jobs coordinated at once, and bids kept per job.
max_jobs = {jobs_max}
max_bids_per_job = {max_bids}
# Network-wide owner cap over the trailing window, in parts per million
# (1000000 = off), and the window's length. Every allocation is gossiped;
# a worker refuses one cleared with a larger beta than its own, or whose
# window omits usage it has known for window_settle_ms.
beta_ppm = {beta}
window_secs = {window}
window_settle_ms = {window_settle}
# Evaluation batch size and threads on the coordinator (0 = one per core).
eval_batch = {eval_batch}
threads = {jobs_threads}
# Ended jobs kept whole in memory; older ones are read from disk when asked
# about (a summary of each stays in memory).
ended_in_memory = {ended_in_memory}
# Audit a sample of each round's updates by recomputing them: a node is
# audited at once when new, then less often as its clean record grows,
# never below audit_floor_ppm (parts per million). An owner with this many
# failed audits has its bids refused (0 = never).
audits = {audits}
audit_floor_ppm = {audit_floor}
refuse_owner_after_failed_audits = {refuse_after}

[worker]
# Bid on jobs and train their shards.
enabled = {worker_enabled}
# Also bid on jobs this node coordinates.
work_own_jobs = {work_own}
# Ask per shard in milli-credits; 0 means the offer's price_floor.
ask = {worker_ask}
# Jobs worked on at once; further offers get no bid.
max_jobs = {worker_max_jobs}
# Training threads per job (0 = one per core).
threads = {worker_threads}
# Disk kept for fetched shards, in MiB (oldest evicted first).
shard_cache_mib = {shard_cache}
# Jobs heard of within this many milliseconds are bid on together, in
# weighted-DRF order of their submitters (docs/market.md).
admission_delay_ms = {admission_delay}
# Measure how fast this node trains a job's model before bidding (about
# 1 s, once per model) and bid it, so that shards follow speed.
measure_speed = {measure_speed}
# Weights of submitters in that DRF order, by submitting node id (1..=1000;
# unlisted: 1), e.g. {{ "12D3KooW..." = 2 }}. A consortium gives every node
# the same table.
submitter_weights = {{}}

[storage]
# A storage call that has not returned after this long stops the node
# (exit status 70) so that a supervisor restarts it.
stall_secs = {stall}
# sled's page caches in MiB: most of a long-running node's memory above
# what its jobs use.
ledger_cache_mib = {ledger_cache}
jobs_cache_mib = {jobs_cache}

[log]
# "human" or "json".
format = "human"
# tracing filter, e.g. "info,fairgrid::net=debug".
filter = "info"
"#,
        mdns = d.network.mdns,
        target_peers = d.network.target_peers,
        max_connections = d.network.max_connections,
        per_peer = d.network.max_connections_per_peer,
        pending = d.network.max_pending_incoming,
        pending_per_ip = d.network.max_pending_incoming_per_ip,
        established_per_ip = d.network.max_established_incoming_per_ip,
        handshake = d.network.handshake_timeout_secs,
        req_rate = d.network.request_rate_per_sec,
        req_burst = d.network.request_burst,
        gossip_rate = d.network.gossip_rate_per_sec,
        gossip_burst = d.network.gossip_burst,
        idle = d.network.idle_timeout_secs,
        heartbeat = d.network.gossip_heartbeat_ms,
        relay_server = d.network.relay_server,
        relay_secs = d.network.relay_consortium_circuit_secs,
        relay_mib = d.network.relay_consortium_circuit_mib,
        autonat = d.network.autonat,
        upnp = d.network.upnp,
        stall = d.storage.stall_secs,
        ledger_cache = d.storage.ledger_cache_mib,
        jobs_cache = d.storage.jobs_cache_mib,
        api_max_connections = d.api.max_connections,
        api_header_timeout = d.api.header_timeout_secs,
        lifetime = d.advert.lifetime_secs,
        reissue = d.advert.reissue_after_percent,
        probe = d.advert.probe_ms,
        max_table = d.advert.max_table_entries,
        jobs_max = d.jobs.max_jobs,
        max_bids = d.jobs.max_bids_per_job,
        beta = d.jobs.beta_ppm,
        window = d.jobs.window_secs,
        window_settle = d.jobs.window_settle_ms,
        eval_batch = d.jobs.eval_batch,
        jobs_threads = d.jobs.threads,
        ended_in_memory = d.jobs.ended_in_memory,
        audits = d.jobs.audits,
        audit_floor = d.jobs.audit_floor_ppm,
        refuse_after = d.jobs.refuse_owner_after_failed_audits,
        worker_enabled = d.worker.enabled,
        work_own = d.worker.work_own_jobs,
        worker_ask = d.worker.ask,
        worker_max_jobs = d.worker.max_jobs,
        worker_threads = d.worker.threads,
        shard_cache = d.worker.shard_cache_mib,
        admission_delay = d.worker.admission_delay_ms,
        measure_speed = d.worker.measure_speed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn template_documents_exactly_the_defaults() {
        let d = Config::default();
        let text = documented_template(&d.network.listen, &d.api.listen);
        let parsed = Config::from_toml_and_env(&text, "template", &env(&[])).unwrap();
        assert_eq!(parsed, d);
        // Every field of every section appears in the template.
        let table = toml::Table::try_from(&d).unwrap();
        for (section, fields) in table {
            for field in fields.as_table().unwrap().keys() {
                assert!(
                    text.contains(&format!("\n{field} = ")),
                    "[{section}] {field} missing from the template"
                );
            }
        }
    }

    #[test]
    fn submitter_weights_name_real_nodes_with_bounded_weights() {
        let node = fairgrid_protocol::Keypair::from_seed(b"w").node_id();
        let load = |table: &str| {
            Config::from_toml_and_env(
                &format!("[worker]\nsubmitter_weights = {table}\n"),
                "t",
                &env(&[]),
            )
        };
        let ok = load(&format!("{{ \"{node}\" = 3 }}")).unwrap();
        assert_eq!(ok.worker.weights(), BTreeMap::from([(node, 3)]));
        let err = load("{ \"alice\" = 2 }").unwrap_err().to_string();
        assert!(err.contains("\"alice\" is not a node id"), "{err}");
        let err = load(&format!("{{ \"{node}\" = 0 }}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("weight 0 is not in 1..=1000"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_is_typed() {
        let text = "[network]\nmdns = true\ntarget_peers = 3\n";
        let c = Config::from_toml_and_env(
            text,
            "t",
            &env(&[
                ("FAIRGRID_NETWORK_MDNS", "false"),
                (
                    "FAIRGRID_NETWORK_BOOTSTRAP",
                    "/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/tcp/2",
                ),
                ("FAIRGRID_API_LISTEN", "127.0.0.1:9"),
            ]),
        )
        .unwrap();
        assert!(!c.network.mdns);
        assert_eq!(c.network.target_peers, 3);
        assert_eq!(c.network.bootstrap.len(), 2);
        assert_eq!(c.api.listen, "127.0.0.1:9");

        let err = Config::from_toml_and_env("", "t", &env(&[("FAIRGRID_NETWORK_MDNS", "yes")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("FAIRGRID_NETWORK_MDNS"), "{err}");
    }

    #[test]
    fn unknown_and_nonsense_fields_are_refused() {
        let err = Config::from_toml_and_env("[network]\nmdsn = false\n", "t", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mdsn"), "{err}");
        let err = Config::from_toml_and_env("[log]\nformat = \"xml\"\n", "t", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.format"), "{err}");
        let err = Config::from_toml_and_env("[trust]\nallowlist = [\"zz\"]\n", "t", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowlist"), "{err}");
        assert!(
            Config::from_toml_and_env("[offer]\nidle_hours = \"25-3\"\n", "t", &env(&[])).is_err()
        );
    }
}
