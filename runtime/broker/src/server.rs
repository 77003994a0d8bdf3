//! The log over TCP: what `squall broker` runs. Clients speak [`protocol`](super::protocol)
//! messages in [`frame`]s; [`RemoteClient`](super::remote::RemoteClient) is one.
//!
//! Contract, per connection: with `[cluster] tls` ([`serve_tls`]) it starts with a TLS
//! handshake that requires a client certificate signed by the cluster's CA (a client without
//! one is refused there, logged in one line, and nothing it sends is read); then, inside TLS
//! or not, with [`squall_engine::auth`]'s handshake on the cluster secret, both ways; a client that cannot prove it knows the secret is closed before
//! any of its requests is read (logged, at powers of two once many), so it can neither store
//! nor read anything. Then requests are read and applied in the order they arrive, so
//! appends to a partition keep their order; each gets exactly one response with its id. A
//! produce is answered once its records are durable and a fetch at the end of a partition
//! waits for records, both without holding up the requests behind them: responses may go
//! out in another order than the requests came (one writer task per connection sends them,
//! flushing when it has nothing more to send). A body that does not decode is answered with
//! an error (under its id if it has one, else 0) and the connection goes on; a length over
//! [`MAX_FRAME`](squall_engine::frame::MAX_FRAME) or a stream that ends inside a frame gets an error
//! response if it can still be sent, then the connection is closed. A client that ends its
//! side still gets the responses to what it sent. The responses a connection has waiting to
//! be sent are bounded in bytes ([`MAX_QUEUED_BYTES`]), not only in number: once that much
//! is waiting, the server reads no more of the connection's requests until the client reads
//! some responses (backpressure), and a fetch waiting for records holds none meanwhile. So
//! nothing a client sends, or leaves unread, stops the server, makes it hold more than that,
//! or holds up other connections; [`serve`] returns once `shutdown` completes, closing every
//! connection.
//!
//! Over all connections, [`Limits`] bound the rest: connections at once (one more is closed
//! at once), requests waiting per connection (past it, the next is read once one is
//! answered), bytes of responses queued over every connection; a connection with nothing
//! waiting that sends nothing for `idle` is closed, and so is one whose client takes no
//! response for `write` (it stopped reading, or its host is gone), giving back its share.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::error::{ErrorKind, WireError};
use super::log::Log;
use super::protocol::{request_id, Op, Reply, Request, Response, MAX_FRAME, UNKNOWN_ID};
use super::{BrokerError, FsyncPolicy, NewRecord};
use squall_engine::auth::{self, Secret};
use squall_engine::frame::{self, FrameError};
use squall_engine::tls::{self, Stream, Tls, WriteHalf};

/// A fetch returns at most this many bytes of records (about), whatever it asks for.
pub const MAX_FETCH_BYTES: usize = 16 << 20;
/// The bytes of records a fetch reads at most (besides its first record, always returned
/// whole): [`MAX_FETCH_BYTES`], and never more than a frame holds besides its envelope, so
/// that no fetch response is over [`frame::MAX_FRAME`]. (A record is never more than one byte
/// longer in a response than in the log, and the envelope is a few dozen bytes: both fit in
/// the [`WIRE_ENVELOPE_ALLOWANCE`](crate::record::WIRE_ENVELOPE_ALLOWANCE).)
const MAX_FETCH_READ: usize = {
    let room = MAX_FRAME - crate::record::WIRE_ENVELOPE_ALLOWANCE;
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
/// The bytes of responses a connection may have queued for (or being written by) its writer:
/// room for one frame of the largest size (64 MiB + 64 KiB). Beyond that, the connection's
/// requests wait to be read.
pub const MAX_QUEUED_BYTES: usize = MAX_FRAME;
/// The budget of queued bytes is counted in permits of this many bytes.
const PERMIT_BYTES: usize = 1 << 10;
const QUEUED_PERMITS: usize = MAX_QUEUED_BYTES.div_ceil(PERMIT_BYTES);
/// After a connection's last response, how long (and how much) its unread input is drained,
/// so that closing it does not reset the connection before the client reads that response.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: u64 = 1 << 20;

/// What a server holds for its clients at most, and how long it waits for them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; one past it is closed at once.
    pub connections: usize,
    /// Requests of one connection waiting (a produce for durability, a fetch for records);
    /// past it, the connection's next request is read once one of them is answered.
    pub waits_per_connection: usize,
    /// Bytes of responses queued over every connection (each also has its own
    /// [`MAX_QUEUED_BYTES`]).
    pub queued_bytes: usize,
    /// A connection with nothing waiting that sends no request for this long is closed.
    pub idle: Duration,
    /// A response the client does not take within this long (it stopped reading, or is gone
    /// without a word) closes its connection, and gives back what it held.
    pub write: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 1024,
            waits_per_connection: 1024,
            queued_bytes: 4 * MAX_QUEUED_BYTES,
            idle: Duration::from_secs(300),
            write: Duration::from_secs(60),
        }
    }
}

