//! Capacity adverts: measuring what this node offers ([`probe`]), issuing
//! signed adverts ([`publisher`]), validating incoming ones ([`validate`])
//! and keeping the table of live adverts ([`table`]).

pub mod forge;
pub mod probe;
pub mod publisher;
pub mod table;
pub mod validate;

pub use publisher::{AdvertPublisher, IdleHours};
pub use table::{AdvertTable, LiveAdvert};
pub use validate::{AcceptedAdvert, AdvertRejection, validate_advert};
