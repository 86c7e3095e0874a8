//! Conversions from the node's types to the API's wire types (the SDK's).

use fairgrid_protocol::ledger::LedgerEntry;
use fairgrid_sdk::{AdvertInfo, GpuView, HardwareView, LedgerEntryView, Resources};

use crate::adverts::LiveAdvert;
use crate::ledger::StoredEntry;

pub fn advert(a: &LiveAdvert) -> AdvertInfo {
    let ad = &a.advert;
    AdvertInfo {
        node_id: ad.node.to_string(),
        advert_id: a.id.to_hex(),
        owner: a.owner.to_string(),
        owner_label: a.owner_label.clone(),
        certified: ad.owner_cert.is_some(),
        seq: ad.seq,
        issued_at: ad.issued_at,
        expires_at: ad.expires_at,
        received_at: a.received_at,
        from: a.from.clone(),
        hardware: HardwareView {
            cpu_cores: ad.hardware.cpu_cores,
            cpu_gflops: ad.hardware.cpu_gflops,
            mem_mib: ad.hardware.mem_mib,
            gpus: ad
                .hardware
                .gpus
                .iter()
                .map(|g| GpuView {
                    model: g.model.clone(),
                    mem_mib: g.mem_mib,
                    gflops: g.gflops,
                })
                .collect(),
        },
        offered: Resources {
            cpu_milli: ad.offered.cpu_milli,
            mem_mib: ad.offered.mem_mib,
            gpu_milli: ad.offered.gpu_milli,
            gpu_mem_mib: ad.offered.gpu_mem_mib,
        },
        price_floor: ad.price_floor,
        reach: ad.reach.name().to_string(),
    }
}

pub fn entry(stored: &StoredEntry, entry: &LedgerEntry) -> LedgerEntryView {
    LedgerEntryView {
        seq: entry.seq,
        id: stored.id.to_hex(),
        author: entry.author.to_string(),
        own: stored.own,
        timestamp: entry.timestamp,
        prev: entry.prev.to_hex(),
        kind: entry.body.kind().name().to_string(),
        body: serde_json::to_value(&entry.body).unwrap_or(serde_json::Value::Null),
        signed_hex: hex::encode(stored.signed.to_bytes()),
    }
}
