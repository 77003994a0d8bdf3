//! The log over TCP: what `squall broker` runs. Clients speak [`protocol`](super::protocol)
//! messages in [`frame`]s; [`RemoteClient`](super::remote::RemoteClient) is one.
//!
//! Contract, per connection: requests are read and applied in the order they arrive, so
//! appends to a partition keep their order; each gets exactly one response with its id. A
//! produce is answered once its records are durable and a fetch at the end of a partition
//! waits for records, both without holding up the requests behind them: responses may go
//! out in another order than the requests came (one writer task per connection sends them,
//! flushing when it has nothing more to send). A body that does not decode is answered with
//! an error (under its id if it has one, else 0) and the connection goes on; a length over
//! [`MAX_FRAME`](super::frame::MAX_FRAME) or a stream that ends inside a frame gets an error
//! response if it can still be sent, then the connection is closed. A client that ends its
//! side still gets the responses to what it sent. Nothing a client sends stops the server
//! or holds up other connections; [`serve`] returns once `shutdown` completes, closing
//! every connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::error::{ErrorKind, WireError};
use super::frame::{self, FrameError};
use super::log::Log;
use super::protocol::{request_id, Op, Reply, Request, Response, UNKNOWN_ID};
use super::{BrokerError, FsyncPolicy, NewRecord};

/// A fetch returns at most this many bytes of records (about), whatever it asks for.
pub const MAX_FETCH_BYTES: usize = 16 << 20;
/// The bytes of records a fetch reads at most (besides its first record, always returned
/// whole): [`MAX_FETCH_BYTES`], and never more than a frame holds besides its envelope, so
/// that no fetch response is over [`frame::MAX_FRAME`]. (A record is never more than one byte
/// longer in a response than in the log, and the envelope is a few dozen bytes: both fit in
/// the [`frame::WIRE_ENVELOPE_ALLOWANCE`].)
const MAX_FETCH_READ: usize = {
    let room = frame::MAX_FRAME - frame::WIRE_ENVELOPE_ALLOWANCE;
    if MAX_FETCH_BYTES < room {
        MAX_FETCH_BYTES
    } else {
        room
    }
};
/// A fetch at the end of a partition waits at most this long.
pub const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);
/// Responses queued for a connection's writer before its reader waits.
const QUEUE: usize = 1024;
/// After a connection's last response, how long (and how much) its unread input is drained,
/// so that closing it does not reset the connection before the client reads that response.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: u64 = 1 << 20;

/// Serves `log` to every client of `listener` until `shutdown` completes, then closes every
/// connection (requests being waited on are dropped; appends already made stay).
pub async fn serve(log: Arc<Log>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(log.clone(), stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors, say: this connection is lost, not the server.
                    tracing::warn!("broker: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::warn!("broker: a connection task panicked: {e}");
                    }
                }
            }
        }
    }
    connections.shutdown().await;
}

/// One client: reads and applies its requests in order until it ends its side.
async fn connection(log: Arc<Log>, stream: TcpStream, peer: SocketAddr) {
    tracing::debug!(%peer, "broker: connection opened");
    frame::tune(&stream);
    let (read, write) = stream.into_split();
    let (responses, queue) = mpsc::channel(QUEUE);
    let mut writer = tokio::spawn(write_responses(BufWriter::new(write), queue, peer));
    let mut input = BufReader::with_capacity(64 << 10, read);
    // Produces waiting for durability and fetches waiting for records.
    let mut waits = JoinSet::new();
    let mut broken = false;
    loop {
        while waits.try_join_next().is_some() {}
        let body = tokio::select! {
            read = frame::read_frame(&mut input) => read,
            // The writer ends early only if the client is gone.
            _ = &mut writer => {
                tracing::debug!(%peer, "broker: connection lost");
                return;
            }
        };
        let sent = match body {
            Ok(Some(body)) => match frame::decode::<Request>(&body) {
                Ok(request) => handle(&log, request, &responses, &mut waits).await,
                Err(e) => {
                    let id = request_id(&body).unwrap_or(UNKNOWN_ID);
                    let error = BrokerError::InvalidRequest(format!("malformed request: {e}"));
                    tracing::warn!(%peer, id, "broker: {error}");
                    respond(&responses, id, Err(error)).await
                }
            },
            Ok(None) => break,
            Err(e) => {
                // The stream is out of step (or gone): say why, if it can still be heard, and
                // close.
                tracing::warn!(%peer, "broker: closing the connection: {e}");
                if !matches!(e, FrameError::Io(_)) {
                    let error = BrokerError::InvalidRequest(format!("{e}; closing the connection"));
                    let _ = respond(&responses, UNKNOWN_ID, Err(error)).await;
                }
                broken = true;
                break;
            }
        };
        if !sent {
            break;
        }
    }
    if broken {
        waits.shutdown().await;
    }
    // The writer ends once every response is sent: ours, and those of the waits.
    drop(responses);
    let _ = writer.await;
    waits.shutdown().await;
    if broken {
        let mut rest = (&mut input).take(LINGER_BYTES);
        let _ = tokio::time::timeout(LINGER, tokio::io::copy(&mut rest, &mut tokio::io::sink())).await;
    }
    tracing::debug!(%peer, "broker: connection closed");
}

