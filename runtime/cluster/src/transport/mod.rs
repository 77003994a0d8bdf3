//! Worker-to-worker transport: the TCP connections between the workers of one assignment.
//!
//! Contract: a [`Transport`] listens on one TCP port per worker. [`Transport::attach`] keeps
//! clones of the local inboxes to deliver what peers send, and fills every task of the plan
//! that is not hosted here with a sender that forwards to the worker hosting it; a task then
//! sends to a task of another worker exactly as to one of its own process, and waits as it
//! would while the receiver is slow. [`Remote::rewire`] switches the running worker to a
//! new plan and assignment version (a live rebalance, below).
//!
//! - Task ids and holes: the plan's ids may have holes ([`Plan::is_hole`], a bolt that shrank
//!   in a live rebalance). A hole has no forwarder, no credit slot, no route and no worker
//!   (whatever `task_worker` says for it); a batch for a hole, or a tuple naming one as its
//!   source, breaks the protocol like any id the plan lacks.
//! - Frames: a `u32` big-endian body length, then a MessagePack body (rmp-serde's layout;
//!   batches and credits by a hand-written codec, see `codec`) of at most
//!   [`MAX_FRAME`] bytes. A longer or undecodable frame, or one that breaks the protocol,
//!   closes its connection with a logged error, never a panic; other connections go on. A
//!   batch that would encode past the limit travels as several frames marked "more follows"
//!   and is delivered whole; a single tuple past the limit is dropped with an error.
//! - Authentication: every connection starts with [`squall_engine::auth`]'s handshake on
//!   the cluster secret, both ways: a peer that cannot prove it knows the secret is closed
//!   before any frame of it is read (counted as refused, logged), and a worker never sends a
//!   frame to a listener that cannot prove it back (an impostor on a restarted peer's port).
//!   A stranger learns nothing but that a squall worker listens there.
//! - TLS ([`TransportOptions::tls`], `[cluster] tls`): the secret's handshake runs inside a
//!   TLS connection ([`squall_engine::tls`]); a peer without a certificate signed by the CA
//!   is refused during the TLS handshake (counted as refused, logged), and a worker dialing a
//!   peer checks that the peer's certificate names the IP it dialed.
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
//!   listener, connections and connection attempts; forwarders then end (what is still
//!   queued for them is counted as dropped; later sends to them fail, which executors take
//!   as a task that has ended and drop the batch).
//! - Rewire ([`Remote::rewire`], a live rebalance): each attach or rewire builds a
//!   generation (routes, drainers, connection managers, forwarders) for one plan and
//!   version. `rewire(plan, version, links)` takes `links` sized `plan.task_count()` with the
//!   inbox senders of the tasks the new plan places here (kept and new ones) and fills every
//!   task placed elsewhere with a new forwarder, as attach does; then hellos say and must say
//!   `version`. The previous generation ends at once: its managers stop and their connections
//!   close (what was queued for them, and still in its forwarders' queues, is dropped and
//!   counted; the acker replays it), its forwarders end, the accepted connections that said
//!   its version close, and its drainers and spout routes go, even a drainer waiting for room
//!   in a full inbox: the transport then holds no sender of the inbox of a task the new plan
//!   does not place here (that task's executor is being retired). A peer still on the old
//!   version is refused (and refuses) until it rewires too; batches for it wait up to the
//!   hold, counted from the rewire. Peers may differ in length from the new plan's worker
//!   count: a worker not listed is a peer whose address is not known yet. Attach once, then
//!   rewire any number of times; a rewire before attach wires as attach does, with `version`.
//!   The per-tuple path does not change: per batch, a forwarder or drainer that has a batch
//!   ready looks at nothing more than before.

mod codec;
mod credits;
mod frames;
mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use squall_api::TaskId;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use squall_engine::executor::output::INBOX_BATCHES;
use squall_engine::executor::Links;
use squall_engine::launch::Remote;
use squall_engine::plan::Plan;

use credits::{kind, Kind, Placement};
use frames::{Batch, Hello};
use inbound::{accept, drain, Bounds, Inbound, Route};
use outbound::{Forwarder, LinkState, Manager};
use squall_engine::acker::RootBounds;
use squall_engine::auth::Secret;

