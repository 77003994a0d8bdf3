//! [`RemoteClient`]: the TCP client of a `squall broker` server (see [`super::server`]).
//!
//! Contract: one client (and all its clones) multiplexes its requests over one TCP connection
//! ([tuned](squall_engine::frame::tune): TCP_NODELAY and keepalive): a writer task sends the frames
//! callers queue, in the order they queue them, and a reader task hands each response to the
//! caller waiting for its id. Every method queues its request before it first waits for
//! anything but the connection, so calls made one after another are sent, and applied by the
//! server, in that order — in particular [`RemoteClient::produce`] returns with its request
//! queued, and its receiver resolves once the server reports the records durable. Every
//! request has a deadline: [`REPLY_TIMEOUT`] after it is queued (a fetch: its wait and then
//! that). A request still without a reply at its deadline means the connection is broken
//! (the server's host died, the network is cut: TCP alone may not notice for hours), so it is
//! dropped. A response that does not decode (from a newer server, say) fails the request of
//! its id; one whose id cannot even be read puts the stream in doubt, so the connection is
//! dropped. If the connection drops, for that or any other reason, every request in flight
//! fails with [`BrokerError::Connection`]; the next call connects again, trying a few times
//! with a short backoff, so a client outlives a restart of its server. Dropping the last
//! clone closes the connection once the replies already asked for have arrived.
//!
//! Every connection starts with [`squall_engine::auth`]'s handshake on [`crate::secret`]
//! (`SQUALL_SECRET`, else `[cluster] secret` of config/cluster.toml, else the default): a
//! server that cannot prove it knows the secret is sent nothing, and a failed handshake is a
//! [`BrokerError::Connection`] naming the cause, not retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::error::ErrorKind;
use super::protocol::{response_id, Op, Reply, Request, Response, MAX_FRAME, UNKNOWN_ID};
use super::{BrokerError, Fetched, NewRecord, Result, TopicConfig, TopicInfo};
use squall_engine::auth;
use squall_engine::frame::{self, FrameError};
use squall_engine::tls::{ReadHalf, WriteHalf};

/// Connection attempts per (re)connect, and the backoff between them (doubling up to
/// [`MAX_BACKOFF`]).
const CONNECT_ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames queued for the writer before callers wait.
const QUEUE: usize = 1024;
/// How long a request may go without its reply (a fetch: after its wait) before its connection
/// is presumed broken. Generous: a healthy server answers in milliseconds, and a produce once
/// its records are durable.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longer deadlines are cut to this (as good as forever), so that none overflows.
const MAX_REPLY_TIMEOUT: Duration = Duration::from_secs(365 * 86_400);

/// A client of one `squall broker` server; clones share its connection.
#[derive(Clone)]
pub struct RemoteClient {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    next_id: AtomicU64,
    /// [`REPLY_TIMEOUT`], but for tests.
    reply_timeout: Duration,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

/// One TCP connection: the writer's queue and what the reader completes.
#[derive(Clone)]
struct Conn {
    frames: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
}

struct Shared {
    addr: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    /// Why the connection is closed; None while it is usable.
    closed: Option<String>,
    /// The last error the server sent without an id.
    server_error: Option<String>,
    /// The connection's reader, writer and deadline watcher, stopped when it closes.
    tasks: Vec<AbortHandle>,
}

/// A request in flight.
struct Pending {
    waiter: Waiter,
    /// The operation's name, for messages.
    op: &'static str,
    /// How long it may wait for its reply, and until when.
    timeout: Duration,
    deadline: Instant,
}

/// A caller waiting for a response.
enum Waiter {
    Reply(oneshot::Sender<Result<Reply>>),
    /// A produce: the first record's offset.
    Offset(oneshot::Sender<Result<u64>>),
}

impl Waiter {
    fn complete(self, result: Result<Reply>) {
        match self {
            Waiter::Reply(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Offset(tx) => {
                let _ = tx.send(result.and_then(|reply| match reply {
                    Reply::Produced { base_offset } => Ok(base_offset),
                    other => Err(unexpected("produce", &other)),
                }));
            }
        }
    }
}

impl RemoteClient {
    /// Connects to the server at `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<RemoteClient> {
        RemoteClient::connect_with(addr, REPLY_TIMEOUT).await
    }

