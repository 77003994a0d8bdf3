//! A bolt's window, as the topology file's `window` table sets it.
//!
//! Contract: a [`WindowSpec`] is valid by construction of its parser (lengths and slides at
//! least 1, a slide of the same unit no longer than its length); the engine only reads it.

use std::time::Duration;

/// How long the watermark waits between advances unless the table says otherwise.
pub const DEFAULT_WATERMARK_INTERVAL: Duration = Duration::from_secs(1);

/// A window's length or slide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// A number of tuples.
    Count(u64),
    /// A span of time.
    Time(Duration),
}

impl Size {
    pub fn is_time(&self) -> bool {
        matches!(self, Size::Time(_))
    }
}

/// One bolt's window (see the module docs of [`crate::window`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    pub length: Size,
    /// Equal to `length` for a tumbling window.
    pub slide: Size,
    /// Event time from this field (integer milliseconds since the epoch); `None`: processing
    /// time.
    pub timestamp_field: Option<String>,
    /// How far out of order events may arrive: the watermark trails the latest timestamps by it.
    pub lag: Duration,
    /// The longest the watermark goes without being recomputed (in event time it also moves
    /// with every batch of input); processing-time windows fire on this tick.
    pub watermark_interval: Duration,
    /// An upstream task silent this long stops holding the watermark back (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Late tuples go out on this stream, with their own fields; `None`: they are dropped.
    /// Either way they are acked and counted.
    pub late_stream: Option<String>,
}

impl WindowSpec {
    /// A tumbling window of `length`, processing time, no lag.
    pub fn tumbling(length: Size) -> WindowSpec {
        WindowSpec {
            length,
            slide: length,
            timestamp_field: None,
            lag: Duration::ZERO,
            watermark_interval: DEFAULT_WATERMARK_INTERVAL,
            idle_timeout: None,
            late_stream: None,
        }
    }

    /// A sliding window of `length`, every `slide`, processing time, no lag.
    pub fn sliding(length: Size, slide: Size) -> WindowSpec {
        WindowSpec { slide, ..WindowSpec::tumbling(length) }
    }

    pub fn is_event_time(&self) -> bool {
        self.timestamp_field.is_some()
    }
}
