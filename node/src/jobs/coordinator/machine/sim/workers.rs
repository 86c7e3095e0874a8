//! The simulated workers: signed bids, and what each does with a round
//! start (train and send a real, signed update; refuse; stay silent; or
//! send garbage), with forged and replayed messages on the side.

use fairgrid_kernels::{Compression as KCompression, Compressor};
use fairgrid_protocol::messages::{Bid, RoundRefusal, RoundStart, RoundUpdate};
use fairgrid_protocol::{Hash32, Keypair, NodeId, ResourceVec, Signed};
use rand::Rng;

use super::super::rounds::order_samples;
use super::World;

/// How a worker behaves for the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temper {
    Honest,
    /// Takes rounds and never answers.
    Silent,
    /// Refuses every round with a signed refusal.
    Refuser,
    /// Sends updates whose bytes do not match their hash.
    Corrupt,
    /// Sends well-formed updates that fail every audit.
    Cheat,
}

pub struct SimWorker {
    pub key: Keypair,
    pub temper: Temper,
    pub nonce: u64,
}

impl SimWorker {
    pub fn node(&self) -> NodeId {
        self.key.node_id()
    }

    pub fn bid(&mut self, job_id: Hash32, ask: u64, now: u64) -> (Signed<Bid>, Bid) {
        self.nonce += 1;
        let bid = Bid {
            job_id,
            node: self.node(),
            owner_cert: None,
            ask,
            capacity: ResourceVec {
                cpu_milli: 400,
                mem_mib: 64,
                gpu_milli: 0,
                gpu_mem_mib: 0,
            },
            nonce: self.nonce,
            issued_at: now,
            speed_milli: 0,
        };
        (Signed::sign(&self.key, &bid), bid)
    }
}

/// A message a worker has in flight to the coordinator.
#[derive(Debug, Clone)]
pub enum Message {
    Update {
        from: NodeId,
        signed: Signed<RoundUpdate>,
        bytes: Vec<u8>,
    },
    Refusal {
        from: NodeId,
        refusal: RoundRefusal,
    },
}

impl World {
    /// Worker `w` got `start`: what it sends back, by its temper.
    pub fn react(&mut self, w: usize, start: &RoundStart) -> Option<Message> {
        let node = self.workers[w].node();
        let order = start.orders.iter().find(|o| o.node == node)?;
        let temper = self.workers[w].temper;
        if temper == Temper::Silent {
            return None;
        }
        if temper == Temper::Refuser {
            let refusal = RoundRefusal {
                job_id: start.job_id,
                round: start.round,
                worker: node,
                base_params: start.params_hash,
                reason: "cannot train".into(),
                issued_at: self.now,
            };
            return Some(Message::Refusal {
                from: node,
                refusal,
            });
        }
        let delta: Vec<f32> = (0..self.param_count)
            .map(|_| self.rng.random_range(-0.01f32..0.01))
            .collect();
        let bytes = Compressor::new(KCompression::Fp32)
            .expect("fp32")
            .encode(&delta)
            .expect("encode");
        let update = RoundUpdate {
            job_id: start.job_id,
            round: start.round,
            worker: node,
            base_params: start.params_hash,
            shards: order.shards.clone(),
            samples: order_samples(&self.spec, &order.shards),
            loss: 0.5,
            compression: self.spec.hyper.compression,
            update_hash: Hash32::of(&bytes),
            update_len: bytes.len() as u64,
            device_groups: 1,
            residual_in: Hash32::ZERO,
            residual_out: Hash32::ZERO,
            arithmetic: fairgrid_protocol::messages::Arithmetic::X86Avx2Fma,
            compute_ms: 0,
        };
        let signed = Signed::sign(&self.workers[w].key, &update);
        let mut bytes = bytes;
        if temper == Temper::Corrupt {
            bytes[0] ^= 0xff;
        }
        Some(Message::Update {
            from: node,
            signed,
            bytes,
        })
    }

    /// A message that claims to come from `victim` but is signed by
    /// another key, or one sent by a node that has no order.
    pub fn forged(&mut self, start: &RoundStart) -> Message {
        let w = self.rng.random_range(0..self.workers.len());
        let victim = self.workers[(w + 1) % self.workers.len()].node();
        let update = RoundUpdate {
            job_id: start.job_id,
            round: start.round,
            worker: victim,
            base_params: start.params_hash,
            shards: vec![0],
            samples: 1,
            loss: 0.1,
            compression: self.spec.hyper.compression,
            update_hash: Hash32::of(b"forged"),
            update_len: 6,
            device_groups: 1,
            residual_in: Hash32::ZERO,
            residual_out: Hash32::ZERO,
            arithmetic: fairgrid_protocol::messages::Arithmetic::X86Avx2Fma,
            compute_ms: 0,
        };
        Message::Update {
            from: victim,
            signed: Signed::sign(&self.workers[w].key, &update),
            bytes: b"forged".to_vec(),
        }
    }
}
