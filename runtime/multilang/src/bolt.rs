//! `shell-bolt`: a bolt whose work is done by a child process, as Storm's ShellBolt.
//!
//! Contract: `prepare` starts the task's child (a child that cannot start is a task that
//! cannot start). Each input goes to the child as a tuple with a fresh id and waits in the
//! in-flight table until the child acks or fails that id; `execute` returns as soon as the
//! input is written unless `max_pending` inputs are in flight, in which case it waits for the
//! child (so a slow child holds back its inputs, like any slow bolt). Whatever the child
//! said meanwhile is handled at each `execute` and at the bolt's own ticks (every
//! [`DRAIN_EVERY`]): emits (anchored to the in-flight inputs they name, on the stream and
//! direct task they name, answered with the receiving task ids unless `need_task_ids` is
//! false), acks, fails, logs, errors, metrics and heartbeat syncs. A heartbeat tuple goes to
//! the child every second; a child silent for `timeout_secs`, gone, or writing something that
//! is not the protocol is reported (component, task, why, the offending text or the exit
//! status and last stderr lines), every input it held is failed, so spouts replay them, and
//! it is started again with backoff at the next input. Tick tuples reach the child only if
//! the topology file sets `tick_secs` for the component (Storm sends them only then).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use squall_api::{
    async_trait, Bolt, BoltCollector, BoxError, OutputDeclarer, TopologyContext, Tuple, DEFAULT_STREAM,
};

use crate::child::{Child, Event, Spec};
use crate::codec::{self, ChildMsg, Emit};
use crate::config::{handshake_context, ShellConfig};
use crate::liveness::{Backoff, Heartbeat, HEARTBEAT_EVERY};
use crate::log_child_line;

/// How often the bolt looks at its child when no input comes.
pub const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Messages handled per call when not waiting, so the task's output is flushed in between.
const HANDLED_PER_CALL: usize = 4096;

pub struct ShellBolt {
    config: ShellConfig,
    session: Option<Session>,
}

impl ShellBolt {
    pub fn new(config: ShellConfig) -> Result<ShellBolt, BoxError> {
        Ok(ShellBolt { config: config.check()?, session: None })
    }
}

struct Session {
    spec: Spec,
    conf: serde_json::Value,
    context: serde_json::Value,
    timeout: Duration,
    max_pending: usize,
    forward_ticks: bool,
    child: Option<Child>,
    heartbeat: Heartbeat,
    backoff: Backoff,
    /// Inputs handed to the child, by the id it knows them by.
    pending: HashMap<u64, Tuple>,
    next_id: u64,
}

#[async_trait]
impl Bolt for ShellBolt {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        self.config.declare(out);
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(DRAIN_EVERY)
    }

    async fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        let mut outputs = OutputDeclarer::new();
        self.config.declare(&mut outputs);
        let timeout = self.config.timeout();
        let mut session = Session {
            spec: self.config.spec(ctx),
            conf: self.config.handshake_conf(ctx),
            context: handshake_context(ctx, &outputs),
            timeout,
            max_pending: self.config.max_pending,
            forward_ticks: ctx.tick_secs().is_some(),
            child: None,
            heartbeat: Heartbeat::new(timeout, Instant::now()),
            backoff: Backoff::default(),
            pending: HashMap::new(),
            next_id: 1,
        };
        session.start().await?;
        self.session = Some(session);
        Ok(())
    }

    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError> {
        let s = self.session.as_mut().ok_or("shell-bolt: execute before prepare")?;
        if input.is_tick() && !s.forward_ticks {
            s.service(out, false).await;
            return Ok(());
        }
        if s.child.is_none() {
            if let Some(at) = s.backoff.not_before() {
                tokio::time::sleep_until(at.into()).await;
            }
            if let Err(e) = s.start().await {
                out.report_error(&format!("cannot start the child again: {e}"));
                s.backoff.failed(Instant::now());
                out.fail(input);
                return Ok(());
            }
        }
        let child = s.child.as_ref().expect("started above");
        let id = s.next_id;
        s.next_id += 1;
        let mut buf = child.buffer();
        let task = if input.is_tick() { -1 } else { i64::from(input.source_task()) };
        codec::encode_tuple(&mut buf, id, input.source_component(), input.stream(), task, input.values());
        child.send(buf);
        s.pending.insert(id, input);
        s.service(out, true).await;
        Ok(())
    }

    async fn cleanup(&mut self) {
        if let Some(s) = &mut self.session {
            if !s.pending.is_empty() {
                tracing::warn!(
                    component = %s.spec.component,
                    task = s.spec.task,
                    "stopping its child with {} inputs in flight (they time out and are replayed)",
                    s.pending.len()
                );
            }
            s.child = None;
        }
    }
}

