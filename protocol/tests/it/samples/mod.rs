//! Random but valid instances of every signed message kind, from a seed,
//! and a macro that runs one test body per kind.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use fairgrid_protocol::cert::{OwnerCertificate, Revocation};
use fairgrid_protocol::ledger::{EntryBody, LedgerEntry, RoundParticipant};
use fairgrid_protocol::market::{MarketPolicy, WindowUsage};
use fairgrid_protocol::messages::*;
use fairgrid_protocol::{Hash32, Keypair, NodeId, OwnerId, ResourceVec, Signed};

pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(seed)
    }
    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn u32(&mut self) -> u32 {
        self.u64() as u32
    }
    pub fn small(&mut self, n: u64) -> usize {
        (self.u64() % n) as usize
    }
    pub fn hash(&mut self) -> Hash32 {
        Hash32::of(&self.u64().to_le_bytes())
    }
    pub fn key(&mut self) -> Keypair {
        Keypair::from_seed(&self.u64().to_le_bytes())
    }
    pub fn node(&mut self) -> NodeId {
        self.key().node_id()
    }
    pub fn owner(&mut self) -> OwnerId {
        self.key().owner_id()
    }
    pub fn text(&mut self) -> String {
        let n = self.small(20);
        (0..n)
            .map(|_| char::from(b'a' + self.small(26) as u8))
            .collect()
    }
    pub fn resources(&mut self) -> ResourceVec {
        ResourceVec::from_array([
            self.u64(),
            self.u64() >> 20,
            self.u64() % 8000,
            self.u64() % 80000,
        ])
    }
    pub fn shards(&mut self) -> Vec<u32> {
        (0..self.small(50)).map(|_| self.u32()).collect()
    }
    pub fn f32(&mut self) -> f32 {
        (self.u64() % 1_000_000) as f32 / 1000.0
    }

    pub fn cert(&mut self) -> OwnerCertificate {
        OwnerCertificate {
            node: self.node(),
            owner: self.owner(),
            label: self.text(),
            max_capacity: self.resources(),
            valid_from: self.u64(),
            valid_until: self.u64(),
            serial: self.u64(),
        }
    }

    pub fn signed_cert(&mut self) -> Option<Signed<OwnerCertificate>> {
        if self.small(2) == 0 {
            return None;
        }
        let key = self.key();
        Some(Signed::sign(&key, &self.cert()))
    }

    pub fn revocation(&mut self) -> Revocation {
        Revocation {
            owner: self.owner(),
            seq: self.u64(),
            serials: (0..self.small(20))
                .map(|_| self.u64())
                .collect::<BTreeSet<_>>(),
            issued_at: self.u64(),
        }
    }

    pub fn advert(&mut self) -> CapacityAdvert {
        CapacityAdvert {
            node: self.node(),
            owner_cert: self.signed_cert(),
            hardware: Hardware {
                cpu_cores: self.u32(),
                cpu_gflops: self.u32(),
                mem_mib: self.u64(),
                gpus: (0..self.small(4))
                    .map(|_| GpuInfo {
                        model: self.text(),
                        mem_mib: self.u64(),
                        gflops: self.u32(),
                    })
                    .collect(),
            },
            offered: self.resources(),
            price_floor: self.u64(),
            seq: self.u64(),
            issued_at: self.u64(),
            expires_at: self.u64(),
            reach: [Reach::Unknown, Reach::Direct, Reach::Relayed][self.small(3)],
        }
    }

    pub fn job(&mut self) -> JobSpec {
        JobSpec {
            submitter: self.node(),
            nonce: self.u64(),
            model: ModelSpec {
                arch: match self.small(3) {
                    0 => ModelArch::LogReg,
                    1 => ModelArch::Mlp {
                        hidden: vec![self.u32() % 512, 64],
                    },
                    _ => ModelArch::Cnn,
                },
                input: InputShape {
                    channels: 1,
                    height: 28,
                    width: 28,
                    values: fairgrid_protocol::messages::ValueKind::U8,
                },
                classes: 10,
            },
            dataset: DatasetDescriptor {
                name: self.text(),
                shards: (0..self.small(30))
                    .map(|_| ShardInfo {
                        hash: self.hash(),
                        samples: self.u32(),
                    })
                    .collect(),
                test_hash: self.hash(),
                test_samples: self.u32(),
            },
            hyper: HyperParams {
                rounds: self.u32(),
                local_steps: self.u32(),
                batch_size: self.u32(),
                optimizer: [
                    OptimizerKind::Sgd,
                    OptimizerKind::Nesterov,
                    OptimizerKind::Adam,
                ][self.small(3)],
                lr: self.f32(),
                momentum: self.f32(),
                outer_lr: self.f32(),
                compression: self.compression(),
                seed: self.u64(),
                schedule: [LrSchedule::Constant, LrSchedule::Cosine][self.small(2)],
                aggregation: Default::default(),
                outer_momentum: self.f32(),
                eval_every: self.u32(),
                result: ModelCompression {
                    prune_ppm: self.u32(),
                    finetune_steps: self.u32(),
                    finetune_lr: self.f32(),
                    int8: self.small(2) == 1,
                },
            },
            demand_per_shard: self.resources(),
            limit_price: self.u64(),
            alpha_ppm: self.u32(),
            bid_window_ms: self.u64(),
            round_timeout_ms: self.u64(),
            deadline: self.u64(),
            on_shortfall: [ShortfallPolicy::RunWithFewer, ShortfallPolicy::Wait][self.small(2)],
            relayed_workers: self.small(2) == 0,
            exact_audits: self.small(2) == 0,
            submitted_at: self.u64(),
        }
    }

    pub fn compression(&mut self) -> Compression {
        match self.small(3) {
            0 => Compression::Fp32,
            1 => Compression::Int8 { block: self.u32() },
            _ => Compression::TopK {
                permille: self.u32(),
            },
        }
    }

    pub fn bid(&mut self) -> Bid {
        Bid {
            job_id: self.hash(),
            node: self.node(),
            owner_cert: self.signed_cert(),
            ask: self.u64(),
            capacity: self.resources(),
            nonce: self.u64(),
            issued_at: self.u64(),
            speed_milli: 0,
        }
    }

    pub fn allocation(&mut self) -> Allocation {
        let mut by_owner = BTreeMap::new();
        for _ in 0..self.small(5) {
            by_owner.insert(self.owner(), self.u64());
        }
        Allocation {
            algo_version: self.u32(),
            job_id: self.hash(),
            attempt: self.u32(),
            prev_allocation: self.hash(),
            cleared_at: self.u64(),
            policy: MarketPolicy {
                alpha_ppm: self.u32(),
                beta_ppm: self.u32(),
                window: WindowUsage {
                    total: self.u64(),
                    by_owner,
                },
            },
            shards: self.shards(),
            bid_root: self.hash(),
            seed: self.hash(),
            assignments: (0..self.small(6))
                .map(|_| Assignment {
                    node: self.node(),
                    owner: self.owner(),
                    bid_id: self.hash(),
                    ask: self.u64(),
                    shards: self.shards(),
                })
                .collect(),
            payments: (0..self.small(4))
                .map(|_| OwnerPayment {
                    owner: self.owner(),
                    shards: self.u32(),
                    cost: self.u64(),
                    payment: self.u64(),
                })
                .collect(),
            shortfall: self.u32(),
        }
    }

    pub fn round_start(&mut self) -> RoundStart {
        RoundStart {
            job_id: self.hash(),
            round: self.u32(),
            allocation: self.hash(),
            params_hash: self.hash(),
            params_len: self.u64(),
            orders: (0..self.small(5))
                .map(|_| WorkOrder {
                    node: self.node(),
                    shards: self.shards(),
                })
                .collect(),
            deadline: self.u64(),
            issued_at: self.u64(),
        }
    }

    pub fn round_update(&mut self) -> RoundUpdate {
        RoundUpdate {
            job_id: self.hash(),
            round: self.u32(),
            worker: self.node(),
            base_params: self.hash(),
            shards: self.shards(),
            samples: self.u64(),
            loss: self.f32(),
            compression: self.compression(),
            update_hash: self.hash(),
            update_len: self.u64(),
            device_groups: self.u64() as u32,
            residual_in: self.hash(),
            residual_out: self.hash(),
            compute_ms: 0,
            arithmetic: [
                Arithmetic::X86Avx2Fma,
                Arithmetic::OtherCpu,
                Arithmetic::Gpu,
            ][self.small(3)],
        }
    }

    pub fn receipt(&mut self) -> Receipt {
        Receipt {
            job_id: self.hash(),
            round: self.u32(),
            worker: self.node(),
            update_hash: self.hash(),
            accepted: self.small(2) == 0,
            reason: self.text(),
            issued_at: self.u64(),
        }
    }

    pub fn ledger_entry(&mut self) -> LedgerEntry {
        let body = match self.small(9) {
            0 => EntryBody::AdvertSeen {
                advert_id: self.hash(),
                node: self.node(),
                owner: self.owner(),
                seq: self.u64(),
                expires_at: self.u64(),
            },
            1 => EntryBody::CertificateUsed {
                node: self.node(),
                owner: self.owner(),
                serial: self.u64(),
                label: self.text(),
                valid_until: self.u64(),
            },
            2 => EntryBody::JobSubmitted {
                job_id: self.hash(),
                submitter: self.node(),
                shards: self.u32(),
                limit_price: self.u64(),
                alpha_ppm: self.u32(),
            },
            3 => {
                let key = self.key();
                let bid_key = self.key();
                EntryBody::AllocationMade {
                    job_id: self.hash(),
                    allocation: Signed::sign(&key, &self.allocation()),
                    bids: (0..self.small(3))
                        .map(|_| Signed::sign(&bid_key, &self.bid()))
                        .collect(),
                }
            }
            4 => EntryBody::RoundCompleted {
                job_id: self.hash(),
                round: self.u32(),
                participants: (0..self.small(4))
                    .map(|_| RoundParticipant {
                        node: self.node(),
                        owner: self.owner(),
                        shards: self.shards(),
                        samples: self.u64(),
                        update_hash: self.hash(),
                    })
                    .collect(),
                model_hash: self.hash(),
                train_loss_micro: self.u64(),
                test_accuracy_ppm: (self.small(2) == 0).then(|| self.u32()),
            },
            5 => EntryBody::Credit {
                job_id: self.hash(),
                owner: self.owner(),
                amount: self.u64(),
                shards: self.u32(),
                clearing_price: self.u64(),
                allocation: self.hash(),
            },
            6 => EntryBody::Verification {
                job_id: self.hash(),
                round: self.u32(),
                node: self.node(),
                passed: self.small(2) == 0,
                detail: self.text(),
            },
            7 => EntryBody::JobFinished {
                job_id: self.hash(),
                rounds: self.u32(),
                model_hash: self.hash(),
                test_accuracy_ppm: self.u32(),
                bytes_moved: self.u64(),
            },
            _ => EntryBody::JobFailed {
                job_id: self.hash(),
                rounds: self.u32(),
                reason: self.text(),
            },
        };
        LedgerEntry {
            author: self.node(),
            seq: self.u64(),
            prev: self.hash(),
            timestamp: self.u64(),
            body,
        }
    }
}

/// Runs `$body` once per signed message kind with `$gen` producing a sample:
/// `for_each_kind!(|T, gen_fn| body)` where `T` is the type and `gen_fn` a
/// `fn(&mut Gen) -> T`.
#[macro_export]
macro_rules! for_each_kind {
    ($run:ident) => {
        $run::<fairgrid_protocol::cert::OwnerCertificate>(samples::Gen::cert);
        $run::<fairgrid_protocol::cert::Revocation>(samples::Gen::revocation);
        $run::<fairgrid_protocol::messages::CapacityAdvert>(samples::Gen::advert);
        $run::<fairgrid_protocol::messages::JobSpec>(samples::Gen::job);
        $run::<fairgrid_protocol::messages::Bid>(samples::Gen::bid);
        $run::<fairgrid_protocol::messages::Allocation>(samples::Gen::allocation);
        $run::<fairgrid_protocol::messages::RoundStart>(samples::Gen::round_start);
        $run::<fairgrid_protocol::messages::RoundUpdate>(samples::Gen::round_update);
        $run::<fairgrid_protocol::messages::Receipt>(samples::Gen::receipt);
        $run::<fairgrid_protocol::ledger::LedgerEntry>(samples::Gen::ledger_entry);
    };
}
