//! Windowed bolts: bolts that see a stream a window at a time (Storm's windowed bolts).
//!
//! Contract: a bolt kind registered with [`Registry::windowed_bolt`](crate::Registry::windowed_bolt)
//! or [`Registry::aggregate_bolt`](crate::Registry::aggregate_bolt) runs with the `window`
//! table the topology file gives it (length, slide, event time, lag, late tuples). The runtime
//! keeps the window's tuples and calls the bolt when a window fires:
//!
//! - A [`WindowedBolt`] gets the whole window as a [`TupleWindow`]: every tuple in it, those
//!   new since the previous firing, those that left it, and its bounds (milliseconds since the
//!   epoch, start inclusive, end exclusive). Everything it emits through its
//!   [`WindowCollector`] is anchored by the runtime to the window's tuples. The bolt never
//!   acks: the runtime acks each input once every window holding it has fired. If `execute`
//!   returns `Err`, the error is reported and the window's inputs are failed instead.
//! - A [`WindowAggregate`] never sees the window: the runtime folds each tuple into an
//!   accumulator per key as it arrives ([`WindowAggregate::add`]), combines accumulators of
//!   panes with [`WindowAggregate::merge`], and emits [`WindowAggregate::result`] once per key
//!   when the window fires, so memory grows with the keys, not the events. The runtime holds
//!   it type-erased, as a [`DynAggregate`], which every `WindowAggregate` is.
//!
//! A [`TupleWindow`] borrows the runtime's own storage ([`Tuples`]): it copies no tuple.

use std::any::Any;
use std::fmt;
use std::iter::Flatten;

use async_trait::async_trait;

use crate::context::TopologyContext;
use crate::stream::{EmitError, OutputDeclarer, DEFAULT_STREAM};
use crate::tuple::{Tuple, Values};
use crate::value::Value;
use crate::BoxError;

// ---- The tuples of a window. ----

/// Storage that can list some tuples, for runtimes that do not keep them in slices.
pub trait TupleSource: Sync {
    /// How many tuples [`TupleSource::iter`] yields.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tuples, in arrival order.
    fn iter(&self) -> Box<dyn Iterator<Item = &Tuple> + '_>;
}

/// Some tuples of a window, borrowed from the runtime's storage, in arrival order.
#[derive(Clone, Copy)]
pub struct Tuples<'a> {
    repr: Repr<'a>,
}

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// Consecutive runs of tuples (the two halves of a ring buffer, the panes of a window).
    Slices(&'a [&'a [Tuple]]),
    Source(&'a dyn TupleSource),
}

impl<'a> Tuples<'a> {
    /// No tuples.
    pub const EMPTY: Tuples<'static> = Tuples { repr: Repr::Slices(&[]) };

    /// The tuples of `parts`, one run after the other.
    pub fn from_slices(parts: &'a [&'a [Tuple]]) -> Self {
        Tuples { repr: Repr::Slices(parts) }
    }

    /// The tuples `source` lists.
    pub fn from_source(source: &'a dyn TupleSource) -> Self {
        Tuples { repr: Repr::Source(source) }
    }

    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Slices(parts) => parts.iter().map(|p| p.len()).sum(),
            Repr::Source(source) => source.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> TuplesIter<'a> {
        TuplesIter {
            inner: match self.repr {
                Repr::Slices(parts) => IterRepr::Slices(parts.iter().copied().flatten()),
                Repr::Source(source) => IterRepr::Source(source.iter()),
            },
        }
    }
}

impl fmt::Debug for Tuples<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Tuples<'a> {
    type Item = &'a Tuple;
    type IntoIter = TuplesIter<'a>;

    fn into_iter(self) -> TuplesIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &Tuples<'a> {
    type Item = &'a Tuple;
    type IntoIter = TuplesIter<'a>;

    fn into_iter(self) -> TuplesIter<'a> {
        self.iter()
    }
}

/// The iterator over [`Tuples`].
pub struct TuplesIter<'a> {
    inner: IterRepr<'a>,
}

type SliceIter<'a> = Flatten<std::iter::Copied<std::slice::Iter<'a, &'a [Tuple]>>>;

enum IterRepr<'a> {
    Slices(SliceIter<'a>),
    Source(Box<dyn Iterator<Item = &'a Tuple> + 'a>),
}

