//! The wire format, as data: every type a peer sends or signs, traced from
//! its serde definition (field names, types and order; enum variants and
//! their indices) with serde-reflection, must equal
//! `docs/wire-format.json`. A change to any wire type fails here until the
//! file is regenerated (`FAIRGRID_BLESS=1 cargo test -p fairgrid-node
//! --test it wire_spec`) and the change reviewed as a protocol change. The
//! file is also what a third party can feed to a code generator
//! (serde-generate) to speak fairgrid in another language.

use fairgrid_node::net::{Hello, Request, Response};
use fairgrid_protocol::ledger::{EntryBody, EntryKind, LedgerEntry, ReportOutcome};
use fairgrid_protocol::messages::{
    Aggregation, Allocation, Arithmetic, Bid, CapacityAdvert, Compression, JobSpec, Layer, LayerOp,
    LrSchedule, ModelArch, OptimizerKind, Reach, Receipt, RoundRefusal, RoundStart, RoundUpdate,
    ShortfallPolicy, ValueKind,
};
use fairgrid_protocol::{OwnerCertificate, Revocation};
use serde_reflection::{Registry, Tracer, TracerConfig};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/wire-format.json");

fn trace() -> Registry {
    let mut tracer = Tracer::new(TracerConfig::default());
    macro_rules! trace {
        ($($t:ty),* $(,)?) => {
            $(tracer.trace_simple_type::<$t>().unwrap_or_else(|e| {
                panic!("tracing {}: {e}", stringify!($t))
            });)*
        };
    }
    // Enums first (each variant needs a sample), then the containers.
    trace!(
        Request,
        Response,
        EntryBody,
        EntryKind,
        Compression,
        Aggregation,
        LayerOp,
        Layer,
        ModelArch,
        OptimizerKind,
        LrSchedule,
        ShortfallPolicy,
        ValueKind,
        Arithmetic,
        Reach,
        ReportOutcome,
    );
    trace!(
        Hello,
        CapacityAdvert,
        OwnerCertificate,
        Revocation,
        JobSpec,
        Bid,
        Allocation,
        RoundStart,
        RoundUpdate,
        Receipt,
        RoundRefusal,
        LedgerEntry,
    );
    tracer
        .registry()
        .expect("every wire type traced completely")
}

#[test]
fn the_documented_wire_format_is_the_code_s() {
    let traced = serde_json::to_string_pretty(&trace()).unwrap() + "\n";
    if std::env::var_os("FAIRGRID_BLESS").is_some() {
        std::fs::write(DOC, &traced).unwrap();
    }
    let documented = std::fs::read_to_string(DOC).unwrap_or_default();
    assert!(
        documented == traced,
        "docs/wire-format.json differs from the wire types: a protocol change. \
         Review it, then regenerate with FAIRGRID_BLESS=1"
    );
}

/// Fixed inputs, so every run signs the same bytes (ed25519 is
/// deterministic).
mod vectors {
    use fairgrid_node::net::codec::{decode_frame, encode_frame};
    use fairgrid_node::net::{Hello, Request, Response};
    use fairgrid_protocol::messages::{Bid, CapacityAdvert, GpuInfo, Hardware, RoundRefusal};
    use fairgrid_protocol::{Hash32, Keypair, OwnerCertificate, ResourceVec, Signed};
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    pub const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/test-vectors.json");

    fn node() -> Keypair {
        Keypair::from_seed(b"fairgrid test vector node")
    }

    fn owner() -> Keypair {
        Keypair::from_seed(b"fairgrid test vector owner")
    }

    fn resources(cpu_milli: u64, mem_mib: u64, gpu_milli: u64, gpu_mem_mib: u64) -> ResourceVec {
        ResourceVec {
            cpu_milli,
            mem_mib,
            gpu_milli,
            gpu_mem_mib,
        }
    }

    fn certificate() -> Signed<OwnerCertificate> {
        Signed::sign(
            &owner(),
            &OwnerCertificate {
                node: node().node_id(),
                owner: owner().owner_id(),
                label: "Univ A".into(),
                max_capacity: resources(16_000, 65_536, 1000, 81_920),
                valid_from: 1_780_000_000_000,
                valid_until: 1_811_536_000_000,
                serial: 7,
            },
        )
    }

    fn advert(gpu: bool) -> Signed<CapacityAdvert> {
        let gpus = if gpu {
            vec![GpuInfo {
                model: "NVIDIA H200".into(),
                mem_mib: 143_771,
                gflops: 51_000,
            }]
        } else {
            Vec::new()
        };
        Signed::sign(
            &node(),
            &CapacityAdvert {
                node: node().node_id(),
                owner_cert: gpu.then(certificate),
                hardware: Hardware {
                    cpu_cores: 16,
                    cpu_gflops: 1200,
                    mem_mib: 131_072,
                    gpus,
                },
                offered: resources(8000, 32_768, if gpu { 1000 } else { 0 }, 0),
                price_floor: 25,
                seq: 3,
                issued_at: 1_790_000_000_000,
                expires_at: 1_790_000_600_000,
                reach: if gpu {
                    fairgrid_protocol::messages::Reach::Relayed
                } else {
                    fairgrid_protocol::messages::Reach::Direct
                },
            },
        )
    }