type Responses = mpsc::Sender<Response>;

/// Applies one request; answers it now or leaves a task in `waits` to answer it. False if the
/// connection's writer is gone.
async fn handle(log: &Arc<Log>, request: Request, responses: &Responses, waits: &mut JoinSet<()>) -> bool {
    let id = request.id;
    let result = match request.op {
        Op::CreateTopic { name, config } => log.create_topic(&name, config).map(|()| Reply::Done),
        Op::Topics => Ok(Reply::Topics(log.topics())),
        Op::Describe { topic } => log.describe(&topic).map(Reply::Topic),
        Op::Commit { group, topic, partition, offset } => {
            log.commit(&group, &topic, partition, offset).map(|()| Reply::Done)
        }
        Op::Committed { group, topic } => log.committed(&group, &topic).map(Reply::Offsets),
        Op::Produce { topic, partition, records } => {
            let base = match append(log, &topic, partition, &records) {
                Ok(base) => base,
                Err(e) => return respond(responses, id, Err(e)).await,
            };
            let end = base + records.len() as u64;
            let produced = Reply::Produced { base_offset: base };
            match log.durable(&topic, partition) {
                Ok(durable) if durable >= end => Ok(produced),
                Err(e) => Err(e),
                Ok(_) => {
                    let (log, responses) = (log.clone(), responses.clone());
                    waits.spawn(async move {
                        let result = log.wait_durable(&topic, partition, end).await.map(|()| produced);
                        respond(&responses, id, result).await;
                    });
                    return true;
                }
            }
        }
        Op::Fetch { topic, partition, offset, max_bytes, wait_ms } => {
            let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX).clamp(1, MAX_FETCH_READ);
            let wait = Duration::from_millis(wait_ms).min(MAX_FETCH_WAIT);
            match log.read(&topic, partition, offset, max_bytes) {
                Ok(fetched) if !fetched.records.is_empty() || wait.is_zero() => {
                    Ok(Reply::Fetched(fetched.into()))
                }
                Err(e) => Err(e),
                Ok(_) => {
                    let (log, responses) = (log.clone(), responses.clone());
                    waits.spawn(async move {
                        let result = log
                            .fetch(&topic, partition, offset, max_bytes, wait)
                            .await
                            .map(|fetched| Reply::Fetched(fetched.into()));
                        respond(&responses, id, result).await;
                    });
                    return true;
                }
            }
        }
    };
    respond(responses, id, result).await
}

/// Appends `records`. Under `FsyncPolicy::Always` the append waits for its fsync, so it runs
/// with this worker thread handed over as blocking (on a multi-threaded runtime), and the
/// other connections are served meanwhile.
fn append(log: &Log, topic: &str, partition: u32, records: &[NewRecord]) -> Result<u64, BrokerError> {
    let blocking = matches!(log.fsync_policy(topic), Ok(FsyncPolicy::Always))
        && tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
    if blocking {
        tokio::task::block_in_place(|| log.append(topic, partition, records))
    } else {
        log.append(topic, partition, records)
    }
}

/// Queues the response to `id`; false if the writer is gone.
async fn respond(responses: &Responses, id: u64, result: Result<Reply, BrokerError>) -> bool {
    let result = result.map_err(|e| {
        tracing::warn!(id, "broker: request failed: {e}");
        e.to_wire()
    });
    responses.send(Response { id, result }).await.is_ok()
}

/// Writes queued responses, flushing whenever the queue is empty; half-closes the connection
/// once every sender is gone. Ends early if the client is gone.
async fn write_responses(
    mut out: BufWriter<OwnedWriteHalf>,
    mut queue: mpsc::Receiver<Response>,
    peer: SocketAddr,
) {
    while let Some(response) = queue.recv().await {
        let mut written = write_response(&mut out, &response).await;
        while written.is_ok() {
            match queue.try_recv() {
                Ok(response) => written = write_response(&mut out, &response).await,
                Err(_) => break,
            }
        }
        if let Err(e) = async {
            written?;
            out.flush().await
        }
        .await
        {
            tracing::debug!(%peer, "broker: cannot send to the client: {e}");
            return;
        }
    }
    let _ = out.shutdown().await;
}

