//! The codec of the frames on the hot path: batches and credits.
//!
//! A hand-written MessagePack codec for the batch and credit frames, byte for byte what
//! rmp-serde writes for [`Frame`] (so any MessagePack reader, rmp-serde included, reads them),
//! without serde's visitors: values are written and read by marker straight from and into the
//! buffers, and a batch decodes into a `Vec` reserved to its length. The hello and the
//! refusal go through rmp-serde.
//!
//! Layout (rmp-serde's: an enum variant is a map of one entry from its name, a struct is an
//! array of its fields): `{"B": [task, more, [envelope…]]}` with an envelope
//! `[stream, source_task, [value…], [[root, edge]…]]`; `{"A": [task, more, [msg…]]}` with a
//! message `{"Init"|"Ack": [root, val]}` or `{"Fail"|"Reset": [root]}`;
//! `{"O": [task, more, [[root, acked]…]]}`; `{"C": [[task, n]…]}`.
//!
//! Contract: [`put_body`] writes exactly the bytes rmp-serde writes for the same [`Frame`] and
//! allocates nothing beyond the buffer it appends to; [`decode_body`] reads any MessagePack
//! encoding of a frame (rmp-serde's or another writer's choice of integer and length widths),
//! and a truncated, garbage or too deeply nested body is an error, never a panic, as is one
//! that would decode into more than [`MAX_OVERHEAD`] (checked before allocating; [`put_body`]
//! refuses to write such a batch, so that its writer splits it).

use std::borrow::Cow;

use rmp::encode as enc;
use rmp::Marker;
use squall_api::{TaskId, Value, Values};

use super::frames::{Batch, Frame};
use squall_engine::acker::{AckerMsg, Outcome};
use squall_engine::executor::output::Anchors;
use squall_engine::executor::Envelope;

/// How deep lists and maps may nest in a value, written or read: reading stays within a
/// small stack whatever a peer sends.
pub const MAX_DEPTH: usize = 256;
/// The most memory one frame may decode into beyond the bytes of its strings and binaries
/// (those are copies of the body, which [`MAX_FRAME`](super::MAX_FRAME) bounds): the slots of
/// its batch, values, lists and map entries, as [`overhead`] counts them. A decoder charges
/// each before allocating it, so a frame of a million nils is refused, not grown into; a
/// writer splits a batch whose frame would be over it.
pub const MAX_OVERHEAD: usize = 32 << 20;
/// At most this many bytes of overhead per byte of body (an encoded nil is one byte and
/// decodes into one `Value`): a body shorter than `MAX_OVERHEAD / MAX_AMPLIFICATION` is
/// within the limit without counting.
const MAX_AMPLIFICATION: usize = 64;
const VALUE: usize = std::mem::size_of::<Value>();
/// A map entry: its key's `String`, its value, and a share of the B-tree node.
const MAP_ENTRY: usize = std::mem::size_of::<String>() + VALUE + 16;
const ANCHOR: usize = std::mem::size_of::<(u64, u64)>();

/// Why a body cannot be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad(pub &'static str);

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Why a frame's body cannot be written or read (a connection that meets one closes as a
/// protocol error).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A batch or credits frame cannot be encoded.
    #[error("cannot encode a frame: {0}")]
    Encode(Bad),
    /// A hello or refusal cannot be encoded (by rmp-serde).
    #[error("cannot encode a frame: {0}")]
    Serialize(rmp_serde::encode::Error),
    /// A batch or credits body is malformed.
    #[error("undecodable frame: {0}")]
    Decode(Bad),
    /// Another body is not a frame rmp-serde reads.
    #[error("undecodable frame: {0}")]
    Deserialize(rmp_serde::decode::Error),
    /// A batch or credits body goes on past its frame: that many bytes.
    #[error("undecodable frame: {0} bytes past its end")]
    Trailing(usize),
    /// The encoded frame is over the limit (see `frames::put_frame`).
    #[error("a frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    /// Any other failure of the shared frame writer.
    #[error(transparent)]
    Frame(squall_engine::frame::FrameError),
}

