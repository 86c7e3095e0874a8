//! The request-response messages and their per-message size limits.
//!
//! Each enum is encoded with bincode; its first byte is the variant index
//! (always one byte below 251 variants), so the codec can look up a
//! variant's limit before reading its body. To add a message: append a
//! variant (never reorder) and its `(name, limit)` to `LIMITS` at the same
//! index; the tests check the two stay in step.

use fairgrid_protocol::{OwnerCertificate, Signed};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A request-response message enum with per-variant size limits.
pub trait WireEnum: Serialize + DeserializeOwned + Send + 'static {
    /// For errors: "request" or "response".
    const NAME: &'static str;
    /// `(variant name, largest encoded size in bytes)` by variant index.
    const LIMITS: &'static [(&'static str, usize)];
}

/// Most adverts a snapshot carries.
pub const MAX_SNAPSHOT_ADVERTS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Consortium handshake: here is my certificate, show me yours.
    Hello(Hello),
    /// Send me the live adverts you hold (a newcomer's catch-up).
    AdvertSnapshot,
}

impl WireEnum for Request {
    const NAME: &'static str = "request";
    const LIMITS: &'static [(&'static str, usize)] = &[("hello", 2048), ("advert-snapshot", 16)];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Hello(Hello),
    /// Signed advert envelopes (each re-validated by the receiver).
    Adverts(Vec<Vec<u8>>),
    /// The request was refused; the reason is for logs.
    Refused {
        reason: String,
    },
}

impl WireEnum for Response {
    const NAME: &'static str = "response";
    const LIMITS: &'static [(&'static str, usize)] = &[
        ("hello", 2048),
        ("adverts", MAX_SNAPSHOT_ADVERTS * 9 * 1024),
        ("refused", 1024),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub certificate: Option<Signed<OwnerCertificate>>,
}

impl Response {
    pub fn refused(reason: impl Into<String>) -> Response {
        let mut reason: String = reason.into();
        reason.truncate(900);
        Response::Refused { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fairgrid_protocol::codec::encode;

    /// One sample of every variant, in declaration order.
    fn requests() -> Vec<Request> {
        vec![
            Request::Hello(Hello {
                protocol_version: 1,
                certificate: None,
            }),
            Request::AdvertSnapshot,
        ]
    }

    fn responses() -> Vec<Response> {
        vec![
            Response::Hello(Hello {
                protocol_version: 1,
                certificate: None,
            }),
            Response::Adverts(vec![vec![1, 2, 3]]),
            Response::refused("no"),
        ]
    }

    /// Exhaustive: adding a variant without updating this (and `LIMITS`)
    /// does not compile.
    fn request_index(r: &Request) -> usize {
        match r {
            Request::Hello(_) => 0,
            Request::AdvertSnapshot => 1,
        }
    }

    fn response_index(r: &Response) -> usize {
        match r {
            Response::Hello(_) => 0,
            Response::Adverts(_) => 1,
            Response::Refused { .. } => 2,
        }
    }

    #[test]
    fn first_byte_is_the_variant_index_and_limits_cover_each_variant() {
        let reqs = requests();
        assert_eq!(reqs.len(), Request::LIMITS.len());
        for (i, r) in reqs.iter().enumerate() {
            assert_eq!(encode(r)[0] as usize, i);
            assert_eq!(request_index(r), i);
        }
        let resps = responses();
        assert_eq!(resps.len(), Response::LIMITS.len());
        for (i, r) in resps.iter().enumerate() {
            assert_eq!(encode(r)[0] as usize, i);
            assert_eq!(response_index(r), i);
        }
    }
}