impl<'a> Iterator for TuplesIter<'a> {
    type Item = &'a Tuple;

    #[inline]
    fn next(&mut self) -> Option<&'a Tuple> {
        match &mut self.inner {
            IterRepr::Slices(it) => it.next(),
            IterRepr::Source(it) => it.next(),
        }
    }
}

/// A window that fired: what [`WindowedBolt::execute`] gets (Storm's `TupleWindow`).
#[derive(Debug, Clone, Copy)]
pub struct TupleWindow<'a> {
    tuples: Tuples<'a>,
    new_tuples: Tuples<'a>,
    expired: Tuples<'a>,
    start_ms: i64,
    end_ms: i64,
}

impl<'a> TupleWindow<'a> {
    /// A window over `[start_ms, end_ms)` holding `tuples`, of which `new_tuples` arrived
    /// since the previous firing and `expired` left the window since then. For a count
    /// window the bounds are the event (or arrival) times of its first tuple and just after
    /// its last.
    pub fn new(
        tuples: Tuples<'a>,
        new_tuples: Tuples<'a>,
        expired: Tuples<'a>,
        start_ms: i64,
        end_ms: i64,
    ) -> Self {
        TupleWindow { tuples, new_tuples, expired, start_ms, end_ms }
    }

    /// Every tuple in the window, in arrival order.
    pub fn tuples(&self) -> Tuples<'a> {
        self.tuples
    }

    /// The tuples that entered the window since it last fired.
    pub fn new_tuples(&self) -> Tuples<'a> {
        self.new_tuples
    }

    /// The tuples that left the window since it last fired (no longer in [`Self::tuples`]).
    pub fn expired(&self) -> Tuples<'a> {
        self.expired
    }

    /// Where the window starts, inclusive, in milliseconds since the epoch.
    pub fn start(&self) -> i64 {
        self.start_ms
    }

    /// Where the window ends, exclusive, in milliseconds since the epoch.
    pub fn end(&self) -> i64 {
        self.end_ms
    }
}

// ---- Emitting from a window. ----

/// Where a windowed bolt's tuples go. The runtime implements it, anchoring every emit to the
/// inputs of the window that is firing.
pub trait WindowEmitter: Send {
    /// Emits `values` on `stream`, anchored to the window's inputs.
    fn emit_to(&mut self, stream: &str, values: Values) -> Result<(), EmitError>;

    /// Reports an error to the topology's log and metrics; the bolt keeps running.
    fn report_error(&mut self, error: &str);
}

/// The collector a [`WindowedBolt`] gets while a window fires.
pub struct WindowCollector<'a> {
    inner: &'a mut dyn WindowEmitter,
}

impl<'a> WindowCollector<'a> {
    pub fn new(inner: &'a mut dyn WindowEmitter) -> Self {
        WindowCollector { inner }
    }

    /// Emits on the default stream, anchored to the window's inputs.
    #[inline]
    pub fn emit(&mut self, values: Values) -> Result<(), EmitError> {
        self.inner.emit_to(DEFAULT_STREAM, values)
    }

    /// Emits on a named stream, anchored to the window's inputs.
    pub fn emit_stream(&mut self, stream: &str, values: Values) -> Result<(), EmitError> {
        self.inner.emit_to(stream, values)
    }

    pub fn report_error(&mut self, error: &str) {
        self.inner.report_error(error)
    }
}

// ---- The two forms of windowed bolt. ----

/// A bolt that processes a window at a time. See the module docs.
#[async_trait]
pub trait WindowedBolt: Send + 'static {
    /// Declares the streams this bolt emits (none by default: a sink). The `late_stream` of
    /// its window, if any, is declared by the runtime, not here.
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    /// Called once on the bolt's task before the first window.
    async fn prepare(&mut self, _ctx: &TopologyContext) -> Result<(), BoxError> {
        Ok(())
    }

    /// Processes one window that fired. The runtime acks the inputs; the bolt never does.
    async fn execute(
        &mut self,
        window: &TupleWindow<'_>,
        out: &mut WindowCollector<'_>,
    ) -> Result<(), BoxError>;

    /// Called once when the bolt's task ends.
    async fn cleanup(&mut self) {}
}

