//! Worker-to-worker transport: the TCP connections between the workers of one assignment.
//!
//! Contract: a [`Transport`] listens on one TCP port per worker. [`Transport::attach`] keeps
//! clones of the local inboxes to deliver what peers send, and fills every task of the plan
//! that is not hosted here with a sender that forwards to the worker hosting it; a task then
//! sends to a task of another worker exactly as to one of its own process, and waits as it
//! would while the receiver is slow.
//!
//! - Frames: a `u32` big-endian body length, then a MessagePack body (rmp-serde's layout;
//!   batches and credits by a hand-written codec, see `codec`) of at most
//!   [`MAX_FRAME`] bytes. A longer or undecodable frame, or one that breaks the protocol,
//!   closes its connection with a logged error, never a panic; other connections go on. A
//!   batch that would encode past the limit travels as several frames marked "more follows"
//!   and is delivered whole; a single tuple past the limit is dropped with an error.
//! - Connections: worker `i` connects to every worker `j` hosting a task it may send to, as
//!   soon as `peers[j]` is known (and until no local task can send there any more), and uses
//!   that connection one way: `i` sends batches, `j` sends back
//!   credits. A connection starts with a hello from each side (protocol, topology, assignment
//!   version, worker index; the accepting side adds its credit count); a hello for another
//!   topology, version or protocol is refused: the accepting side answers why and closes
//!   (logged once per topology, version and worker), so workers of an old and a new
//!   assignment can coexist during a rebalance. TCP_NODELAY and keepalive are on.
//! - Credits: per connection and destination bolt or acker task, the sender has at most the
//!   accepted side's credit count ([`TransportOptions::credits`], default
//!   [`INBOX_BATCHES`]) batches in flight. The receiver never waits while reading: it hands
//!   each batch to the task's delivery queue, whose drainer waits for room in the inbox and
//!   then returns the batch's credit. The forwarder of a remote task waits for a credit
//!   before it sends, and meanwhile its bounded queue fills and the emitting tasks wait: a
//!   slow bolt of one worker slows the spouts of another, memory stays bounded, and a full
//!   task never holds up the other tasks of the connection (no head-of-line blocking, no
//!   cyclic wait between workers). Spout outcomes (acker → spout) need no credits: an acker
//!   never waits.
//! - Batching: everything queued for a peer when its writer wakes up is encoded into one
//!   reusable buffer and written with one `write_all`.
//! - Reconnect: a connection that fails or drops is retried after 50 ms, doubling to 1 s,
//!   re-reading `peers` each time (a restarted peer may listen on a new port). Credits start
//!   afresh with each connection. While a peer is down, a batch for it waits up to
//!   [`TransportOptions::hold`] for a connection; once the peer has been down longer, its
//!   batches are dropped until it is back, so no task waits for a dead worker forever.
//! - What may be lost (at-least-once: the acker times the trees out and spouts replay): the
//!   batches written to or queued for a connection that breaks, and batches for a peer down
//!   longer than the hold; spout outcomes too (the spout then hears nothing of that tuple).
//!   Batches that arrive are delivered in the order they were sent, per destination task.
//! - [`Transport::close_inbound`] (also on drop) stops delivering: the transport drops its
//!   clones of the local inboxes, so local bolts end once their local upstream tasks end;
//!   what peers still send is discarded and credited. Dropping the transport ends its
//!   listener, connections and connection attempts; forwarders then discard what they get.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use squall_api::{Role, TaskId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use squall_engine::acker::{AckerMsg, Outcome};
use squall_engine::executor::output::INBOX_BATCHES;
use squall_engine::executor::{Envelope, Links};
use squall_engine::launch::Remote;
use squall_engine::plan::Plan;

/// Where every worker of the assignment listens, indexed by worker (`None`: not yet known).
pub type Peers = watch::Receiver<Vec<Option<SocketAddr>>>;

/// The largest frame body: the largest record the log accepts and room around it, so that a
/// tuple carrying any record fits in one frame (64 MiB + 64 KiB).
pub const MAX_FRAME: usize = (64 << 20) + (64 << 10);

/// The version of this protocol, carried by every hello.
pub const PROTOCOL: u32 = 1;

const PREFIX: usize = 4;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long either side waits for the other's hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// After its last batch, how long a closing connection waits for the peer to close its side
/// (closing first with credits unread would reset the connection and could lose the batches).
const LINGER: Duration = Duration::from_secs(5);
/// Items the writer takes from its queue per wake-up.
const WRITE_BURST: usize = 256;
/// A read or write buffer larger than this after a frame is given back.
const KEEP_BUFFER: usize = 4 << 20;
/// The most bytes of "more follows" parts a connection may hold for batches not yet whole.
const MAX_PARTIAL: usize = 16 * MAX_FRAME;
/// Refused hellos remembered so that each is logged once.
const REFUSALS_LOGGED: usize = 256;

/// Tuning of a [`Transport`].
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Batches a peer may have in flight per destination bolt or acker task of this worker
    /// (announced in this worker's hello). Default [`INBOX_BATCHES`].
    pub credits: u32,
    /// How long a batch for a peer that is down waits for a connection before it is dropped.
    /// Default 10 s.
    pub hold: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions { credits: INBOX_BATCHES as u32, hold: Duration::from_secs(10) }
    }
}

/// Counters of a transport since it was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Batches (of tuples, acker messages or outcomes) written to peers.
    pub batches_sent: u64,
    /// Batches received from peers.
    pub batches_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Batches dropped: queued for a connection that broke, for a peer down longer than the
    /// hold, after the transport was dropped, or holding a tuple over [`MAX_FRAME`].
    pub batches_dropped: u64,
    /// Connections to peers established (reconnections included).
    pub connects: u64,
    /// Accepted connections refused (wrong hello) or closed for breaking the protocol.
    pub refused: u64,
}

#[derive(Default)]
struct Counters {
    batches_sent: AtomicU64,
    batches_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    batches_dropped: AtomicU64,
    connects: AtomicU64,
    refused: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// One frame's body. Senders borrow what they send; receivers get it owned.
#[derive(Debug, Serialize, Deserialize)]
enum Frame<'a> {
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
struct Hello<'a> {
    protocol: u32,
    topology: Cow<'a, str>,
    version: u64,
    worker: u32,
    /// From the accepting side: batches in flight allowed per destination task.
    credits: u32,
}

/// A batch on its way to or from a peer.
enum Batch {
    Bolts(TaskId, Vec<Envelope>),
    Ackers(TaskId, Vec<AckerMsg>),
    Outcomes(TaskId, Vec<Outcome>),
}

impl Batch {
    fn task(&self) -> TaskId {
        match self {
            Batch::Bolts(t, _) | Batch::Ackers(t, _) | Batch::Outcomes(t, _) => *t,
        }
    }

    /// Appends a later part of the same batch.
    fn append(&mut self, part: Batch) -> Result<(), ConnError> {
        match (self, part) {
            (Batch::Bolts(_, a), Batch::Bolts(_, b)) => a.extend(b),
            (Batch::Ackers(_, a), Batch::Ackers(_, b)) => a.extend(b),
            (Batch::Outcomes(_, a), Batch::Outcomes(_, b)) => a.extend(b),
            _ => return Err(ConnError::Protocol("the parts of a batch are of different kinds".into())),
        }
        Ok(())
    }
}

#[derive(Debug)]
enum ConnError {
    Io(std::io::Error),
    /// Oversized, undecodable or unexpected frames.
    Protocol(String),
    /// The hello was for another topology, version or protocol.
    Refused(String),
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
            ConnError::Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

/// What the tasks of a transport share.
struct Shared {
    topology: String,
    version: u64,
    me: usize,
    opts: TransportOptions,
    counters: Arc<Counters>,
    /// Set by attach; connections wait for it before they read batches.
    inbound: watch::Receiver<Option<Arc<Inbound>>>,
    /// (topology, version, worker) of hellos already refused with a log line.
    refusals: Mutex<HashSet<(String, u64, u32)>>,
}

impl Shared {
    fn hello(&self) -> Hello<'_> {
        Hello {
            protocol: PROTOCOL,
            topology: Cow::Borrowed(&self.topology),
            version: self.version,
            worker: self.me as u32,
            credits: self.opts.credits,
        }
    }

    fn check_hello(&self, h: &Hello) -> Result<(), String> {
        if h.protocol != PROTOCOL {
            return Err(format!("protocol {} (this worker speaks {PROTOCOL})", h.protocol));
        }
        if h.topology != self.topology || h.version != self.version {
            return Err(format!(
                "topology {} version {} (this worker runs {} version {})",
                h.topology, h.version, self.topology, self.version
            ));
        }
        if h.worker as usize == self.me {
            return Err(format!("worker {} is this worker itself", h.worker));
        }
        Ok(())
    }

    /// Logs a refused hello once per (topology, version, worker).
    fn log_refusal(&self, from: SocketAddr, h: &Hello, why: &str) {
        let key = (h.topology.to_string(), h.version, h.worker);
        let first = self.refusals.lock().map(|mut seen| seen.len() < REFUSALS_LOGGED && seen.insert(key));
        if first.unwrap_or(false) {
            tracing::warn!("transport: refused worker {} at {from}: {why}", h.worker);
        } else {
            tracing::debug!("transport: refused worker {} at {from}: {why}", h.worker);
        }
    }
}

/// How batches for this worker's tasks are delivered (built by attach).
struct Inbound {
    /// By task id.
    routes: Vec<Route>,
    /// Spout inboxes by task id; emptied by close_inbound.
    spouts: RwLock<Vec<Option<mpsc::UnboundedSender<Vec<Outcome>>>>>,
    /// Bolt and acker tasks hosted here: the credit slots of a connection.
    slots: usize,
}

