//! How a session becomes bytes and back: the user's [`SessionCodec`].
//!
//! The handoff protocol streams sessions between pods as bytes, and the
//! fast-restart snapshot writes them to a file; both go through the store's
//! codec. [`JsonCodec`] serves any serde type; a service with a compact binary
//! format implements the trait itself.

use std::error::Error;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A codec's error.
pub type CodecError = Box<dyn Error + Send + Sync>;

/// Encodes and decodes sessions of type `V`. `decode(encode(v))` must equal
/// `v` for every state the service can reach.
pub trait SessionCodec<V>: Send + Sync + 'static {
    /// Encodes one session state.
    fn encode(&self, value: &V) -> Result<Bytes, CodecError>;
    /// Decodes one session state.
    fn decode(&self, bytes: &[u8]) -> Result<V, CodecError>;
}

/// JSON through serde: readable, portable across languages, not compact.
///
/// ```
/// use locus::store::{JsonCodec, SessionCodec};
///
/// let bytes = SessionCodec::<Vec<u32>>::encode(&JsonCodec, &vec![1, 2]).unwrap();
/// assert_eq!(&bytes[..], b"[1,2]");
/// let back: Vec<u32> = JsonCodec.decode(&bytes).unwrap();
/// assert_eq!(back, vec![1, 2]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<V: Serialize + DeserializeOwned> SessionCodec<V> for JsonCodec {
    fn encode(&self, value: &V) -> Result<Bytes, CodecError> {
        Ok(Bytes::from(serde_json::to_vec(value)?))
    }

    fn decode(&self, bytes: &[u8]) -> Result<V, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_reports_malformed_input() {
        let value = vec![String::from("a"), String::from("b")];
        let bytes = JsonCodec.encode(&value).unwrap();
        let back: Vec<String> = JsonCodec.decode(&bytes).unwrap();
        assert_eq!(back, value);
        let bad: Result<Vec<String>, _> = JsonCodec.decode(b"{not json");
        assert!(bad.is_err());
    }
}
