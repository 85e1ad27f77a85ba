//! The one place that knows how bytes on disk are encoded.
//!
//! Everything persisted (envelopes, event payloads, snapshots) goes through
//! [`encode`] and [`decode`]. bincode is pinned to `=2.0.1` in `Cargo.toml`
//! because its wire format is what the golden logs in `replay/` freeze; a
//! codec change must show up as a failing golden test, never as silently
//! different bytes.

use serde::{de::DeserializeOwned, Serialize};

/// Upper bound on one decoded value. A corrupted length prefix inside a
/// record must not make the decoder try to allocate gigabytes.
pub const DECODE_BYTES_MAX: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    // Little-endian, variable-length integers: compact and the bincode 2
    // default. The limit guards allocation on corrupt input.
    bincode::config::standard().with_limit::<DECODE_BYTES_MAX>()
}

/// Why bytes could not be turned into a value or back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encode failed: {0}")]
    Encode(String),
    #[error("decode failed: {0}")]
    Decode(String),
    #[error("decode left {0} trailing bytes")]
    TrailingBytes(usize),
}

/// Encodes a value in the log's binary format.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value and insists that every byte was consumed, so a record
/// that decodes "by accident" from a damaged buffer is still caught.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes_are_rejected() {
        let bytes = encode(&(7u64, "seven".to_string())).unwrap();
        let back: (u64, String) = decode(&bytes).unwrap();
        assert_eq!(back, (7, "seven".to_string()));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode::<(u64, String)>(&longer), Err(CodecError::TrailingBytes(1))));
        assert!(decode::<(u64, String)>(&bytes[..bytes.len() - 1]).is_err());
    }
}