impl Session {
    async fn start(&mut self) -> Result<(), String> {
        let child = Child::start(&self.spec, &self.conf, &self.context, self.timeout).await?;
        let now = Instant::now();
        self.child = Some(child);
        self.heartbeat = Heartbeat::new(self.timeout, now);
        self.backoff.started(now);
        Ok(())
    }

    /// Handles what the child said; waits for it while `may_wait` and the in-flight table is
    /// full. Sends heartbeats, and notices a child that is gone or silent.
    async fn service(&mut self, out: &mut dyn BoltCollector, may_wait: bool) {
        let mut handled = 0;
        loop {
            let Some(child) = self.child.as_mut() else { return };
            let now = Instant::now();
            if let Some(silent) = self.heartbeat.expired(now) {
                let why = format!(
                    "did not answer for {}s (timeout_secs = {})",
                    silent.as_secs(),
                    self.timeout.as_secs()
                );
                self.fault(out, why).await;
                return;
            }
            if self.heartbeat.due(now) {
                let mut buf = child.buffer();
                codec::encode_heartbeat(&mut buf);
                child.send(buf);
            }
            let event = if may_wait && self.pending.len() >= self.max_pending {
                let wake = self.heartbeat.deadline().min(now + HEARTBEAT_EVERY);
                match child.recv_until(wake.into()).await {
                    Some(event) => event,
                    None => continue,
                }
            } else {
                if handled >= HANDLED_PER_CALL {
                    return;
                }
                match child.try_recv() {
                    Some(event) => event,
                    None => return,
                }
            };
            handled += 1;
            self.handle(event, out).await;
        }
    }

    async fn handle(&mut self, event: Event, out: &mut dyn BoltCollector) {
        let msg = match event {
            Event::Msg(msg) => msg,
            Event::Gone(why) => return self.fault(out, why).await,
        };
        match msg {
            ChildMsg::Emit(emit) => self.emit(emit, out),
            ChildMsg::Ack(id) => {
                self.heartbeat.alive(Instant::now());
                match self.pending.remove(&id) {
                    Some(input) => out.ack(input),
                    None => out.report_error(&format!("the child acked tuple {id}, which it does not hold")),
                }
            }
            ChildMsg::Fail(id) => {
                self.heartbeat.alive(Instant::now());
                match self.pending.remove(&id) {
                    Some(input) => out.fail(input),
                    None => out.report_error(&format!("the child failed tuple {id}, which it does not hold")),
                }
            }
            ChildMsg::Sync => self.heartbeat.answered(Instant::now()),
            ChildMsg::Log { msg, level } => log_child_line(&self.spec, level, &msg),
            ChildMsg::Error(msg) => out.report_error(&msg),
            ChildMsg::Metrics { name, params } => {
                tracing::debug!(component = %self.spec.component, task = self.spec.task, "metric {name}: {params:?}")
            }
            ChildMsg::Pid(pid) => out.report_error(&format!("the child sent its pid ({pid}) again")),
        }
    }

    fn emit(&mut self, emit: Emit, out: &mut dyn BoltCollector) {
        let Session { pending, child, spec, .. } = self;
        let anchors: SmallVec<[&Tuple; 2]> = emit.anchors.iter().filter_map(|id| pending.get(id)).collect();
        if anchors.len() != emit.anchors.len() {
            out.report_error(&format!(
                "the child anchored an emit to tuples it no longer holds ({:?}); emitted without them",
                emit.anchors.iter().filter(|id| !pending.contains_key(id)).collect::<Vec<_>>()
            ));
        }
        let stream = emit.stream.as_deref().unwrap_or(DEFAULT_STREAM);
        let sent = out.emit_to(stream, &anchors, emit.tuple, emit.task);
        if let Err(e) = &sent {
            tracing::debug!(component = %spec.component, task = spec.task, "emit refused: {e}");
            out.report_error(&format!("the child's emit was refused: {e}"));
        }
        if emit.need_task_ids {
            if let Some(child) = child {
                let mut buf = child.buffer();
                codec::encode_task_ids(&mut buf, if sent.is_ok() { out.last_targets() } else { &[] });
                child.send(buf);
            }
        }
    }

    /// The child is unusable: report why, fail what it held, stop it; the next input starts
    /// another after the backoff.
    async fn fault(&mut self, out: &mut dyn BoltCollector, why: String) {
        let text = match self.child.as_mut() {
            Some(child) => child.gone(why).await,
            None => why,
        };
        self.child = None;
        let failed = self.pending.len();
        for (_, input) in self.pending.drain() {
            out.fail(input);
        }
        let wait = self.backoff.failed(Instant::now());
        out.report_error(&format!(
            "{text}; failed its {failed} in-flight tuples; starting it again in {}ms",
            wait.as_millis()
        ));
    }
}