enum Route {
    /// Not hosted here.
    Elsewhere,
    Bolt {
        slot: u32,
        queue: mpsc::UnboundedSender<Delivery<Envelope>>,
    },
    Acker {
        slot: u32,
        queue: mpsc::UnboundedSender<Delivery<AckerMsg>>,
    },
    Spout,
}

/// A batch for a drainer, and where to return its credit (the task id goes back).
struct Delivery<T> {
    batch: Vec<T>,
    credit: mpsc::UnboundedSender<TaskId>,
}

/// Where each task lives: the same on every worker of an assignment.
struct Placement {
    task_worker: Vec<usize>,
    /// By task id: the task's index among the bolt and acker tasks of its worker (its credit
    /// slot on a connection to that worker); `u32::MAX` for spouts.
    slot: Vec<u32>,
}

impl Placement {
    fn new(plan: &Plan) -> (Placement, Vec<usize>) {
        let workers = plan.task_worker.iter().copied().max().map_or(1, |w| w + 1);
        let mut slots_of_worker = vec![0usize; workers];
        let slot = (0..plan.task_count())
            .map(|t| {
                if role(plan, t) == Role::Spout {
                    return u32::MAX;
                }
                let w = plan.task_worker[t];
                slots_of_worker[w] += 1;
                (slots_of_worker[w] - 1) as u32
            })
            .collect();
        (Placement { task_worker: plan.task_worker.clone(), slot }, slots_of_worker)
    }

    /// The credit slot of `task` on a connection to `worker`, if it is a bolt or acker there.
    fn slot_at(&self, task: TaskId, worker: usize) -> Option<usize> {
        let t = task as usize;
        (self.task_worker.get(t) == Some(&worker) && self.slot[t] != u32::MAX).then(|| self.slot[t] as usize)
    }
}

/// A task's role; acker tasks count as bolts (they have bounded inboxes and credits).
fn role(plan: &Plan, task: usize) -> Role {
    plan.task_component[task].map_or(Role::Bolt, |c| plan.components[c].role)
}

/// The state of the connection to one peer, watched by its forwarders.
#[derive(Clone)]
enum LinkState {
    Down {
        since: Instant,
    },
    Up(Arc<OutConn>),
    /// The transport was dropped, or every forwarder has ended.
    Closed,
}

/// One established connection to a peer.
struct OutConn {
    /// By credit slot of the peer's bolt and acker tasks; closed when the connection ends.
    credits: Arc<[Semaphore]>,
    queue: mpsc::UnboundedSender<Batch>,
}

pub struct Transport {
    addr: SocketAddr,
    shared: Arc<Shared>,
    peers: Peers,
    inbound: Option<Arc<Inbound>>,
    inbound_tx: watch::Sender<Option<Arc<Inbound>>>,
    /// `true` once close_inbound was called; drainers drop their inboxes then (and when the
    /// transport is dropped with it).
    closed: watch::Sender<bool>,
    /// Never sent: dropped with the transport, which every task it spawned notices.
    shutdown: watch::Sender<()>,
}

impl Transport {
    /// Binds `addr` (port 0: any free port) for the worker `me` of `topology`'s assignment
    /// `version`; peers of another topology or version are refused.
    pub async fn bind(
        addr: SocketAddr,
        topology: &str,
        version: u64,
        me: usize,
        peers: Peers,
    ) -> std::io::Result<Transport> {
        Self::bind_with(addr, topology, version, me, peers, TransportOptions::default()).await
    }

    /// [`bind`](Self::bind) with options.
    pub async fn bind_with(
        addr: SocketAddr,
        topology: &str,
        version: u64,
        me: usize,
        peers: Peers,
        mut opts: TransportOptions,
    ) -> std::io::Result<Transport> {
        opts.credits = opts.credits.max(1);
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (inbound_tx, inbound) = watch::channel(None);
        let shared = Arc::new(Shared {
            topology: topology.to_string(),
            version,
            me,
            opts,
            counters: Arc::default(),
            inbound,
            refusals: Mutex::default(),
        });
        let (shutdown, stop) = watch::channel(());
        tokio::spawn(accept(listener, shared.clone(), stop));
        let (closed, _) = watch::channel(false);
        Ok(Transport { addr, shared, peers, inbound: None, inbound_tx, closed, shutdown })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the transport has done so far.
    pub fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        TransportStats {
            batches_sent: c.batches_sent.load(Relaxed),
            batches_received: c.batches_received.load(Relaxed),
            bytes_sent: c.bytes_sent.load(Relaxed),
            bytes_received: c.bytes_received.load(Relaxed),
            batches_dropped: c.batches_dropped.load(Relaxed),
            connects: c.connects.load(Relaxed),
            refused: c.refused.load(Relaxed),
        }
    }

    /// Stops delivering what peers send (drops the local senders it holds), so local bolts
    /// end once their local upstream tasks have ended. What peers still send is discarded
    /// (and credited, so that no peer waits for this worker).
    pub fn close_inbound(&self) {
        self.closed.send_replace(true);
        if let Some(inbound) = &self.inbound {
            if let Ok(mut spouts) = inbound.spouts.write() {
                spouts.iter_mut().for_each(|s| *s = None);
            }
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.close_inbound();
    }
}

impl Remote for Transport {
    /// Wires this worker into the plan (see the module docs): `links` holds the senders of
    /// the inboxes of the tasks `plan.task_worker` places on this worker, and gets a
    /// forwarder for every task placed elsewhere. Call it once. Spawns on the current runtime.
    fn attach(&mut self, plan: &Plan, links: &mut Links) {
        if self.inbound.is_some() {
            tracing::error!("transport: attach called twice; the second call is ignored");
            return;
        }
        let me = self.shared.me;
        let n = plan.task_count();
        for l in [links.bolts.len(), links.ackers.len(), links.spouts.len()] {
            assert_eq!(l, n, "links are indexed by the plan's task ids");
        }
        let (placement, slots_of_worker) = Placement::new(plan);
        let placement = Arc::new(placement);

        // Inbound: a drainer per hosted bolt and acker task, the spout inboxes as they are.
        let mut routes = Vec::with_capacity(n);
        let mut spouts = vec![None; n];
        for (t, spout) in spouts.iter_mut().enumerate() {
            if plan.task_worker[t] != me {
                routes.push(Route::Elsewhere);
                continue;
            }
            let slot = placement.slot[t];
            let route = match (plan.task_component[t].is_none(), role(plan, t)) {
                (_, Role::Spout) => links.spouts[t].clone().map(|tx| {
                    *spout = Some(tx);
                    Route::Spout
                }),
                (false, Role::Bolt) => links.bolts[t].clone().map(|tx| {
                    let (queue, rx) = mpsc::unbounded_channel();
                    tokio::spawn(drain(t as TaskId, rx, tx, self.closed.subscribe()));
                    Route::Bolt { slot, queue }
                }),
                (true, _) => links.ackers[t].clone().map(|tx| {
                    let (queue, rx) = mpsc::unbounded_channel();
                    tokio::spawn(drain(t as TaskId, rx, tx, self.closed.subscribe()));
                    Route::Acker { slot, queue }
                }),
            };
            routes.push(route.unwrap_or_else(|| {
                tracing::warn!("transport: task {t} is placed on this worker but has no inbox here");
                Route::Elsewhere
            }));
        }
        let slots = slots_of_worker.get(me).copied().unwrap_or(0);
        let inbound = Arc::new(Inbound { routes, spouts: RwLock::new(spouts), slots });
        self.inbound = Some(inbound.clone());
        self.inbound_tx.send_replace(Some(inbound));

        // Outbound: per peer, a connection manager; per remote task, a forwarder.
        let hold = self.shared.opts.hold;
        let counters = &self.shared.counters;
        for (peer, &slots) in slots_of_worker.iter().enumerate() {
            if peer == me || !plan.task_worker.contains(&peer) {
                continue;
            }
            let (link, link_rx) = watch::channel(LinkState::Down { since: Instant::now() });
            let (alive, alive_rx) = mpsc::channel::<()>(1);
            for t in (0..n).filter(|&t| plan.task_worker[t] == peer) {
                let task = t as TaskId;
                let slot = placement.slot[t] as usize;
                let fwd = Forwarder {
                    task,
                    link: link_rx.clone(),
                    hold,
                    counters: counters.clone(),
                    _alive: alive.clone(),
                };
                match (plan.task_component[t].is_none(), role(plan, t)) {
                    (_, Role::Spout) => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        links.spouts[t] = Some(tx);
                        tokio::spawn(fwd.outcomes(rx));
                    }
                    (false, Role::Bolt) => {
                        let (tx, rx) = mpsc::channel(INBOX_BATCHES);
                        links.bolts[t] = Some(tx);
                        tokio::spawn(fwd.credited(slot, rx, Batch::Bolts));
                    }
                    (true, _) => {
                        let (tx, rx) = mpsc::channel(INBOX_BATCHES);
                        links.ackers[t] = Some(tx);
                        tokio::spawn(fwd.credited(slot, rx, Batch::Ackers));
                    }
                }
            }
            drop(alive);
            let manager = Manager {
                peer,
                slots,
                shared: self.shared.clone(),
                placement: placement.clone(),
                peers: self.peers.clone(),
                link,
                alive: alive_rx,
                stop: self.shutdown.subscribe(),
            };
            tokio::spawn(manager.run());
        }
    }
}

/// Resolves once the transport is dropped.
async fn stopped(stop: &mut watch::Receiver<()>) {
    while stop.changed().await.is_ok() {}
}

// ---------------------------------------------------------------------------------------
// Frames

