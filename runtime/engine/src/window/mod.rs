//! Windows over a stream (Storm's windowed bolts): which tuples a window holds, when it
//! fires, and what time it is.
//!
//! Contract: [`WindowSpec`] is a bolt's `window` table as the topology file gives it, checked.
//! A window's length and slide are each a count of tuples or a duration (all four mixes, as
//! Storm has them); no slide means tumbling (slide = length). With a `timestamp_field`, time is
//! event time, read from that field of each tuple (integer milliseconds since the epoch);
//! without it, processing time. Time windows are aligned to multiples of the slide since the
//! epoch; a window's start is inclusive, its end exclusive.
//!
//! The pure core, with no I/O, no async and no knowledge of tuples or acking: [`Watermarks`]
//! (what time it is, per upstream task), [`Windower`] (the items of open windows, fired as the
//! watermark passes their end) and [`Aggregates`] (the incremental form: one accumulator per
//! key and window).

mod aggregate;
mod spec;
mod watermark;
mod windower;

pub use aggregate::{AggWindow, Aggregates};
pub use spec::{Size, WindowSpec, DEFAULT_WATERMARK_INTERVAL};
pub use watermark::{Watermarks, END_OF_TIME};
pub use windower::{Insert, Items, ItemsIter, Window, Windower};
