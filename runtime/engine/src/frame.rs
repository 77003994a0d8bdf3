//! Length-prefixed MessagePack frames over TCP: how the embedded log's server and clients, and
//! the workers of a topology, talk. One reader and one writer for both.
//!
//! Contract: a frame is a `u32` big-endian body length, then that many bytes of MessagePack
//! body. Every reader and writer is given the largest body its protocol allows (`max`): a
//! longer one is refused by the writer ([`FrameError::TooLarge`], nothing is written) and by
//! the reader before it reads (or allocates for) the body, which grows only as bytes arrive.
//! [`read_into`] and [`read_frame`] report a clean end of stream (between frames) as "no
//! frame" and [`FrameError::Truncated`] if the stream ends inside a frame. A body that is not
//! the expected message is a [`FrameError::Decode`] from [`decode`], after the whole frame was
//! read, so the stream stays in step and the next frame can be read. [`put`] appends a frame
//! whose body a caller writes itself (a hand-written codec); [`encode`] one of a serde message
//! (rmp-serde, structs as arrays). Writers encode into a buffered writer and flush when they
//! have nothing more to send. Both sides [`tune`] their TCP connections: TCP_NODELAY, and
//! keepalive probes after [`KEEPALIVE_IDLE`] of silence, so that a peer that vanished without
//! closing is noticed.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bytes of the length prefix.
pub const PREFIX: usize = 4;

/// How long a connection is silent before TCP keepalive probes start, and the time between
/// probes: a peer whose host died or whose network is cut is noticed within minutes, instead of
/// the system default of two hours or more.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Sets up a connection, on either side: TCP_NODELAY (messages are small and waited for) and
/// TCP keepalive (see [`KEEPALIVE_IDLE`]). Best effort: a setting the system refuses is
/// logged, and the connection is used as it is.
pub fn tune(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("connection: cannot set TCP_NODELAY: {e}");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
    let keepalive = keepalive.with_interval(KEEPALIVE_INTERVAL);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!("connection: cannot enable TCP keepalive: {e}");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    #[error("the connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("cannot encode a message: {0}")]
    Encode(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Appends one frame to `buf`, its body written by `body`; on error `buf` is as it was.
pub fn put(
    buf: &mut Vec<u8>,
    max: usize,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<(), FrameError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; PREFIX]);
    if let Err(e) = body(buf) {
        buf.truncate(start);
        return Err(FrameError::Encode(e));
    }
    let len = buf.len() - start - PREFIX;
    if len > max {
        buf.truncate(start);
        return Err(FrameError::TooLarge { len: len as u64, max });
    }
    buf[start..start + PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// A whole frame (length prefix and body) holding `message`, ready to write.
pub fn encode<T: Serialize + ?Sized>(message: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::with_capacity(256);
    put(&mut buf, max, |buf| rmp_serde::encode::write(buf, message).map_err(|e| e.to_string()))?;
    Ok(buf)
}

/// Decodes a frame body as read by [`read_frame`].
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Writes `message` as one frame into `writer` (without flushing it: `writer` is meant to be
/// buffered, flushed by the caller when it has nothing more to send).
pub async fn write_frame<W, T>(writer: &mut W, message: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize + ?Sized,
{
    let frame = encode(message, max)?;
    writer.write_all(&frame).await?;
    Ok(())
}

/// Reads one frame's body into `body` (cleared first); `Ok(false)` if the stream ends
/// cleanly before a frame starts.
pub async fn read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    body: &mut Vec<u8>,
    max: usize,
) -> Result<bool, FrameError> {
    let mut prefix = [0u8; PREFIX];
    let mut got = 0;
    while got < PREFIX {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(false) } else { Err(FrameError::Truncated { got, expected: PREFIX }) };
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len: len as u64, max });
    }
    body.clear();
    // Grown as bytes arrive, so that a length alone does not allocate its body.
    body.reserve(len.min(64 << 10));
    let n = reader.take(len as u64).read_to_end(body).await?;
    if n < len {
        return Err(FrameError::Truncated { got: PREFIX + n, expected: PREFIX + len });
    }
    Ok(true)
}

/// Reads one frame's body; `Ok(None)` if the stream ends cleanly before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut body = Vec::new();
    Ok(read_into(reader, &mut body, max).await?.then_some(body))
}

