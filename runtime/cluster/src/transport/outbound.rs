//! The connecting side of the transport: batches out, credits in.
//!
//! Contract: per peer hosting a task this worker may send to, a [`Manager`] keeps one
//! connection while any of its forwarders lives: it connects as soon as the peer's address
//! is known, exchanges hellos, and reconnects after a failure (50 ms doubling to 1 s, at once
//! on a new address), logging a failure once until it changes. A connection starts with the
//! handshake of [`squall_engine::auth`]: a peer that cannot prove it knows the cluster secret
//! is sent nothing. Per remote task, a
//! [`Forwarder`] moves batches from the task's local queue to the connection: for a bolt or
//! acker task, one credit per batch; while the peer is down, a batch waits up to the hold,
//! then is dropped. The writer sends everything queued in one write; the reader returns the
//! peer's credits. A connection that breaks drops what was queued for it (counted).
//!
//! Generations: the managers and forwarders built by attach or a rewire belong to one
//! assignment version, which their hellos say. A rewire stops that generation's managers
//! (their connections close; what was queued for them is dropped, counted); their links then
//! read [`LinkState::Closed`], and each forwarder ends: it closes its queue and counts what was
//! still in it as dropped (later sends to it fail, and the executors drop those batches).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use squall_api::TaskId;
use squall_engine::acker::Outcome;
use squall_engine::auth;
use squall_engine::tls::{ReadHalf, WriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use super::credits::{grant, Placement};
use super::frames::{decode, put_batch, read_frame, read_hello, write_frame, Batch, ConnError, Frame};
use super::{
    stopped, Counters, Peers, Shared, CONNECT_TIMEOUT, KEEP_BUFFER, LINGER, MAX_BACKOFF, MAX_FRAME,
    MIN_BACKOFF, WRITE_BURST,
};

#[derive(Clone)]
pub(super) enum LinkState {
    Down {
        since: Instant,
    },
    Up(Arc<OutConn>),
    /// The generation ended (a rewire, or the transport dropped), or every forwarder has
    /// ended: forwarders end.
    Closed,
}

/// One established connection to a peer.
pub(super) struct OutConn {
    /// By credit slot of the peer's bolt and acker tasks; closed when the connection ends.
    credits: Arc<[Semaphore]>,
    queue: mpsc::UnboundedSender<Batch>,
}

/// Moves the batches for one remote task from its local queue to the connection of its peer.
pub(super) struct Forwarder {
    pub(super) task: TaskId,
    pub(super) link: watch::Receiver<LinkState>,
    pub(super) hold: Duration,
    pub(super) counters: Arc<Counters>,
    /// Dropped when the forwarder ends: the manager closes the connection once all have.
    pub(super) _alive: mpsc::Sender<()>,
}

/// Where a forwarder's batch goes.
enum Link {
    Up(Arc<OutConn>),
    /// The peer has been down longer than the hold: drop the batch.
    Held,
    /// The generation has ended: drop the batch, and end.
    Closed,
}

/// A forwarder's local queue: bounded for bolts and ackers, unbounded for spouts' outcomes.
trait Queue {
    type Item;
    fn try_next(&mut self) -> Result<Self::Item, mpsc::error::TryRecvError>;
    fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + Send;
    fn close(&mut self);
}

impl<T: Send> Queue for mpsc::Receiver<T> {
    type Item = T;
    fn try_next(&mut self) -> Result<T, mpsc::error::TryRecvError> {
        self.try_recv()
    }
    fn next(&mut self) -> impl std::future::Future<Output = Option<T>> + Send {
        self.recv()
    }
    fn close(&mut self) {
        mpsc::Receiver::close(self)
    }
}

impl<T: Send> Queue for mpsc::UnboundedReceiver<T> {
    type Item = T;
    fn try_next(&mut self) -> Result<T, mpsc::error::TryRecvError> {
        self.try_recv()
    }
    fn next(&mut self) -> impl std::future::Future<Output = Option<T>> + Send {
        self.recv()
    }
    fn close(&mut self) {
        mpsc::UnboundedReceiver::close(self)
    }
}

impl Forwarder {
    /// The peer's connection, waiting up to the hold while it is down.
    async fn connection(&mut self) -> Link {
        loop {
            let deadline = match &*self.link.borrow_and_update() {
                LinkState::Up(conn) => return Link::Up(conn.clone()),
                LinkState::Closed => return Link::Closed,
                LinkState::Down { since } => *since + self.hold,
            };
            if Instant::now() >= deadline {
                return Link::Held;
            }
            tokio::select! {
                changed = self.link.changed() => if changed.is_err() { return Link::Closed },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The next batch of `rx`; `None` once it has ended or the link has closed. A batch that
    /// is ready is taken without looking at the link (per batch, nothing more than before).
    async fn next<Q: Queue>(&mut self, rx: &mut Q) -> Option<Q::Item> {
        match rx.try_next() {
            Ok(batch) => return Some(batch),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        // Idle: wait for a batch, or for the generation to end.
        loop {
            if matches!(*self.link.borrow(), LinkState::Closed) {
                return None;
            }
            tokio::select! {
                batch = rx.next() => return batch,
                changed = self.link.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// Ends: closes the queue and counts what was still in it as dropped.
    fn end<Q: Queue>(&self, rx: &mut Q) {
        rx.close();
        while rx.try_next().is_ok() {
            self.dropped();
        }
    }

    fn dropped(&self) {
        Counters::add(&self.counters.batches_dropped, 1);
    }

    /// For a bolt or acker task: one credit per batch.
    pub(super) async fn credited<T>(
        mut self,
        slot: usize,
        mut rx: mpsc::Receiver<Vec<T>>,
        wrap: fn(TaskId, Vec<T>) -> Batch,
    ) where
        T: Send,
    {
        'batches: while let Some(batch) = self.next(&mut rx).await {
            let mut batch = Some(batch);
            while let Some(b) = batch.take() {
                let conn = match self.connection().await {
                    Link::Up(conn) => conn,
                    Link::Held => {
                        self.dropped();
                        break;
                    }
                    Link::Closed => {
                        self.dropped();
                        break 'batches;
                    }
                };
                let credited = conn.credits[slot].acquire().await.map(|permit| permit.forget()).is_ok();
                if !credited {
                    // That connection has ended: wait for the next one.
                    batch = Some(b);
                } else if conn.queue.send(wrap(self.task, b)).is_err() {
                    self.dropped();
                }
            }
        }
        self.end(&mut rx);
    }

    /// For a spout task: outcomes need no credits (an acker never waits).
    pub(super) async fn outcomes(mut self, mut rx: mpsc::UnboundedReceiver<Vec<Outcome>>) {
        while let Some(batch) = self.next(&mut rx).await {
            match self.connection().await {
                Link::Up(conn) if conn.queue.send(Batch::Outcomes(self.task, batch)).is_ok() => {}
                Link::Closed => {
                    self.dropped();
                    break;
                }
                _ => self.dropped(),
            }
        }
        self.end(&mut rx);
    }
}

/// Keeps a connection to one peer while any forwarder to it lives.
pub(super) struct Manager {
    pub(super) peer: usize,
    /// The assignment version of this manager's generation: what its hellos say.
    pub(super) version: u64,
    /// The peer's bolt and acker tasks.
    pub(super) slots: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) placement: Arc<Placement>,
    pub(super) peers: Peers,
    pub(super) link: watch::Sender<LinkState>,
    /// Closed once every forwarder to this peer has ended.
    pub(super) alive: mpsc::Receiver<()>,
    /// Its generation's: closed by a rewire, or when the transport is dropped.
    pub(super) stop: watch::Receiver<()>,
}

/// How a connection to a peer ended.
enum End {
    /// Every forwarder ended and what they sent was written: stop.
    Done,
    /// The generation ended (a rewire, or the transport dropped): stop.
    Stopped,
    /// The connection broke: reconnect.
    Lost(ConnError),
}

impl Manager {
    pub(super) async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut peers_open = true;
        // The last failure logged, so that a peer down for long is not logged every second.
        let mut logged: Option<String> = None;
        let mut warned_hold = false;
        loop {
            let addr = self.peers.borrow_and_update().get(self.peer).copied().flatten();
            let (shared, peer, version) = (self.shared.clone(), self.peer, self.version);
            let attempt = async move {
                match addr {
                    Some(addr) => connect(&shared, peer, addr, version).await,
                    None => Err(ConnError::Refused("its address is not known yet".into())),
                }
            };
            let connected = tokio::select! {
                _ = stopped(&mut self.stop) => break,
                _ = self.alive.recv() => break,
                connected = attempt => connected,
            };
            match connected {
                Ok((rd, wr, credits)) => {
                    warned_hold = false;
                    if logged.take().is_some() {
                        if let Some(addr) = addr {
                            tracing::info!("transport: connected to worker {} at {addr}", self.peer);
                        }
                    }
                    Counters::add(&self.shared.counters.connects, 1);
                    let since = Instant::now();
                    match self.serve(rd, wr, credits).await {
                        End::Done | End::Stopped => break,
                        End::Lost(e) => {
                            tracing::info!("transport: connection to worker {} lost: {e}", self.peer);
                            logged = Some(e.to_string());
                        }
                    }
                    // A connection that lasted is retried at once; one that keeps failing
                    // right after its hello backs off like a failed connect.
                    if since.elapsed() >= MAX_BACKOFF {
                        backoff = MIN_BACKOFF;
                        continue;
                    }
                }
                Err(e) => {
                    let e = match addr {
                        Some(addr) => format!("worker {} at {addr}: {e}", self.peer),
                        None => format!("worker {}: {e}", self.peer),
                    };
                    if addr.is_some() && logged.as_deref() != Some(e.as_str()) {
                        tracing::info!("transport: cannot connect to {e}; retrying");
                    }
                    logged = Some(e);
                    if let LinkState::Down { since } = &*self.link.borrow() {
                        if !warned_hold && since.elapsed() >= self.shared.opts.hold {
                            warned_hold = true;
                            tracing::warn!(
                                "transport: worker {} unreachable for {:?}: dropping its batches until it is back",
                                self.peer,
                                self.shared.opts.hold
                            );
                        }
                    }
                }
            }
            tokio::select! {
                _ = stopped(&mut self.stop) => break,
                _ = self.alive.recv() => break,
                changed = self.peers.changed(), if peers_open => {
                    // A new address (a restarted peer) is tried at once.
                    peers_open = changed.is_ok();
                    if peers_open {
                        backoff = MIN_BACKOFF;
                        continue;
                    }
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.link.send_replace(LinkState::Closed);
    }
}

/// Connects to worker `peer` at `addr` and exchanges hellos for assignment `version`; returns
/// the halves and the peer's credits per task.
async fn connect(
    shared: &Shared,
    peer: usize,
    addr: SocketAddr,
    version: u64,
) -> Result<(BufReader<ReadHalf>, WriteHalf, u32), ConnError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnError::Io(std::io::ErrorKind::TimedOut.into()))??;
    squall_engine::frame::tune(&stream);
    // With TLS, the peer's certificate must name the address it advertised (its IP).
    let mut stream = squall_engine::tls::connect(shared.opts.tls.as_ref(), stream, &addr.to_string()).await?;
    // Nothing is sent to a peer that cannot prove it knows the secret.
    auth::connect(&mut stream, &shared.secret, auth::WORKER).await?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(16 << 10, rd);
    write_frame(&mut wr, &Frame::Hello(shared.hello(version))).await?;
    let hello = read_hello(&mut rd, &mut Vec::new()).await?;
    let mut expected = shared.hello(version);
    expected.worker = peer as u32;
    expected.credits = hello.credits;
    if hello != expected || hello.credits == 0 {
        return Err(ConnError::Refused(format!(
            "it answered as worker {} of {} version {} with {} credits",
            hello.worker, hello.topology, hello.version, hello.credits
        )));
    }
    Ok((rd, wr, hello.credits))
}

impl Manager {
    /// Runs one established connection until it ends.
    async fn serve(&mut self, mut rd: BufReader<ReadHalf>, mut wr: WriteHalf, credits: u32) -> End {
        let permits: Arc<[Semaphore]> = (0..self.slots).map(|_| Semaphore::new(credits as usize)).collect();
        let (queue, mut items) = mpsc::unbounded_channel();
        self.link.send_replace(LinkState::Up(Arc::new(OutConn { credits: permits.clone(), queue })));
        let counters = self.shared.counters.clone();
        let mut draining = false;
        let writer = write_batches(&mut wr, &mut items, &counters);
        let reader = read_credits(&mut rd, &permits, &self.placement, self.peer, credits);
        let end = {
            tokio::pin!(writer, reader);
            loop {
                tokio::select! {
                    written = &mut writer => match written {
                        // Every forwarder has ended and everything is written: wait for the peer
                        // to close its side, so the last batches are not lost to a reset.
                        Ok(()) => {
                            let _ = tokio::time::timeout(LINGER, &mut reader).await;
                            break End::Done;
                        }
                        Err(e) => break End::Lost(e),
                    },
                    read = &mut reader => break End::Lost(read),
                    _ = self.alive.recv(), if !draining => {
                        // No forwarder is left: once the link lets go of the queue, the writer
                        // writes what it holds and ends.
                        draining = true;
                        self.link.send_replace(LinkState::Closed);
                    }
                    _ = stopped(&mut self.stop) => break End::Stopped,
                }
            }
        };
        // Forwarders see the link down before their credits fail, so they wait for the next
        // connection instead of retrying this one.
        if !draining {
            let state = match end {
                End::Lost(_) => LinkState::Down { since: Instant::now() },
                _ => LinkState::Closed,
            };
            self.link.send_replace(state);
        }
        permits.iter().for_each(Semaphore::close);
        items.close();
        while items.try_recv().is_ok() {
            Counters::add(&counters.batches_dropped, 1);
        }
        end
    }
}

/// Writes what the forwarders queue, everything ready in one write; ends once the queue is
/// closed and empty.
async fn write_batches<W: AsyncWrite + Unpin>(
    wr: &mut W,
    queue: &mut mpsc::UnboundedReceiver<Batch>,
    counters: &Counters,
) -> Result<(), ConnError> {
    let mut items = Vec::with_capacity(WRITE_BURST);
    let mut buf = Vec::with_capacity(64 << 10);
    loop {
        if queue.recv_many(&mut items, WRITE_BURST).await == 0 {
            wr.shutdown().await?;
            return Ok(());
        }
        buf.clear();
        Counters::add(&counters.batches_sent, items.len() as u64);
        for batch in items.drain(..) {
            if put_batch(&mut buf, &batch, MAX_FRAME) > 0 {
                Counters::add(&counters.batches_dropped, 1);
            }
        }
        wr.write_all(&buf).await?;
        wr.flush().await?;
        Counters::add(&counters.bytes_sent, buf.len() as u64);
        if buf.capacity() > KEEP_BUFFER {
            buf = Vec::with_capacity(64 << 10);
        }
    }
}

/// Reads the peer's credits; returns why the connection ended (it never ends cleanly while
/// batches may still be sent).
async fn read_credits<R: AsyncRead + Unpin>(
    rd: &mut R,
    permits: &[Semaphore],
    placement: &Placement,
    peer: usize,
    credits: u32,
) -> ConnError {
    let mut body = Vec::new();
    loop {
        match read_frame(rd, &mut body).await {
            Ok(true) => {}
            Ok(false) => return ConnError::Io(std::io::Error::other("the peer closed the connection")),
            Err(e) => return e,
        }
        let list = match decode(&body) {
            Ok(Frame::Credits(list)) => list,
            Ok(_) => return ConnError::Protocol("a frame other than credits from the accepting side".into()),
            Err(e) => return e,
        };
        for &(task, n) in list.iter() {
            if let Err(e) = grant(permits, placement, peer, credits, task, n) {
                return e;
            }
        }
    }
}