/// What every connection of a server shares: the budget of queued bytes over all of them,
/// and the limits.
#[derive(Clone)]
struct Budgets {
    total: Arc<Semaphore>,
    limits: Arc<Limits>,
}

impl Default for Budgets {
    fn default() -> Self {
        let limits = Limits::default();
        let total = Arc::new(Semaphore::new(limits.queued_bytes.div_ceil(PERMIT_BYTES).max(QUEUED_PERMITS)));
        Budgets { total, limits: Arc::new(limits) }
    }
}

/// Serves `log` to every client of `listener` that proves it knows `secret` until `shutdown`
/// completes, then closes every connection (requests being waited on are dropped; appends
/// already made stay).
pub async fn serve(log: Arc<Log>, listener: TcpListener, secret: Secret, shutdown: impl Future<Output = ()>) {
    serve_with(log, listener, secret, shutdown, Limits::default()).await
}

/// [`serve`], over TLS when `tls` is set (`[cluster] tls`: see the module docs).
pub async fn serve_tls(
    log: Arc<Log>,
    listener: TcpListener,
    secret: Secret,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) {
    serve_secured(log, listener, secret, tls, shutdown, Limits::default()).await
}

/// [`serve`] within `limits`.
pub async fn serve_with(
    log: Arc<Log>,
    listener: TcpListener,
    secret: Secret,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) {
    serve_secured(log, listener, secret, None, shutdown, limits).await
}

