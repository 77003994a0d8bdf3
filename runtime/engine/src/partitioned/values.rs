//! Record bytes ↔ tuple values, alike for every broker.
//!
//! Contract: a spout emits a record's key and value with [`text_or_bytes`] (valid UTF-8 as a
//! string, anything else as bytes); a sink writes a field with [`to_bytes`] (strings as UTF-8,
//! bytes as they are, null as nothing, anything else as its JSON text); a spout's tuple of a
//! record is [`record_values`]: key (null when there is none), value, partition, offset.

use bytes::Bytes;
use compact_str::CompactString;
use squall_api::{values, Value, Values};

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

/// The fields of the tuple a spout emits for a record: see [`record_values`].
pub const RECORD_FIELDS: [&str; 4] = ["key", "value", "partition", "offset"];

/// The tuple a spout emits for a record: `key` (null when there is none), `value`,
/// `partition`, `offset`.
pub fn record_values(key: Option<&[u8]>, value: &[u8], partition: u32, offset: u64) -> Values {
    let key = key.map_or(Value::Null, text_or_bytes);
    values![key, text_or_bytes(value), partition as i64, offset as i64]
}
