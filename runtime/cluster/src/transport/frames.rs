//! The frames of the transport and how they are written and read.
//!
//! Contract: a frame is what [`squall_engine::frame`] reads and writes (a `u32` big-endian
//! body length, then the body), of at most [`MAX_FRAME`] bytes; its body is a [`Frame`]:
//! batches and credits through the hand-written [`codec`], hellos and refusals through
//! rmp-serde. A batch over the limit is written as several frames marked "more follows" (a
//! single tuple over it is dropped, logged). Anything a peer sends that is not a frame, or
//! not the one expected, is a [`ConnError`], never a panic.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use squall_api::TaskId;
use squall_engine::acker::{AckerMsg, Outcome};
use squall_engine::executor::Envelope;
use squall_engine::frame::{self, FrameError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::codec::{self, CodecError};
use super::{HELLO_TIMEOUT, KEEP_BUFFER, MAX_FRAME};

/// One frame's body. Senders borrow what they send; receivers get it owned.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Frame<'a> {
    #[serde(rename = "H")]
    Hello(Hello<'a>),
    /// The accepting side's reason for closing a connection after a hello.
    #[serde(rename = "R")]
    Refused(Cow<'a, str>),
    #[serde(rename = "B")]
    Bolts { task: TaskId, more: bool, batch: Cow<'a, [Envelope]> },
    #[serde(rename = "A")]
    Ackers { task: TaskId, more: bool, batch: Cow<'a, [AckerMsg]> },
    #[serde(rename = "O")]
    Outcomes { task: TaskId, more: bool, batch: Cow<'a, [Outcome]> },
    /// (task, batches delivered): the sender may send that many more to that task.
    #[serde(rename = "C")]
    Credits(Cow<'a, [(TaskId, u32)]>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Hello<'a> {
    pub(super) protocol: u32,
    pub(super) topology: Cow<'a, str>,
    pub(super) version: u64,
    pub(super) worker: u32,
    /// From the accepting side: batches in flight allowed per destination task.
    pub(super) credits: u32,
}

/// A batch on its way to or from a peer.
pub(super) enum Batch {
    Bolts(TaskId, Vec<Envelope>),
    Ackers(TaskId, Vec<AckerMsg>),
    Outcomes(TaskId, Vec<Outcome>),
}

impl Batch {
    pub(super) fn task(&self) -> TaskId {
        match self {
            Batch::Bolts(t, _) | Batch::Ackers(t, _) | Batch::Outcomes(t, _) => *t,
        }
    }

    /// Appends a later part of the same batch.
    pub(super) fn append(&mut self, part: Batch) -> Result<(), ConnError> {
        match (self, part) {
            (Batch::Bolts(_, a), Batch::Bolts(_, b)) => a.extend(b),
            (Batch::Ackers(_, a), Batch::Ackers(_, b)) => a.extend(b),
            (Batch::Outcomes(_, a), Batch::Outcomes(_, b)) => a.extend(b),
            _ => return Err(ConnError::Protocol("the parts of a batch are of different kinds".into())),
        }
        Ok(())
    }
}

/// Why a connection ended: what the transport logs and counts for it.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Oversized, undecodable or unexpected frames.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A frame that cannot be encoded or decoded.
    #[error("protocol error: {0}")]
    Codec(#[from] CodecError),
    /// The hello was for another topology, version or protocol.
    #[error("refused: {0}")]
    Refused(String),
    /// The peer did not prove it knows the cluster secret (or this side's proof was refused).
    #[error("authentication failed: {0}")]
    Auth(#[from] squall_engine::auth::AuthError),
    /// With `[cluster] tls`: the TLS handshake failed (no certificate signed by the CA, say).
    #[error("{0}")]
    Tls(#[from] squall_engine::tls::TlsError),
}

impl From<FrameError> for ConnError {
    /// A frame the shared reader refused: the transport's own wording, as before.
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, max } => {
                ConnError::Protocol(format!("a frame of {len} bytes is over the limit of {max}"))
            }
            FrameError::Truncated { .. } => ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()),
            FrameError::Io(e) => ConnError::Io(e),
            FrameError::Decode(e) | FrameError::Encode(e) => ConnError::Protocol(e),
        }
    }
}

/// Appends one frame to `buf`; on error `buf` is as it was.
pub(super) fn put_frame(buf: &mut Vec<u8>, frame: &Frame, max: usize) -> Result<(), CodecError> {
    // The shared writer takes the body's error as text: keep the typed one aside.
    let mut failed = None;
    let put = frame::put(buf, max, |buf| {
        codec::put_body(buf, frame).map_err(|e| {
            let text = e.to_string();
            failed = Some(e);
            text
        })
    });
    put.map_err(|e| match (e, failed) {
        (FrameError::TooLarge { len, max }, _) => CodecError::TooLarge { len, max },
        (_, Some(e)) => e,
        (e, None) => CodecError::Frame(e),
    })
}

/// Appends `items` as one frame, or if that is over `max`, as several frames of which all but
/// the last say "more follows" (the last says `more`). A single item over `max` is dropped
/// (logged); returns how many were.
pub(super) fn put_parts<T: Clone + Serialize>(
    buf: &mut Vec<u8>,
    items: &[T],
    more: bool,
    max: usize,
    frame: &impl Fn(&[T], bool) -> Frame<'_>,
) -> usize {
    let Err(e) = put_frame(buf, &frame(items, more), max) else { return 0 };
    if items.len() > 1 {
        let (a, b) = items.split_at(items.len() / 2);
        return put_parts(buf, a, true, max, frame) + put_parts(buf, b, more, max, frame);
    }
    tracing::error!("transport: dropping a tuple that does not fit a frame: {e}");
    if !more {
        // The batch still needs its last part; an empty one always fits.
        let _ = put_frame(buf, &frame(&[], false), max);
    }
    items.len()
}

/// Appends `batch` (see [`put_parts`]); returns the items dropped.
pub(super) fn put_batch(buf: &mut Vec<u8>, batch: &Batch, max: usize) -> usize {
    match batch {
        Batch::Bolts(task, b) => put_parts(buf, b, false, max, &|batch, more| Frame::Bolts {
            task: *task,
            more,
            batch: Cow::Borrowed(batch),
        }),
        Batch::Ackers(task, b) => put_parts(buf, b, false, max, &|batch, more| Frame::Ackers {
            task: *task,
            more,
            batch: Cow::Borrowed(batch),
        }),
        Batch::Outcomes(task, b) => put_parts(buf, b, false, max, &|batch, more| Frame::Outcomes {
            task: *task,
            more,
            batch: Cow::Borrowed(batch),
        }),
    }
}

pub(super) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame<'_>,
) -> Result<(), ConnError> {
    let mut buf = Vec::with_capacity(64);
    put_frame(&mut buf, frame, MAX_FRAME)?;
    w.write_all(&buf).await?;
    // TLS buffers records: without TLS a flush does nothing.
    w.flush().await?;
    Ok(())
}

/// Reads one frame's body into `body` through the shared frame reader; `false` at a clean end
/// of stream (between frames). A body left larger than [`KEEP_BUFFER`] is given back first.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    body: &mut Vec<u8>,
) -> Result<bool, ConnError> {
    if body.capacity() > KEEP_BUFFER {
        *body = Vec::new();
    }
    Ok(frame::read_into(r, body, MAX_FRAME).await?)
}

pub(super) fn decode(body: &[u8]) -> Result<Frame<'static>, ConnError> {
    Ok(codec::decode_body(body)?)
}

pub(super) async fn read_hello<R: AsyncRead + Unpin>(
    r: &mut R,
    body: &mut Vec<u8>,
) -> Result<Hello<'static>, ConnError> {
    match tokio::time::timeout(HELLO_TIMEOUT, read_frame(r, body)).await {
        Err(_) => Err(ConnError::Protocol("no hello in time".into())),
        Ok(Ok(false)) => Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        Ok(Err(e)) => Err(e),
        Ok(Ok(true)) => match decode(body)? {
            Frame::Hello(h) => Ok(h),
            Frame::Refused(why) => Err(ConnError::Refused(why.into_owned())),
            _ => Err(ConnError::Protocol("the first frame is not a hello".into())),
        },
    }
}