    fn bid() -> Signed<Bid> {
        Signed::sign(
            &node(),
            &Bid {
                job_id: Hash32::of(b"fairgrid test vector job"),
                node: node().node_id(),
                owner_cert: Some(certificate()),
                ask: 40,
                capacity: resources(4000, 8192, 0, 0),
                nonce: 1_790_000_000_123,
                issued_at: 1_790_000_000_123,
                speed_milli: 412_500,
            },
        )
    }

    fn refusal() -> Signed<RoundRefusal> {
        Signed::sign(
            &node(),
            &RoundRefusal {
                job_id: Hash32::of(b"fairgrid test vector job"),
                round: 4,
                worker: node().node_id(),
                base_params: Hash32::of(b"parameters of round 4"),
                reason: "training failed: out of memory".into(),
                issued_at: 1_790_000_100_000,
            },
        )
    }

    fn hello() -> Hello {
        Hello {
            protocol_version: 1,
            certificate: Some(certificate()),
        }
    }

    /// One vector: what it is, its bytes in hex, its decoded value.
    fn envelope<T>(name: &str, what: &str, signed: &Signed<T>) -> Value
    where
        T: fairgrid_protocol::SignedMessage + Serialize + DeserializeOwned,
    {
        let bytes = signed.to_bytes();
        let (signer, value) = signed.verify_and_decode().expect("the vector verifies");
        json!({
            "name": name,
            "what": what,
            "kind": T::KIND,
            "message_id": signed.id().to_hex(),
            "hex": hex::encode(&bytes),
            "signer": hex::encode(signer.0),
            "decoded": value,
        })
    }

    pub fn all() -> Vec<Value> {
        let request = Request::Hello(hello());
        let response = Response::Hello(hello());
        let request_frame = encode_frame(&request).unwrap();
        let response_frame = encode_frame(&response).unwrap();
        vec![
            envelope(
                "owner-certificate",
                "Signed<OwnerCertificate>: owner key signs a node into its owner",
                &certificate(),
            ),
            envelope(
                "advert-cpu",
                "Signed<CapacityAdvert> of a CPU node without a certificate (its own owner), as gossiped on fairgrid/v1/adverts",
                &advert(false),
            ),
            envelope(
                "advert-gpu",
                "Signed<CapacityAdvert> of a certified node with one GPU",
                &advert(true),
            ),
            envelope("bid", "Signed<Bid>, sent as Request::JobBid", &bid()),
            envelope(
                "round-refusal",
                "Signed<RoundRefusal>, sent as Request::RoundRefusal",
                &refusal(),
            ),
            json!({
                "name": "hello-request",
                "what": "request-response frame on /fairgrid/req/1: u32 big-endian length, then Request::Hello (variant index 0)",
                "hex": hex::encode(&request_frame),
                "decoded": request,
            }),
            json!({
                "name": "hello-response",
                "what": "request-response frame: u32 big-endian length, then Response::Hello (variant index 0)",
                "hex": hex::encode(&response_frame),
                "decoded": response,
            }),
        ]
    }

    /// Decodes each committed vector's bytes and checks them against the
    /// value it claims, and that envelopes verify under their signer.
    pub fn decode_and_check(vectors: &[Value]) {
        for v in vectors {
            let name = v["name"].as_str().unwrap();
            let bytes = hex::decode(v["hex"].as_str().unwrap()).unwrap();
            let decoded = match name {
                "owner-certificate" => open::<OwnerCertificate>(&bytes),
                "advert-cpu" | "advert-gpu" => open::<CapacityAdvert>(&bytes),
                "bid" => open::<Bid>(&bytes),
                "round-refusal" => open::<RoundRefusal>(&bytes),
                "hello-request" => {
                    serde_json::to_value(decode_frame::<Request>(&bytes[4..]).unwrap()).unwrap()
                }
                "hello-response" => {
                    serde_json::to_value(decode_frame::<Response>(&bytes[4..]).unwrap()).unwrap()
                }
                other => panic!("no decoder for vector {other}"),
            };
            assert_eq!(
                decoded, v["decoded"],
                "vector {name} does not decode to its value"
            );
        }
    }

    fn open<T>(bytes: &[u8]) -> Value
    where
        T: fairgrid_protocol::SignedMessage + Serialize + DeserializeOwned,
    {
        let signed = Signed::<T>::from_bytes(bytes).unwrap();
        let (_, value) = signed.verify_and_decode().unwrap();
        serde_json::to_value(value).unwrap()
    }
}

#[test]
fn the_test_vectors_are_what_the_code_writes_and_reads() {
    let built = serde_json::to_string_pretty(&vectors::all()).unwrap() + "\n";
    if std::env::var_os("FAIRGRID_BLESS").is_some() {
        std::fs::write(vectors::FILE, &built).unwrap();
    }
    let documented = std::fs::read_to_string(vectors::FILE).unwrap_or_default();
    let committed: Vec<serde_json::Value> =
        serde_json::from_str(&documented).expect("docs/test-vectors.json is JSON");
    vectors::decode_and_check(&committed);
    assert!(
        documented == built,
        "docs/test-vectors.json differs from what the code writes: a protocol change. \
         Review it, then regenerate with FAIRGRID_BLESS=1"
    );
}
