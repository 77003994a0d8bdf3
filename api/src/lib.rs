//! # squall-api
//!
//! What a topology author depends on: [`Value`] and [`Tuple`], the [`Spout`], [`Bolt`] and
//! [`BasicBolt`] traits with their collectors, the windowed forms [`WindowedBolt`] and
//! [`WindowAggregate`], stream declarations, [`TopologyContext`],
//! [`CustomGrouping`], and the [`Registry`] that names component kinds for topology files.
//! This crate knows nothing of how tuples are moved; `squall-runtime` does that.
//!
//! ```
//! use squall_api::{async_trait, values, BasicBolt, BasicCollector, BoxError, NoConfig,
//!                  OutputDeclarer, Registry, Tuple};
//!
//! struct Upper;
//!
//! #[async_trait]
//! impl BasicBolt for Upper {
//!     fn declare_outputs(&self, out: &mut OutputDeclarer) {
//!         out.declare(["word"]);
//!     }
//!     async fn execute(&mut self, input: &Tuple, out: &mut BasicCollector<'_>) -> Result<(), BoxError> {
//!         let word = input.get_str("word")?;
//!         out.emit(values![word.to_uppercase()])?;
//!         Ok(())
//!     }
//! }
//!
//! let mut registry = Registry::new();
//! registry.basic_bolt("upper", |_: NoConfig| Ok(Upper));
//! ```

pub mod bolt;
pub mod context;
pub mod grouping;
pub mod registry;
pub mod spout;
pub mod state;
pub mod stream;
pub mod tuple;
pub mod value;
pub mod window;

pub use async_trait::async_trait;
pub use bolt::{BasicBolt, BasicCollector, Bolt, BoltCollector};
pub use context::TopologyContext;
pub use grouping::CustomGrouping;
pub use registry::{Component, ConfigKey, Emits, KeyDefault, KindDoc, NoConfig, Registry, Role};
pub use spout::{MessageId, Spout, SpoutCollector};
pub use state::{
    BackendConfig, Change, Committed, DynStateful, Guarantee, KeyValueState, MemoryBackend, Participant,
    StateBackend, StatefulBolt,
};
pub use stream::{EmitError, OutputDeclarer, StreamDecl, DEFAULT_STREAM};
pub use tuple::{
    FieldError, FieldRef, Fields, StreamMeta, TaskId, Tuple, Values, SYSTEM_COMPONENT, TICK_STREAM,
};
pub use value::{bucket, StableHasher, Value};
pub use window::{
    Accumulator, DynAggregate, TupleSource, TupleWindow, Tuples, TuplesIter, WindowAggregate,
    WindowCollector, WindowEmitter, WindowedBolt,
};

#[doc(hidden)]
pub use tuple::TreeIds;

/// The error type components return: anything that is an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
