//! `shell-spout`: a spout whose tuples come from a child process, as Storm's ShellSpout.
//!
//! Contract: `open` starts the task's child (a child that cannot start is a task that cannot
//! start). `next_tuple` sends `next` and handles what the child says until its `sync`: emits
//! (reliable when they carry an `id`, which comes back in `ack` / `fail`; on the stream and
//! direct task they name; answered with the receiving task ids unless `need_task_ids` is
//! false), logs, errors and metrics. `ack`, `fail`, `activate` and `deactivate` are sent to the
//! child at once, and its answers (a `sync` each, and whatever it emits meanwhile, such as a
//! replay from `fail`) are handled at the next `next_tuple`, where tuples can be emitted;
//! at `close`, what it emits then is dropped (and logged). A child silent for `timeout_secs`
//! while owing a `sync`, gone, or writing something that is not the protocol is reported
//! (component, task, why, the offending text or its exit status and last stderr lines) and
//! started again with backoff; its in-flight tuples time out or are failed by the acker as
//! usual, and their outcomes go to the new child.

use std::time::Instant;

use squall_api::{
    async_trait, BoxError, MessageId, OutputDeclarer, Spout, SpoutCollector, TopologyContext, DEFAULT_STREAM,
};

use crate::child::{Child, Event, Spec};
use crate::codec::{self, ChildMsg};
use crate::config::{handshake_context, ShellConfig};
use crate::liveness::Backoff;
use crate::log_child_line;

pub struct ShellSpout {
    config: ShellConfig,
    session: Option<Session>,
}

impl ShellSpout {
    pub fn new(config: ShellConfig) -> Result<ShellSpout, BoxError> {
        Ok(ShellSpout { config: config.check()?, session: None })
    }
}

struct Session {
    spec: Spec,
    conf: serde_json::Value,
    context: serde_json::Value,
    timeout: std::time::Duration,
    child: Option<Child>,
    backoff: Backoff,
    /// Commands sent whose `sync` has not come yet.
    owed: usize,
}

#[async_trait]
impl Spout for ShellSpout {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        self.config.declare(out);
    }

    async fn open(&mut self, ctx: &TopologyContext) -> Result<(), BoxError> {
        let mut outputs = OutputDeclarer::new();
        self.config.declare(&mut outputs);
        let mut session = Session {
            spec: self.config.spec(ctx),
            conf: self.config.handshake_conf(ctx),
            context: handshake_context(ctx, &outputs),
            timeout: self.config.timeout(),
            child: None,
            backoff: Backoff::default(),
            owed: 0,
        };
        session.start().await?;
        self.session = Some(session);
        Ok(())
    }

    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError> {
        let s = self.session.as_mut().ok_or("shell-spout: next_tuple before open")?;
        if s.child.is_none() {
            if s.backoff.not_before().is_some_and(|at| at > Instant::now()) {
                return Ok(());
            }
            if let Err(e) = s.start().await {
                let wait = s.backoff.failed(Instant::now());
                out.report_error(&format!(
                    "cannot start the child again: {e}; trying again in {}ms",
                    wait.as_millis()
                ));
                return Ok(());
            }
        }
        s.command("next");
        s.settle(Some(out)).await;
        Ok(())
    }

    async fn ack(&mut self, msg_id: MessageId) {
        if let Some(s) = &mut self.session {
            s.outcome("ack", &msg_id);
        }
    }

    async fn fail(&mut self, msg_id: MessageId) {
        if let Some(s) = &mut self.session {
            s.outcome("fail", &msg_id);
        }
    }

    async fn activate(&mut self) {
        if let Some(s) = &mut self.session {
            s.command("activate");
        }
    }

    async fn deactivate(&mut self) {
        if let Some(s) = &mut self.session {
            s.command("deactivate");
        }
    }

    async fn close(&mut self) {
        if let Some(s) = &mut self.session {
            s.settle(None).await;
            s.child = None;
        }
    }
}

impl Session {
    async fn start(&mut self) -> Result<(), String> {
        let child = Child::start(&self.spec, &self.conf, &self.context, self.timeout).await?;
        self.child = Some(child);
        self.owed = 0;
        self.backoff.started(Instant::now());
        Ok(())
    }

    fn command(&mut self, command: &str) {
        if let Some(child) = &self.child {
            let mut buf = child.buffer();
            codec::encode_command(&mut buf, command);
            child.send(buf);
            self.owed += 1;
        }
    }

    fn outcome(&mut self, command: &str, msg_id: &MessageId) {
        if let Some(child) = &self.child {
            let mut buf = child.buffer();
            codec::encode_outcome(&mut buf, command, msg_id);
            child.send(buf);
            self.owed += 1;
        }
    }

    /// Handles the child's messages until it has answered every command sent.
    async fn settle(&mut self, mut out: Option<&mut dyn SpoutCollector>) {
        let mut deadline = Instant::now() + self.timeout;
        while self.owed > 0 {
            let Some(child) = self.child.as_mut() else { return };
            let event = match child.recv_until(deadline.into()).await {
                Some(event) => event,
                None => {
                    let why = format!("did not answer within {}s (timeout_secs)", self.timeout.as_secs());
                    return self.fault(out, why).await;
                }
            };
            deadline = Instant::now() + self.timeout;
            let msg = match event {
                Event::Msg(msg) => msg,
                Event::Gone(why) => return self.fault(out, why).await,
            };
            match msg {
                ChildMsg::Sync => self.owed -= 1,
                ChildMsg::Emit(emit) => {
                    let mut tasks: &[u32] = &[];
                    match out.as_deref_mut() {
                        Some(out) => {
                            let stream = emit.stream.as_deref().unwrap_or(DEFAULT_STREAM);
                            match out.emit_to(stream, emit.tuple, emit.id, emit.task) {
                                Ok(()) => tasks = out.last_targets(),
                                Err(e) => out.report_error(&format!("the child's emit was refused: {e}")),
                            }
                        }
                        None => tracing::warn!(
                            component = %self.spec.component,
                            task = self.spec.task,
                            "the child emitted while closing; dropped: {:?}",
                            emit.tuple
                        ),
                    }
                    if emit.need_task_ids {
                        let mut buf = child.buffer();
                        codec::encode_task_ids(&mut buf, tasks);
                        child.send(buf);
                    }
                }
                ChildMsg::Log { msg, level } => log_child_line(&self.spec, level, &msg),
                ChildMsg::Error(msg) => report(&mut out, &self.spec, &msg),
                ChildMsg::Metrics { name, params } => {
                    tracing::debug!(component = %self.spec.component, task = self.spec.task, "metric {name}: {params:?}")
                }
                other => report(
                    &mut out,
                    &self.spec,
                    &format!("a spout's child sent {other:?}, which spouts do not"),
                ),
            }
        }
    }

    async fn fault(&mut self, mut out: Option<&mut dyn SpoutCollector>, why: String) {
        let text = match self.child.as_mut() {
            Some(child) => child.gone(why).await,
            None => why,
        };
        self.child = None;
        self.owed = 0;
        let wait = self.backoff.failed(Instant::now());
        report(&mut out, &self.spec, &format!("{text}; starting it again in {}ms", wait.as_millis()));
    }
}

fn report(out: &mut Option<&mut dyn SpoutCollector>, spec: &Spec, text: &str) {
    match out {
        Some(out) => out.report_error(text),
        None => tracing::warn!(component = %spec.component, task = spec.task, "{text}"),
    }
}
