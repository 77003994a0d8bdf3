//! Bolts: the processing steps of a topology.
//!
//! Contract: the runtime calls [`Bolt::execute`] once per input tuple, one at a time, on the
//! bolt's own task. A bolt may emit any number of tuples per input, anchored to one or more
//! inputs (they join those inputs' tuple trees) or unanchored (they do not), and must ack or
//! fail every input, now or later. If `execute` returns `Err`, the error is reported and the
//! input's trees are failed. A [`BasicBolt`] is the common case made simple: every emit is
//! anchored to the input, and the input is acked when `execute` returns `Ok`, failed on `Err`.

use std::time::Duration;

use async_trait::async_trait;

use crate::context::TopologyContext;
use crate::stream::{EmitError, OutputDeclarer, DEFAULT_STREAM};
use crate::tuple::{TaskId, Tuple, Values};
use crate::BoxError;

/// Where a bolt's tuples and acks go. The runtime implements it.
pub trait BoltCollector: Send {
    /// Emits `values` on `stream`, anchored to `anchors` (may be empty), to `direct_task` if
    /// the stream is direct. Every other emit method calls this one.
    fn emit_to(
        &mut self,
        stream: &str,
        anchors: &[&Tuple],
        values: Values,
        direct_task: Option<TaskId>,
    ) -> Result<(), EmitError>;

    /// This input is done: its part of every tree it belongs to is complete.
    fn ack(&mut self, input: Tuple);

    /// This input failed: every tree it belongs to fails, and its spouts may replay.
    fn fail(&mut self, input: Tuple);

    /// Restarts the message timeout of every tree this input belongs to.
    fn reset_timeout(&mut self, input: &Tuple);

    /// Reports an error to the topology's log and metrics; the bolt keeps running.
    fn report_error(&mut self, error: &str);

    /// The tasks the last successful emit went to (what Storm's `emit` returns), for a
    /// collector that routes; empty for one that does not know (a test collector).
    fn last_targets(&self) -> &[TaskId] {
        &[]
    }

    /// Emits on the default stream, anchored to `anchor`.
    fn emit(&mut self, anchor: &Tuple, values: Values) -> Result<(), EmitError> {
        self.emit_to(DEFAULT_STREAM, &[anchor], values, None)
    }

    /// Emits on the default stream, anchored to several inputs (a join or an aggregate).
    fn emit_anchored(&mut self, anchors: &[&Tuple], values: Values) -> Result<(), EmitError> {
        self.emit_to(DEFAULT_STREAM, anchors, values, None)
    }

    /// Emits on the default stream outside any tree: it is not tracked or replayed.
    fn emit_unanchored(&mut self, values: Values) -> Result<(), EmitError> {
        self.emit_to(DEFAULT_STREAM, &[], values, None)
    }

    /// Emits on a named stream.
    fn emit_stream(&mut self, stream: &str, anchors: &[&Tuple], values: Values) -> Result<(), EmitError> {
        self.emit_to(stream, anchors, values, None)
    }

    /// Emits on a direct stream to one task of a subscriber.
    fn emit_direct(
        &mut self,
        task: TaskId,
        stream: &str,
        anchors: &[&Tuple],
        values: Values,
    ) -> Result<(), EmitError> {
        self.emit_to(stream, anchors, values, Some(task))
    }
}

/// A processing step that acks its inputs itself. See the module docs.
#[async_trait]
pub trait Bolt: Send + 'static {
    /// Declares the streams this bolt emits (none by default: a sink).
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    /// Ask for a tick tuple this often (the topology file's `tick_secs` overrides it).
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Called once on the bolt's task before the first tuple.
    async fn prepare(&mut self, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Processes one input; must eventually ack or fail it through `out`.
    async fn execute(&mut self, input: Tuple, out: &mut dyn BoltCollector) -> Result<(), BoxError>;

    /// Called once when the bolt's task ends (its inputs are closed and drained).
    async fn cleanup(&mut self) {}
}

/// A processing step whose emits are anchored to its input and whose input is acked when
/// `execute` returns `Ok` and failed when it returns `Err`.
#[async_trait]
pub trait BasicBolt: Send + 'static {
    /// Declares the streams this bolt emits (none by default: a sink).
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    /// Ask for a tick tuple this often (the topology file's `tick_secs` overrides it).
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Called once on the bolt's task before the first tuple.
    async fn prepare(&mut self, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Processes one input.
    async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError>;

    /// Called once when the bolt's task ends.
    async fn cleanup(&mut self) {}
}

/// The collector a [`BasicBolt`] gets: every emit is anchored to the current input.
pub struct BasicCollector<'a> {
    inner: &'a mut dyn BoltCollector,
    input: &'a Tuple,
}

impl<'a> BasicCollector<'a> {
    pub fn new(inner: &'a mut dyn BoltCollector, input: &'a Tuple) -> Self {
        BasicCollector { inner, input }
    }

    /// Emits on the default stream, anchored to the input.
    #[inline]
    pub fn emit(&mut self, values: Values) -> Result<(), EmitError> {
        self.inner.emit_to(DEFAULT_STREAM, &[self.input], values, None)
    }

    /// Emits on a named stream, anchored to the input.
    pub fn emit_stream(&mut self, stream: &str, values: Values) -> Result<(), EmitError> {
        self.inner.emit_to(stream, &[self.input], values, None)
    }

    /// Emits on a direct stream to one task, anchored to the input.
    pub fn emit_direct(&mut self, task: TaskId, stream: &str, values: Values) -> Result<(), EmitError> {
        self.inner.emit_to(stream, &[self.input], values, Some(task))
    }

    /// Restarts the message timeout of the input's trees.
    pub fn reset_timeout(&mut self) {
        self.inner.reset_timeout(self.input)
    }

    pub fn report_error(&mut self, error: &str) {
        self.inner.report_error(error)
    }
}