/// An aggregate over each window, kept incrementally per key. See the module docs.
///
/// ```
/// use squall_api::{values, BoxError, OutputDeclarer, Tuple, Value, Values, WindowAggregate};
///
/// /// How many tuples each word has in a window.
/// struct CountWords;
///
/// impl WindowAggregate for CountWords {
///     type Acc = i64;
///     fn declare_outputs(&self, out: &mut OutputDeclarer) {
///         out.declare(["word", "count", "start", "end"]);
///     }
///     fn key(&self, input: &Tuple) -> Result<Value, BoxError> {
///         Ok(input.get("word")?.clone())
///     }
///     fn create(&self) -> i64 {
///         0
///     }
///     fn add(&self, acc: &mut i64, _: &Tuple) -> Result<(), BoxError> {
///         *acc += 1;
///         Ok(())
///     }
///     fn merge(&self, a: i64, b: i64) -> i64 {
///         a + b
///     }
///     fn result(&self, key: &Value, acc: &i64, start_ms: i64, end_ms: i64) -> Values {
///         values![key.clone(), *acc, start_ms, end_ms]
///     }
/// }
/// ```
pub trait WindowAggregate: Send + 'static {
    /// What is kept per key and window (or pane): a count, a sum, a top-k.
    type Acc: Send + 'static;

    /// Declares the streams this bolt emits; [`WindowAggregate::result`] goes out on the
    /// default stream.
    fn declare_outputs(&self, out: &mut OutputDeclarer);

    /// The key `input` is aggregated under; a constant for one result per window.
    fn key(&self, input: &Tuple) -> Result<Value, BoxError>;

    /// An empty accumulator.
    fn create(&self) -> Self::Acc;

    /// Folds `input` into `acc`. An `Err` is reported and the input is left out.
    fn add(&self, acc: &mut Self::Acc, input: &Tuple) -> Result<(), BoxError>;

    /// Combines two accumulators of the same key (of two panes of a sliding window).
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;

    /// The tuple emitted for `key` when the window `[start_ms, end_ms)` fires.
    fn result(&self, key: &Value, acc: &Self::Acc, start_ms: i64, end_ms: i64) -> Values;
}

/// A type-erased accumulator of a [`DynAggregate`].
pub type Accumulator = Box<dyn Any + Send>;

/// [`WindowAggregate`] with its accumulator type erased, for the runtime to hold as a trait
/// object. Every `WindowAggregate` is one; implement `WindowAggregate`, not this.
///
/// The accumulators passed in must come from the same aggregate's [`DynAggregate::create`]:
/// one of another type is a runtime bug and panics.
pub trait DynAggregate: Send + 'static {
    fn declare_outputs(&self, out: &mut OutputDeclarer);
    fn key(&self, input: &Tuple) -> Result<Value, BoxError>;
    fn create(&self) -> Accumulator;
    fn add(&self, acc: &mut Accumulator, input: &Tuple) -> Result<(), BoxError>;
    fn merge(&self, a: Accumulator, b: Accumulator) -> Accumulator;
    fn result(&self, key: &Value, acc: &Accumulator, start_ms: i64, end_ms: i64) -> Values;
}

const FOREIGN_ACCUMULATOR: &str = "DynAggregate: an accumulator this aggregate did not create";

