//! Records, and their encoding on disk and in fetch responses.
//!
//! Contract: a record travels as one frame, every integer little-endian:
//!
//! ```text
//! u32 len | u32 crc32 | u64 offset | i64 timestamp_ms | u32 key_len | key | value
//! ```
//!
//! - `len` counts the bytes after itself, so a frame is `4 + len` bytes: at least
//!   [`FRAME_HEADER_LEN`] (no key, empty value), at most [`MAX_FRAME_LEN`].
//! - A network frame (see [`MAX_FRAME`](crate::protocol::MAX_FRAME)) may be [`WIRE_ENVELOPE_ALLOWANCE`] bytes
//!   longer than [`MAX_FRAME_LEN`], so that a request or response carrying the largest record
//!   still fits with its envelope (topic name, ids, encoding overhead).
//! - `crc32` (crc32fast, IEEE) covers every byte after itself: offset to the end of the value.
//! - `key_len` is `u32::MAX` for a record without a key, else the key's length, which must fit
//!   in the frame; the value is the rest of the frame.
//!
//! [`encode_into`] appends one frame to a buffer. [`check_frame`] validates the frame at the
//! start of a byte slice (length bounds, key length, checksum) or says it is cut short.
//! [`Decoder`] walks a [`Bytes`] buffer frame by frame, also checking that offsets are
//! consecutive, and yields [`Record`]s whose key and value are zero-copy slices of that
//! buffer. A frame that fails a check is a [`DecodeError`] (with its byte position); a frame
//! cut short is left undecoded (see [`Decoder::remaining`]). Neither is ever returned as data.

use std::ops::Range;
use std::path::PathBuf;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::BrokerError;

/// A record to append: the log gives it its offset (and its timestamp, if none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    /// Milliseconds since the Unix epoch; None: the time of the append.
    pub timestamp: Option<i64>,
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
}

/// Bytes of a frame before its key: len, crc, offset, timestamp, key_len.
pub const FRAME_HEADER_LEN: usize = 28;
/// The largest frame, header included. Appends of bigger records are refused.
pub const MAX_FRAME_LEN: usize = 64 << 20;
/// What the network frame limit allows beyond [`MAX_FRAME_LEN`] for the message around a
/// record (the wire limit is `MAX_FRAME_LEN + WIRE_ENVELOPE_ALLOWANCE`), so that the largest
/// record the log accepts can always travel.
pub const WIRE_ENVELOPE_ALLOWANCE: usize = 64 << 10;
const NO_KEY: u32 = u32::MAX;

/// The size of the frame of a record with this key and value.
pub fn frame_len(key: Option<&[u8]>, value: &[u8]) -> usize {
    FRAME_HEADER_LEN + key.map_or(0, <[u8]>::len) + value.len()
}