    /// [`RemoteClient::connect`], with another [`REPLY_TIMEOUT`].
    async fn connect_with(addr: &str, reply_timeout: Duration) -> Result<RemoteClient> {
        let conn = open(addr, reply_timeout).await?;
        Ok(RemoteClient {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                next_id: AtomicU64::new(1),
                reply_timeout,
                conn: tokio::sync::Mutex::new(Some(conn)),
            }),
        })
    }

    /// The server's address, as given to [`RemoteClient::connect`].
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<()> {
        match self.call(Op::CreateTopic { name: name.to_string(), config }).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected("create-topic", &other)),
        }
    }

    pub async fn topics(&self) -> Result<Vec<String>> {
        match self.call(Op::Topics).await? {
            Reply::Topics(names) => Ok(names),
            other => Err(unexpected("topics", &other)),
        }
    }

    pub async fn describe(&self, topic: &str) -> Result<TopicInfo> {
        match self.call(Op::Describe { topic: topic.to_string() }).await? {
            Reply::Topic(info) => Ok(info),
            other => Err(unexpected("describe", &other)),
        }
    }

    /// Sends the append now (appends to one partition are applied in the order of these
    /// calls); the receiver gets the first record's offset once the server reports them durable.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<NewRecord>,
    ) -> Result<oneshot::Receiver<Result<u64>>> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Produce { topic: topic.to_string(), partition, records }, Waiter::Offset(tx)).await?;
        Ok(rx)
    }

    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Fetched> {
        let op = Op::Fetch {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes: max_bytes as u64,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        match self.call(op).await? {
            Reply::Fetched(fetched) => Ok(fetched.into()),
            other => Err(unexpected("fetch", &other)),
        }
    }

    pub async fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        let op = Op::Commit { group: group.to_string(), topic: topic.to_string(), partition, offset };
        match self.call(op).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected("commit", &other)),
        }
    }

    pub async fn committed(&self, group: &str, topic: &str) -> Result<Vec<Option<u64>>> {
        match self.call(Op::Committed { group: group.to_string(), topic: topic.to_string() }).await? {
            Reply::Offsets(offsets) => Ok(offsets),
            other => Err(unexpected("committed", &other)),
        }
    }

    /// Sends `op` and waits for its reply.
    async fn call(&self, op: Op) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        self.send(op, Waiter::Reply(tx)).await?;
        rx.await.unwrap_or_else(|_| Err(self.connection_error("the connection closed before the reply")))
    }

    /// Queues `op` for the writer, with `waiter` registered for its reply.
    async fn send(&self, op: Op, waiter: Waiter) -> Result<()> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let what = op.name();
        let timeout = reply_timeout(&op, self.inner.reply_timeout);
        let mut frame = frame::encode(&Request { id, op }, MAX_FRAME).map_err(|e| match e {
            FrameError::TooLarge { len, max } => BrokerError::InvalidRequest(format!(
                "a {what} request of {len} bytes is over the limit of {max} bytes; send less at once"
            )),
            other => BrokerError::InvalidRequest(other.to_string()),
        })?;
        let mut waiter = Some(waiter);
        // A connection found closed is replaced once; a second failure is the caller's.
        for attempt in 0..2 {
            let conn = self.conn().await?;
            let pending = Pending {
                waiter: waiter.take().expect("the waiter is put back"),
                op: what,
                timeout,
                deadline: Instant::now() + timeout,
            };
            match conn.shared.register(id, pending) {
                Ok(()) => match conn.frames.send(frame).await {
                    Ok(()) => return Ok(()),
                    Err(mpsc::error::SendError(back)) => {
                        // The writer is gone, so the connection is closed and has failed (or
                        // is failing) the waiter: registering it again is no longer possible.
                        frame = back;
                        match conn.shared.unregister(id) {
                            Some(w) => waiter = Some(w),
                            None => return Err(self.connection_error("the connection closed")),
                        }
                    }
                },
                Err(p) => waiter = Some(p.waiter),
            }
            if attempt == 0 {
                tracing::debug!(addr = %self.inner.addr, "broker connection closed; reconnecting");
            }
        }
        Err(self.connection_error("the connection closed while sending"))
    }

    /// The open connection, opening a new one if there is none or it has closed.
    async fn conn(&self) -> Result<Conn> {
        let mut slot = self.inner.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.shared.is_closed() {
                return Ok(conn.clone());
            }
        }
        *slot = None;
        let conn = open(&self.inner.addr, self.inner.reply_timeout).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn connection_error(&self, message: &str) -> BrokerError {
        BrokerError::Connection { addr: self.inner.addr.clone(), message: message.to_string() }
    }
}

