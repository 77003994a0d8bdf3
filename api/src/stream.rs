//! Output streams: what a component declares it emits.
//!
//! Contract: every component declares its output streams once, before it runs, through an
//! [`OutputDeclarer`]. A stream has a name (default [`DEFAULT_STREAM`]), the names of its
//! fields, and whether it is direct (the emitter picks the receiving task). Emitting on an
//! undeclared stream, with the wrong number of values, or directly on a non-direct stream is an
//! [`EmitError`], never a panic.

use crate::tuple::{Fields, TaskId};

/// The stream a component emits on unless it names another.
pub const DEFAULT_STREAM: &str = "default";

/// One declared output stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamDecl {
    pub name: String,
    pub fields: Fields,
    pub direct: bool,
    /// The stream carries the fields of the component's input (which must be one stream's
    /// fields); validation replaces `fields` with them and clears this flag.
    pub passthrough: bool,
}

/// Collects a component's stream declarations.
#[derive(Debug, Default, Clone)]
pub struct OutputDeclarer {
    streams: Vec<StreamDecl>,
}

impl OutputDeclarer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares the default stream with these fields.
    pub fn declare(&mut self, fields: impl Into<Fields>) -> &mut Self {
        self.declare_stream(DEFAULT_STREAM, fields)
    }

    /// Declares a named stream. Declaring a name twice keeps the last declaration.
    pub fn declare_stream(&mut self, name: &str, fields: impl Into<Fields>) -> &mut Self {
        self.push(StreamDecl {
            name: name.to_string(),
            fields: fields.into(),
            direct: false,
            passthrough: false,
        })
    }

    /// Declares a stream whose fields are those of this component's input stream(s), for
    /// components that pass tuples through (a filter, a flaky test bolt). Every input must
    /// carry the same fields; the topology file's validation checks that and fills them in.
    pub fn declare_passthrough(&mut self, name: &str) -> &mut Self {
        self.push(StreamDecl {
            name: name.to_string(),
            fields: Fields::empty(),
            direct: false,
            passthrough: true,
        })
    }

    /// Declares a direct stream: tuples on it go to the task the emitter names.
    pub fn declare_direct_stream(&mut self, name: &str, fields: impl Into<Fields>) -> &mut Self {
        self.push(StreamDecl {
            name: name.to_string(),
            fields: fields.into(),
            direct: true,
            passthrough: false,
        })
    }

    fn push(&mut self, decl: StreamDecl) -> &mut Self {
        self.streams.retain(|s| s.name != decl.name);
        self.streams.push(decl);
        self
    }

    pub fn streams(&self) -> &[StreamDecl] {
        &self.streams
    }

    pub fn into_streams(self) -> Vec<StreamDecl> {
        self.streams
    }

    pub fn stream(&self, name: &str) -> Option<&StreamDecl> {
        self.streams.iter().find(|s| s.name == name)
    }
}

/// Why an emit was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmitError {
    #[error("stream \"{stream}\" is not declared by component {component}")]
    UnknownStream { component: String, stream: String },
    #[error("stream \"{stream}\" of component {component} has {expected} fields {fields} but {got} values were emitted")]
    Arity { component: String, stream: String, fields: String, expected: usize, got: usize },
    #[error("stream \"{stream}\" is direct: emit on it with emit_direct")]
    DirectRequired { stream: String },
    #[error("emit_direct on stream \"{stream}\", which is not declared direct")]
    NotDirect { stream: String },
    #[error("task {task} does not subscribe to stream \"{stream}\" with direct grouping")]
    NotSubscribed { stream: String, task: TaskId },
}