/// Appends one frame to `buf`. The caller keeps frames within [`MAX_FRAME_LEN`].
pub fn encode_into(buf: &mut Vec<u8>, offset: u64, timestamp: i64, key: Option<&[u8]>, value: &[u8]) {
    let total = frame_len(key, value);
    let start = buf.len();
    buf.reserve(total);
    buf.extend_from_slice(&((total - 4) as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp.to_le_bytes());
    match key {
        Some(key) => {
            buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
            buf.extend_from_slice(key);
        }
        None => buf.extend_from_slice(&NO_KEY.to_le_bytes()),
    }
    buf.extend_from_slice(value);
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A frame that passed [`check_frame`]; ranges are relative to the frame's first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    pub offset: u64,
    pub timestamp: i64,
    /// The whole frame's size in bytes.
    pub len: usize,
    pub key: Option<Range<usize>>,
    pub value: Range<usize>,
}

impl FrameInfo {
    /// The record of this frame, which starts at `at` in `buf`, as slices of `buf`.
    pub fn record(&self, buf: &Bytes, at: usize) -> Record {
        Record {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.as_ref().map(|k| buf.slice(at + k.start..at + k.end)),
            value: buf.slice(at + self.value.start..at + self.value.end),
        }
    }
}

/// What [`check_frame`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameCheck {
    /// A whole frame with a matching checksum.
    Whole(FrameInfo),
    /// Only the first bytes of a frame of this many bytes (None: not even its length).
    Partial(Option<usize>),
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Checks the frame at the start of `buf`: length bounds, key length and checksum. `Err` says
/// why the frame is corrupt.
pub fn check_frame(buf: &[u8]) -> Result<FrameCheck, String> {
    if buf.len() < 4 {
        return Ok(FrameCheck::Partial(None));
    }
    let total = u32_at(buf, 0) as usize + 4;
    if !(FRAME_HEADER_LEN..=MAX_FRAME_LEN).contains(&total) {
        return Err(format!("frame length {total} out of bounds ({FRAME_HEADER_LEN}..={MAX_FRAME_LEN})"));
    }
    if buf.len() < total {
        return Ok(FrameCheck::Partial(Some(total)));
    }
    let frame = &buf[..total];
    let stored = u32_at(frame, 4);
    let actual = crc32fast::hash(&frame[8..]);
    if stored != actual {
        return Err(format!("checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"));
    }
    let offset = u64_at(frame, 8);
    let timestamp = u64_at(frame, 16) as i64;
    let key_len = u32_at(frame, 24);
    let (key, value_start) = if key_len == NO_KEY {
        (None, FRAME_HEADER_LEN)
    } else {
        let end = FRAME_HEADER_LEN + key_len as usize;
        if end > total {
            return Err(format!("key length {key_len} exceeds the frame ({total} bytes)"));
        }
        (Some(FRAME_HEADER_LEN..end), end)
    };
    Ok(FrameCheck::Whole(FrameInfo { offset, timestamp, len: total, key, value: value_start..total }))
}

/// A corrupt frame met by a [`Decoder`]: where (bytes from the start of its buffer) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub position: usize,
    pub why: String,
}

impl DecodeError {
    /// As a [`BrokerError::Corrupt`] of `file`, whose byte `base` the decoder's buffer started
    /// at.
    pub fn into_broker_error(self, file: impl Into<PathBuf>, base: u64) -> BrokerError {
        BrokerError::Corrupt { file: file.into(), position: base + self.position as u64, why: self.why }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt record at byte {}: {}", self.position, self.why)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes the frames of one buffer into records that share its memory.
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Bytes,
    pos: usize,
    next_offset: Option<u64>,
}

impl Decoder {
    /// Frames with any first offset, then consecutive ones.
    pub fn new(buf: Bytes) -> Self {
        Decoder { buf, pos: 0, next_offset: None }
    }

    /// Frames whose offsets are `first_offset`, `first_offset + 1`, …
    pub fn expecting(buf: Bytes, first_offset: u64) -> Self {
        Decoder { buf, pos: 0, next_offset: Some(first_offset) }
    }

    /// The byte position of the next undecoded frame.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not decoded yet (after `next_record` returned None: a frame cut short).
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next record; None once no whole frame is left.
    pub fn next_record(&mut self) -> Result<Option<Record>, DecodeError> {
        let info = match check_frame(&self.buf[self.pos..]) {
            Ok(FrameCheck::Whole(info)) => info,
            Ok(FrameCheck::Partial(_)) => return Ok(None),
            Err(why) => return Err(DecodeError { position: self.pos, why }),
        };
        if let Some(expected) = self.next_offset {
            if info.offset != expected {
                return Err(DecodeError {
                    position: self.pos,
                    why: format!("expected offset {expected}, found {}", info.offset),
                });
            }
        }
        let record = info.record(&self.buf, self.pos);
        self.pos += info.len;
        self.next_offset = info.offset.checked_add(1);
        Ok(Some(record))
    }

