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
    // Most records are a few hundred bytes: one allocation instead of a
    // chain of doublings.
    let mut out = Vec::with_capacity(256);
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Encodes a value at the end of `out`, for callers that pack many records
/// into one reused buffer. On error `out` may hold part of the record past
/// its old length; the caller truncates or discards it.
pub fn encode_append<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| CodecError::Encode(e.to_string()))
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

/// Limit on one decoded network message: the frame limit. Nothing a peer
/// sends can claim more memory than a whole frame could carry.
const MESSAGE_BYTES_MAX: usize = crate::api::FRAME_BYTES_MAX;

/// Encodes a network message (same format as the log).
pub fn encode_message<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode(value)
}

/// Decodes a network message from a peer nobody vouches for: bounded to a
/// frame's size and, like [`decode`], every byte must be consumed.
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let config = bincode::config::standard().with_limit::<MESSAGE_BYTES_MAX>();
    let (value, read) = bincode::serde::decode_from_slice(bytes, config)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

/// Serde helper for byte buffers: `#[serde(with = "crate::codec::bytes")]`.
/// Encodes exactly as a `Vec<u8>` sequence does in bincode (length, then the
/// bytes), but in one copy instead of one call per byte.
pub mod bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: AsRef<[u8]> + ?Sized>(
        value: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(value.as_ref())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
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
        assert!(matches!(
            decode::<(u64, String)>(&longer),
            Err(CodecError::TrailingBytes(1))
        ));
        assert!(decode::<(u64, String)>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Fast(#[serde(with = "bytes")] Vec<u8>);

    #[test]
    fn byte_helper_encodes_like_a_plain_vec() {
        let data: Vec<u8> = (0..=255).collect();
        assert_eq!(encode(&Fast(data.clone())).unwrap(), encode(&data).unwrap());
        assert_eq!(decode::<Fast>(&encode(&data).unwrap()).unwrap(), Fast(data));
    }
}