/// Where every worker of the assignment listens, indexed by worker (`None`: not yet known).
pub type Peers = watch::Receiver<Vec<Option<SocketAddr>>>;

/// The largest frame body: the largest record the log accepts and room around it, so that a
/// tuple carrying any record fits in one frame (64 MiB + 64 KiB).
pub const MAX_FRAME: usize = (64 << 20) + (64 << 10);

/// The version of this protocol, carried by every hello.
pub const PROTOCOL: u32 = 1;

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
/// The most memory "more follows" parts may take on a connection for batches not yet whole
/// (their bytes and what they decoded into): a batch of 256 tuples of 1 MiB each fits.
const MAX_PARTIAL: usize = 4 * MAX_FRAME;
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
    /// `[cluster] tls`: every connection, both ways, is TLS checked against its CA (the
    /// secret's handshake runs inside). Default none: plain TCP.
    pub tls: Option<squall_engine::tls::Tls>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions { credits: INBOX_BATCHES as u32, hold: Duration::from_secs(10), tls: None }
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
    /// Accepted connections refused (no proof of the secret, wrong hello) or closed for
    /// breaking the protocol.
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

/// Why an accepted connection's hello is refused: the text is logged; [`Self::to_peer`] is
/// what the peer is told, which never names this worker's topology or version (a stranger
/// learns nothing from knocking).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum HelloRefusal {
    /// The peer speaks another protocol version.
    #[error("protocol {theirs} (this worker speaks {PROTOCOL})")]
    Protocol { theirs: u32 },
    /// The peer belongs to another topology or assignment version.
    #[error("topology {topology} version {version} (this worker runs {ours} version {our_version})")]
    Assignment { topology: String, version: u64, ours: String, our_version: u64 },
    /// The peer claims to be this very worker.
    #[error("worker {worker} is this worker itself")]
    Itself { worker: u32 },
}

impl HelloRefusal {
    /// The reason sent to the peer: what it said that does not fit, not what would.
    fn to_peer(&self) -> String {
        match self {
            HelloRefusal::Protocol { theirs } => format!("protocol {theirs} is not spoken here"),
            HelloRefusal::Assignment { topology, version, .. } => {
                format!("topology {topology} version {version} is not what this worker runs")
            }
            HelloRefusal::Itself { worker } => format!("worker {worker} is this worker itself"),
        }
    }
}

/// What the tasks of a transport share.
struct Shared {
    topology: String,
    /// The assignment version accepted hellos must say: set by bind, changed by rewire.
    version: AtomicU64,
    me: usize,
    opts: TransportOptions,
    counters: Arc<Counters>,
    /// Set by attach; connections wait for it before they read batches.
    inbound: watch::Receiver<Option<Arc<Inbound>>>,
    /// (topology, version, worker) of hellos already refused with a log line.
    refusals: Mutex<HashSet<(String, u64, u32)>>,
    /// What connections prove they know, both ways.
    secret: Secret,
    /// Accepted connections that failed the handshake (logged at powers of two).
    auth_failures: AtomicU64,
}

impl Shared {
    /// This worker's hello for assignment `version`.
    fn hello(&self, version: u64) -> Hello<'_> {
        Hello {
            protocol: PROTOCOL,
            topology: Cow::Borrowed(&self.topology),
            version,
            worker: self.me as u32,
            credits: self.opts.credits,
        }
    }

    fn check_hello(&self, h: &Hello) -> Result<(), HelloRefusal> {
        if h.protocol != PROTOCOL {
            return Err(HelloRefusal::Protocol { theirs: h.protocol });
        }
        let version = self.version.load(Relaxed);
        if h.topology != self.topology || h.version != version {
            return Err(HelloRefusal::Assignment {
                topology: h.topology.to_string(),
                version: h.version,
                ours: self.topology.clone(),
                our_version: version,
            });
        }
        if h.worker as usize == self.me {
            return Err(HelloRefusal::Itself { worker: h.worker });
        }
        Ok(())
    }

    /// Logs a refused hello once per (topology, version, worker).
    fn log_refusal(&self, from: SocketAddr, h: &Hello, why: &HelloRefusal) {
        let key = (h.topology.to_string(), h.version, h.worker);
        let first = self.refusals.lock().map(|mut seen| seen.len() < REFUSALS_LOGGED && seen.insert(key));
        if first.unwrap_or(false) {
            tracing::warn!("transport: refused worker {} at {from}: {why}", h.worker);
        } else {
            tracing::debug!("transport: refused worker {} at {from}: {why}", h.worker);
        }
    }
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
    _shutdown: watch::Sender<()>,
    /// Never sent: dropped by a rewire (replaced by the next generation's) and with the
    /// transport; the managers, forwarders (through their links) and drainers of the current
    /// generation end then.
    generation: watch::Sender<()>,
}

