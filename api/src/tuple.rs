//! Tuples and their field names.
//!
//! Contract: a [`Tuple`] is an ordered list of [`Value`]s plus the [`Fields`] naming them, the
//! stream it travels on and the component and task that emitted it. Fields are read by name
//! or index ([`FieldRef`]) with typed accessors that return a [`FieldError`] saying which
//! field, from where, and what was found instead, never a panic. A tuple also carries the ids
//! the acker needs to follow its tree; those are the runtime's business and hidden from docs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use compact_str::CompactString;
use smallvec::SmallVec;

use crate::value::Value;

/// A task's id: unique within a topology, dense from 0.
pub type TaskId = u32;

/// The values of one tuple. Up to two values are stored inline (no allocation).
pub type Values = SmallVec<[Value; 2]>;

/// Builds [`Values`] from expressions that convert into [`Value`]: `values!["word", 3]`.
#[macro_export]
macro_rules! values {
    () => { $crate::Values::new() };
    ($($v:expr),+ $(,)?) => {{
        let mut vs = $crate::Values::new();
        $( vs.push($crate::Value::from($v)); )+
        vs
    }};
}

/// The names of a stream's fields, in order. Cloning is cheap (shared).
#[derive(Clone, PartialEq, Eq)]
pub struct Fields(Arc<[CompactString]>);

impl Fields {
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Fields(names.into_iter().map(|s| CompactString::from(s.as_ref())).collect())
    }

    pub fn empty() -> Self {
        Fields::new(std::iter::empty::<&str>())
    }

    /// Position of `name`, if it is one of these fields.
    #[inline]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|f| f == name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index_of(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&str> {
        self.0.get(index).map(|s| s.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| s.as_str())
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, name) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        f.write_str("]")
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for Fields {
    fn from(names: [S; N]) -> Self {
        Fields::new(names)
    }
}

impl From<Vec<String>> for Fields {
    fn from(names: Vec<String>) -> Self {
        Fields::new(names)
    }
}

/// Where a tuple comes from: shared by every tuple of one (component, stream).
///
/// Metas are interned for the life of the process ([`StreamMeta::intern`]), so a tuple points
/// at its meta without a reference count: passing a tuple between tasks on different cores
/// then touches no shared counter.
#[derive(Debug, PartialEq)]
pub struct StreamMeta {
    pub component: Arc<str>,
    pub stream: Arc<str>,
    pub fields: Fields,
}

impl StreamMeta {
    /// The process-wide meta of (component, stream, fields). A process holds one per distinct
    /// triple it has ever seen, so the memory is bounded by the streams of its topologies.
    pub fn intern(component: &str, stream: &str, fields: &Fields) -> &'static StreamMeta {
        static INTERNED: Mutex<Vec<&'static StreamMeta>> = Mutex::new(Vec::new());
        let mut interned = INTERNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let found = interned
            .iter()
            .copied()
            .find(|m| &*m.component == component && &*m.stream == stream && m.fields == *fields);
        found.unwrap_or_else(|| {
            let meta: &'static StreamMeta = Box::leak(Box::new(StreamMeta {
                component: component.into(),
                stream: stream.into(),
                fields: fields.clone(),
            }));
            interned.push(meta);
            meta
        })
    }
}

/// The component id of system tuples (ticks).
pub const SYSTEM_COMPONENT: &str = "__system";
/// The stream tick tuples arrive on.
pub const TICK_STREAM: &str = "__tick";

/// Acker bookkeeping carried by a tuple: for each tuple tree it belongs to, the root id and
/// this tuple's edge id in that tree, plus the XOR of the edge ids of the tuples anchored to
/// it so far. Runtime-internal.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct TreeIds {
    pub anchors: SmallVec<[(u64, u64); 1]>,
    /// Written only by the task that owns the tuple; atomic so a `&Tuple` may cross `.await`.
    pub ack_val: AtomicU64,
}

impl TreeIds {
    #[inline]
    pub fn xor_ack_val(&self, edge: u64) {
        let v = self.ack_val.load(Ordering::Relaxed);
        self.ack_val.store(v ^ edge, Ordering::Relaxed);
    }

    #[inline]
    pub fn ack_val(&self) -> u64 {
        self.ack_val.load(Ordering::Relaxed)
    }
}

impl Clone for TreeIds {
    fn clone(&self) -> Self {
        TreeIds { anchors: self.anchors.clone(), ack_val: AtomicU64::new(self.ack_val()) }
    }
}

/// One record flowing through a topology.
#[derive(Clone)]
pub struct Tuple {
    values: Values,
    meta: &'static StreamMeta,
    source_task: TaskId,
    tree: TreeIds,
}

/// A field named by position or by name.
pub trait FieldRef: Copy + fmt::Display {
    fn index_in(self, fields: &Fields) -> Option<usize>;
}

impl FieldRef for usize {
    #[inline]
    fn index_in(self, fields: &Fields) -> Option<usize> {
        (self < fields.len()).then_some(self)
    }
}

impl FieldRef for &str {
    #[inline]
    fn index_in(self, fields: &Fields) -> Option<usize> {
        fields.index_of(self)
    }
}