/// How long `op` may wait for its reply: `base`, after its wait if it is a fetch.
fn reply_timeout(op: &Op, base: Duration) -> Duration {
    let timeout = match op {
        Op::Fetch { wait_ms, .. } => Duration::from_millis(*wait_ms).saturating_add(base),
        _ => base,
    };
    timeout.min(MAX_REPLY_TIMEOUT)
}

fn unexpected(op: &str, reply: &Reply) -> BrokerError {
    let kind = match reply {
        Reply::Done => "done",
        Reply::Topics(_) => "topics",
        Reply::Topic(_) => "topic",
        Reply::Produced { .. } => "produced",
        Reply::Fetched(_) => "fetched",
        Reply::Offsets(_) => "offsets",
    };
    BrokerError::Remote {
        kind: ErrorKind::Other,
        message: format!("the server answered a {op} request with a `{kind}` reply"),
    }
}

/// Connects to `addr`, retrying a few times, and starts the connection's writer, reader and
/// deadline watcher (every deadline is at least `reply_timeout` after its request).
async fn open(addr: &str, reply_timeout: Duration) -> Result<Conn> {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    let stream = loop {
        let error = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => break stream,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        };
        if attempt == CONNECT_ATTEMPTS {
            return Err(BrokerError::Connection {
                addr: addr.to_string(),
                message: format!("cannot connect ({attempt} attempts): {error}"),
            });
        }
        tracing::debug!(%addr, attempt, %error, "cannot connect to the broker; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        attempt += 1;
    };
    frame::tune(&stream);
    // With `[cluster] tls`, the server's certificate must chain to the CA and name the host
    // dialed; a failed handshake is not retried either (the certificates will not change).
    let connection_error = |message: String| BrokerError::Connection { addr: addr.to_string(), message };
    let tls = crate::tls().map_err(&connection_error)?;
    let mut stream = squall_engine::tls::connect(tls.as_ref(), stream, addr)
        .await
        .map_err(|e| connection_error(e.to_string()))?;
    // Nothing is sent to a server that cannot prove it knows the secret, and a server that
    // refuses this side's proof is not retried: the secrets differ.
    auth::connect(&mut stream, &crate::secret(), auth::BROKER).await.map_err(|e| {
        BrokerError::Connection { addr: addr.to_string(), message: format!("cannot authenticate: {e}") }
    })?;
    tracing::debug!(%addr, "connected to the broker");
    let (read, write) = stream.into_split();
    let shared = Arc::new(Shared { addr: addr.to_string(), state: Mutex::new(State::default()) });
    let (frames, queue) = mpsc::channel(QUEUE);
    let tasks = [
        tokio::spawn(read_responses(BufReader::new(read), shared.clone())),
        tokio::spawn(write_frames(BufWriter::new(write), queue, shared.clone())),
        tokio::spawn(watch_deadlines(shared.clone(), reply_timeout)),
    ];
    shared.lock().tasks = tasks.iter().map(|task| task.abort_handle()).collect();
    Ok(Conn { frames, shared })
}

/// Writes queued frames, flushing whenever the queue is empty; half-closes the connection
/// once every sender is gone.
async fn write_frames(
    mut out: BufWriter<WriteHalf>,
    mut queue: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(frame) = queue.recv().await {
        let mut written = out.write_all(&frame).await;
        while written.is_ok() {
            match queue.try_recv() {
                Ok(frame) => written = out.write_all(&frame).await,
                Err(_) => break,
            }
        }
        if let Err(e) = async {
            written?;
            out.flush().await
        }
        .await
        {
            shared.close(format!("cannot send: {e}"));
            return;
        }
    }
    let _ = out.shutdown().await;
}

