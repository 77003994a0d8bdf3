//! `Value`: the dynamic value a tuple field holds.
//!
//! Contract: a `Value` is one of null, bool, 64-bit integer, 64-bit float, UTF-8 string, bytes,
//! list or string-keyed map. It serializes as the natural data of whatever format it is written
//! to (a JSON number, a MessagePack string, …) and deserializes back from that same shape, so
//! it crosses processes unchanged. Short strings (up to 24 bytes) are stored inline and cost no
//! allocation. [`Value::stable_hash`] is the same in every process and build, which is what
//! fields grouping needs to send equal keys to the same task everywhere.

use std::collections::BTreeMap;
use std::fmt;

use compact_str::CompactString;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A dynamically typed field value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(CompactString),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The name of this value's type, as used in error messages.
    #[inline]
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// A string value that borrows a `'static` string: never allocates, however long.
    #[inline]
    pub const fn from_static(s: &'static str) -> Value {
        Value::Str(CompactString::const_new(s))
    }

    #[inline]
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    #[inline]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    #[inline]
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Integers widen to floats; nothing else converts.
    #[inline]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    #[inline]
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// Bytes, or the UTF-8 bytes of a string.
    #[inline]
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::Str(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    #[inline]
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    #[inline]
    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// A 64-bit hash that depends only on the value (never on the process, build or run):
    /// equal values hash equal everywhere. Strings and bytes with the same content hash alike.
    #[inline]
    pub fn stable_hash(&self) -> u64 {
        let mut h = StableHasher::new();
        // The common keys inline; the same bytes as `hash_into` feeds, so the same hash.
        match self {
            Value::Str(s) => h.write_bytes(s.as_bytes()),
            Value::Int(i) => h.write_u64(*i as u64),
            other => other.hash_into(&mut h),
        }
        h.finish()
    }

    /// Feeds this value into `h`; used to hash several fields together.
    #[inline]
    pub fn hash_into(&self, h: &mut StableHasher) {
        match self {
            Value::Null => h.write_u64(0x6e75_6c6c),
            Value::Bool(b) => h.write_u64(*b as u64 + 1),
            Value::Int(i) => h.write_u64(*i as u64),
            Value::Float(f) => h.write_u64(f.to_bits()),
            Value::Str(s) => h.write_bytes(s.as_bytes()),
            Value::Bytes(b) => h.write_bytes(b),
            Value::List(l) => {
                h.write_u64(l.len() as u64);
                for v in l {
                    v.hash_into(h);
                }
            }
            Value::Map(m) => {
                h.write_u64(m.len() as u64);
                for (k, v) in m {
                    h.write_bytes(k.as_bytes());
                    v.hash_into(h);
                }
            }
        }
    }
}

/// A small, fixed (unseeded) hasher: the same input gives the same hash in every process.
#[derive(Clone, Debug)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl StableHasher {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;

    pub fn new() -> Self {
        StableHasher(0x243F_6A88_85A3_08D3)
    }

    #[inline]
    pub fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }

    #[inline]
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        // The length goes in with the tail so "a" and "a\0" differ.
        self.write_u64(load_tail(chunks.remainder()) ^ ((bytes.len() as u64) << 56));
    }

    /// The final, well-mixed hash (a murmur3 finalizer), good for `% n`.
    #[inline]
    pub fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// Up to 7 bytes as a little-endian word, without a variable-length copy.
#[inline]
fn load_tail(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 4 {
        let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
        let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]) as u64;
        lo | (hi << ((n - 4) * 8))
    } else if n > 0 {
        b[0] as u64 | (b[n / 2] as u64) << 8 | (b[n - 1] as u64) << 16
    } else {
        0
    }
}

/// Maps a hash onto `0..n` (n > 0) with a multiply instead of a division: as even as `%`
/// for a well-mixed hash, and the same in every process.
#[inline]
pub fn bucket(hash: u64, n: usize) -> usize {
    ((hash as u128 * n as u128) >> 64) as usize
}

/// Usable as a `std::hash::Hasher`, e.g. for a fast `HashMap` of words.
impl std::hash::Hasher for StableHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.write_bytes(bytes)
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        StableHasher::write_u64(self, n)
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        StableHasher::write_u64(self, n as u64)
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        StableHasher::write_u64(self, n as u64)
    }
    #[inline]
    fn finish(&self) -> u64 {
        StableHasher::finish(self)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) => f.write_str(s),
                Err(_) => write!(f, "<{} bytes>", b.len()),
            },
            Value::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            #[inline]
            fn from(v: $t) -> Self { Value::Int(v as i64) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

impl From<bool> for Value {
    #[inline]
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    #[inline]
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    #[inline]
    fn from(v: f32) -> Self {
        Value::Float(v as f64)
    }
}
impl From<&str> for Value {
    #[inline]
    fn from(v: &str) -> Self {
        Value::Str(CompactString::from(v))
    }
}
impl From<String> for Value {
    #[inline]
    fn from(v: String) -> Self {
        Value::Str(CompactString::from(v))
    }
}
impl From<&String> for Value {
    #[inline]
    fn from(v: &String) -> Self {
        Value::Str(CompactString::from(v.as_str()))
    }
}
impl From<CompactString> for Value {
    #[inline]
    fn from(v: CompactString) -> Self {
        Value::Str(v)
    }
}
impl From<Vec<u8>> for Value {
    #[inline]
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl From<&[u8]> for Value {
    #[inline]
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}
impl From<Vec<Value>> for Value {
    #[inline]
    fn from(v: Vec<Value>) -> Self {
        Value::List(v)
    }
}
impl From<BTreeMap<String, Value>> for Value {
    #[inline]
    fn from(v: BTreeMap<String, Value>) -> Self {
        Value::Map(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    #[inline]
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::List(l) => {
                let mut seq = s.serialize_seq(Some(l.len()))?;
                for v in l {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a null, bool, number, string, bytes, list or map")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {v} does not fit in 64 signed bits")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.insert(k, v);
        }
        Ok(Value::Map(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_depends_only_on_content() {
        assert_eq!(Value::from("apple").stable_hash(), Value::from("apple").stable_hash());
        assert_ne!(Value::from("apple").stable_hash(), Value::from("apples").stable_hash());
        assert_ne!(Value::from("a").stable_hash(), Value::from("a\0").stable_hash());
        // Pinned: changing the hash would move keys between tasks across versions.
        assert_eq!(Value::from(7).stable_hash(), Value::from(7i64).stable_hash());
    }

    #[test]
    fn json_round_trip_keeps_natural_shape() {
        let v = Value::List(vec![Value::from(1), Value::from("x"), Value::Null, Value::from(2.5)]);
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(text, r#"[1,"x",null,2.5]"#);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