async fn write_response(out: &mut BufWriter<OwnedWriteHalf>, response: &Response) -> std::io::Result<()> {
    let frame = match frame::encode(response) {
        Ok(frame) => frame,
        Err(e) => {
            // Too big, say (a fetch of one huge record): the client hears why instead.
            tracing::warn!(id = response.id, "broker: cannot send a response: {e}");
            let error =
                WireError { kind: ErrorKind::Other, message: format!("cannot send the response: {e}") };
            frame::encode(&Response { id: response.id, result: Err(error) })
                .map_err(|e| std::io::Error::other(e.to_string()))?
        }
    };
    out.write_all(&frame).await
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use tokio::sync::oneshot;

    use super::*;
    use crate::broker::remote::RemoteClient;
    use crate::broker::TopicConfig;

    /// A fresh log directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            static N: AtomicU64 = AtomicU64::new(0);
            let name =
                format!("squall-server-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
            let path = std::env::temp_dir().join(name);
            let _ = std::fs::remove_dir_all(&path);
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A server on a free port; stops when the sender is dropped or sent to.
    async fn start(dir: &Dir) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        serve_log(Log::open(&dir.0).unwrap()).await
    }

    /// [`start`], serving `log`.
    async fn serve_log(log: Arc<Log>) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(log, listener, async {
            let _ = stopped.await;
        }));
        (addr, stop, server)
    }

    fn record(value: String) -> NewRecord {
        NewRecord { key: None, value: Bytes::from(value), timestamp: None }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_appends_keep_their_order_and_replies_come_when_durable() {
        let dir = Dir::new();
        let (addr, stop, server) = start(&dir).await;
        let client = RemoteClient::connect(&addr).await.unwrap();
        let mut config = TopicConfig::new(1);
        config.fsync = FsyncPolicy::Interval { ms: 5 };
        client.create_topic("t", config).await.unwrap();
        let mut pending = Vec::new();
        for batch in 0..50u64 {
            let records = (0..20).map(|i| record(format!("{}", batch * 20 + i))).collect();
            pending.push(client.produce("t", 0, records).await.unwrap());
        }
        for (batch, rx) in pending.into_iter().enumerate() {
            assert_eq!(rx.await.unwrap().unwrap(), batch as u64 * 20);
        }
        let info = client.describe("t").await.unwrap();
        assert_eq!(info.partitions[0].durable, 1000, "durable once every produce is answered");
        let mut next = 0;
        while next < 1000 {
            let fetched = client.fetch("t", 0, next, 4096, Duration::ZERO).await.unwrap();
            for r in fetched.records {
                assert_eq!((r.offset, &r.value[..]), (next, next.to_string().as_bytes()));
                next += 1;
            }
        }
        drop(stop);
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_fetch_does_not_hold_up_the_requests_behind_it() {
        let dir = Dir::new();
        let (addr, stop, server) = start(&dir).await;
        let client = RemoteClient::connect(&addr).await.unwrap();
        client.create_topic("t", TopicConfig::new(1)).await.unwrap();
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.fetch("t", 0, 0, 1024, Duration::from_secs(25)).await }
        });
        // Requests on the same connection are answered while the fetch waits.
        for _ in 0..20 {
            assert_eq!(client.topics().await.unwrap(), ["t"]);
        }
        assert!(!waiting.is_finished(), "the fetch waits for a record");
        let rx = client.produce("t", 0, vec![record("hello".into())]).await.unwrap();
        assert_eq!(rx.await.unwrap().unwrap(), 0);
        let fetched = waiting.await.unwrap().unwrap();
        assert_eq!(&fetched.records[0].value[..], b"hello");
        assert_eq!(fetched.high_watermark, 1);
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_of_the_largest_size_can_be_fetched_over_tcp() {
        use crate::broker::record::{FRAME_HEADER_LEN, MAX_FRAME_LEN};
        let dir = Dir::new();
        let log = Log::open(&dir.0).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let value = Bytes::from(vec![b'x'; MAX_FRAME_LEN - FRAME_HEADER_LEN]);
        let records =
            [NewRecord { key: None, value: value.clone(), timestamp: None }, record("small".into())];
        log.append("t", 0, &records).unwrap();
        let (addr, stop, server) = serve_log(log).await;
        let client = RemoteClient::connect(&addr).await.unwrap();
        // Asked for less than the record, or for as much as can be: the record, whole.
        for max_bytes in [1024, usize::MAX] {
            let fetched = client.fetch("t", 0, 0, max_bytes, Duration::ZERO).await.unwrap();
            assert_eq!(fetched.records.len(), 1);
            assert_eq!((fetched.records[0].offset, fetched.records[0].value.len()), (0, value.len()));
            assert!(fetched.records[0].value == value);
        }
        let fetched = client.fetch("t", 0, 1, 1024, Duration::ZERO).await.unwrap();
        assert_eq!(&fetched.records[0].value[..], b"small");
        drop(stop);
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_every_connection() {
        let dir = Dir::new();
        let (addr, stop, server) = start(&dir).await;
        let client = RemoteClient::connect(&addr).await.unwrap();
        client.create_topic("t", TopicConfig::new(1)).await.unwrap();
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.fetch("t", 0, 0, 1024, Duration::from_secs(25)).await }
        });
        assert_eq!(client.topics().await.unwrap(), ["t"]);
        stop.send(()).unwrap();
        server.await.unwrap();
        let err = waiting.await.unwrap().unwrap_err();
        assert!(matches!(err, BrokerError::Connection { .. }), "{err:?}");
    }
}
