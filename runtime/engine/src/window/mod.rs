//! Windows over a stream (Storm's windowed bolts): which tuples a window holds, when it
//! fires, and what time it is.
//!
//! Contract: [`WindowSpec`] is a bolt's `window` table as the topology file gives it, checked.
//! A window's length and slide are each a count of tuples or a duration (all four mixes, as
//! Storm has them); no slide means tumbling (slide = length). With a `timestamp_field`, time is
//! event time, read from that field of each tuple (integer milliseconds since the epoch);
//! without it, processing time. Time windows are aligned to multiples of the slide since the
//! epoch; a window's start is inclusive, its end exclusive.

mod spec;

pub use spec::{Size, WindowSpec, DEFAULT_WATERMARK_INTERVAL};