// Writes to a `Vec` cannot fail: their `io::Result`s are dropped.

#[inline]
fn len32(n: usize) -> Result<u32, Bad> {
    u32::try_from(n).map_err(|_| Bad("a string, list or map of over 2^32 items"))
}

// The one-byte forms inline (what rmp writes for them too), the others through rmp.

#[inline]
fn array(buf: &mut Vec<u8>, n: usize) -> Result<(), Bad> {
    if n < 16 {
        buf.push(0x90 | n as u8);
    } else {
        let _ = enc::write_array_len(buf, len32(n)?);
    }
    Ok(())
}

#[inline]
fn uint(buf: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        buf.push(v as u8);
    } else {
        let _ = enc::write_uint(buf, v);
    }
}

#[inline]
fn string(buf: &mut Vec<u8>, s: &str) -> Result<(), Bad> {
    if s.len() < 32 {
        buf.push(0xa0 | s.len() as u8);
    } else {
        let _ = enc::write_str_len(buf, len32(s.len())?);
    }
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

/// An enum variant's head: a map of one entry from its name.
#[inline]
fn variant(buf: &mut Vec<u8>, name: &str) {
    let _ = enc::write_map_len(buf, 1);
    let _ = string(buf, name);
}

pub fn put_value(buf: &mut Vec<u8>, v: &Value, depth: usize) -> Result<(), Bad> {
    match v {
        Value::Null => {
            let _ = enc::write_nil(buf);
        }
        Value::Bool(b) => {
            let _ = enc::write_bool(buf, *b);
        }
        Value::Int(i) if (0..0x80).contains(i) => buf.push(*i as u8),
        Value::Int(i) => {
            let _ = enc::write_sint(buf, *i);
        }
        Value::Float(f) => {
            let _ = enc::write_f64(buf, *f);
        }
        Value::Str(s) => string(buf, s)?,
        Value::Bytes(b) => {
            let _ = enc::write_bin_len(buf, len32(b.len())?);
            buf.extend_from_slice(b);
        }
        Value::List(l) => {
            let depth = deeper(depth)?;
            array(buf, l.len())?;
            for v in l {
                put_value(buf, v, depth)?;
            }
        }
        Value::Map(m) => {
            let depth = deeper(depth)?;
            let _ = enc::write_map_len(buf, len32(m.len())?);
            for (k, v) in m {
                string(buf, k)?;
                put_value(buf, v, depth)?;
            }
        }
    }
    Ok(())
}

#[inline]
fn deeper(depth: usize) -> Result<usize, Bad> {
    if depth >= MAX_DEPTH {
        return Err(Bad("lists or maps nested too deep"));
    }
    Ok(depth + 1)
}

fn put_envelope(buf: &mut Vec<u8>, e: &Envelope) -> Result<(), Bad> {
    array(buf, 4)?;
    uint(buf, e.stream as u64);
    uint(buf, e.source_task as u64);
    array(buf, e.values.len())?;
    for v in &e.values {
        put_value(buf, v, 0)?;
    }
    array(buf, e.anchors.len())?;
    for &(root, edge) in &e.anchors {
        array(buf, 2)?;
        uint(buf, root);
        uint(buf, edge);
    }
    Ok(())
}

fn put_acker_msg(buf: &mut Vec<u8>, m: &AckerMsg) {
    let (name, root, val, extra) = match *m {
        AckerMsg::Init { root, val } => ("Init", root, Some(val), None),
        AckerMsg::Ack { root, val, lane } => ("Ack", root, Some(val), Some(lane as u64)),
        AckerMsg::Fail { root, by } => ("Fail", root, None, Some(by as u64)),
        AckerMsg::Reset { root } => ("Reset", root, None, None),
    };
    variant(buf, name);
    let _ = enc::write_array_len(buf, 1 + val.is_some() as u32 + extra.is_some() as u32);
    uint(buf, root);
    if let Some(val) = val {
        uint(buf, val);
    }
    if let Some(extra) = extra {
        uint(buf, extra);
    }
}

/// `[task, more, [item…]]` under the variant `name`.
fn put_batch<T>(
    buf: &mut Vec<u8>,
    name: &str,
    task: TaskId,
    more: bool,
    items: &[T],
    mut put: impl FnMut(&mut Vec<u8>, &T) -> Result<(), Bad>,
) -> Result<(), Bad> {
    variant(buf, name);
    array(buf, 3)?;
    uint(buf, task as u64);
    let _ = enc::write_bool(buf, more);
    array(buf, items.len())?;
    // Roughly what a small anchored tuple takes, so that a batch seldom regrows the buffer.
    buf.reserve(items.len() * 40);
    items.iter().try_for_each(|item| put(buf, item))
}

/// The memory `frame` decodes into beyond its strings' and binaries' bytes (see
/// [`MAX_OVERHEAD`]); the decoder charges exactly this.
pub fn overhead(frame: &Frame) -> usize {
    match frame {
        Frame::Bolts { batch, .. } => envelopes_overhead(batch),
        Frame::Ackers { batch, .. } => batch.len() * std::mem::size_of::<AckerMsg>(),
        Frame::Outcomes { batch, .. } => batch.len() * std::mem::size_of::<Outcome>(),
        Frame::Credits(list) => list.len() * std::mem::size_of::<(TaskId, u32)>(),
        Frame::Hello(_) | Frame::Refused(_) => 0,
    }
}

/// [`overhead`] of a decoded batch.
pub(super) fn overhead_of(batch: &Batch) -> usize {
    match batch {
        Batch::Bolts(_, b) => envelopes_overhead(b),
        Batch::Ackers(_, b) => b.len() * std::mem::size_of::<AckerMsg>(),
        Batch::Outcomes(_, b) => b.len() * std::mem::size_of::<Outcome>(),
    }
}

fn envelopes_overhead(batch: &[Envelope]) -> usize {
    fn value(v: &Value) -> usize {
        match v {
            Value::List(l) => l.len() * VALUE + l.iter().map(value).sum::<usize>(),
            Value::Map(m) => m.len() * MAP_ENTRY + m.values().map(value).sum::<usize>(),
            _ => 0,
        }
    }
    batch
        .iter()
        .map(|e| {
            std::mem::size_of::<Envelope>()
                + e.values.len() * VALUE
                + e.values.iter().map(value).sum::<usize>()
                + e.anchors.len() * ANCHOR
        })
        .sum()
}

/// Appends the body of `frame` to `buf` (on error, `buf` may hold part of it). A batch that
/// would decode into more than [`MAX_OVERHEAD`] is an error (its writer splits it).
pub fn put_body(buf: &mut Vec<u8>, frame: &Frame) -> Result<(), CodecError> {
    let start = buf.len();
    put_body_unchecked(buf, frame)?;
    // Counting walks the batch again: only for bodies long enough to possibly need it.
    if buf.len() - start > MAX_OVERHEAD / MAX_AMPLIFICATION && overhead(frame) > MAX_OVERHEAD {
        return Err(CodecError::Encode(Bad("a batch that decodes into more than the limit")));
    }
    Ok(())
}

fn put_body_unchecked(buf: &mut Vec<u8>, frame: &Frame) -> Result<(), CodecError> {
    let done = match frame {
        Frame::Bolts { task, more, batch } => put_batch(buf, "B", *task, *more, batch, put_envelope),
        Frame::Ackers { task, more, batch } => put_batch(buf, "A", *task, *more, batch, |buf, m| {
            put_acker_msg(buf, m);
            Ok(())
        }),
        Frame::Outcomes { task, more, batch } => put_batch(buf, "O", *task, *more, batch, |buf, o| {
            array(buf, 4)?;
            uint(buf, o.root);
            let _ = enc::write_bool(buf, o.acked);
            uint(buf, o.failed_by as u64);
            uint(buf, o.held_by as u64);
            Ok(())
        }),
        Frame::Credits(list) => {
            variant(buf, "C");
            array(buf, list.len()).map(|()| {
                for &(task, n) in list.iter() {
                    let _ = enc::write_array_len(buf, 2);
                    uint(buf, task as u64);
                    uint(buf, n as u64);
                }
            })
        }
        Frame::Hello(_) | Frame::Refused(_) => {
            return rmp_serde::encode::write(buf, frame).map_err(CodecError::Serialize);
        }
    };
    done.map_err(CodecError::Encode)
}

/// Decodes one frame's body: batches and credits by hand, anything else with rmp-serde.
pub fn decode_body(body: &[u8]) -> Result<Frame<'static>, CodecError> {
    // fixmap of 1, fixstr of 1: the variant's name.
    let (kind, rest) = match body {
        [0x81, 0xa1, kind @ (b'B' | b'A' | b'O' | b'C'), rest @ ..] => (*kind, rest),
        _ => return rmp_serde::from_slice(body).map_err(CodecError::Deserialize),
    };
    let mut rd = Rd { buf: rest, budget: MAX_OVERHEAD };
    let frame = rd.frame(kind).map_err(CodecError::Decode)?;
    if !rd.buf.is_empty() {
        return Err(CodecError::Trailing(rd.buf.len()));
    }
    Ok(frame)
}