    /// Every record of `buf`, which must hold nothing but whole frames of consecutive offsets.
    pub fn decode_all(buf: Bytes) -> Result<Vec<Record>, DecodeError> {
        let mut decoder = Decoder::new(buf);
        let mut records = Vec::new();
        while let Some(record) = decoder.next_record()? {
            records.push(record);
        }
        if decoder.remaining() > 0 {
            return Err(DecodeError {
                position: decoder.pos,
                why: format!("frame cut short ({} bytes left)", decoder.remaining()),
            });
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (offset, timestamp, key, value)
    type Rec<'a> = (u64, i64, Option<&'a [u8]>, &'a [u8]);

    fn frames(records: &[Rec<'_>]) -> Vec<u8> {
        let mut buf = Vec::new();
        for &(offset, ts, key, value) in records {
            encode_into(&mut buf, offset, ts, key, value);
        }
        buf
    }

    #[test]
    fn frames_round_trip_with_and_without_keys() {
        let buf = frames(&[(7, 1, Some(b"k"), b"v1"), (8, -5, None, b""), (9, 3, Some(b""), b"xyz")]);
        assert_eq!(buf.len(), frame_len(Some(b"k"), b"v1") + FRAME_HEADER_LEN + frame_len(Some(b""), b"xyz"));
        let records = Decoder::decode_all(Bytes::from(buf)).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].offset, 7);
        assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(&records[0].value[..], b"v1");
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].timestamp, -5);
        assert!(records[1].value.is_empty());
        assert_eq!(records[2].key.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn a_flipped_byte_anywhere_is_an_error_never_data() {
        let good = frames(&[(0, 1, Some(b"key"), b"value")]);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            let result = Decoder::expecting(Bytes::from(bad), 0).next_record();
            assert!(!matches!(result, Ok(Some(_))), "byte {i} flipped still decoded");
        }
    }

    #[test]
    fn a_cut_frame_is_left_over_and_offsets_must_be_consecutive() {
        let buf = frames(&[(0, 1, None, b"a"), (1, 1, None, b"b")]);
        let cut = Bytes::from(buf[..buf.len() - 1].to_vec());
        let mut decoder = Decoder::expecting(cut.clone(), 0);
        assert!(decoder.next_record().unwrap().is_some());
        assert!(decoder.next_record().unwrap().is_none());
        assert_eq!(decoder.remaining(), FRAME_HEADER_LEN);
        assert!(Decoder::decode_all(cut).is_err());

        let gap = frames(&[(0, 1, None, b"a"), (2, 1, None, b"b")]);
        let err = Decoder::decode_all(Bytes::from(gap)).unwrap_err();
        assert_eq!(err.position, FRAME_HEADER_LEN + 1);
        assert!(Decoder::expecting(Bytes::from(frames(&[(3, 0, None, b"")])), 4).next_record().is_err());
    }

    #[test]
    fn the_largest_record_fits_the_wire_limit_with_its_envelope() {
        let wire_limit = MAX_FRAME_LEN + WIRE_ENVELOPE_ALLOWANCE;
        assert!(u32::try_from(wire_limit).is_ok(), "a network frame's length is a u32");
        let key = Bytes::from(vec![b'k'; 1 << 10]);
        let value = Bytes::from(vec![0u8; MAX_FRAME_LEN - FRAME_HEADER_LEN - key.len()]);
        assert_eq!(frame_len(Some(&key), &value), MAX_FRAME_LEN);
        let record = NewRecord { key: Some(key), value, timestamp: Some(i64::MIN) };
        // As the wire carries it (MessagePack), with the longest topic name and ids around it.
        let body = rmp_serde::to_vec(&(u64::MAX, "t".repeat(200), u32::MAX, vec![record])).unwrap();
        assert!(body.len() <= wire_limit, "{} bytes over the wire limit of {wire_limit}", body.len());
    }

    #[test]
    fn absurd_lengths_are_corrupt() {
        let mut buf = frames(&[(0, 1, None, b"a")]);
        buf[..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(check_frame(&buf).is_err());
        buf[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(check_frame(&buf).is_err());
        let mut key = frames(&[(0, 1, Some(b"k"), b"a")]);
        key[24..28].copy_from_slice(&100u32.to_le_bytes());
        let crc = crc32fast::hash(&key[8..]);
        key[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(check_frame(&key).unwrap_err().contains("key length"));
    }
}
