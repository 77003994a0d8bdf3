//! Spouts: the sources of a topology.
//!
//! Contract: the runtime calls [`Spout::next_tuple`] again and again on the spout's own task,
//! never concurrently with its other methods. A call may emit zero or more tuples and should
//! not wait for data: returning without emitting tells the runtime the spout is idle, and it
//! backs off briefly before calling again. A tuple emitted with a message id is reliable: the
//! spout later hears exactly one of [`Spout::ack`] (its whole tree was processed) or
//! [`Spout::fail`] (a bolt failed it, or it timed out) for that id. With acking off, `ack` is
//! called as the tuple is emitted. A bounded spout says [`Spout::is_finished`] once it has
//! nothing left to emit or replay; a local run ends when every spout is finished and every
//! tree has completed.

use async_trait::async_trait;

use crate::context::TopologyContext;
use crate::state::Guarantee;
use crate::stream::{EmitError, OutputDeclarer, DEFAULT_STREAM};
use crate::tuple::{TaskId, Values};
use crate::value::Value;
use crate::BoxError;

/// The id a spout gives a reliable tuple, handed back in `ack` and `fail`.
pub type MessageId = Value;

/// Where a spout's tuples go. The runtime implements it; spouts call it from `next_tuple`.
pub trait SpoutCollector: Send {
    /// Emits `values` on `stream`, reliable if `msg_id` is given, to `direct_task` if the
    /// stream is direct. Every other emit method calls this one.
    fn emit_to(
        &mut self,
        stream: &str,
        values: Values,
        msg_id: Option<MessageId>,
        direct_task: Option<TaskId>,
    ) -> Result<(), EmitError>;

    /// Reports an error to the topology's log and metrics; the spout keeps running.
    fn report_error(&mut self, error: &str);

    /// The tasks the last successful emit went to (what Storm's `emit` returns), for a
    /// collector that routes; empty for one that does not know (a test collector).
    fn last_targets(&self) -> &[TaskId] {
        &[]
    }

    /// Emits an unreliable tuple on the default stream.
    fn emit(&mut self, values: Values) -> Result<(), EmitError> {
        self.emit_to(DEFAULT_STREAM, values, None, None)
    }

    /// Emits a reliable tuple on the default stream.
    fn emit_with_id(&mut self, values: Values, msg_id: MessageId) -> Result<(), EmitError> {
        self.emit_to(DEFAULT_STREAM, values, Some(msg_id), None)
    }

    /// Emits on a named stream.
    fn emit_stream(
        &mut self,
        stream: &str,
        values: Values,
        msg_id: Option<MessageId>,
    ) -> Result<(), EmitError> {
        self.emit_to(stream, values, msg_id, None)
    }

    /// Emits on a direct stream to one task of a subscriber.
    fn emit_direct(
        &mut self,
        task: TaskId,
        stream: &str,
        values: Values,
        msg_id: Option<MessageId>,
    ) -> Result<(), EmitError> {
        self.emit_to(stream, values, msg_id, Some(task))
    }
}

/// A source of tuples. See the module docs for the calling contract.
#[async_trait]
pub trait Spout: Send + 'static {
    /// Declares the streams this spout emits.
    fn declare_outputs(&self, out: &mut OutputDeclarer);

    /// Called once on the spout's task before anything else.
    async fn open(&mut self, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Emits zero or more tuples. Should return promptly; see the module docs.
    async fn next_tuple(&mut self, out: &mut dyn SpoutCollector) -> Result<(), BoxError>;

    /// The tree of the tuple emitted with `msg_id` was fully processed.
    async fn ack(&mut self, _msg_id: MessageId) {}

    /// The tree of the tuple emitted with `msg_id` failed or timed out: replay it if you can.
    async fn fail(&mut self, _msg_id: MessageId) {}

    /// The topology was activated (also called once after `open`).
    async fn activate(&mut self) {}

    /// The topology was deactivated: `next_tuple` is not called until `activate`.
    async fn deactivate(&mut self) {}

    /// Called once when the spout's task ends.
    async fn close(&mut self) {}

    /// True once a bounded spout has emitted everything it will and has nothing to replay.
    fn is_finished(&self) -> bool {
        false
    }

    /// True once a bounded spout will emit no new message: it has read its source to the end
    /// and has no failed message waiting to be emitted again, though some it emitted may still
    /// be in flight. The runtime then ends the stream downstream, so that windows fire what
    /// they hold (their inputs are acked only then, so a spout that waits for every ack before
    /// saying it is finished must say this first). A message failed later is still replayed;
    /// a window that already passed its time treats it as late. By default, [`Self::is_finished`].
    fn is_exhausted(&self) -> bool {
        self.is_finished()
    }

    /// For checkpoints: where to start again so that everything not yet in the checkpoint
    /// being taken is emitted again. With [`Guarantee::ExactlyOnce`], everything emitted so
    /// far is in it (the position is past the last emitted message); with
    /// [`Guarantee::AtLeastOnce`], only what has been acked is (the position is the first
    /// message not acked). `None`: this spout cannot rewind (the default).
    fn position(&self, _guarantee: Guarantee) -> Option<Value> {
        None
    }

    /// Starts again from `position` (one [`Self::position`] returned): forgets every message
    /// in flight or waiting to be replayed; their acks and fails are not delivered.
    async fn rewind(&mut self, _position: &Value) -> Result<(), BoxError> {
        Err("this spout cannot rewind".into())
    }
}
