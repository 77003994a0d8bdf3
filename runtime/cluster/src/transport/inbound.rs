//! The accepting side of the transport: batches in, credits out.
//!
//! Contract: a connection a peer opens starts with the handshake of
//! [`squall_engine::auth`] (the peer proves it knows the cluster secret, and this worker
//! proves it back): a peer that cannot is closed before any of its frames is read, counted as
//! refused and logged. Then comes its hello, checked against this worker's
//! topology, version and protocol (refused with the reason otherwise); then it carries
//! batches one way and credits the other. The reader never waits for a task: it hands each
//! whole batch (parts joined) to the task's delivery queue, whose drainer waits for room in
//! the inbox and then returns the batch's credit; the credit writer sends every credit ready
//! in one frame. After `close_inbound`, batches are discarded and still credited. A
//! connection that breaks the protocol is closed and counted as refused; others go on.
//!
//! Generations: what attach or rewire builds ([`Inbound`]: routes, drainers, spout inboxes)
//! belongs to one assignment version. A rewire publishes the next one: every connection
//! serving the previous one closes (its peer reconnects and says the new version, or is
//! refused until it has rewired too), and the previous drainers end at once, dropping the
//! inbox senders they hold, even one waiting for room in an inbox nobody reads any more.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use squall_api::TaskId;
use squall_engine::acker::{AckerMsg, Outcome, RootBounds};
use squall_engine::checkpoint::is_system_stream;
use squall_engine::executor::Envelope;
use squall_engine::{auth, frame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::codec;
use super::credits::{take_credit, tally};
use super::frames::{decode, put_frame, read_frame, read_hello, write_frame, Batch, ConnError, Frame};
use super::{stopped, Counters, Shared, MAX_FRAME, MAX_PARTIAL};

/// How batches for this worker's tasks are delivered (built by attach and each rewire).
pub(super) struct Inbound {
    /// The assignment version this generation serves: connections that said another close.
    pub(super) version: u64,
    /// By task id.
    pub(super) routes: Vec<Route>,
    /// Spout inboxes by task id; emptied by close_inbound.
    pub(super) spouts: RwLock<Vec<Option<mpsc::UnboundedSender<Vec<Outcome>>>>>,
    /// Bolt and acker tasks hosted here: the credit slots of a connection.
    pub(super) slots: usize,
    /// What a batch may name (see [`Bounds`]).
    pub(super) bounds: Bounds,
}

/// The indices a batch from a peer may carry, from the plan: a tuple's stream and source
/// task (a task of the plan, not a hole), an acker message's root. Anything else closes the
/// connection before any task sees it (a compare and a lookup per item, no allocation).
#[derive(Debug, Clone)]
pub(super) struct Bounds {
    pub(super) streams: u32,
    /// By task id: whether a task has that id (`false`: a hole).
    pub(super) tasks: Vec<bool>,
    pub(super) roots: RootBounds,
}

impl Bounds {
    fn check_tuples(&self, batch: &[Envelope]) -> Result<(), ConnError> {
        for e in batch {
            let source = self.tasks.get(e.source_task as usize).copied().unwrap_or(false);
            if (e.stream >= self.streams && !is_system_stream(e.stream)) || !source {
                return Err(ConnError::Protocol(format!(
                    "a tuple on stream {} from task {}, which the topology does not have",
                    e.stream, e.source_task
                )));
            }
        }
        Ok(())
    }

    fn check_acker_msgs(&self, batch: &[AckerMsg]) -> Result<(), ConnError> {
        match batch.iter().find(|m| !self.roots.admits(m.root())) {
            Some(m) => Err(ConnError::Protocol(format!(
                "an acker message for root {:#x}, which no spout task of the topology can make",
                m.root()
            ))),
            None => Ok(()),
        }
    }
}

pub(super) enum Route {
    /// Not hosted here, or a hole.
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
pub(super) struct Delivery<T> {
    pub(super) batch: Vec<T>,
    pub(super) credit: mpsc::UnboundedSender<TaskId>,
}

pub(super) async fn accept(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
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
        Err(ConnError::Tls(e)) => {
            Counters::add(&shared.counters.refused, 1);
            let failures = shared.auth_failures.fetch_add(1, Relaxed) + 1;
            if failures.is_power_of_two() {
                tracing::warn!("transport: refused a connection: {e} ({failures} so far)");
            } else {
                tracing::debug!("transport: refused a connection: {e}");
            }
        }
        Err(ConnError::Auth(e)) => {
            Counters::add(&shared.counters.refused, 1);
            let failures = shared.auth_failures.fetch_add(1, Relaxed) + 1;
            if failures.is_power_of_two() {
                tracing::warn!(
                    "transport: closed the connection from {from} unread: {e} ({failures} so far)"
                );
            } else {
                tracing::debug!("transport: closed the connection from {from} unread: {e}");
            }
        }
        Err(e @ (ConnError::Protocol(_) | ConnError::Codec(_))) => {
            Counters::add(&shared.counters.refused, 1);
            tracing::warn!("transport: closing the connection from {from}: {e}");
        }
    }
}

/// Serves one accepted connection until it closes.
async fn serve(shared: &Shared, stream: TcpStream, from: SocketAddr) -> Result<(), ConnError> {
    squall_engine::frame::tune(&stream);
    let mut stream = squall_engine::tls::accept(shared.opts.tls.as_ref(), stream, from).await?;
    auth::accept(&mut stream, &shared.secret, auth::WORKER).await?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let mut body = Vec::new();
    let hello = read_hello(&mut rd, &mut body).await?;
    if let Err(why) = shared.check_hello(&hello) {
        shared.log_refusal(from, &hello, &why);
        let why = why.to_peer();
        let _ = write_frame(&mut wr, &Frame::Refused(Cow::Borrowed(&why))).await;
        let _ = wr.shutdown().await;
        return Err(ConnError::Refused(why));
    }
    write_frame(&mut wr, &Frame::Hello(shared.hello(hello.version))).await?;
    tracing::debug!("transport: worker {} connected from {from}", hello.worker);
    let mut attached = shared.inbound.clone();
    if attached.wait_for(|i| i.is_some()).await.is_err() {
        return Ok(()); // the transport is gone
    }
    // Marked seen: a later generation ends this connection (below).
    let Some(inbound) = attached.borrow_and_update().clone() else { return Ok(()) };
    if inbound.version != hello.version {
        // This worker moved to another version between the hello and now.
        tracing::debug!(
            "transport: closing the connection from {from}: this worker no longer runs its version"
        );
        return Ok(());
    }
    let outstanding: Vec<AtomicU32> = (0..inbound.slots).map(|_| AtomicU32::new(0)).collect();
    let (credit_tx, credit_rx) = mpsc::unbounded_channel();
    let reader = read_batches(shared, &inbound, &mut rd, body, credit_tx, &outstanding);
    let writer = write_credits(shared, &inbound, &mut wr, credit_rx, &outstanding);
    tokio::select! {
        result = reader => result,
        result = writer => result,
        _ = attached.changed() => {
            tracing::debug!("transport: closing the connection from {from}: this worker rewired");
            Ok(())
        }
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
        Counters::add(&counters.bytes_received, (frame::PREFIX + body.len()) as u64);
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
            // What the part holds: its bytes and what they decoded into.
            partial_bytes += body.len() + codec::overhead_of(&batch);
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
                inbound.bounds.check_tuples(&batch)?;
                take_credit(&outstanding[*slot as usize], credits, task)?;
                let _ = queue.send(Delivery { batch, credit: credit.clone() });
            }
            (Route::Acker { slot, queue }, Batch::Ackers(_, batch)) => {
                inbound.bounds.check_acker_msgs(&batch)?;
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
        tally(&mut tasks, &mut credits);
        for &(t, n) in &credits {
            if let Some(Route::Bolt { slot, .. } | Route::Acker { slot, .. }) = inbound.routes.get(t as usize)
            {
                outstanding[*slot as usize].fetch_sub(n, Relaxed);
            }
        }
        buf.clear();
        put_frame(&mut buf, &Frame::Credits(Cow::Borrowed(&credits)), MAX_FRAME)?;
        wr.write_all(&buf).await?;
        wr.flush().await?;
        Counters::add(&shared.counters.bytes_sent, buf.len() as u64);
    }
    Ok(())
}

/// Delivers a task's batches from every connection to its inbox, in order, waiting for room,
/// and returns each batch's credit once it is in (or discarded after close_inbound). Ends,
/// dropping the inbox, once its generation is `retired` (a rewire, or the transport dropped)
/// or every connection has let go of its queue. A batch that is ready and fits is delivered
/// without looking at either watch.
pub(super) async fn drain<T>(
    task: TaskId,
    mut queue: mpsc::UnboundedReceiver<Delivery<T>>,
    inbox: mpsc::Sender<Vec<T>>,
    mut closed: watch::Receiver<bool>,
    mut retired: watch::Receiver<()>,
) {
    use mpsc::error::{TryRecvError, TrySendError};
    let mut inbox = Some(inbox);
    loop {
        if inbox.is_some() && (closed.has_changed().is_err() || *closed.borrow()) {
            inbox = None;
        }
        let next = match queue.try_recv() {
            Ok(next) => Some(next),
            Err(TryRecvError::Disconnected) => None,
            // Waits for close_inbound too, so that an idle task's inbox is let go at once.
            Err(TryRecvError::Empty) => tokio::select! {
                next = queue.recv() => next,
                _ = closed.wait_for(|&c| c), if inbox.is_some() => continue,
                _ = stopped(&mut retired) => return,
            },
        };
        let Some(Delivery { batch, credit }) = next else { return };
        if let Some(tx) = &inbox {
            match tx.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Closed(_)) => inbox = None, // the task has ended
                Err(TrySendError::Full(batch)) => tokio::select! {
                    biased;
                    sent = tx.send(batch) => {
                        if sent.is_err() {
                            inbox = None; // the task has ended
                        }
                    }
                    _ = closed.wait_for(|&c| c) => inbox = None,
                    _ = stopped(&mut retired) => return,
                },
            }
        }
        let _ = credit.send(task);
    }
}