impl Transport {
    /// Binds `addr` (port 0: any free port) for the worker `me` of `topology`'s assignment
    /// `version`; peers that do not know `secret`, or of another topology or version, are
    /// refused.
    pub async fn bind(
        addr: SocketAddr,
        secret: &Secret,
        topology: &str,
        version: u64,
        me: usize,
        peers: Peers,
    ) -> std::io::Result<Transport> {
        Self::bind_with(addr, secret, topology, version, me, peers, TransportOptions::default()).await
    }

    /// [`bind`](Self::bind) with options.
    pub async fn bind_with(
        addr: SocketAddr,
        secret: &Secret,
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
            version: AtomicU64::new(version),
            me,
            opts,
            counters: Arc::default(),
            inbound,
            refusals: Mutex::default(),
            secret: secret.clone(),
            auth_failures: AtomicU64::new(0),
        });
        let (shutdown, stop) = watch::channel(());
        tokio::spawn(accept(listener, shared.clone(), stop));
        let (closed, _) = watch::channel(false);
        let (generation, _) = watch::channel(());
        Ok(Transport {
            addr,
            shared,
            peers,
            inbound: None,
            inbound_tx,
            closed,
            _shutdown: shutdown,
            generation,
        })
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

impl Transport {
    /// Builds a generation for `plan` and `version`: attach's and rewire's work.
    fn wire(&mut self, plan: &Plan, version: u64, links: &mut Links) {
        let me = self.shared.me;
        let n = plan.task_count();
        for l in [links.bolts.len(), links.ackers.len(), links.spouts.len()] {
            assert_eq!(l, n, "links are indexed by the plan's task ids");
        }
        let (placement, slots_of_worker) = Placement::new(plan);
        let placement = Arc::new(placement);
        let generation = self.generation.subscribe();

        // Inbound: a drainer per hosted bolt and acker task, the spout inboxes as they are.
        let closed = *self.closed.borrow();
        let mut routes = Vec::with_capacity(n);
        let mut spouts = vec![None; n];
        for (t, spout) in spouts.iter_mut().enumerate() {
            let Some(kind) = kind(plan, t).filter(|_| placement.host[t] == Some(me)) else {
                routes.push(Route::Elsewhere); // hosted elsewhere, or a hole
                continue;
            };
            let slot = placement.slot[t];
            let route = match kind {
                Kind::Spout => links.spouts[t].clone().map(|tx| {
                    *spout = Some(tx).filter(|_| !closed);
                    Route::Spout
                }),
                Kind::Bolt => links.bolts[t].clone().map(|tx| {
                    let (queue, rx) = mpsc::unbounded_channel();
                    tokio::spawn(drain(t as TaskId, rx, tx, self.closed.subscribe(), generation.clone()));
                    Route::Bolt { slot, queue }
                }),
                Kind::Acker => links.ackers[t].clone().map(|tx| {
                    let (queue, rx) = mpsc::unbounded_channel();
                    tokio::spawn(drain(t as TaskId, rx, tx, self.closed.subscribe(), generation.clone()));
                    Route::Acker { slot, queue }
                }),
            };
            routes.push(route.unwrap_or_else(|| {
                tracing::warn!("transport: task {t} is placed on this worker but has no inbox here");
                Route::Elsewhere
            }));
        }
        let slots = slots_of_worker.get(me).copied().unwrap_or(0);
        let bounds = Bounds {
            streams: plan.streams.len() as u32,
            tasks: placement.host.iter().map(Option::is_some).collect(),
            roots: RootBounds::new(plan.spout_id_space(), plan.settings.max_spout_pending),
        };
        let inbound = Arc::new(Inbound { version, routes, spouts: RwLock::new(spouts), slots, bounds });
        self.inbound = Some(inbound.clone());
        self.inbound_tx.send_replace(Some(inbound));

        // Outbound: per peer, a connection manager; per remote task, a forwarder.
        let hold = self.shared.opts.hold;
        let counters = &self.shared.counters;
        for (peer, &slots) in slots_of_worker.iter().enumerate() {
            if peer == me || !placement.host.contains(&Some(peer)) {
                continue;
            }
            let (link, link_rx) = watch::channel(LinkState::Down { since: Instant::now() });
            let (alive, alive_rx) = mpsc::channel::<()>(1);
            for t in (0..n).filter(|&t| placement.host[t] == Some(peer)) {
                let Some(kind) = kind(plan, t) else { continue };
                let task = t as TaskId;
                let slot = placement.slot[t] as usize;
                let fwd = Forwarder {
                    task,
                    link: link_rx.clone(),
                    hold,
                    counters: counters.clone(),
                    _alive: alive.clone(),
                };
                match kind {
                    Kind::Spout => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        links.spouts[t] = Some(tx);
                        tokio::spawn(fwd.outcomes(rx));
                    }
                    Kind::Bolt => {
                        let (tx, rx) = mpsc::channel(INBOX_BATCHES);
                        links.bolts[t] = Some(tx);
                        tokio::spawn(fwd.credited(slot, rx, Batch::Bolts));
                    }
                    Kind::Acker => {
                        let (tx, rx) = mpsc::channel(INBOX_BATCHES);
                        links.ackers[t] = Some(tx);
                        tokio::spawn(fwd.credited(slot, rx, Batch::Ackers));
                    }
                }
            }
            drop(alive);
            let manager = Manager {
                peer,
                version,
                slots,
                shared: self.shared.clone(),
                placement: placement.clone(),
                peers: self.peers.clone(),
                link,
                alive: alive_rx,
                stop: generation.clone(),
            };
            tokio::spawn(manager.run());
        }
    }
}