/// Reads MessagePack from a slice, by marker.
struct Rd<'a> {
    buf: &'a [u8],
    /// What is left of [`MAX_OVERHEAD`] for this frame.
    budget: usize,
}

const EOF: Bad = Bad("the body ends early");

impl<'a> Rd<'a> {
    fn frame(&mut self, kind: u8) -> Result<Frame<'static>, Bad> {
        if kind == b'C' {
            let n = self.seq_len(3)?;
            self.charge(n, std::mem::size_of::<(TaskId, u32)>())?;
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                self.expect_array(2)?;
                list.push((self.u32()?, self.u32()?));
            }
            return Ok(Frame::Credits(Cow::Owned(list)));
        }
        self.expect_array(3)?;
        let task = self.u32()?;
        let more = self.bool()?;
        Ok(match kind {
            b'B' => Frame::Bolts { task, more, batch: Cow::Owned(self.seq(5, Self::envelope)?) },
            b'A' => Frame::Ackers { task, more, batch: Cow::Owned(self.seq(4, Self::acker_msg)?) },
            _ => Frame::Outcomes { task, more, batch: Cow::Owned(self.seq(3, Self::outcome)?) },
        })
    }

    /// A sequence whose items take at least `min` bytes each, in a `Vec` of its length.
    #[inline]
    fn seq<T>(
        &mut self,
        min: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, Bad>,
    ) -> Result<Vec<T>, Bad> {
        let n = self.seq_len(min)?;
        self.charge(n, std::mem::size_of::<T>())?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// Takes `n` items of `each` bytes from the budget, before they are allocated.
    #[inline]
    fn charge(&mut self, n: usize, each: usize) -> Result<(), Bad> {
        match self.budget.checked_sub(n.saturating_mul(each)) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(Bad("a frame that decodes into more memory than the limit")),
        }
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, Bad> {
        let (&b, rest) = self.buf.split_first().ok_or(EOF)?;
        self.buf = rest;
        Ok(b)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if n > self.buf.len() {
            return Err(EOF);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    #[inline]
    fn be<const N: usize>(&mut self) -> Result<[u8; N], Bad> {
        self.take(N)?.try_into().map_err(|_| EOF)
    }

    #[inline]
    fn marker(&mut self) -> Result<Marker, Bad> {
        self.byte().map(Marker::from_u8)
    }

    /// The integer after marker `m`, or `None` if `m` is not an integer's.
    #[inline(always)]
    fn int_after(&mut self, m: Marker) -> Result<Option<i128>, Bad> {
        Ok(Some(match m {
            Marker::FixPos(n) => n as i128,
            Marker::FixNeg(n) => n as i128,
            Marker::U8 => self.byte()? as i128,
            Marker::U16 => u16::from_be_bytes(self.be()?) as i128,
            Marker::U32 => u32::from_be_bytes(self.be()?) as i128,
            Marker::U64 => u64::from_be_bytes(self.be()?) as i128,
            Marker::I8 => self.byte()? as i8 as i128,
            Marker::I16 => i16::from_be_bytes(self.be()?) as i128,
            Marker::I32 => i32::from_be_bytes(self.be()?) as i128,
            Marker::I64 => i64::from_be_bytes(self.be()?) as i128,
            _ => return Ok(None),
        }))
    }

    #[inline]
    fn u64(&mut self) -> Result<u64, Bad> {
        let m = self.marker()?;
        if let Marker::FixPos(n) = m {
            return Ok(n as u64);
        }
        let i = self.int_after(m)?.ok_or(Bad("expected an integer"))?;
        u64::try_from(i).map_err(|_| Bad("an integer out of range"))
    }

    #[inline]
    fn u32(&mut self) -> Result<u32, Bad> {
        u32::try_from(self.u64()?).map_err(|_| Bad("an integer out of range"))
    }

    #[inline]
    fn bool(&mut self) -> Result<bool, Bad> {
        match self.marker()? {
            Marker::True => Ok(true),
            Marker::False => Ok(false),
            _ => Err(Bad("expected a bool")),
        }
    }

    /// The length of the array after marker `m`, if it is an array's.
    #[inline(always)]
    fn array_len_after(&mut self, m: Marker) -> Result<Option<usize>, Bad> {
        Ok(Some(match m {
            Marker::FixArray(n) => n as usize,
            Marker::Array16 => u16::from_be_bytes(self.be()?) as usize,
            Marker::Array32 => u32::from_be_bytes(self.be()?) as usize,
            _ => return Ok(None),
        }))
    }

    /// An array's length, checked against the bytes left for items of at least `min` bytes.
    #[inline]
    fn seq_len(&mut self, min: usize) -> Result<usize, Bad> {
        let m = self.marker()?;
        let n = self.array_len_after(m)?.ok_or(Bad("expected an array"))?;
        self.check_len(n, min)
    }

    #[inline]
    fn check_len(&self, n: usize, min: usize) -> Result<usize, Bad> {
        if n.saturating_mul(min) > self.buf.len() {
            return Err(EOF);
        }
        Ok(n)
    }

    #[inline]
    fn expect_array(&mut self, n: u8) -> Result<(), Bad> {
        if self.byte()? != 0x90 | n {
            return Err(Bad("expected an array of another length"));
        }
        Ok(())
    }

    /// The string after marker `m`, if it is a string's.
    #[inline(always)]
    fn str_after(&mut self, m: Marker) -> Result<Option<&'a str>, Bad> {
        let n = match m {
            Marker::FixStr(n) => n as usize,
            Marker::Str8 => self.byte()? as usize,
            Marker::Str16 => u16::from_be_bytes(self.be()?) as usize,
            Marker::Str32 => u32::from_be_bytes(self.be()?) as usize,
            _ => return Ok(None),
        };
        std::str::from_utf8(self.take(n)?).map(Some).map_err(|_| Bad("a string that is not UTF-8"))
    }

    fn envelope(&mut self) -> Result<Envelope, Bad> {
        self.expect_array(4)?;
        let stream = self.u32()?;
        let source_task = self.u32()?;
        let n = self.seq_len(1)?;
        self.charge(n, VALUE)?;
        let mut values = Values::with_capacity(n);
        for _ in 0..n {
            values.push(self.value(0)?);
        }
        let n = self.seq_len(3)?;
        self.charge(n, ANCHOR)?;
        let mut anchors = Anchors::with_capacity(n);
        for _ in 0..n {
            self.expect_array(2)?;
            anchors.push((self.u64()?, self.u64()?));
        }
        Ok(Envelope { stream, source_task, values, anchors })
    }

    fn acker_msg(&mut self) -> Result<AckerMsg, Bad> {
        if self.byte()? != 0x81 {
            return Err(Bad("expected an acker message"));
        }
        let m = self.marker()?;
        let name = self.str_after(m)?.ok_or(Bad("expected an acker message's name"))?;
        Ok(match name {
            "Init" => {
                self.expect_array(2)?;
                AckerMsg::Init { root: self.u64()?, val: self.u64()? }
            }
            "Ack" => {
                self.expect_array(3)?;
                let (root, val) = (self.u64()?, self.u64()?);
                let lane = u8::try_from(self.u64()?).map_err(|_| Bad("an ack's lane out of range"))?;
                AckerMsg::Ack { root, val, lane }
            }
            "Fail" => {
                self.expect_array(2)?;
                let root = self.u64()?;
                let by = u16::try_from(self.u64()?).map_err(|_| Bad("a fail's component out of range"))?;
                AckerMsg::Fail { root, by }
            }
            "Reset" => {
                self.expect_array(1)?;
                AckerMsg::Reset { root: self.u64()? }
            }
            _ => return Err(Bad("an unknown acker message")),
        })
    }

    fn outcome(&mut self) -> Result<Outcome, Bad> {
        self.expect_array(4)?;
        let (root, acked) = (self.u64()?, self.bool()?);
        let failed_by = u16::try_from(self.u64()?).map_err(|_| Bad("an outcome's component out of range"))?;
        let held_by = u8::try_from(self.u64()?).map_err(|_| Bad("an outcome's holders out of range"))?;
        Ok(Outcome { root, acked, failed_by, held_by })
    }

    pub fn value(&mut self, depth: usize) -> Result<Value, Bad> {
        let m = self.marker()?;
        if let Some(s) = self.str_after(m)? {
            // Inline, without allocating, for short strings.
            return Ok(Value::from(s));
        }
        if let Some(i) = self.int_after(m)? {
            return i64::try_from(i).map(Value::Int).map_err(|_| Bad("an integer over 64 signed bits"));
        }
        Ok(match m {
            Marker::Null => Value::Null,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::F64 => Value::Float(f64::from_be_bytes(self.be()?)),
            Marker::F32 => Value::Float(f32::from_be_bytes(self.be()?) as f64),
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = match m {
                    Marker::Bin8 => self.byte()? as usize,
                    Marker::Bin16 => u16::from_be_bytes(self.be()?) as usize,
                    _ => u32::from_be_bytes(self.be()?) as usize,
                };
                Value::Bytes(self.take(n)?.to_vec())
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                let depth = deeper(depth)?;
                let n = match m {
                    Marker::FixMap(n) => n as usize,
                    Marker::Map16 => u16::from_be_bytes(self.be()?) as usize,
                    _ => u32::from_be_bytes(self.be()?) as usize,
                };
                self.check_len(n, 2)?;
                self.charge(n, MAP_ENTRY)?;
                let mut map = std::collections::BTreeMap::new();
                for _ in 0..n {
                    let m = self.marker()?;
                    let key = self.str_after(m)?.ok_or(Bad("a map key that is not a string"))?;
                    let v = self.value(depth)?;
                    map.insert(key.to_owned(), v);
                }
                Value::Map(map)
            }
            _ => match self.array_len_after(m)? {
                Some(n) => {
                    let depth = deeper(depth)?;
                    let n = self.check_len(n, 1)?;
                    self.charge(n, VALUE)?;
                    let mut list = Vec::with_capacity(n);
                    for _ in 0..n {
                        list.push(self.value(depth)?);
                    }
                    Value::List(list)
                }
                None => return Err(Bad("an extension or reserved marker")),
            },
        })
    }
}