/// A field that is missing or of another type than asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FieldError {
    #[error("tuple from {component}/{stream} has no field {field} (its fields: {fields})")]
    Missing { component: String, stream: String, field: String, fields: String },
    #[error("field {field} of tuple from {component}/{stream} is {actual}, not {expected}")]
    WrongType {
        component: String,
        stream: String,
        field: String,
        expected: &'static str,
        actual: &'static str,
    },
}

macro_rules! typed_getter {
    ($(#[$doc:meta])* $name:ident, $t:ty, $expected:literal, $conv:path) => {
        $(#[$doc])*
        pub fn $name<F: FieldRef>(&self, field: F) -> Result<$t, FieldError> {
            let v = self.get(field)?;
            $conv(v).ok_or_else(|| self.wrong_type(field, $expected, v))
        }
    };
}

impl Tuple {
    /// Builds a tuple; the runtime does this, and tests of components may too.
    pub fn new(meta: &'static StreamMeta, source_task: TaskId, values: Values) -> Self {
        Tuple { values, meta, source_task, tree: TreeIds::default() }
    }

    /// A tuple for tests: component "test", stream "default", the given fields and values.
    pub fn for_test<F: Into<Fields>>(fields: F, values: Values) -> Self {
        let meta = StreamMeta::intern("test", crate::DEFAULT_STREAM, &fields.into());
        Tuple::new(meta, 0, values)
    }

    #[doc(hidden)]
    #[inline]
    pub fn with_tree(meta: &'static StreamMeta, source_task: TaskId, values: Values, tree: TreeIds) -> Self {
        Tuple { values, meta, source_task, tree }
    }

    #[doc(hidden)]
    #[inline]
    pub fn tree(&self) -> &TreeIds {
        &self.tree
    }

    #[inline]
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Takes the values out, e.g. to re-emit them.
    pub fn into_values(self) -> Values {
        self.values
    }

    /// Takes the tree ids out: what a runtime keeps of an input it holds past its values.
    pub fn into_tree(self) -> TreeIds {
        self.tree
    }

    #[inline]
    pub fn fields(&self) -> &Fields {
        &self.meta.fields
    }

    #[inline]
    pub fn stream(&self) -> &str {
        &self.meta.stream
    }

    #[inline]
    pub fn source_component(&self) -> &str {
        &self.meta.component
    }

    #[inline]
    pub fn source_task(&self) -> TaskId {
        self.source_task
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// True for the tick tuples a component asked for with `tick_secs`.
    pub fn is_tick(&self) -> bool {
        &*self.meta.stream == TICK_STREAM && &*self.meta.component == SYSTEM_COMPONENT
    }

    /// The value of a field, by name or index.
    #[inline]
    pub fn get<F: FieldRef>(&self, field: F) -> Result<&Value, FieldError> {
        field.index_in(&self.meta.fields).and_then(|i| self.values.get(i)).ok_or_else(|| {
            FieldError::Missing {
                component: self.meta.component.to_string(),
                stream: self.meta.stream.to_string(),
                field: field.to_string(),
                fields: self.meta.fields.to_string(),
            }
        })
    }

    typed_getter!(
        /// A string field.
        get_str, &str, "string", Value::as_str);
    typed_getter!(
        /// An integer field.
        get_i64, i64, "int", Value::as_i64);
    typed_getter!(
        /// A float field (integers widen).
        get_f64, f64, "float", Value::as_f64);
    typed_getter!(
        /// A bool field.
        get_bool, bool, "bool", Value::as_bool);
    typed_getter!(
        /// A bytes field (strings give their UTF-8 bytes).
        get_bytes, &[u8], "bytes", Value::as_bytes);

    fn wrong_type<F: FieldRef>(&self, field: F, expected: &'static str, v: &Value) -> FieldError {
        FieldError::WrongType {
            component: self.meta.component.to_string(),
            stream: self.meta.stream.to_string(),
            field: field.to_string(),
            expected,
            actual: v.type_name(),
        }
    }
}

impl fmt::Debug for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}[task {}] (", self.meta.component, self.meta.stream, self.source_task)?;
        for (i, v) in self.values.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match self.meta.fields.get(i) {
                Some(name) => write!(f, "{name}={v:?}")?,
                None => write!(f, "{v:?}")?,
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_by_name_and_index() {
        let t = Tuple::for_test(["word", "count"], values!["cow", 3]);
        assert_eq!(t.get_str("word").unwrap(), "cow");
        assert_eq!(t.get_i64(1).unwrap(), 3);
        assert_eq!(t.get_f64("count").unwrap(), 3.0);
    }

    #[test]
    fn missing_field_and_wrong_type_are_clear_errors() {
        let t = Tuple::for_test(["word"], values!["cow"]);
        let e = t.get_str("nope").unwrap_err().to_string();
        assert!(e.contains("no field nope") && e.contains("[word]"), "{e}");
        let e = t.get_i64("word").unwrap_err().to_string();
        assert!(e.contains("is string, not int"), "{e}");
        assert!(t.get(5).is_err());
    }
}