impl<A: WindowAggregate> DynAggregate for A {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        WindowAggregate::declare_outputs(self, out)
    }

    fn key(&self, input: &Tuple) -> Result<Value, BoxError> {
        WindowAggregate::key(self, input)
    }

    fn create(&self) -> Accumulator {
        Box::new(WindowAggregate::create(self))
    }

    fn add(&self, acc: &mut Accumulator, input: &Tuple) -> Result<(), BoxError> {
        let acc = acc.downcast_mut::<A::Acc>().expect(FOREIGN_ACCUMULATOR);
        WindowAggregate::add(self, acc, input)
    }

    fn merge(&self, a: Accumulator, b: Accumulator) -> Accumulator {
        let a = *a.downcast::<A::Acc>().expect(FOREIGN_ACCUMULATOR);
        let b = *b.downcast::<A::Acc>().expect(FOREIGN_ACCUMULATOR);
        Box::new(WindowAggregate::merge(self, a, b))
    }

    fn result(&self, key: &Value, acc: &Accumulator, start_ms: i64, end_ms: i64) -> Values {
        let acc = acc.downcast_ref::<A::Acc>().expect(FOREIGN_ACCUMULATOR);
        WindowAggregate::result(self, key, acc, start_ms, end_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values;

    struct CountWords;

    impl WindowAggregate for CountWords {
        type Acc = i64;
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["word", "count"]);
        }
        fn key(&self, input: &Tuple) -> Result<Value, BoxError> {
            Ok(input.get("word")?.clone())
        }
        fn create(&self) -> i64 {
            0
        }
        fn add(&self, acc: &mut i64, _: &Tuple) -> Result<(), BoxError> {
            *acc += 1;
            Ok(())
        }
        fn merge(&self, a: i64, b: i64) -> i64 {
            a + b
        }
        fn result(&self, key: &Value, acc: &i64, _: i64, _: i64) -> Values {
            values![key.clone(), *acc]
        }
    }

    fn word(w: &str) -> Tuple {
        Tuple::for_test(["word"], values![w])
    }

    #[test]
    fn an_aggregate_works_type_erased() {
        let agg: Box<dyn DynAggregate> = Box::new(CountWords);
        let mut a = agg.create();
        let mut b = agg.create();
        agg.add(&mut a, &word("x")).unwrap();
        agg.add(&mut b, &word("x")).unwrap();
        agg.add(&mut b, &word("x")).unwrap();
        assert_eq!(agg.key(&word("x")).unwrap(), Value::from("x"));
        let merged = agg.merge(a, b);
        assert_eq!(
            agg.result(&Value::from("x"), &merged, 0, 10).to_vec(),
            vec![Value::from("x"), Value::Int(3)]
        );
    }

    #[test]
    #[should_panic(expected = "did not create")]
    fn a_foreign_accumulator_panics() {
        let agg: Box<dyn DynAggregate> = Box::new(CountWords);
        let mut foreign: Accumulator = Box::new("not a count");
        let _ = agg.add(&mut foreign, &word("x"));
    }

    struct Ring(Vec<Tuple>);

    impl TupleSource for Ring {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn iter(&self) -> Box<dyn Iterator<Item = &Tuple> + '_> {
            Box::new(self.0.iter().rev())
        }
    }

    fn words(tuples: Tuples<'_>) -> Vec<String> {
        tuples.iter().map(|t| t.get_str("word").unwrap().to_string()).collect()
    }

    #[test]
    fn a_window_lists_runs_of_slices_in_order_without_copying() {
        let first = [word("a"), word("b")];
        let second = [word("c")];
        let parts: [&[Tuple]; 2] = [&first, &second];
        let new_parts: [&[Tuple]; 1] = [&second];
        let window = TupleWindow::new(
            Tuples::from_slices(&parts),
            Tuples::from_slices(&new_parts),
            Tuples::EMPTY,
            1_000,
            2_000,
        );
        assert_eq!(words(window.tuples()), ["a", "b", "c"]);
        assert_eq!(window.tuples().len(), 3);
        assert_eq!(words(window.new_tuples()), ["c"]);
        assert!(window.expired().is_empty());
        assert_eq!((window.start(), window.end()), (1_000, 2_000));
        assert!(std::ptr::eq(window.tuples().iter().next().unwrap(), &first[0]));
    }

    #[test]
    fn a_window_lists_a_source() {
        let ring = Ring(vec![word("b"), word("a")]);
        let tuples = Tuples::from_source(&ring);
        assert_eq!(tuples.len(), 2);
        assert_eq!(words(tuples), ["a", "b"]);
        let mut seen = 0;
        for _ in &tuples {
            seen += 1;
        }
        assert_eq!(seen, 2);
    }

    struct Emits(Vec<(String, Values)>);

    impl WindowEmitter for Emits {
        fn emit_to(&mut self, stream: &str, values: Values) -> Result<(), EmitError> {
            self.0.push((stream.to_string(), values));
            Ok(())
        }
        fn report_error(&mut self, _: &str) {}
    }

    #[test]
    fn the_collector_emits_on_default_and_named_streams() {
        let mut emits = Emits(Vec::new());
        let mut out = WindowCollector::new(&mut emits);
        out.emit(values![1]).unwrap();
        out.emit_stream("late", values![2]).unwrap();
        let streams: Vec<&str> = emits.0.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(streams, ["default", "late"]);
    }
}