async fn serve_secured(
    log: Arc<Log>,
    listener: TcpListener,
    secret: Secret,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) {
    let failures = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    let mut connections = JoinSet::new();
    let total = Arc::new(Semaphore::new(limits.queued_bytes.div_ceil(PERMIT_BYTES).max(QUEUED_PERMITS)));
    let budgets = Budgets { total, limits: Arc::new(limits) };
    let mut refused = 0u64;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() >= budgets.limits.connections => {
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(%peer, "broker: {refused} connections refused: {} are open", connections.len());
                    }
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    let (log, budgets, secret, failures) = (log.clone(), budgets.clone(), secret.clone(), failures.clone());
                    let tls = tls.clone();
                    connections.spawn(async move {
                        let secured = match tls::accept(tls.as_ref(), stream, peer).await {
                            Ok(mut stream) => auth::accept(&mut stream, &secret, auth::BROKER).await.map(|()| stream).map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        match secured {
                            Ok(stream) => connection(log, stream, peer, Arc::default(), budgets).await,
                            Err(e) => {
                                let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
                                if n.is_power_of_two() {
                                    tracing::warn!(%peer, "broker: closed a connection unread: {e} ({n} so far)");
                                } else {
                                    tracing::debug!(%peer, "broker: closed a connection unread: {e}");
                                }
                            }
                        }
                    });
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

/// One client: reads and applies its requests in order until it ends its side. `stats` counts
/// the bytes of its queued responses.
async fn connection(
    log: Arc<Log>,
    stream: Stream,
    peer: SocketAddr,
    stats: Arc<QueueStats>,
    budgets: Budgets,
) {
    tracing::debug!(%peer, "broker: connection opened");
    frame::tune(stream.tcp());
    let (read, write) = stream.into_split();
    let (queue, queued) = mpsc::channel(QUEUE);
    let budget = Arc::new(Semaphore::new(QUEUED_PERMITS));
    let limits = budgets.limits.clone();
    let responses =
        Outbox { queue, budget: budget.clone(), total: budgets.total, reading: Arc::default(), stats };
    let write_timeout = limits.write;
    let mut writer = tokio::spawn(async move {
        write_responses(BufWriter::new(write), queued, peer, write_timeout).await;
        // Whoever waits for room in the queue learns that the writer is gone.
        budget.close();
    });
    let mut input = BufReader::with_capacity(64 << 10, read);
    // Produces waiting for durability and fetches waiting for records.
    let mut waits = JoinSet::new();
    let mut broken = false;
    loop {
        while waits.try_join_next().is_some() {}
        // At the limit of waiting requests, read no more until one is answered.
        while waits.len() >= limits.waits_per_connection {
            tokio::select! {
                _ = waits.join_next() => {}
                _ = &mut writer => {
                    tracing::debug!(%peer, "broker: connection lost");
                    return;
                }
            }
        }
        // Idle: nothing waiting, and no request for that long.
        let idle = waits.is_empty();
        let body = tokio::select! {
            read = frame::read_frame(&mut input, MAX_FRAME) => read,
            // The writer ends early only if the client is gone.
            _ = &mut writer => {
                tracing::debug!(%peer, "broker: connection lost");
                return;
            }
            _ = tokio::time::sleep(limits.idle), if idle => {
                tracing::debug!(%peer, "broker: closing an idle connection");
                break;
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

/// Where a connection's responses go: encoded, and within its budget of queued bytes, to its
/// writer.
#[derive(Clone)]
struct Outbox {
    queue: mpsc::Sender<Queued>,
    /// [`QUEUED_PERMITS`] permits: one per [`PERMIT_BYTES`] of the frames queued or being
    /// written. Closed when the writer ends.
    budget: Arc<Semaphore>,
    /// The server's budget over every connection, in the same permits.
    total: Arc<Semaphore>,
    /// Held from reading a fetch's records until its response is queued, so that a connection
    /// has at most one fetch response outside its queue, whatever number of its fetches are
    /// ready.
    reading: Arc<Mutex<()>>,
    stats: Arc<QueueStats>,
}

/// The bytes of a connection's queued responses: now, and the most ever.
#[derive(Debug, Default)]
struct QueueStats {
    bytes: AtomicUsize,
    peak: AtomicUsize,
}

/// A response in a connection's queue, holding its share of the budget until it is written.
struct Queued {
    frame: Vec<u8>,
    stats: Arc<QueueStats>,
    _permit: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl Drop for Queued {
    fn drop(&mut self) {
        // Before the permit goes back.
        self.stats.bytes.fetch_sub(self.frame.len(), Ordering::Relaxed);
    }
}

impl Outbox {
    /// Queues `frame` once the budget has room for it; false if the writer is gone.
    async fn push(&self, frame: Vec<u8>) -> bool {
        // At most the whole budget: it holds the largest frame.
        let permits = frame.len().div_ceil(PERMIT_BYTES).clamp(1, QUEUED_PERMITS);
        let Ok(permit) = self.budget.clone().acquire_many_owned(permits as u32).await else {
            return false;
        };
        // The connection's own budget first: it waits on the server's only for what it may
        // hold, and a connection whose client stopped reading gives its share back at the
        // write timeout.
        let Ok(total) = self.total.clone().acquire_many_owned(permits as u32).await else {
            return false;
        };
        let queued = self.stats.bytes.fetch_add(frame.len(), Ordering::Relaxed) + frame.len();
        self.stats.peak.fetch_max(queued, Ordering::Relaxed);
        let queued = Queued { frame, stats: self.stats.clone(), _permit: permit, _total: total };
        self.queue.send(queued).await.is_ok()
    }
}

/// Applies one request; answers it now or leaves a task in `waits` to answer it. False if the
/// connection's writer is gone.
async fn handle(log: &Arc<Log>, request: Request, responses: &Outbox, waits: &mut JoinSet<()>) -> bool {
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
            let turn = responses.reading.lock().await;
            match log.read(&topic, partition, offset, max_bytes) {
                Ok(fetched) if !fetched.records.is_empty() || wait.is_zero() => {
                    return respond(responses, id, Ok(Reply::Fetched(fetched.into()))).await;
                }
                Err(e) => Err(e),
                Ok(_) => {
                    drop(turn);
                    let (log, responses) = (log.clone(), responses.clone());
                    waits.spawn(async move {
                        fetch_after_wait(&log, &responses, id, &topic, partition, offset, max_bytes, wait)
                            .await;
                    });
                    return true;
                }
            }
        }
    };
    respond(responses, id, result).await
}

/// Answers a fetch at the end of a partition: waits up to `wait` for a record, then reads
/// like any fetch. Waiting reads only the first record, dropped at once: a fetch holds no
/// records while it waits for them, nor while it waits for its turn to read.
#[allow(clippy::too_many_arguments)]
async fn fetch_after_wait(
    log: &Log,
    responses: &Outbox,
    id: u64,
    topic: &str,
    partition: u32,
    offset: u64,
    max_bytes: usize,
    wait: Duration,
) -> bool {
    let result = match log.fetch(topic, partition, offset, 1, wait).await {
        Ok(first) if !first.records.is_empty() => {
            drop(first);
            let _turn = responses.reading.lock().await;
            let result = log.read(topic, partition, offset, max_bytes);
            return respond(responses, id, result.map(|fetched| Reply::Fetched(fetched.into()))).await;
        }
        other => other,
    };
    respond(responses, id, result.map(|fetched| Reply::Fetched(fetched.into()))).await
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

/// Queues the response to `id` (waiting for room in the connection's budget); false if the
/// writer is gone.
async fn respond(responses: &Outbox, id: u64, result: Result<Reply, BrokerError>) -> bool {
    let result = result.map_err(|e| {
        tracing::warn!(id, "broker: request failed: {e}");
        e.to_wire()
    });
    // Encoded first, so that the records are not held while waiting for room.
    let frame = encode_response(&Response { id, result });
    responses.push(frame).await
}

/// The frame of `response` or, if it cannot be encoded, of an error saying why.
fn encode_response(response: &Response) -> Vec<u8> {
    frame::encode(response, MAX_FRAME).unwrap_or_else(|e| {
        // Too big, say: the client hears why instead.
        tracing::warn!(id = response.id, "broker: cannot send a response: {e}");
        let error = WireError { kind: ErrorKind::Other, message: format!("cannot send the response: {e}") };
        frame::encode(&Response { id: response.id, result: Err(error) }, MAX_FRAME)
            .expect("a short error always encodes")
    })
}

/// Writes queued responses, flushing whenever the queue is empty; half-closes the connection
/// once every sender is gone. Ends early if the client is gone.
async fn write_responses(
    mut out: BufWriter<WriteHalf>,
    mut queue: mpsc::Receiver<Queued>,
    peer: SocketAddr,
    timeout: Duration,
) {
    // A response's bytes count against the budget until written (dropped).
    while let Some(response) = queue.recv().await {
        let sent = tokio::time::timeout(timeout, async {
            let mut written = out.write_all(&response.frame).await;
            drop(response);
            while written.is_ok() {
                match queue.try_recv() {
                    Ok(response) => written = out.write_all(&response.frame).await,
                    Err(_) => break,
                }
            }
            written?;
            out.flush().await
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, "broker: cannot send to the client: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "broker: the client took no response for {timeout:?}; closing");
                return;
            }
        }
    }
    let _ = out.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;
    use crate::remote::RemoteClient;
    use crate::TopicConfig;

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

    /// A client of the server at `addr` whose fetch of an empty topic `t` waits (up to 25 s).
    async fn client_with_a_waiting_fetch(
        addr: &str,
    ) -> (RemoteClient, tokio::task::JoinHandle<crate::Result<crate::Fetched>>) {
        let client = RemoteClient::connect(addr).await.unwrap();
        client.create_topic("t", TopicConfig::new(1)).await.unwrap();
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.fetch("t", 0, 0, 1024, Duration::from_secs(25)).await }
        });
        (client, waiting)
    }

    /// [`start`], serving `log`.
    async fn serve_log(log: Arc<Log>) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(log, listener, crate::secret(), async {
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
        let (client, waiting) = client_with_a_waiting_fetch(&addr).await;
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
        use crate::record::{FRAME_HEADER_LEN, MAX_FRAME_LEN};
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

    const MIB: usize = 1 << 20;

    /// Appends 16 records of 1 MiB each to partition 0 of topic "t".
    fn append_sixteen_mib(log: &Log) {
        let value = Bytes::from(vec![b'v'; MIB]);
        let records: Vec<_> =
            (0..16).map(|_| NewRecord { key: None, value: value.clone(), timestamp: None }).collect();
        log.append("t", 0, &records).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_does_not_read_its_responses_holds_a_bounded_queue_and_no_one_else_up() {
        let dir = Dir::new();
        let log = Log::open(&dir.0).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        append_sixteen_mib(&log);
        let (addr, stop, server) = serve_log(log.clone()).await;

        // A greedy client's connection, served by `connection` itself so that its queue can be
        // watched: it asks for 12 fetches of about 15 MiB each (180 MiB) and reads nothing.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut greedy = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let stats = Arc::new(QueueStats::default());
        let served = tokio::spawn(connection(
            log.clone(),
            Stream::Plain(stream),
            peer,
            stats.clone(),
            Budgets::default(),
        ));
        const FETCHES: u64 = 12;
        let mut requests = Vec::new();
        for id in 1..=FETCHES {
            let op = Op::Fetch {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: MAX_FETCH_BYTES as u64,
                wait_ms: 0,
            };
            requests.extend(frame::encode(&Request { id, op }, MAX_FRAME).unwrap());
        }
        greedy.write_all(&requests).await.unwrap();
        let peak = || stats.peak.load(Ordering::Relaxed);
        // The queue fills up...
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while peak() < MAX_QUEUED_BYTES / 2 {
            assert!(tokio::time::Instant::now() < deadline, "only {} bytes queued", peak());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // ... and other connections are served meanwhile.
        let client = RemoteClient::connect(&addr).await.unwrap();
        assert_eq!(client.topics().await.unwrap(), ["t"]);
        let fetched = client.fetch("t", 0, 15, MIB, Duration::ZERO).await.unwrap();
        assert_eq!(fetched.records.len(), 1);
        assert!(peak() <= MAX_QUEUED_BYTES, "{} bytes queued", peak());

        // Once the greedy client reads, every response comes, whole.
        let mut input = BufReader::new(greedy);
        for _ in 0..FETCHES {
            let response: Response = frame::read_message(&mut input, MAX_FRAME).await.unwrap().unwrap();
            let Ok(Reply::Fetched(fetched)) = response.result else { panic!("{:?}", response.result) };
            assert_eq!(fetched.records.len(), 15);
            assert!(fetched
                .records
                .iter()
                .all(|r| r.value.len() == MIB && r.value.iter().all(|&b| b == b'v')));
        }
        assert!(peak() <= MAX_QUEUED_BYTES, "{} bytes queued", peak());
        drop(input);
        served.await.unwrap();
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 0);
        drop(stop);
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetches_that_wait_are_answered_within_the_queue_bound_when_records_come() {
        let dir = Dir::new();
        let log = Log::open(&dir.0).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut greedy = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let stats = Arc::new(QueueStats::default());
        let served = tokio::spawn(connection(
            log.clone(),
            Stream::Plain(stream),
            peer,
            stats.clone(),
            Budgets::default(),
        ));
        // 12 fetches at the end of the partition, each waiting for up to 15 MiB.
        const FETCHES: u64 = 12;
        let mut requests = Vec::new();
        for id in 1..=FETCHES {
            let op = Op::Fetch {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: MAX_FETCH_BYTES as u64,
                wait_ms: 25_000,
            };
            requests.extend(frame::encode(&Request { id, op }, MAX_FRAME).unwrap());
        }
        // A request behind them, answered while they wait, shows that they have all been read.
        requests.extend(frame::encode(&Request { id: 100, op: Op::Topics }, MAX_FRAME).unwrap());
        greedy.write_all(&requests).await.unwrap();
        let mut input = BufReader::new(greedy);
        let response: Response = frame::read_message(&mut input, MAX_FRAME).await.unwrap().unwrap();
        assert_eq!((response.id, response.result), (100, Ok(Reply::Topics(vec!["t".into()]))));
        // The records they wait for come all at once.
        append_sixteen_mib(&log);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while stats.peak.load(Ordering::Relaxed) < MAX_QUEUED_BYTES / 2 {
            assert!(tokio::time::Instant::now() < deadline, "the waiting fetches were not answered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Time enough for a server without a bound to queue every response (not needed for the
        // bound to hold).
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(stats.peak.load(Ordering::Relaxed) <= MAX_QUEUED_BYTES, "{stats:?}");
        for _ in 0..FETCHES {
            let response: Response = frame::read_message(&mut input, MAX_FRAME).await.unwrap().unwrap();
            let Ok(Reply::Fetched(fetched)) = response.result else { panic!("{:?}", response.result) };
            assert_eq!(fetched.records.len(), 15);
        }
        assert!(stats.peak.load(Ordering::Relaxed) <= MAX_QUEUED_BYTES, "{stats:?}");
        drop(input);
        served.await.unwrap();
    }

    /// A server within `limits`; stops when the sender is dropped.
    async fn serve_limited(log: Arc<Log>, limits: Limits) -> (String, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve_with(
            log,
            listener,
            crate::secret(),
            async {
                let _ = stopped.await;
            },
            limits,
        ));
        (addr, stop)
    }

    /// A connection to `addr` that has passed the handshake.
    async fn authenticated(addr: &str) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        auth::connect(&mut stream, &crate::secret(), auth::BROKER).await.unwrap();
        stream
    }

    /// Waits (generously) for the server to close `stream`: a read of 0 bytes or an error.
    async fn expect_closed(stream: &mut TcpStream) {
        let mut buf = vec![0u8; 1 << 16];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server kept the connection open");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_and_half_sent_connections_are_closed_and_others_served_meanwhile() {
        let dir = Dir::new();
        let log = Log::open(&dir.0).unwrap();
        let limits = Limits { idle: Duration::from_secs(2), ..Limits::default() };
        let (addr, _stop) = serve_limited(log, limits).await;
        let mut idle = authenticated(&addr).await;
        // Half a frame: a length that promises more than ever comes.
        let mut half = authenticated(&addr).await;
        half.write_all(&[0, 0, 0, 100, 0x92]).await.unwrap();
        let client = RemoteClient::connect(&addr).await.unwrap();
        client.create_topic("t", TopicConfig::new(1)).await.unwrap();
        expect_closed(&mut idle).await;
        expect_closed(&mut half).await;
        // A client that was idle too reconnects with its next call. (Asked well after its
        // own connection was closed: a call crossing the close itself fails, as on any
        // connection a server closes.)
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(client.topics().await.unwrap(), ["t"]);
        // A fetch waiting for records is not idleness: it is answered, not cut.
        let fetched = client.fetch("t", 0, 0, 1024, Duration::from_secs(1)).await.unwrap();
        assert!(fetched.records.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_limit_are_closed_at_once() {
        let dir = Dir::new();
        let log = Log::open(&dir.0).unwrap();
        let (addr, _stop) = serve_limited(log, Limits { connections: 4, ..Limits::default() }).await;
        let mut open = Vec::new();
        for _ in 0..4 {
            let client = RemoteClient::connect(&addr).await.unwrap();
            client.topics().await.unwrap();
            open.push(client);
        }
        let mut fifth = TcpStream::connect(&addr).await.unwrap();
        expect_closed(&mut fifth).await;
        drop(open);
        // Once the others are gone, there is room again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Until then, a connection is closed before its handshake ends.
            if let Ok(client) = RemoteClient::connect(&addr).await {
                if client.topics().await.is_ok() {
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no room after the clients left");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_is_closed_at_the_write_timeout_and_frees_the_total_budget() {
        let dir = Dir::new();
        let log = Log::open(&dir.0).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        append_sixteen_mib(&log);
        // The whole server may queue one connection's worth.
        let limits =
            Limits { queued_bytes: MAX_QUEUED_BYTES, write: Duration::from_secs(1), ..Limits::default() };
        let (addr, _stop) = serve_limited(log, limits).await;
        let mut greedy = authenticated(&addr).await;
        let mut requests = Vec::new();
        for id in 1..=12 {
            let op = Op::Fetch {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                max_bytes: MAX_FETCH_BYTES as u64,
                wait_ms: 0,
            };
            requests.extend(frame::encode(&Request { id, op }, MAX_FRAME).unwrap());
        }
        greedy.write_all(&requests).await.unwrap();
        // It never reads: closed at the write timeout, after which another client's large
        // fetches have the budget again.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let client = RemoteClient::connect(&addr).await.unwrap();
        for _ in 0..4 {
            let fetched = client.fetch("t", 0, 0, MAX_FETCH_BYTES, Duration::ZERO).await.unwrap();
            assert_eq!(fetched.records.len(), 15);
        }
        expect_closed(&mut greedy).await;
    }

    /// A produce and a fetch of topic `t`, framed, as a client would send them.
    fn produce_and_fetch() -> Vec<u8> {
        let record = NewRecord { key: None, value: Bytes::from_static(b"intruder"), timestamp: None };
        let produce = Op::Produce { topic: "t".into(), partition: 0, records: vec![record] };
        let fetch = Op::Fetch { topic: "t".into(), partition: 0, offset: 0, max_bytes: 1 << 20, wait_ms: 0 };
        let mut bytes = frame::encode(&Request { id: 1, op: produce }, MAX_FRAME).unwrap();
        bytes.extend(frame::encode(&Request { id: 2, op: fetch }, MAX_FRAME).unwrap());
        bytes
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_without_the_secret_stores_nothing_and_reads_nothing() {
        let dir = Dir::new();
        let log = Log::open(&dir.0).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        log.append(
            "t",
            0,
            &[NewRecord { key: None, value: Bytes::from_static(b"private"), timestamp: None }],
        )
        .unwrap();
        let (addr, _stop, _server) = serve_log(log.clone()).await;

        // Skipping the handshake: the requests are read as a wrong answer to the challenge.
        let mut stranger = TcpStream::connect(&addr).await.unwrap();
        let _ = stranger.write_all(&produce_and_fetch()).await;
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), stranger.read_to_end(&mut seen)).await;
        // The challenge (magic and nonce), perhaps the refusal byte (closing with the rest
        // unread may reset the connection first): no response, no record.
        let challenge = auth::MAGIC.len() + auth::NONCE_LEN;
        assert!(
            seen.starts_with(auth::MAGIC) && (challenge..=challenge + 1).contains(&seen.len()),
            "{seen:?}"
        );
        assert!(!seen.windows(7).any(|w| w == b"private"));
        // With a wrong secret: refused, told so, and closed before the requests are read.
        let mut wrong = TcpStream::connect(&addr).await.unwrap();
        let refused = auth::connect(&mut wrong, &Secret::new("a guess"), auth::BROKER).await;
        assert!(matches!(refused, Err(auth::AuthError::Refused)), "{refused:?}");
        let _ = wrong.write_all(&produce_and_fetch()).await;
        expect_closed(&mut wrong).await;

        assert_eq!(log.describe("t").unwrap().partitions[0].high_watermark, 1, "nothing was stored");
        // A client with the secret is served as ever.
        let client = RemoteClient::connect(&addr).await.unwrap();
        let fetched = client.fetch("t", 0, 0, 1 << 20, Duration::ZERO).await.unwrap();
        assert_eq!(fetched.records.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_is_told_in_one_line_that_the_server_refused_its_secret() {
        let dir = Dir::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(
            Log::open(&dir.0).unwrap(),
            listener,
            Secret::new("the server's"),
            std::future::pending(),
        ));
        let err = RemoteClient::connect(&addr).await.err().expect("refused");
        let text = err.to_string();
        assert!(text.starts_with(&format!("broker {addr}: cannot authenticate: ")), "{text}");
        assert!(text.contains("SQUALL_SECRET") && !text.contains('\n'), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_closes_every_connection() {
        let dir = Dir::new();
        let (addr, stop, server) = start(&dir).await;
        let (client, waiting) = client_with_a_waiting_fetch(&addr).await;
        assert_eq!(client.topics().await.unwrap(), ["t"]);
        stop.send(()).unwrap();
        server.await.unwrap();
        let err = waiting.await.unwrap().unwrap_err();
        assert!(matches!(err, BrokerError::Connection { .. }), "{err:?}");
    }
}
