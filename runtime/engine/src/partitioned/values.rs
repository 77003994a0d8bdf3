//! Record bytes ↔ tuple values, alike for every broker.
//!
//! Contract: a spout emits a record's key and value with [`text_or_bytes`] (valid UTF-8 as a
//! string, anything else as bytes); a sink writes a field with [`to_bytes`] (strings as UTF-8,
//! bytes as they are, null as nothing, anything else as its JSON text).

use bytes::Bytes;
use compact_str::CompactString;
use squall_api::Value;

/// UTF-8 as a string, anything else as bytes.
pub fn text_or_bytes(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::Str(CompactString::new(text)),
        Err(_) => Value::Bytes(bytes.to_vec()),
    }
}

/// A value as record bytes: strings as UTF-8, bytes as they are, anything else as JSON text.
pub fn to_bytes(value: &Value) -> Bytes {
    match value {
        Value::Str(s) => Bytes::copy_from_slice(s.as_bytes()),
        Value::Bytes(b) => Bytes::copy_from_slice(b),
        Value::Null => Bytes::new(),
        other => Bytes::from(serde_json::to_vec(other).unwrap_or_default()),
    }
}
