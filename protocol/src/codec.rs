//! Canonical bincode 2 encoding with bounded, exact decoding.
//!
//! Every decode of untrusted bytes goes through [`decode_exact`]: the input
//! length is checked against the kind's limit first, bincode's own limit
//! bounds what a hostile length prefix can make it allocate, and trailing
//! bytes are an error.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ProtocolError, Result};

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Canonical bytes of a value. Encoding to a `Vec` cannot fail for the
/// protocol's types (no maps with non-serialisable keys, no unsized data).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("protocol types always encode")
}

/// Decodes exactly one `T` from `bytes`, which must be at most `max` long
/// and must be consumed entirely.
pub fn decode_exact<T: DeserializeOwned>(
    kind: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T> {
    if bytes.len() > max {
        return Err(ProtocolError::Oversized {
            kind,
            len: bytes.len(),
            max,
        });
    }
    // bincode wants its limit as a const generic; pick the smallest tier that
    // covers `max` so allocations stay proportional to the message kind.
    let decoded = match max {
        0..=65_536 => decode_with_limit::<T, 65_536>(bytes),
        65_537..=1_048_576 => decode_with_limit::<T, 1_048_576>(bytes),
        1_048_577..=16_777_216 => decode_with_limit::<T, 16_777_216>(bytes),
        _ => decode_with_limit::<T, 268_435_456>(bytes),
    };
    let (value, used) = decoded.map_err(|e| ProtocolError::Malformed {
        kind,
        reason: e.to_string(),
    })?;
    if used != bytes.len() {
        return Err(ProtocolError::TrailingBytes {
            kind,
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

fn decode_with_limit<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, config().with_limit::<LIMIT>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_bytes_and_oversize() {
        let mut bytes = encode(&(7u32, String::from("x")));
        assert_eq!(
            decode_exact::<(u32, String)>("t", &bytes, 100).unwrap().0,
            7
        );
        bytes.push(0);
        assert!(matches!(
            decode_exact::<(u32, String)>("t", &bytes, 100),
            Err(ProtocolError::TrailingBytes { extra: 1, .. })
        ));
        assert!(matches!(
            decode_exact::<(u32, String)>("t", &bytes, 2),
            Err(ProtocolError::Oversized { .. })
        ));
    }

    #[test]
    fn huge_length_prefix_is_an_error_not_an_abort() {
        // A Vec<u64> claiming 2^32 elements, followed by nothing.
        let mut bytes = vec![253u8];
        bytes.extend_from_slice(&(1u64 << 32).to_le_bytes());
        assert!(matches!(
            decode_exact::<Vec<u64>>("t", &bytes, 1000),
            Err(ProtocolError::Malformed { .. })
        ));
    }
}