/// Reads and decodes one frame; `Ok(None)` at a clean end of stream.
pub async fn read_message<R, T>(reader: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    match read_frame(reader, max).await? {
        Some(body) => decode(&body).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use tokio::io::BufReader;

    /// A limit for the tests.
    const MAX_FRAME: usize = 1 << 20;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        id: u64,
        text: String,
    }

    #[tokio::test]
    async fn frames_round_trip_in_order() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(async move {
            let mut w = tokio::io::BufWriter::new(client);
            for id in 0..100 {
                write_frame(&mut w, &Msg { id, text: "x".repeat(id as usize * 37) }, MAX_FRAME)
                    .await
                    .unwrap();
            }
            w.flush().await.unwrap();
        });
        let mut r = BufReader::new(server);
        for id in 0..100 {
            let msg: Msg = read_message(&mut r, MAX_FRAME).await.unwrap().unwrap();
            assert_eq!(msg, Msg { id, text: "x".repeat(id as usize * 37) });
        }
        writer.await.unwrap();
        // The writer is gone: a clean end between frames.
        assert!(read_frame(&mut r, MAX_FRAME).await.unwrap().is_none());
    }

    #[test]
    fn the_prefix_is_the_big_endian_body_length() {
        let frame = encode(&Msg { id: 1, text: "hello".into() }, MAX_FRAME).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        // Structs travel as arrays: [1, "hello"].
        assert_eq!(frame[4], 0x92);
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading_the_body() {
        let bytes = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let mut r = &bytes[..];
        match read_frame(&mut r, MAX_FRAME).await {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (MAX_FRAME as u64 + 1, MAX_FRAME));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let err = read_frame(&mut &u32::MAX.to_be_bytes()[..], MAX_FRAME).await.unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn an_oversized_message_is_not_encoded() {
        let big = serde_bytes_like(MAX_FRAME + 1);
        match encode(&big, MAX_FRAME) {
            Err(FrameError::TooLarge { len, .. }) => assert!(len > MAX_FRAME as u64),
            other => panic!("expected TooLarge, got {:?}", other.map(|f| f.len())),
        }
    }

    fn serde_bytes_like(n: usize) -> bytes::Bytes {
        bytes::Bytes::from(vec![b'a'; n])
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_truncated() {
        let frame = encode(&Msg { id: 7, text: "truncated".into() }, MAX_FRAME).unwrap();
        // Inside the body.
        let cut = &frame[..frame.len() - 3];
        match read_frame(&mut &cut[..], MAX_FRAME).await {
            Err(FrameError::Truncated { got, expected }) => {
                assert_eq!((got, expected), (frame.len() - 3, frame.len()));
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
        // Inside the prefix.
        match read_frame(&mut &frame[..2], MAX_FRAME).await {
            Err(FrameError::Truncated { got: 2, expected: 4 }) => {}
            other => panic!("expected Truncated, got {other:?}"),
        }
        let err = read_frame(&mut &cut[..], MAX_FRAME).await.unwrap_err();
        assert!(err.to_string().contains("closed in the middle of a frame"), "{err}");
    }

    #[tokio::test]
    async fn a_malformed_body_leaves_the_stream_in_step() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(&[0xc1, 0xc1, 0xc1]); // 0xc1 is never used in MessagePack
        bytes.extend_from_slice(&encode(&Msg { id: 9, text: "after".into() }, MAX_FRAME).unwrap());
        let mut r = &bytes[..];
        let err = read_message::<_, Msg>(&mut r, MAX_FRAME).await.unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
        let msg: Msg = read_message(&mut r, MAX_FRAME).await.unwrap().unwrap();
        assert_eq!(msg.id, 9);
        assert!(read_frame(&mut r, MAX_FRAME).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn tuned_connections_have_nodelay_and_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        for stream in [&stream, &accepted] {
            tune(stream);
            assert!(stream.nodelay().unwrap());
            assert!(socket2::SockRef::from(stream).keepalive().unwrap());
        }
    }

    #[tokio::test]
    async fn an_empty_body_is_a_frame() {
        let bytes = 0u32.to_be_bytes();
        let body = read_frame(&mut &bytes[..], MAX_FRAME).await.unwrap().unwrap();
        assert!(body.is_empty());
    }
}
