//! The signed messages nodes exchange. Each type implements
//! [`SignedMessage`](crate::SignedMessage) with its domain tag and size limit.

mod advert;
mod allocation;
mod audit;
mod bid;
mod job;
mod round;

pub use advert::{
    CapacityAdvert, GpuInfo, Hardware, MAX_ADVERT_LIFETIME_MS, MAX_CLOCK_SKEW_MS, Reach,
};
pub use allocation::{ALGO_VERSION, Allocation, Assignment, OwnerPayment};
pub use audit::AuditReport;
pub use bid::{Bid, MAX_SPEED_MILLI};
pub use job::{
    Aggregation, Compression, DatasetDescriptor, HyperParams, InputShape, JobSpec, Layer, LayerOp,
    LrSchedule, MAX_DECLARED_LAYERS, MAX_FINETUNE_STEPS, MAX_RESIDUAL_LAYERS, MAX_ROUNDS,
    MAX_SHARD_BYTES, MAX_SHARDS, MAX_TRIM, ModelArch, ModelCompression, ModelSpec, OptimizerKind,
    PPM, SHARD_HEADER_BYTES, ShardInfo, ShortfallPolicy, ValueKind,
};
pub use round::{Arithmetic, Receipt, RoundRefusal, RoundStart, RoundUpdate, WorkOrder};