impl Remote for Transport {
    /// Switches this running worker to `plan`, assignment `version` (a live rebalance; see
    /// the module docs): `links` is sized `plan.task_count()` and holds the senders of the
    /// inboxes of the tasks `plan.task_worker` places on this worker (kept tasks' and new
    /// ones'); it gets a new forwarder for every task placed elsewhere, as with attach. The
    /// previous generation ends: its managers, forwarders and connections (both ways) close,
    /// and this transport keeps no sender of an inbox it is not given here. Hellos say and
    /// must say `version` from now on. Before attach, it wires as attach does (with
    /// `version`). Spawns on the current runtime.
    fn rewire(&mut self, plan: &Plan, version: u64, links: &mut Links) {
        match self.inbound.take() {
            Some(old) => {
                // Dropping the generation's sender ends its managers (so their links close and
                // forwarders end) and drainers; its spout inboxes are let go here.
                self.generation = watch::channel(()).0;
                if let Ok(mut spouts) = old.spouts.write() {
                    spouts.iter_mut().for_each(|s| *s = None);
                }
                tracing::info!(
                    "transport: rewiring from version {} to version {version}",
                    self.shared.version.load(Relaxed)
                );
            }
            None => tracing::info!("transport: rewire before attach: wiring version {version} as attach"),
        }
        self.shared.version.store(version, Relaxed);
        // Publishing the new generation closes the accepted connections of the previous one.
        self.wire(plan, version, links);
    }

    /// Wires this worker into the plan (see the module docs): `links` holds the senders of
    /// the inboxes of the tasks `plan.task_worker` places on this worker, and gets a
    /// forwarder for every task placed elsewhere. Call it once (then [`Remote::rewire`]
    /// for each new plan). Spawns on the current runtime.
    fn attach(&mut self, plan: &Plan, links: &mut Links) {
        if self.inbound.is_some() {
            tracing::error!(
                "transport: attach called twice; the second call is ignored (rewire switches plans)"
            );
            return;
        }
        let version = self.shared.version.load(Relaxed);
        self.wire(plan, version, links);
    }
}

/// Resolves once the transport is dropped.
async fn stopped(stop: &mut watch::Receiver<()>) {
    while stop.changed().await.is_ok() {}
}