/// Closes the connection once a request is past its deadline: its reply is not coming, and
/// neither, likely, are the others'. Every deadline is at least `min_timeout` after its
/// request, so looking again that long after the last look never misses one.
async fn watch_deadlines(shared: Arc<Shared>, min_timeout: Duration) {
    loop {
        let now = Instant::now();
        let next = {
            let state = shared.lock();
            if state.closed.is_some() {
                return;
            }
            let late = state.pending.values().filter(|p| p.deadline <= now).min_by_key(|p| p.deadline);
            if let Some(late) = late {
                let reason = format!(
                    "no reply to a {} request within {}",
                    late.op,
                    humantime::format_duration(late.timeout)
                );
                drop(state);
                shared.close(reason);
                return;
            }
            let earliest = state.pending.values().map(|p| p.deadline).min();
            earliest.map_or(now + min_timeout, |deadline| deadline.min(now + min_timeout))
        };
        tokio::time::sleep_until(next).await;
    }
}

/// Hands each response to its waiter until the connection ends.
async fn read_responses(mut input: BufReader<ReadHalf>, shared: Arc<Shared>) {
    loop {
        match frame::read_frame(&mut input, MAX_FRAME).await {
            Ok(Some(body)) => match frame::decode::<Response>(&body) {
                Ok(response) => shared.complete(response),
                Err(e) => match response_id(&body) {
                    Some(id) => shared.undecodable(id, e),
                    None => {
                        shared.close(format!("the server sent a response that cannot be read: {e}"));
                        return;
                    }
                },
            },
            Ok(None) => {
                shared.close("the server closed the connection".to_string());
                return;
            }
            Err(e) => {
                shared.close(e.to_string());
                return;
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Registers `pending` for the response `id`; gives it back if the connection is closed.
    fn register(&self, id: u64, pending: Pending) -> std::result::Result<(), Pending> {
        let mut state = self.lock();
        if state.closed.is_some() {
            return Err(pending);
        }
        state.pending.insert(id, pending);
        Ok(())
    }

    fn unregister(&self, id: u64) -> Option<Waiter> {
        self.lock().pending.remove(&id).map(|p| p.waiter)
    }

    fn complete(&self, response: Response) {
        if response.id == UNKNOWN_ID {
            if let Err(e) = response.result {
                tracing::warn!(addr = %self.addr, "the broker reported: {}", e.message);
                self.lock().server_error = Some(e.message);
            }
            return;
        }
        let pending = self.lock().pending.remove(&response.id);
        match pending {
            Some(pending) => pending.waiter.complete(response.result.map_err(BrokerError::from)),
            None => tracing::warn!(addr = %self.addr, id = response.id, "a response to no request"),
        }
    }

    /// Fails the request `id`, whose response did not decode (`error`).
    fn undecodable(&self, id: u64, error: FrameError) {
        let pending = self.lock().pending.remove(&id);
        let Some(pending) = pending else {
            // An error without a request (id 0), or a response to no request.
            tracing::warn!(addr = %self.addr, id, "an undecodable response from the broker: {error}");
            return;
        };
        let message = format!(
            "cannot read the reply of the broker at {} to a {} request ({error}); is the server a newer version?",
            self.addr, pending.op
        );
        pending.waiter.complete(Err(BrokerError::Remote { kind: ErrorKind::Other, message }));
    }

    /// Marks the connection closed, drops it (its tasks stop, the socket with them) and fails
    /// every request in flight.
    fn close(&self, reason: String) {
        let (pending, message) = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return;
            }
            let message = match state.server_error.take() {
                Some(said) => format!("connection lost: {reason} (the server said: {said})"),
                None => format!("connection lost: {reason}"),
            };
            state.closed = Some(message.clone());
            for task in state.tasks.drain(..) {
                task.abort();
            }
            (std::mem::take(&mut state.pending), message)
        };
        if !pending.is_empty() {
            tracing::debug!(addr = %self.addr, requests = pending.len(), "{message}");
        }
        for (_, pending) in pending {
            pending
                .waiter
                .complete(Err(BrokerError::Connection { addr: self.addr.clone(), message: message.clone() }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorKind, WireError};
    use crate::protocol::FetchedRecords;
    use bytes::Bytes;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::TcpListener;

    /// The next connection to `listener`, past the handshake.
    async fn accepted(listener: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
        let (mut stream, from) = listener.accept().await.unwrap();
        auth::accept(&mut stream, &crate::secret(), auth::BROKER).await.unwrap();
        (stream, from)
    }

    async fn listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        (listener, addr)
    }

    /// The client's next call makes a new connection, which works.
    async fn assert_reconnects(client: &RemoteClient, listener: TcpListener) {
        let server = tokio::spawn(async move {
            let (stream, _) = accepted(&listener).await;
            let (mut r, mut w) = split(stream);
            let request = frame::read_message::<_, Request>(&mut r, MAX_FRAME).await.unwrap().unwrap();
            reply(&mut w, request.id, Ok(Reply::Topics(vec!["again".into()]))).await;
        });
        assert_eq!(soon(client.topics()).await.unwrap(), ["again"]);
        server.await.unwrap();
    }

    async fn reply(
        stream: &mut BufWriter<OwnedWriteHalf>,
        id: u64,
        result: std::result::Result<Reply, WireError>,
    ) {
        frame::write_frame(stream, &Response { id, result }, MAX_FRAME).await.unwrap();
        stream.flush().await.unwrap();
    }

    fn split(stream: TcpStream) -> (BufReader<OwnedReadHalf>, BufWriter<OwnedWriteHalf>) {
        let (r, w) = stream.into_split();
        (BufReader::new(r), BufWriter::new(w))
    }

    #[tokio::test]
    async fn replies_are_matched_by_id_whatever_their_order() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (stream, _) = accepted(&listener).await;
            let (mut r, mut w) = split(stream);
            let mut requests = Vec::new();
            for _ in 0..3 {
                requests.push(frame::read_message::<_, Request>(&mut r, MAX_FRAME).await.unwrap().unwrap());
            }
            for request in requests.into_iter().rev() {
                let result = match request.op {
                    Op::Describe { topic } => Err(WireError {
                        kind: ErrorKind::UnknownTopic,
                        message: format!("unknown topic `{topic}`"),
                    }),
                    Op::Topics => Ok(Reply::Topics(vec!["a".into()])),
                    Op::Committed { .. } => Ok(Reply::Offsets(vec![Some(4)])),
                    other => panic!("unexpected {other:?}"),
                };
                reply(&mut w, request.id, result).await;
            }
        });
        let client = RemoteClient::connect(&addr).await.unwrap();
        let (topics, described, committed) =
            tokio::join!(client.topics(), client.describe("nope"), client.committed("g", "a"));
        assert_eq!(topics.unwrap(), ["a"]);
        assert_eq!(described.unwrap_err().to_string(), "unknown topic `nope`");
        assert_eq!(committed.unwrap(), [Some(4)]);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn produces_are_sent_in_call_order() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (stream, _) = accepted(&listener).await;
            let (mut r, mut w) = split(stream);
            let mut next = 0u64;
            let mut seen = Vec::new();
            while let Some(request) = frame::read_message::<_, Request>(&mut r, MAX_FRAME).await.unwrap() {
                let Op::Produce { records, .. } = request.op else { panic!("not a produce") };
                seen.push(records[0].value.clone());
                reply(&mut w, request.id, Ok(Reply::Produced { base_offset: next })).await;
                next += records.len() as u64;
            }
            seen
        });
        let client = RemoteClient::connect(&addr).await.unwrap();
        let mut receivers = Vec::new();
        for i in 0..500u32 {
            let record = NewRecord { key: None, value: Bytes::from(i.to_string()), timestamp: None };
            receivers.push(client.produce("t", 0, vec![record.clone(), record]).await.unwrap());
        }
        for (i, rx) in receivers.into_iter().enumerate() {
            assert_eq!(rx.await.unwrap().unwrap(), 2 * i as u64);
        }
        drop(client);
        let seen = server.await.unwrap();
        let expected: Vec<Bytes> = (0..500u32).map(|i| Bytes::from(i.to_string())).collect();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn a_dropped_connection_fails_pending_calls_and_the_next_call_reconnects() {
        let (listener, addr) = listener().await;
        let (client, (first, _)) = tokio::join!(RemoteClient::connect(&addr), accepted(&listener));
        let client = client.unwrap();
        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.fetch("t", 0, 0, 1024, Duration::from_secs(30)).await }
        });
        // The fetch arrives, then the server drops the connection without answering.
        let (mut r, w) = split(first);
        let request = frame::read_message::<_, Request>(&mut r, MAX_FRAME).await.unwrap().unwrap();
        assert!(matches!(request.op, Op::Fetch { wait_ms: 30_000, .. }), "{request:?}");
        drop((r, w));
        let err = pending.await.unwrap().unwrap_err();
        assert!(matches!(err, BrokerError::Connection { .. }), "{err:?}");
        assert!(err.to_string().contains("connection lost"), "{err}");

        assert_reconnects(&client, listener).await;
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_a_connection_error() {
        let (listener, addr) = listener().await;
        drop(listener);
        let err = RemoteClient::connect(&addr).await.err().expect("nothing listens");
        let text = err.to_string();
        assert!(matches!(err, BrokerError::Connection { .. }), "{err:?}");
        assert!(text.starts_with(&format!("broker {addr}: cannot connect")), "{text}");
    }

    /// `future`, or a panic if it takes more than a (generous) while.
    async fn soon<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), future).await.expect("no answer within 20s")
    }

    #[test]
    fn a_fetch_deadline_is_its_wait_and_then_the_reply_timeout() {
        let fetch = |wait_ms| Op::Fetch { topic: "t".into(), partition: 0, offset: 0, max_bytes: 1, wait_ms };
        assert_eq!(reply_timeout(&Op::Topics, REPLY_TIMEOUT), REPLY_TIMEOUT);
        let produce = Op::Produce { topic: "t".into(), partition: 0, records: Vec::new() };
        assert_eq!(reply_timeout(&produce, REPLY_TIMEOUT), REPLY_TIMEOUT);
        assert_eq!(reply_timeout(&fetch(0), REPLY_TIMEOUT), REPLY_TIMEOUT);
        assert_eq!(reply_timeout(&fetch(2500), REPLY_TIMEOUT), REPLY_TIMEOUT + Duration::from_millis(2500));
        // A wait of forever does not overflow the deadline.
        assert_eq!(reply_timeout(&fetch(u64::MAX), REPLY_TIMEOUT), MAX_REPLY_TIMEOUT);
        let far = Instant::now() + reply_timeout(&fetch(u64::MAX), Duration::MAX);
        assert!(far > Instant::now());
    }

    #[tokio::test]
    async fn a_call_without_a_reply_fails_at_its_deadline_and_the_next_call_reconnects() {
        let (listener, addr) = listener().await;
        let (client, (first, _)) =
            tokio::join!(RemoteClient::connect_with(&addr, Duration::from_millis(300)), accepted(&listener));
        let client = client.unwrap();
        // The server reads the request and never answers (its host is gone, say).
        let (mut r, _w) = split(first);
        let (request, result) =
            tokio::join!(frame::read_message::<_, Request>(&mut r, MAX_FRAME), soon(client.topics()));
        assert_eq!(request.unwrap().unwrap().op, Op::Topics);
        let err = result.unwrap_err();
        assert!(matches!(err, BrokerError::Connection { .. }), "{err:?}");
        assert!(err.to_string().contains("no reply to a topics request within 300ms"), "{err}");
        // The client dropped that connection...
        assert!(
            soon(frame::read_frame(&mut r, MAX_FRAME)).await.unwrap().is_none(),
            "the client closed its side"
        );
        // ... and the next call makes a new one.
        assert_reconnects(&client, listener).await;
    }

    #[tokio::test]
    async fn a_produce_never_acknowledged_fails_at_its_deadline() {
        let (listener, addr) = listener().await;
        let (client, (first, _)) =
            tokio::join!(RemoteClient::connect_with(&addr, Duration::from_millis(300)), accepted(&listener));
        let client = client.unwrap();
        let (mut r, _w) = split(first);
        let record = NewRecord { key: None, value: Bytes::from_static(b"v"), timestamp: None };
        let rx = client.produce("t", 0, vec![record]).await.unwrap();
        assert!(matches!(
            frame::read_message::<_, Request>(&mut r, MAX_FRAME).await.unwrap().unwrap().op,
            Op::Produce { .. }
        ));
        let err = soon(rx).await.unwrap().unwrap_err();
        assert!(matches!(err, BrokerError::Connection { .. }), "{err:?}");
        assert!(err.to_string().contains("no reply to a produce request within 300ms"), "{err}");
    }

    #[tokio::test]
    async fn a_fetch_may_take_its_wait_before_its_deadline() {
        let (listener, addr) = listener().await;
        // A fetch waiting 4s, answered after 2s: late for the reply timeout alone (1s), not
        // for the fetch's deadline (5s).
        let server = tokio::spawn(async move {
            let (stream, _) = accepted(&listener).await;
            let (mut r, mut w) = split(stream);
            let request = frame::read_message::<_, Request>(&mut r, MAX_FRAME).await.unwrap().unwrap();
            assert!(matches!(request.op, Op::Fetch { wait_ms: 4000, .. }), "{request:?}");
            tokio::time::sleep(Duration::from_secs(2)).await;
            let fetched = FetchedRecords { records: Vec::new(), high_watermark: 0, log_start: 0 };
            reply(&mut w, request.id, Ok(Reply::Fetched(fetched))).await;
        });
        let client = RemoteClient::connect_with(&addr, Duration::from_secs(1)).await.unwrap();
        let fetched = soon(client.fetch("t", 0, 0, 1024, Duration::from_secs(4))).await.unwrap();
        assert!(fetched.records.is_empty());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_undecodable_reply_fails_its_caller_and_the_connection_goes_on() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (stream, _) = accepted(&listener).await;
            let (mut r, mut w) = split(stream);
            let topics = frame::read_message::<_, Request>(&mut r, MAX_FRAME).await.unwrap().unwrap();
            assert_eq!(topics.op, Op::Topics);
            // A newer server's error kind.
            let error = WireError { kind: ErrorKind::Other, message: "from the future".into() };
            let frame = frame::encode(&Response { id: topics.id, result: Err(error) }, MAX_FRAME).unwrap();
            let body = crate::protocol::tests::newer_error_kind(&frame[4..]);
            w.write_all(&(body.len() as u32).to_be_bytes()).await.unwrap();
            w.write_all(&body).await.unwrap();
            w.flush().await.unwrap();
            // The same connection goes on.
            let next = frame::read_message::<_, Request>(&mut r, MAX_FRAME).await.unwrap().unwrap();
            reply(&mut w, next.id, Ok(Reply::Topics(vec!["next".into()]))).await;
        });
        let client = RemoteClient::connect(&addr).await.unwrap();
        let err = soon(client.topics()).await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), ErrorKind::Other, "{err:?}");
        assert!(
            text.contains(&format!("cannot read the reply of the broker at {addr} to a topics request")),
            "{text}"
        );
        assert!(text.contains("newer"), "{text}");
        assert_eq!(soon(client.topics()).await.unwrap(), ["next"]);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_reply_without_a_readable_id_fails_every_call_in_flight_and_the_next_call_reconnects() {
        let (listener, addr) = listener().await;
        let (client, (first, _)) = tokio::join!(RemoteClient::connect(&addr), accepted(&listener));
        let client = client.unwrap();
        let (mut r, mut w) = split(first);
        let calls = tokio::spawn({
            let client = client.clone();
            async move { tokio::join!(client.topics(), client.describe("t")) }
        });
        for _ in 0..2 {
            frame::read_frame(&mut r, MAX_FRAME).await.unwrap().unwrap();
        }
        // A frame whose body is not even an array.
        w.write_all(&[0, 0, 0, 1, 0xc1]).await.unwrap();
        w.flush().await.unwrap();
        let (topics, described) = soon(calls).await.unwrap();
        for err in [topics.unwrap_err(), described.unwrap_err()] {
            assert!(matches!(err, BrokerError::Connection { .. }), "{err:?}");
            assert!(err.to_string().contains("a response that cannot be read"), "{err}");
        }
        assert!(
            soon(frame::read_frame(&mut r, MAX_FRAME)).await.unwrap().is_none(),
            "the client dropped the connection"
        );
        assert_reconnects(&client, listener).await;
    }

    #[tokio::test]
    async fn an_error_without_an_id_is_reported_when_the_connection_closes() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (stream, _) = accepted(&listener).await;
            let (mut r, mut w) = split(stream);
            let _ = frame::read_frame(&mut r, MAX_FRAME).await.unwrap();
            let error =
                WireError { kind: ErrorKind::InvalidRequest, message: "invalid request: garbage".into() };
            reply(&mut w, UNKNOWN_ID, Err(error)).await;
        });
        let client = RemoteClient::connect(&addr).await.unwrap();
        let err = client.topics().await.unwrap_err();
        server.await.unwrap();
        assert!(err.to_string().contains("the server said: invalid request: garbage"), "{err}");
    }
}