/// Appends one frame to `buf`; on error `buf` is as it was.
fn put_frame(buf: &mut Vec<u8>, frame: &Frame, max: usize) -> Result<(), String> {
    let start = buf.len();
    buf.extend_from_slice(&[0; PREFIX]);
    if let Err(e) = codec::put_body(buf, frame) {
        buf.truncate(start);
        return Err(e);
    }
    let len = buf.len() - start - PREFIX;
    if len > max {
        buf.truncate(start);
        return Err(format!("a frame of {len} bytes is over the limit of {max} bytes"));
    }
    buf[start..start + PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Appends `items` as one frame, or if that is over `max`, as several frames of which all but
/// the last say "more follows" (the last says `more`). A single item over `max` is dropped
/// (logged); returns how many were.
fn put_parts<T: Clone + Serialize>(
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
fn put_batch(buf: &mut Vec<u8>, batch: &Batch, max: usize) -> usize {
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

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame<'_>) -> Result<(), ConnError> {
    let mut buf = Vec::with_capacity(64);
    put_frame(&mut buf, frame, MAX_FRAME).map_err(ConnError::Protocol)?;
    w.write_all(&buf).await?;
    Ok(())
}

/// Reads one frame's body into `body`; `false` at a clean end of stream (between frames).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, body: &mut Vec<u8>) -> Result<bool, ConnError> {
    let mut prefix = [0u8; PREFIX];
    let mut got = 0;
    while got < PREFIX {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(ConnError::Protocol(format!("a frame of {len} bytes is over the limit of {MAX_FRAME}")));
    }
    if body.capacity() > KEEP_BUFFER {
        *body = Vec::new();
    }
    body.clear();
    // Grown as bytes arrive: a length alone does not allocate its body.
    let n = (&mut *r).take(len as u64).read_to_end(body).await?;
    if n < len {
        return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(true)
}

fn decode(body: &[u8]) -> Result<Frame<'static>, ConnError> {
    codec::decode_body(body).map_err(ConnError::Protocol)
}

async fn read_hello<R: AsyncRead + Unpin>(
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

// ---------------------------------------------------------------------------------------
// The codec of the frames on the hot path.

/// A hand-written MessagePack codec for the batch and credit frames, byte for byte what
/// rmp-serde writes for [`Frame`] (so any MessagePack reader, rmp-serde included, reads them),
/// without serde's visitors: values are written and read by marker straight from and into the
/// buffers, and a batch decodes into a `Vec` reserved to its length. The hello and the
/// refusal go through rmp-serde.
///
/// Layout (rmp-serde's: an enum variant is a map of one entry from its name, a struct is an
/// array of its fields): `{"B": [task, more, [envelope…]]}` with an envelope
/// `[stream, source_task, [value…], [[root, edge]…]]`; `{"A": [task, more, [msg…]]}` with a
/// message `{"Init"|"Ack": [root, val]}` or `{"Fail"|"Reset": [root]}`;
/// `{"O": [task, more, [[root, acked]…]]}`; `{"C": [[task, n]…]}`.
mod codec {
    use std::borrow::Cow;

    use rmp::encode as enc;
    use rmp::Marker;
    use squall_api::{TaskId, Value, Values};

    use super::Frame;
    use squall_engine::acker::{AckerMsg, Outcome};
    use squall_engine::executor::output::Anchors;
    use squall_engine::executor::Envelope;

    /// How deep lists and maps may nest in a value, written or read: reading stays within a
    /// small stack whatever a peer sends.
    pub const MAX_DEPTH: usize = 256;
    /// Items reserved up front per decoded sequence at most; longer ones grow as they decode
    /// (a length alone never allocates much).
    const MAX_RESERVE: usize = 4096;

    /// Why a body cannot be encoded or decoded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Bad(pub &'static str);

    impl std::fmt::Display for Bad {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
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
        let (name, root, val) = match *m {
            AckerMsg::Init { root, val } => ("Init", root, Some(val)),
            AckerMsg::Ack { root, val } => ("Ack", root, Some(val)),
            AckerMsg::Fail { root } => ("Fail", root, None),
            AckerMsg::Reset { root } => ("Reset", root, None),
        };
        variant(buf, name);
        let _ = enc::write_array_len(buf, 1 + val.is_some() as u32);
        uint(buf, root);
        if let Some(val) = val {
            uint(buf, val);
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

    /// Appends the body of `frame` to `buf` (on error, `buf` may hold part of it).
    pub fn put_body(buf: &mut Vec<u8>, frame: &Frame) -> Result<(), String> {
        let done = match frame {
            Frame::Bolts { task, more, batch } => put_batch(buf, "B", *task, *more, batch, put_envelope),
            Frame::Ackers { task, more, batch } => put_batch(buf, "A", *task, *more, batch, |buf, m| {
                put_acker_msg(buf, m);
                Ok(())
            }),
            Frame::Outcomes { task, more, batch } => put_batch(buf, "O", *task, *more, batch, |buf, o| {
                array(buf, 2)?;
                uint(buf, o.root);
                let _ = enc::write_bool(buf, o.acked);
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
                return rmp_serde::encode::write(buf, frame)
                    .map_err(|e| format!("cannot encode a frame: {e}"));
            }
        };
        done.map_err(|e| format!("cannot encode a frame: {e}"))
    }

    /// Decodes one frame's body: batches and credits by hand, anything else with rmp-serde.
    pub fn decode_body(body: &[u8]) -> Result<Frame<'static>, String> {
        // fixmap of 1, fixstr of 1: the variant's name.
        let (kind, rest) = match body {
            [0x81, 0xa1, kind @ (b'B' | b'A' | b'O' | b'C'), rest @ ..] => (*kind, rest),
            _ => return rmp_serde::from_slice(body).map_err(|e| format!("undecodable frame: {e}")),
        };
        let mut rd = Rd { buf: rest };
        let frame = rd.frame(kind).map_err(|e| format!("undecodable frame: {e}"))?;
        if !rd.buf.is_empty() {
            return Err(format!("undecodable frame: {} bytes past its end", rd.buf.len()));
        }
        Ok(frame)
    }

    /// Reads MessagePack from a slice, by marker.
    struct Rd<'a> {
        buf: &'a [u8],
    }

    const EOF: Bad = Bad("the body ends early");

    impl<'a> Rd<'a> {
        fn frame(&mut self, kind: u8) -> Result<Frame<'static>, Bad> {
            if kind == b'C' {
                let n = self.seq_len(3)?;
                let mut list = Vec::with_capacity(n.min(MAX_RESERVE));
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
            let mut out = Vec::with_capacity(n.min(MAX_RESERVE));
            for _ in 0..n {
                out.push(item(self)?);
            }
            Ok(out)
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
            let mut values = Values::with_capacity(n);
            for _ in 0..n {
                values.push(self.value(0)?);
            }
            let n = self.seq_len(3)?;
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
                "Init" | "Ack" => {
                    self.expect_array(2)?;
                    let (root, val) = (self.u64()?, self.u64()?);
                    if name == "Init" {
                        AckerMsg::Init { root, val }
                    } else {
                        AckerMsg::Ack { root, val }
                    }
                }
                "Fail" | "Reset" => {
                    self.expect_array(1)?;
                    let root = self.u64()?;
                    if name == "Fail" {
                        AckerMsg::Fail { root }
                    } else {
                        AckerMsg::Reset { root }
                    }
                }
                _ => return Err(Bad("an unknown acker message")),
            })
        }

        fn outcome(&mut self) -> Result<Outcome, Bad> {
            self.expect_array(2)?;
            Ok(Outcome { root: self.u64()?, acked: self.bool()? })
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
                        let mut list = Vec::with_capacity(n.min(MAX_RESERVE));
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
}

// ---------------------------------------------------------------------------------------
// The accepting side: batches in, credits out.

async fn accept(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let shared = shared.clone();
                    let mut stop = stop.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stopped(&mut stop) => {}
                            result = serve(&shared, stream, from) => log_inbound_end(&shared, from, result),
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: try again shortly.
                    tracing::warn!("transport: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

fn log_inbound_end(shared: &Shared, from: SocketAddr, result: Result<(), ConnError>) {
    match result {
        Ok(()) => tracing::debug!("transport: connection from {from} closed"),
        Err(ConnError::Io(e)) => tracing::debug!("transport: connection from {from} lost: {e}"),
        Err(ConnError::Refused(_)) => Counters::add(&shared.counters.refused, 1),
        Err(e @ ConnError::Protocol(_)) => {
            Counters::add(&shared.counters.refused, 1);
            tracing::warn!("transport: closing the connection from {from}: {e}");
        }
    }
}

/// Serves one accepted connection until it closes.
async fn serve(shared: &Shared, stream: TcpStream, from: SocketAddr) -> Result<(), ConnError> {
    squall_engine::frame::tune(&stream);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let mut body = Vec::new();
    let hello = read_hello(&mut rd, &mut body).await?;
    if let Err(why) = shared.check_hello(&hello) {
        shared.log_refusal(from, &hello, &why);
        let _ = write_frame(&mut wr, &Frame::Refused(Cow::Borrowed(&why))).await;
        let _ = wr.shutdown().await;
        return Err(ConnError::Refused(why));
    }
    write_frame(&mut wr, &Frame::Hello(shared.hello())).await?;
    tracing::debug!("transport: worker {} connected from {from}", hello.worker);
    let mut attached = shared.inbound.clone();
    let inbound = match attached.wait_for(|i| i.is_some()).await {
        Ok(i) => i.clone().expect("waited for it"),
        Err(_) => return Ok(()), // the transport is gone
    };
    let outstanding: Vec<AtomicU32> = (0..inbound.slots).map(|_| AtomicU32::new(0)).collect();
    let (credit_tx, credit_rx) = mpsc::unbounded_channel();
    let reader = read_batches(shared, &inbound, &mut rd, body, credit_tx, &outstanding);
    let writer = write_credits(shared, &inbound, &mut wr, credit_rx, &outstanding);
    tokio::select! {
        result = reader => result,
        result = writer => result,
    }
}

/// Reads batches and hands them to their tasks; never waits for a task.
async fn read_batches<R: AsyncRead + Unpin>(
    shared: &Shared,
    inbound: &Inbound,
    rd: &mut R,
    mut body: Vec<u8>,
    credit: mpsc::UnboundedSender<TaskId>,
    outstanding: &[AtomicU32],
) -> Result<(), ConnError> {
    let counters = &shared.counters;
    let credits = shared.opts.credits;
    // Batches that came in parts, until their last part.
    let mut partial: HashMap<TaskId, Batch> = HashMap::new();
    let mut partial_bytes = 0;
    while read_frame(rd, &mut body).await? {
        Counters::add(&counters.bytes_received, (PREFIX + body.len()) as u64);
        let (part, more) = match decode(&body)? {
            Frame::Bolts { task, more, batch } => (Batch::Bolts(task, batch.into_owned()), more),
            Frame::Ackers { task, more, batch } => (Batch::Ackers(task, batch.into_owned()), more),
            Frame::Outcomes { task, more, batch } => (Batch::Outcomes(task, batch.into_owned()), more),
            _ => return Err(ConnError::Protocol("a frame other than a batch after the hello".into())),
        };
        let task = part.task();
        let batch = match partial.remove(&task) {
            Some(mut whole) => {
                whole.append(part)?;
                whole
            }
            None => part,
        };
        if more {
            partial_bytes += body.len();
            if partial_bytes > MAX_PARTIAL {
                return Err(ConnError::Protocol("a batch in parts is over the limit".into()));
            }
            partial.insert(task, batch);
            continue;
        }
        if partial.is_empty() {
            partial_bytes = 0;
        }
        Counters::add(&counters.batches_received, 1);
        let route = inbound.routes.get(task as usize).unwrap_or(&Route::Elsewhere);
        match (route, batch) {
            (Route::Spout, Batch::Outcomes(_, batch)) => {
                if let Ok(spouts) = inbound.spouts.read() {
                    if let Some(tx) = &spouts[task as usize] {
                        let _ = tx.send(batch); // a spout that has ended no longer cares
                    }
                }
            }
            (Route::Bolt { slot, queue }, Batch::Bolts(_, batch)) => {
                take_credit(&outstanding[*slot as usize], credits, task)?;
                let _ = queue.send(Delivery { batch, credit: credit.clone() });
            }
            (Route::Acker { slot, queue }, Batch::Ackers(_, batch)) => {
                take_credit(&outstanding[*slot as usize], credits, task)?;
                let _ = queue.send(Delivery { batch, credit: credit.clone() });
            }
            _ => {
                return Err(ConnError::Protocol(format!(
                    "a batch for task {task}, which this worker does not host as such"
                )));
            }
        }
    }
    Ok(())
}

fn take_credit(outstanding: &AtomicU32, credits: u32, task: TaskId) -> Result<(), ConnError> {
    if outstanding.fetch_add(1, Relaxed) >= credits {
        return Err(ConnError::Protocol(format!("more than {credits} batches in flight to task {task}")));
    }
    Ok(())
}

/// Returns credits as the drainers deliver batches, all that are ready in one write.
async fn write_credits<W: AsyncWrite + Unpin>(
    shared: &Shared,
    inbound: &Inbound,
    wr: &mut W,
    mut delivered: mpsc::UnboundedReceiver<TaskId>,
    outstanding: &[AtomicU32],
) -> Result<(), ConnError> {
    let mut tasks = Vec::with_capacity(256);
    let mut credits: Vec<(TaskId, u32)> = Vec::with_capacity(64);
    let mut buf = Vec::with_capacity(1024);
    // Never ends by itself: the reader holds a sender while the connection lives.
    while delivered.recv_many(&mut tasks, 4096).await > 0 {
        tasks.sort_unstable();
        credits.clear();
        for &t in &tasks {
            match credits.last_mut() {
                Some((last, n)) if *last == t => *n += 1,
                _ => credits.push((t, 1)),
            }
        }
        tasks.clear();
        for &(t, n) in &credits {
            if let Some(Route::Bolt { slot, .. } | Route::Acker { slot, .. }) = inbound.routes.get(t as usize)
            {
                outstanding[*slot as usize].fetch_sub(n, Relaxed);
            }
        }
        buf.clear();
        put_frame(&mut buf, &Frame::Credits(Cow::Borrowed(&credits)), MAX_FRAME)
            .map_err(ConnError::Protocol)?;
        wr.write_all(&buf).await?;
        Counters::add(&shared.counters.bytes_sent, buf.len() as u64);
    }
    Ok(())
}

/// Delivers a task's batches from every connection to its inbox, in order, waiting for room,
/// and returns each batch's credit once it is in (or discarded after close_inbound).
async fn drain<T>(
    task: TaskId,
    mut queue: mpsc::UnboundedReceiver<Delivery<T>>,
    inbox: mpsc::Sender<Vec<T>>,
    mut closed: watch::Receiver<bool>,
) {
    let mut inbox = Some(inbox);
    loop {
        if inbox.is_some() && (closed.has_changed().is_err() || *closed.borrow()) {
            inbox = None;
        }
        // Waits for close_inbound too, so that an idle task's inbox is let go at once.
        let next = match &inbox {
            Some(_) => tokio::select! {
                next = queue.recv() => next,
                _ = closed.wait_for(|&c| c) => continue,
            },
            None => queue.recv().await,
        };
        let Some(Delivery { batch, credit }) = next else { return };
        if let Some(tx) = &inbox {
            tokio::select! {
                biased;
                sent = tx.send(batch) => {
                    if sent.is_err() {
                        inbox = None; // the task has ended
                    }
                }
                _ = closed.wait_for(|&c| c) => inbox = None,
            }
        }
        let _ = credit.send(task);
    }
}

// ---------------------------------------------------------------------------------------
// The connecting side: batches out, credits in.

/// Moves the batches for one remote task from its local queue to the connection of its peer.
struct Forwarder {
    task: TaskId,
    link: watch::Receiver<LinkState>,
    hold: Duration,
    counters: Arc<Counters>,
    /// Dropped when the forwarder ends: the manager closes the connection once all have.
    _alive: mpsc::Sender<()>,
}

impl Forwarder {
    /// The peer's connection, waiting up to the hold while it is down; `None`: drop the batch.
    async fn connection(&mut self) -> Option<Arc<OutConn>> {
        loop {
            let deadline = match &*self.link.borrow_and_update() {
                LinkState::Up(conn) => return Some(conn.clone()),
                LinkState::Closed => return None,
                LinkState::Down { since } => *since + self.hold,
            };
            if Instant::now() >= deadline {
                return None;
            }
            tokio::select! {
                changed = self.link.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn dropped(&self) {
        Counters::add(&self.counters.batches_dropped, 1);
    }

    /// For a bolt or acker task: one credit per batch.
    async fn credited<T>(
        mut self,
        slot: usize,
        mut rx: mpsc::Receiver<Vec<T>>,
        wrap: fn(TaskId, Vec<T>) -> Batch,
    ) {
        while let Some(batch) = rx.recv().await {
            let mut batch = Some(batch);
            while let Some(b) = batch.take() {
                let Some(conn) = self.connection().await else {
                    self.dropped();
                    break;
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
    }

    /// For a spout task: outcomes need no credits (an acker never waits).
    async fn outcomes(mut self, mut rx: mpsc::UnboundedReceiver<Vec<Outcome>>) {
        while let Some(batch) = rx.recv().await {
            match self.connection().await {
                Some(conn) if conn.queue.send(Batch::Outcomes(self.task, batch)).is_ok() => {}
                _ => self.dropped(),
            }
        }
    }
}

/// Keeps a connection to one peer while any forwarder to it lives.
struct Manager {
    peer: usize,
    /// The peer's bolt and acker tasks.
    slots: usize,
    shared: Arc<Shared>,
    placement: Arc<Placement>,
    peers: Peers,
    link: watch::Sender<LinkState>,
    /// Closed once every forwarder to this peer has ended.
    alive: mpsc::Receiver<()>,
    stop: watch::Receiver<()>,
}

/// How a connection to a peer ended.
enum End {
    /// Every forwarder ended and what they sent was written: stop.
    Done,
    /// The transport was dropped: stop.
    Stopped,
    /// The connection broke: reconnect.
    Lost(ConnError),
}

impl Manager {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut peers_open = true;
        // The last failure logged, so that a peer down for long is not logged every second.
        let mut logged: Option<String> = None;
        let mut warned_hold = false;
        loop {
            let addr = self.peers.borrow_and_update().get(self.peer).copied().flatten();
            let (shared, peer) = (self.shared.clone(), self.peer);
            let attempt = async move {
                match addr {
                    Some(addr) => connect(&shared, peer, addr).await,
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
                        tracing::info!("transport: connected to worker {} at {addr:?}", self.peer);
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

/// Connects to worker `peer` at `addr` and exchanges hellos; returns the halves and the peer's
/// credits per task.
async fn connect(
    shared: &Shared,
    peer: usize,
    addr: SocketAddr,
) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf, u32), ConnError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnError::Io(std::io::ErrorKind::TimedOut.into()))??;
    squall_engine::frame::tune(&stream);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(16 << 10, rd);
    write_frame(&mut wr, &Frame::Hello(shared.hello())).await?;
    let hello = read_hello(&mut rd, &mut Vec::new()).await?;
    let mut expected = shared.hello();
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
    async fn serve(&mut self, mut rd: BufReader<OwnedReadHalf>, mut wr: OwnedWriteHalf, credits: u32) -> End {
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
            let Some(slot) = placement.slot_at(task, peer) else {
                return ConnError::Protocol(format!("credits for task {task}, which the peer does not host"));
            };
            let permits = &permits[slot];
            if permits.available_permits() as u64 + n as u64 > credits as u64 {
                return ConnError::Protocol(format!("more than {credits} credits for task {task}"));
            }
            permits.add_permits(n as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicUsize;

    use smallvec::smallvec;
    use squall_api::{
        async_trait, BasicBolt, BasicCollector, BoxError, MessageId, OutputDeclarer, Registry, Spout,
        SpoutCollector, Tuple, Value, Values,
    };
    use tokio::io::AsyncWriteExt;

    use super::*;
    use squall_engine::executor::output::Anchors;
    use squall_engine::topology::{ComponentDef, GroupingDef, Settings, TopologyDef};

    /// How long any condition may take before a test gives up: generous, never a measurement.
    const DEADLINE: Duration = Duration::from_secs(30);
    const VERSION: u64 = 7;

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// Spout `s` (tasks 0, 1) → bolt `a` (2, 3) → bolt `b` (4, 5), ackers 6 and 7; worker 0
    /// hosts the even tasks, worker 1 the odd ones.
    fn plan() -> Plan {
        let def = TopologyDef {
            name: "t".into(),
            workers: 2,
            settings: Settings { ackers: 2, ..Settings::default() },
            spouts: vec![ComponentDef::new("s", "spout").parallelism(2).emits(["f"])],
            bolts: vec![
                ComponentDef::new("a", "bolt").parallelism(2).input("s", GroupingDef::Shuffle).emits(["f"]),
                ComponentDef::new("b", "bolt").parallelism(2).input("a", GroupingDef::Shuffle).emits(["f"]),
            ],
        };
        let mut plan = Plan::new(&def).unwrap();
        plan.task_worker = (0..plan.task_count()).map(|t| t % 2).collect();
        assert_eq!(plan.acker_tasks, vec![6, 7]);
        plan
    }

    /// The receiving ends of a worker's inboxes, by task id.
    struct Inboxes {
        bolts: Vec<Option<mpsc::Receiver<Vec<Envelope>>>>,
        ackers: Vec<Option<mpsc::Receiver<Vec<AckerMsg>>>>,
        spouts: Vec<Option<mpsc::UnboundedReceiver<Vec<Outcome>>>>,
    }

    /// Inboxes for the tasks of `worker`, made as the local runner makes them.
    fn inboxes(plan: &Plan, worker: usize) -> (Links, Inboxes) {
        let n = plan.task_count();
        let mut links = Links { bolts: vec![None; n], ackers: vec![None; n], spouts: vec![None; n] };
        let mut rx = Inboxes {
            bolts: (0..n).map(|_| None).collect(),
            ackers: (0..n).map(|_| None).collect(),
            spouts: (0..n).map(|_| None).collect(),
        };
        for t in (0..n).filter(|&t| plan.task_worker[t] == worker) {
            match (plan.task_component[t].is_none(), role(plan, t)) {
                (true, _) => {
                    let (tx, r) = mpsc::channel(INBOX_BATCHES);
                    (links.ackers[t], rx.ackers[t]) = (Some(tx), Some(r));
                }
                (false, Role::Spout) => {
                    let (tx, r) = mpsc::unbounded_channel();
                    (links.spouts[t], rx.spouts[t]) = (Some(tx), Some(r));
                }
                (false, Role::Bolt) => {
                    let (tx, r) = mpsc::channel(INBOX_BATCHES);
                    (links.bolts[t], rx.bolts[t]) = (Some(tx), Some(r));
                }
            }
        }
        (links, rx)
    }

    struct Worker {
        transport: Transport,
        links: Links,
        rx: Inboxes,
    }

    impl Worker {
        async fn bind(me: usize, peers: Peers) -> Transport {
            Transport::bind(any_port(), "t", VERSION, me, peers).await.unwrap()
        }

        fn attach(plan: &Plan, me: usize, mut transport: Transport) -> Worker {
            let (mut links, rx) = inboxes(plan, me);
            transport.attach(plan, &mut links);
            Worker { transport, links, rx }
        }

        fn bolt(&self, task: usize) -> mpsc::Sender<Vec<Envelope>> {
            self.links.bolts[task].clone().unwrap()
        }
    }

    type PeersTx = watch::Sender<Vec<Option<SocketAddr>>>;

    /// Two attached workers that know where the other listens.
    async fn pair(plan: &Plan) -> (Worker, Worker, PeersTx) {
        let (peers, peers_rx) = watch::channel(vec![None, None]);
        let t0 = Worker::bind(0, peers_rx.clone()).await;
        let t1 = Worker::bind(1, peers_rx).await;
        peers.send_replace(vec![Some(t0.local_addr()), Some(t1.local_addr())]);
        (Worker::attach(plan, 0, t0), Worker::attach(plan, 1, t1), peers)
    }

    fn batch(first: i64, len: i64) -> Vec<Envelope> {
        (first..first + len)
            .map(|n| Envelope {
                stream: 0,
                source_task: 0,
                values: smallvec![Value::Int(n)],
                anchors: Anchors::new(),
            })
            .collect()
    }

    fn numbers(batch: &[Envelope]) -> Vec<i64> {
        batch.iter().map(|e| e.values[0].as_i64().unwrap()).collect()
    }

    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, f).await.unwrap_or_else(|_| panic!("gave up waiting for {what}"))
    }

    async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        within(what, async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }

    /// Receives `count` batches of `len` tuples numbered on from `first`, in order.
    async fn expect_bolt_batches(rx: &mut mpsc::Receiver<Vec<Envelope>>, first: i64, len: i64, count: i64) {
        for i in 0..count {
            let got = within("a bolt batch", rx.recv()).await.expect("inbox open");
            let from = first + i * len;
            assert_eq!(numbers(&got), (from..from + len).collect::<Vec<_>>(), "batch {i}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batches_reach_remote_bolts_ackers_and_spouts_in_order() {
        let plan = plan();
        let (mut w0, mut w1, _peers) = pair(&plan).await;
        let (to_bolt, to_acker) = (w0.bolt(3), w0.links.ackers[7].clone().unwrap());
        let to_spout = w0.links.spouts[1].clone().unwrap();
        let back = w1.bolt(2);
        let sender = tokio::spawn(async move {
            for i in 0..200 {
                to_bolt.send(batch(i * 3, 3)).await.unwrap();
                to_acker.send(vec![AckerMsg::Ack { root: i as u64, val: 1 }]).await.unwrap();
                to_spout.send(vec![Outcome { root: i as u64, acked: i % 2 == 0 }]).unwrap();
                back.send(batch(-i, 1)).await.unwrap();
            }
        });
        // Every inbox is read as it fills: one left unread would hold the sender back.
        for i in 0..200u64 {
            let got = within("a bolt batch", w1.rx.bolts[3].as_mut().unwrap().recv()).await.unwrap();
            assert_eq!(numbers(&got), (3 * i as i64..3 * i as i64 + 3).collect::<Vec<_>>());
            let acks = within("an acker batch", w1.rx.ackers[7].as_mut().unwrap().recv()).await.unwrap();
            assert_eq!(acks, vec![AckerMsg::Ack { root: i, val: 1 }]);
            let outcomes = within("outcomes", w1.rx.spouts[1].as_mut().unwrap().recv()).await.unwrap();
            assert_eq!(outcomes, vec![Outcome { root: i, acked: i % 2 == 0 }]);
            let back = within("a batch back", w0.rx.bolts[2].as_mut().unwrap().recv()).await.unwrap();
            assert_eq!(numbers(&back), vec![-(i as i64)]);
        }
        sender.await.unwrap();
        // Nothing went to a task it was not meant for.
        assert!(w1.rx.bolts[5].as_mut().unwrap().try_recv().is_err());
        assert!(w1.rx.ackers[7].as_mut().unwrap().try_recv().is_err());
        let (s0, s1) = (w0.transport.stats(), w1.transport.stats());
        assert_eq!((s0.batches_sent, s1.batches_received), (600, 600), "{s0:?} {s1:?}");
        assert_eq!((s1.batches_sent, s0.batches_received), (200, 200), "{s0:?} {s1:?}");
        assert_eq!((s0.connects, s1.connects, s0.batches_dropped, s1.refused), (1, 1, 0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn slow_task_does_not_block_others_on_the_connection() {
        let plan = plan();
        let (w0, mut w1, _peers) = pair(&plan).await;
        // Nobody reads task 3's inbox on worker 1.
        let to_slow = w0.bolt(3);
        let sent = Arc::new(AtomicUsize::new(0));
        let (tx, counter) = (to_slow.clone(), sent.clone());
        let sender = tokio::spawn(async move {
            for i in 0..1000 {
                tx.send(batch(i, 1)).await.unwrap();
                counter.fetch_add(1, Relaxed);
            }
        });
        // The slow task's inbox fills, then the credits run out, then the forwarder's queue.
        let slow_inbox = w1.rx.bolts[3].take().unwrap();
        wait_until("the sender to be held back", || {
            slow_inbox.len() == INBOX_BATCHES && to_slow.capacity() == 0
        })
        .await;
        // Meanwhile another task of the same worker, and an acker, get all their batches.
        let (to_fast, to_acker) = (w0.bolt(5), w0.links.ackers[7].clone().unwrap());
        let fast = tokio::spawn(async move {
            for i in 0..100 {
                to_fast.send(batch(i * 2, 2)).await.unwrap();
                to_acker.send(vec![AckerMsg::Fail { root: i as u64 }]).await.unwrap();
            }
        });
        for i in 0..100 {
            expect_bolt_batches(w1.rx.bolts[5].as_mut().unwrap(), 2 * i as i64, 2, 1).await;
            let got = within("acker batch", w1.rx.ackers[7].as_mut().unwrap().recv()).await.unwrap();
            assert_eq!(got, vec![AckerMsg::Fail { root: i }]);
        }
        within("the fast sender", fast).await.unwrap();
        // The slow path holds at most: its inbox, its credits, the forwarder's queue, and the
        // one batch each of the forwarder and the sender have in hand.
        let held = sent.load(Relaxed);
        let bound = 3 * INBOX_BATCHES + 2;
        assert!(held <= bound, "{held} batches left the sender; at most {bound} should");
        assert!(!sender.is_finished());
        // Once the slow task reads, everything arrives, in order.
        let mut slow_inbox = slow_inbox;
        expect_bolt_batches(&mut slow_inbox, 0, 1, 1000).await;
        within("the slow sender", sender).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_restarted_peer_gets_batches_again_after_reconnecting() {
        let plan = plan();
        let (w0, mut w1, peers) = pair(&plan).await;
        let to_bolt = w0.bolt(3);
        to_bolt.send(batch(0, 1)).await.unwrap();
        expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), 0, 1, 1).await;
        let old = w1.transport.local_addr();
        drop(w1);
        // The peer comes back on another port (the old one is still taken by a placeholder).
        let placeholder = TcpListener::bind(any_port()).await.unwrap();
        let t1 = Worker::bind(1, peers.subscribe()).await;
        assert_ne!(t1.local_addr(), old);
        peers.send_replace(vec![Some(w0.transport.local_addr()), Some(t1.local_addr())]);
        let mut w1 = Worker::attach(&plan, 1, t1);
        // Batches written to the dead connection may be lost; keep sending until some arrive.
        let sender = tokio::spawn(async move {
            for i in 1.. {
                if to_bolt.send(batch(i, 1)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let got = within("a batch after the restart", w1.rx.bolts[3].as_mut().unwrap().recv()).await.unwrap();
        assert!(numbers(&got)[0] >= 1);
        // And in order from then on.
        let next = within("the next batch", w1.rx.bolts[3].as_mut().unwrap().recv()).await.unwrap();
        assert_eq!(numbers(&next)[0], numbers(&got)[0] + 1);
        sender.abort();
        assert!(w0.transport.stats().connects >= 2, "{:?}", w0.transport.stats());
        drop(placeholder);
    }

    /// A raw connection that says hello as `worker` of `version`; returns what the transport
    /// answered (its hello or its refusal).
    async fn raw_hello(
        addr: SocketAddr,
        version: u64,
        worker: u32,
    ) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf, Frame<'static>) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (rd, mut wr) = stream.into_split();
        let hello = Hello { protocol: PROTOCOL, topology: "t".into(), version, worker, credits: 0 };
        write_frame(&mut wr, &Frame::Hello(hello)).await.unwrap();
        let mut rd = BufReader::new(rd);
        let mut body = Vec::new();
        assert!(within("an answer", read_frame(&mut rd, &mut body)).await.unwrap());
        (rd, wr, decode(&body).unwrap())
    }

    /// Waits for the transport to close the connection (an end of stream or a reset).
    async fn expect_closed(rd: &mut (impl AsyncRead + Unpin)) {
        let mut sink = Vec::new();
        let _ = within("the connection to close", rd.read_to_end(&mut sink)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_hello_for_another_version_is_refused() {
        let plan = plan();
        let (peers, peers_rx) = watch::channel(vec![None, None]);
        let w1 = Worker::attach(&plan, 1, Worker::bind(1, peers_rx).await);
        let addr = w1.transport.local_addr();

        let (_, _, answer) = raw_hello(addr, VERSION, 0).await;
        match answer {
            Frame::Hello(h) => {
                assert_eq!((h.worker, h.version, h.credits), (1, VERSION, INBOX_BATCHES as u32))
            }
            other => panic!("expected a hello, got {other:?}"),
        }
        let (mut rd, _wr, answer) = raw_hello(addr, VERSION + 1, 0).await;
        match answer {
            Frame::Refused(why) => assert!(why.contains("version 8"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        expect_closed(&mut rd).await;
        wait_until("the refusal to count", || w1.transport.stats().refused == 1).await;

        // A worker of the old assignment never gets a connection to it.
        peers.send_replace(vec![None, Some(addr)]);
        let (old_peers, old_peers_rx) = watch::channel(vec![None, Some(addr)]);
        let old = Transport::bind(any_port(), "t", VERSION + 1, 0, old_peers_rx).await.unwrap();
        let old = Worker::attach(&plan, 0, old);
        old.bolt(3).send(batch(0, 1)).await.unwrap();
        wait_until("refused reconnects", || w1.transport.stats().refused >= 3).await;
        assert_eq!(old.transport.stats().connects, 0);
        assert_eq!(w1.transport.stats().batches_received, 0);
        drop(old_peers);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn garbage_bytes_do_not_panic_or_disturb_other_connections() {
        let plan = plan();
        let (w0, mut w1, _peers) = pair(&plan).await;
        let to_bolt = w0.bolt(3);
        to_bolt.send(batch(0, 1)).await.unwrap();
        expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), 0, 1, 1).await;
        let addr = w1.transport.local_addr();

        // Not our protocol at all: the length prefix reads as ~1.2 GB, over the limit.
        let mut http = TcpStream::connect(addr).await.unwrap();
        http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        expect_closed(&mut http).await;
        // A frame whose body is not MessagePack.
        let mut junk = TcpStream::connect(addr).await.unwrap();
        junk.write_all(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1]).await.unwrap();
        expect_closed(&mut junk).await;
        // A good hello, then a frame that is not a batch, then one for a task not hosted here.
        let (mut rd, mut wr, _) = raw_hello(addr, VERSION, 0).await;
        write_frame(&mut wr, &Frame::Credits(Cow::Owned(vec![(3, 1)]))).await.unwrap();
        expect_closed(&mut rd).await;
        // A batch frame whose body ends inside its first tuple.
        let (mut rd, mut wr, _) = raw_hello(addr, VERSION, 0).await;
        wr.write_all(&[0, 0, 0, 8, 0x81, 0xa1, b'B', 0x93, 0x03, 0xc2, 0x91, 0x94]).await.unwrap();
        expect_closed(&mut rd).await;
        let (mut rd, mut wr, _) = raw_hello(addr, VERSION, 0).await;
        let frame = Frame::Bolts { task: 2, more: false, batch: Cow::Owned(batch(0, 1)) };
        write_frame(&mut wr, &frame).await.unwrap();
        expect_closed(&mut rd).await;
        // A peer that sends past its credits to a task that does not read.
        let stuck = w1.rx.bolts[5].take().unwrap();
        let (mut rd, mut wr, _) = raw_hello(addr, VERSION, 0).await;
        let mut buf = Vec::new();
        for i in 0..3 * INBOX_BATCHES as i64 {
            let frame = Frame::Bolts { task: 5, more: false, batch: Cow::Owned(batch(i, 1)) };
            put_frame(&mut buf, &frame, MAX_FRAME).unwrap();
        }
        let _ = wr.write_all(&buf).await;
        let mut credits = 0;
        let mut body = Vec::new();
        while let Ok(true) = within("credits or a close", read_frame(&mut rd, &mut body)).await {
            if let Ok(Frame::Credits(list)) = decode(&body) {
                credits += list.iter().map(|&(_, n)| n as usize).sum::<usize>();
            }
        }
        assert!(credits <= INBOX_BATCHES, "{credits} credits for a task whose inbox holds {INBOX_BATCHES}");
        wait_until("six refusals", || w1.transport.stats().refused == 6).await;
        drop(stuck);

        // The worker's own connection went on all along.
        for i in 1..=20 {
            to_bolt.send(batch(i, 1)).await.unwrap();
        }
        expect_bolt_batches(w1.rx.bolts[3].as_mut().unwrap(), 1, 1, 20).await;
        assert_eq!(w0.transport.stats().connects, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batches_for_a_peer_down_longer_than_the_hold_are_dropped_not_waited_for() {
        let plan = plan();
        // Worker 1 never comes up: its address is not known, then it is one nobody listens on.
        let (peers, peers_rx) = watch::channel(vec![None, None]);
        let opts = TransportOptions { hold: Duration::from_millis(100), ..TransportOptions::default() };
        let t0 = Transport::bind_with(any_port(), "t", VERSION, 0, peers_rx, opts).await.unwrap();
        let w0 = Worker::attach(&plan, 0, t0);
        let gone = TcpListener::bind(any_port()).await.unwrap().local_addr().unwrap();
        peers.send_replace(vec![Some(w0.transport.local_addr()), Some(gone)]);
        let (to_bolt, to_acker, to_spout) =
            (w0.bolt(3), w0.links.ackers[7].clone().unwrap(), w0.links.spouts[1].clone().unwrap());
        within("sends to a dead peer", async {
            for i in 0..100 {
                to_bolt.send(batch(i, 1)).await.unwrap();
                to_acker.send(vec![AckerMsg::Fail { root: i as u64 }]).await.unwrap();
                to_spout.send(vec![Outcome { root: i as u64, acked: true }]).unwrap();
            }
        })
        .await;
        wait_until("every batch to be dropped", || w0.transport.stats().batches_dropped == 300).await;
        assert_eq!(w0.transport.stats().connects, 0);
    }

    #[test]
    fn an_oversized_batch_travels_in_parts_and_arrives_whole() {
        let items = batch(0, 100);
        fn frame(batch: &[Envelope], more: bool) -> Frame<'_> {
            Frame::Bolts { task: 9, more, batch: Cow::Borrowed(batch) }
        }
        let one = {
            let mut buf = Vec::new();
            put_frame(&mut buf, &frame(&items, false), MAX_FRAME).unwrap();
            buf.len()
        };
        let max = one / 5;
        let mut buf = Vec::new();
        assert_eq!(put_parts(&mut buf, &items, false, max, &frame), 0);
        let mut parts = Vec::new();
        let mut rest = &buf[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            assert!(len <= max);
            parts.push(decode(&rest[4..4 + len]).unwrap());
            rest = &rest[4 + len..];
        }
        assert!(parts.len() >= 5, "{} parts", parts.len());
        let mut whole = Vec::new();
        for (i, part) in parts.into_iter().enumerate() {
            let Frame::Bolts { task: 9, more, batch } = part else { panic!("not a batch part") };
            assert_eq!(more, whole.len() + batch.len() < items.len(), "part {i}");
            whole.extend(batch.into_owned());
        }
        assert_eq!(numbers(&whole), numbers(&items));

        // A single tuple over the limit is dropped, and the batch still ends.
        let mut buf = Vec::new();
        let big =
            vec![Envelope { values: smallvec![Value::from("x".repeat(4096))], ..batch(0, 1).remove(0) }];
        assert_eq!(put_parts(&mut buf, &big, false, 1024, &frame), 1);
        match decode(&buf[4..]).unwrap() {
            Frame::Bolts { more: false, batch, .. } => assert!(batch.is_empty()),
            other => panic!("expected an empty last part, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn close_inbound_lets_local_tasks_end() {
        let plan = plan();
        let (w0, w1, _peers) = pair(&plan).await;
        let Worker { transport, links, mut rx } = w1;
        drop(links);
        transport.close_inbound();
        within("bolt 3's inbox to close", async {
            while rx.bolts[3].as_mut().unwrap().recv().await.is_some() {}
        })
        .await;
        within("acker 7's inbox to close", async {
            while rx.ackers[7].as_mut().unwrap().recv().await.is_some() {}
        })
        .await;
        within("spout 1's inbox to close", async {
            while rx.spouts[1].as_mut().unwrap().recv().await.is_some() {}
        })
        .await;
        // What the peer still sends is discarded and credited: it never waits for this worker.
        let to_bolt = w0.bolt(3);
        within("sends to a closed worker", async {
            for i in 0..10 * INBOX_BATCHES as i64 {
                to_bolt.send(batch(i, 1)).await.unwrap();
            }
        })
        .await;
        drop(transport);
    }

    // The codec of the hot frames.

    /// An envelope's fields, to compare.
    type Parts = (u32, TaskId, Vec<Value>, Vec<(u64, u64)>);

    fn parts(batch: &[Envelope]) -> Vec<Parts> {
        batch.iter().map(|e| (e.stream, e.source_task, e.values.to_vec(), e.anchors.to_vec())).collect()
    }

    /// Every kind of value, at the edges of its encodings.
    fn every_value() -> Vec<Value> {
        let mut v = vec![Value::Null, Value::Bool(true), Value::Bool(false)];
        let ints = [0, 1, 127, 128, 255, 256, 65535, 65536, u32::MAX as i64, u32::MAX as i64 + 1, i64::MAX];
        v.extend(ints.iter().map(|&i| Value::Int(i)));
        let negative =
            [-1, -32, -33, -128, -129, -32768, -32769, i32::MIN as i64, i32::MIN as i64 - 1, i64::MIN];
        v.extend(negative.iter().map(|&i| Value::Int(i)));
        let floats =
            [0.0, -0.0, 1.5, -2.25e300, f64::MIN_POSITIVE, f64::MAX, f64::INFINITY, f64::NEG_INFINITY];
        v.extend(floats.iter().map(|&f| Value::Float(f)));
        v.extend([0, 1, 24, 25, 31, 32, 255, 256, 65535, 65536].iter().map(|&n| Value::from("w".repeat(n))));
        v.push(Value::from("naïve — ünïcödé ✓"));
        v.extend([0, 1, 255, 256, 65536].iter().map(|&n| Value::Bytes((0..n).map(|i| i as u8).collect())));
        v.push(Value::List(Vec::new()));
        v.push(Value::Map(BTreeMap::new()));
        v.push(Value::List((0..20).map(Value::from).collect()));
        v.push(Value::List((0..70_000).map(|i| Value::from(i % 3)).collect()));
        v.push(Value::Map((0..20).map(|i| (i.to_string(), Value::from(i))).collect()));
        let inner = BTreeMap::from([("x".to_string(), Value::Float(-0.5)), ("".to_string(), Value::Null)]);
        let map = BTreeMap::from([
            ("k".to_string(), Value::List(vec![Value::Null, Value::from("v"), Value::Map(inner)])),
            ("é".repeat(20), Value::Bytes(vec![0xff; 3])),
            ("n".to_string(), Value::List(vec![Value::List(vec![Value::List(vec![Value::from(-7)])])])),
        ]);
        v.push(Value::List(vec![
            Value::from(1),
            Value::Map(map.clone()),
            Value::List(vec![Value::Map(map.clone())]),
        ]));
        v.push(Value::Map(map));
        v
    }

    fn every_envelope() -> Vec<Envelope> {
        let values = every_value();
        let anchors = [vec![], vec![(0, u64::MAX)], vec![(1, 2), (u32::MAX as u64 + 1, 127), (128, 65536)]];
        let mut batch: Vec<Envelope> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Envelope {
                stream: [0, 1, 200, u32::MAX][i % 4],
                source_task: i as TaskId * 1000,
                values: smallvec![v.clone()],
                anchors: anchors[i % 3].iter().copied().collect(),
            })
            .collect();
        batch.push(Envelope { stream: 3, source_task: 4, values: Values::new(), anchors: Anchors::new() });
        let three = smallvec![Value::from("the"), Value::Int(1), Value::Null];
        batch.push(Envelope { stream: 3, source_task: 4, values: three, anchors: Anchors::new() });
        batch.push(Envelope {
            stream: 5,
            source_task: 6,
            values: values.into_iter().collect(),
            anchors: Anchors::new(),
        });
        batch
    }

    fn body(frame: &Frame) -> Vec<u8> {
        let mut buf = Vec::new();
        codec::put_body(&mut buf, frame).unwrap();
        buf
    }

    #[test]
    fn the_codec_round_trips_every_value_and_writes_what_rmp_serde_writes() {
        let batch = every_envelope();
        for more in [false, true] {
            let frame = Frame::Bolts { task: 70_000, more, batch: Cow::Borrowed(&batch) };
            let bytes = body(&frame);
            assert!(bytes == rmp_serde::to_vec(&frame).unwrap(), "the wire format is rmp-serde's");
            for decoded in [codec::decode_body(&bytes).unwrap(), rmp_serde::from_slice(&bytes).unwrap()] {
                let Frame::Bolts { task: 70_000, more: m, batch: back } = decoded else {
                    panic!("not a batch")
                };
                assert_eq!(m, more);
                assert_eq!(parts(&back), parts(&batch));
            }
        }
        // NaN is not equal to itself, so it is checked alone.
        let nan = vec![Envelope { values: smallvec![Value::Float(f64::NAN)], ..batch[0].clone() }];
        let bytes = body(&Frame::Bolts { task: 1, more: false, batch: Cow::Borrowed(&nan) });
        let Ok(Frame::Bolts { batch: back, .. }) = codec::decode_body(&bytes) else { panic!("not a batch") };
        assert!(matches!(back[0].values[0], Value::Float(f) if f.is_nan()));
        // The empty batch, and short strings come back inline.
        let bytes = body(&Frame::Bolts { task: 0, more: false, batch: Cow::Owned(Vec::new()) });
        assert!(matches!(codec::decode_body(&bytes), Ok(Frame::Bolts { batch, .. }) if batch.is_empty()));
        let short = vec![Envelope { values: smallvec![Value::from("word")], ..batch[0].clone() }];
        let bytes = body(&Frame::Bolts { task: 1, more: false, batch: Cow::Borrowed(&short) });
        let Ok(Frame::Bolts { batch: back, .. }) = codec::decode_body(&bytes) else { panic!("not a batch") };
        assert!(matches!(&back[0].values[0], Value::Str(s) if !s.is_heap_allocated()));
    }

    #[test]
    fn the_codec_round_trips_acker_messages_outcomes_credits_and_hellos() {
        let msgs = vec![
            AckerMsg::Init { root: 0, val: u64::MAX },
            AckerMsg::Ack { root: 1 << 48, val: 127 },
            AckerMsg::Fail { root: 128 },
            AckerMsg::Reset { root: u64::MAX },
        ];
        let outcomes = vec![Outcome { root: 5, acked: true }, Outcome { root: u64::MAX, acked: false }];
        let credits = vec![(0, 1), (3, 16), (u32::MAX, u32::MAX)];
        let frames = [
            Frame::Ackers { task: 7, more: false, batch: Cow::Borrowed(&msgs) },
            Frame::Ackers { task: 7, more: true, batch: Cow::Owned(Vec::new()) },
            Frame::Outcomes { task: 1, more: true, batch: Cow::Borrowed(&outcomes) },
            Frame::Credits(Cow::Borrowed(&credits)),
            Frame::Credits(Cow::Owned(Vec::new())),
            Frame::Hello(Hello {
                protocol: PROTOCOL,
                topology: "t".into(),
                version: 9,
                worker: 1,
                credits: 16,
            }),
            Frame::Refused("no".into()),
        ];
        for frame in &frames {
            let bytes = body(frame);
            assert!(bytes == rmp_serde::to_vec(frame).unwrap(), "the wire format is rmp-serde's: {frame:?}");
            let back = codec::decode_body(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{frame:?}"));
            let back: Frame = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{frame:?}"));
        }
    }

    /// `{"B": [3, false, [[0, 0, [<value>], []]]]}`
    fn one_value_body(value: &[u8]) -> Vec<u8> {
        let mut b = vec![0x81, 0xa1, b'B', 0x93, 0x03, 0xc2, 0x91, 0x94, 0x00, 0x00, 0x91];
        b.extend_from_slice(value);
        b.push(0x90);
        b
    }

    fn one_value(value: &[u8]) -> Result<Value, String> {
        match codec::decode_body(&one_value_body(value))? {
            Frame::Bolts { batch, .. } => Ok(batch[0].values[0].clone()),
            other => panic!("not a batch: {other:?}"),
        }
    }

    #[test]
    fn the_codec_reads_any_encoding_a_messagepack_writer_may_choose() {
        let mut v = Vec::new();
        rmp::encode::write_f32(&mut v, 1.5).unwrap();
        assert_eq!(one_value(&v), Ok(Value::Float(1.5)));
        for (bytes, n) in [
            (&[0xcf, 0, 0, 0, 0, 0, 0, 0, 5][..], 5),
            (&[0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], -1),
            (&[0xd1, 0x00, 0x07][..], 7),
            (&[0xcc, 0x01][..], 1),
        ] {
            assert_eq!(one_value(bytes), Ok(Value::Int(n)));
        }
        assert_eq!(one_value(&[0xd9, 2, b'a', b'b']), Ok(Value::from("ab")));
        assert_eq!(one_value(&[0xdc, 0, 1, 0xc0]), Ok(Value::List(vec![Value::Null])));
        assert_eq!(one_value(&[0xc4, 1, 9]), Ok(Value::Bytes(vec![9])));
        // Wide integers in the envelope's own fields too.
        let null = one_value_body(&[0xc0]);
        let b = [&null[..8], &[0xce, 0, 0, 0, 4], &null[9..]].concat();
        let Ok(Frame::Bolts { batch, .. }) = codec::decode_body(&b) else { panic!("not a batch") };
        assert_eq!(batch[0].stream, 4);
    }

    #[test]
    fn the_codec_rejects_truncated_and_garbage_bodies_without_panicking() {
        let batch: Vec<Envelope> =
            every_envelope().into_iter().filter(|e| e.values.len() == 1).take(60).collect();
        let msgs = vec![AckerMsg::Init { root: 1, val: 2 }, AckerMsg::Fail { root: 3 }];
        let frames = [
            Frame::Bolts { task: 3, more: false, batch: Cow::Borrowed(&batch) },
            Frame::Ackers { task: 7, more: false, batch: Cow::Borrowed(&msgs) },
            Frame::Outcomes {
                task: 1,
                more: false,
                batch: Cow::Owned(vec![Outcome { root: 1, acked: true }]),
            },
            Frame::Credits(Cow::Owned(vec![(3, 1), (5, 2)])),
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for frame in &frames {
            let good = body(frame);
            // Every strict prefix is an error, and so is a byte too many.
            for end in 0..good.len() {
                assert!(codec::decode_body(&good[..end]).is_err(), "{frame:?} cut at {end}");
            }
            let mut long = good.clone();
            long.push(0xc0);
            assert!(codec::decode_body(&long).is_err());
            // Corrupted bytes: an error or some frame, never a panic.
            for _ in 0..2000 {
                let mut bad = good.clone();
                for _ in 0..rng.usize(1..4) {
                    let at = rng.usize(3..bad.len());
                    bad[at] = rng.u8(..);
                }
                let _ = codec::decode_body(&bad);
            }
        }
        for _ in 0..5000 {
            let mut bad = vec![0x81, 0xa1, *rng.choice(b"BAOC").unwrap()];
            bad.extend((0..rng.usize(0..48)).map(|_| rng.u8(..)));
            let _ = codec::decode_body(&bad);
        }

        // Values that do not fit one, and lengths past the end of the body.
        for bad in [
            &[0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0][..], // 2^63
            &[0xa2, 0xff, 0xfe],                    // not UTF-8
            &[0x81, 0x01, 0xc0],                    // an integer key
            &[0xd4, 0x01, 0x00],                    // an extension
            &[0xc1],                                // reserved
            &[0xdd, 0xff, 0xff, 0xff, 0xff],        // a list of 2^32 - 1 items
            &[0xdf, 0xff, 0xff, 0xff, 0xff],        // a map of 2^32 - 1 entries
            &[0xdb, 0xff, 0xff, 0xff, 0xff],        // a string of 4 GiB
            &[0xc6, 0xff, 0xff, 0xff, 0xff],        // bytes of 4 GiB
        ] {
            assert!(one_value(bad).is_err(), "{bad:x?}");
        }
        let mut huge = vec![0x81, 0xa1, b'B', 0x93, 0x03, 0xc2, 0xdd, 0xff, 0xff, 0xff, 0xff];
        huge.extend([0x94, 0, 0, 0x90, 0x90]);
        assert!(codec::decode_body(&huge).is_err());

        // Nesting: up to the limit it travels; past it, neither side takes it (nor overflows).
        let nested = |depth: usize| (0..depth).fold(Value::Null, |v, _| Value::List(vec![v]));
        assert_eq!(one_value(&body_of_value(&nested(codec::MAX_DEPTH))), Ok(nested(codec::MAX_DEPTH)));
        let deep = vec![Envelope { values: smallvec![nested(codec::MAX_DEPTH + 1)], ..batch[0].clone() }];
        assert!(codec::put_body(
            &mut Vec::new(),
            &Frame::Bolts { task: 3, more: false, batch: Cow::Borrowed(&deep) }
        )
        .is_err());
        assert!(one_value(&[0x91; 100_000]).is_err());
        assert!(one_value(&[0x81, 0xa0].repeat(50_000)).is_err());
    }

    /// A value's bytes, as the codec writes it.
    fn body_of_value(v: &Value) -> Vec<u8> {
        let mut buf = Vec::new();
        codec::put_value(&mut buf, v, 0).unwrap();
        buf
    }

    // A whole topology over two workers.

    #[derive(Default)]
    struct Tally {
        acked: AtomicU64,
        failed: AtomicU64,
        sunk: AtomicU64,
    }

    #[derive(Deserialize)]
    struct CountConfig {
        count: u64,
    }

    struct Numbers {
        count: u64,
        next: u64,
        acked: u64,
        replay: Vec<u64>,
        tally: Arc<Tally>,
    }

    #[async_trait]
    impl Spout for Numbers {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["n"]);
        }

        async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
            let n = match self.replay.pop() {
                Some(n) => n,
                None if self.next < self.count => {
                    self.next += 1;
                    self.next - 1
                }
                None => return Ok(()),
            };
            out.emit_with_id(smallvec![Value::Int(n as i64)], Value::Int(n as i64))?;
            Ok(())
        }

        async fn ack(&mut self, _: MessageId) {
            self.acked += 1;
            self.tally.acked.fetch_add(1, Relaxed);
        }

        async fn fail(&mut self, id: MessageId) {
            self.tally.failed.fetch_add(1, Relaxed);
            self.replay.push(id.as_i64().unwrap() as u64);
        }

        fn is_finished(&self) -> bool {
            self.acked == self.count
        }
    }

    struct Double;

    #[async_trait]
    impl BasicBolt for Double {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["n"]);
        }

        async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
            let n = input.get_i64(0)?;
            out.emit(smallvec![Value::Int(2 * n)])?;
            out.emit(smallvec![Value::Int(2 * n + 1)])?;
            Ok(())
        }
    }

    struct Sink(Arc<Tally>);

    #[async_trait]
    impl BasicBolt for Sink {
        async fn execute(&mut self, _: &Tuple, _: &mut BasicCollector<'_>) -> Result<(), BoxError> {
            self.0.sunk.fetch_add(1, Relaxed);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_topology_split_over_two_workers_acks_every_message() {
        const PER_SPOUT: u64 = 2000;
        let tally = Arc::new(Tally::default());
        let mut registry = Registry::new();
        let t = tally.clone();
        registry.spout("numbers", move |c: CountConfig| {
            Ok(Numbers { count: c.count, next: 0, acked: 0, replay: Vec::new(), tally: t.clone() })
        });
        registry.basic_bolt("double", |_: squall_api::NoConfig| Ok(Double));
        let t = tally.clone();
        registry.basic_bolt("sink", move |_: squall_api::NoConfig| Ok(Sink(t.clone())));
        let def = TopologyDef {
            name: "t".into(),
            workers: 2,
            settings: Settings { ackers: 2, max_spout_pending: 200, ..Settings::default() },
            spouts: vec![ComponentDef::new("numbers", "numbers")
                .parallelism(2)
                .set("count", PER_SPOUT as i64)
                .emits(["n"])],
            bolts: vec![
                ComponentDef::new("double", "double")
                    .parallelism(3)
                    .input("numbers", GroupingDef::Shuffle)
                    .emits(["n"]),
                ComponentDef::new("sink", "sink")
                    .parallelism(2)
                    .input("double", GroupingDef::Fields(vec!["n".into()])),
            ],
        };
        let mut plan = Plan::new(&def).unwrap();
        plan.task_worker = (0..plan.task_count()).map(|t| t % 2).collect();
        let (peers, peers_rx) = watch::channel(vec![None, None]);
        let mut t0 = Worker::bind(0, peers_rx.clone()).await;
        let mut t1 = Worker::bind(1, peers_rx).await;
        peers.send_replace(vec![Some(t0.local_addr()), Some(t1.local_addr())]);
        let hosted = |w: usize| {
            (0..plan.task_count() as TaskId)
                .filter(|&t| plan.task_worker[t as usize] == w)
                .collect::<Vec<_>>()
        };
        let r0 = squall_engine::launch::start(&plan, &registry, &hosted(0), Some(&mut t0)).unwrap();
        let r1 = squall_engine::launch::start(&plan, &registry, &hosted(1), Some(&mut t1)).unwrap();

        let total = 2 * PER_SPOUT;
        wait_until("every message to be acked", || tally.acked.load(Relaxed) == total).await;
        // Shut down: the spouts have ended; stop delivering, and every task ends.
        t0.close_inbound();
        t1.close_inbound();
        for mut running in [r0, r1] {
            within("every task to end", async {
                while let Some(ended) = running.tasks.join_next().await {
                    ended.expect("no task panics").expect("no task fails");
                }
            })
            .await;
        }
        assert_eq!(tally.failed.load(Relaxed), 0, "no tree failed or timed out");
        assert_eq!(tally.sunk.load(Relaxed), 2 * total, "every doubled number reached a sink once");
        let (s0, s1) = (t0.stats(), t1.stats());
        assert!(s0.batches_sent > 0 && s1.batches_sent > 0, "{s0:?} {s1:?}");
        assert_eq!(s0.batches_dropped + s1.batches_dropped, 0, "{s0:?} {s1:?}");
    }
}
