//! Figures per time window, as Storm UI's: the last 10 minutes, the last 3 hours, all time.
//!
//! Contract: [`History`] keeps, per topology, samples of every task's cumulative figures
//! (taken by the server every [`STEP`]: one per `STEP` over the last 10 minutes, one a
//! minute over the last 3 hours, so memory stays bounded whatever the uptime). A window's
//! figures are now's less those of the oldest sample within the window
//! ([`TaskFigures::minus`]): counts, histograms (so latency percentiles) and failure causes
//! cover only the window, and a start-up spike leaves the 10-minute figures once it is older
//! than 10 minutes. A topology younger than the window, or one without a sample old enough
//! yet, shows all its figures. Pure: the caller says what time it is.

use std::collections::{BTreeMap, VecDeque};

use squall_engine::metrics::TaskFigures;

use crate::view::TopologyView;

/// How often the server samples the figures.
pub const STEP_SECS: u64 = 5;
/// The spacing of the samples kept past the last 10 minutes.
const COARSE_SECS: u64 = 60;

/// A window of figures (Storm UI's `window` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last this many seconds: 600 or 10800.
    Last(u64),
    AllTime,
}

impl Window {
    /// Every window, in Storm's order (`topologyStats`).
    pub const ALL: [Window; 3] = [Window::Last(600), Window::Last(10800), Window::AllTime];

    /// `600`, `10800` or `:all-time` (Storm's spellings); anything else is refused.
    pub fn parse(text: &str) -> Result<Window, String> {
        match text {
            "600" => Ok(Window::Last(600)),
            "10800" => Ok(Window::Last(10800)),
            ":all-time" | "all-time" => Ok(Window::AllTime),
            other => Err(format!("window must be 600, 10800 or :all-time, not `{other}`")),
        }
    }

    /// Storm's `window`: `600`, `10800`, `:all-time`.
    pub fn name(&self) -> String {
        match self {
            Window::Last(secs) => secs.to_string(),
            Window::AllTime => ":all-time".into(),
        }
    }

    /// Storm's `windowPretty`.
    pub fn pretty(&self) -> String {
        match self {
            Window::Last(600) => "10m 0s".into(),
            Window::Last(10800) => "3h 0m 0s".into(),
            Window::Last(secs) => crate::rest::pretty_duration(*secs),
            Window::AllTime => "All time".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Sample {
    at_secs: u64,
    elapsed_secs: f64,
    figures: Vec<TaskFigures>,
}

#[derive(Debug, Default)]
struct Samples {
    /// One per [`STEP_SECS`], the last 10 minutes.
    fine: VecDeque<Sample>,
    /// One per [`COARSE_SECS`], the last 3 hours.
    coarse: VecDeque<Sample>,
}

/// Samples of every topology's figures (see the module docs).
#[derive(Debug, Default)]
pub struct History {
    topologies: BTreeMap<String, Samples>,
}

impl History {
    /// Notes the figures of `topologies` at `now_secs` (any monotonic clock in seconds);
    /// forgets topologies no longer listed.
    pub fn record(&mut self, now_secs: u64, topologies: &[TopologyView]) {
        self.topologies.retain(|name, _| topologies.iter().any(|t| &t.name == name));
        for t in topologies {
            let samples = self.topologies.entry(t.name.clone()).or_default();
            // A topology submitted again under its name starts over.
            if samples.fine.back().is_some_and(|s| s.elapsed_secs > t.elapsed_secs) {
                *samples = Samples::default();
            }
            let sample =
                Sample { at_secs: now_secs, elapsed_secs: t.elapsed_secs, figures: t.figures.clone() };
            if samples.coarse.back().is_none_or(|s| now_secs >= s.at_secs + COARSE_SECS) {
                samples.coarse.push_back(sample.clone());
            }
            samples.fine.push_back(sample);
            while samples.fine.front().is_some_and(|s| s.at_secs + 600 + STEP_SECS < now_secs) {
                samples.fine.pop_front();
            }
            while samples.coarse.front().is_some_and(|s| s.at_secs + 10800 + COARSE_SECS < now_secs) {
                samples.coarse.pop_front();
            }
        }
    }

    /// `t` over `window` at `now_secs`: its figures less those at the window's start.
    pub fn window(&self, t: &TopologyView, window: Window, now_secs: u64) -> TopologyView {
        let Window::Last(secs) = window else { return t.clone() };
        if t.elapsed_secs <= secs as f64 {
            return t.clone(); // its whole life fits in the window
        }
        let Some(samples) = self.topologies.get(&t.name) else { return t.clone() };
        let ring = if secs <= 600 { &samples.fine } else { &samples.coarse };
        let start = now_secs.saturating_sub(secs);
        let Some(base) = ring.iter().find(|s| s.at_secs >= start) else { return t.clone() };
        let mut out = t.clone();
        out.figures = t
            .figures
            .iter()
            .map(|f| match base.figures.iter().find(|b| b.task == f.task) {
                Some(b) => f.minus(b),
                None => f.clone(),
            })
            .collect();
        out.elapsed_secs = (t.elapsed_secs - base.elapsed_secs).max(0.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(elapsed_secs: f64, acked: u64, complete_us: Vec<(u64, u64)>) -> TopologyView {
        TopologyView {
            name: "wc".into(),
            elapsed_secs,
            figures: vec![TaskFigures { task: 0, acked, complete_us, ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn the_ten_minute_window_drops_what_is_older_and_all_time_keeps_it() {
        let mut h = History::default();
        // A start-up spike in the first seconds, then steady fast acks.
        h.record(0, &[topology(0.0, 0, vec![])]);
        h.record(5, &[topology(5.0, 10, vec![(900_000, 10)])]);
        let mut now = 5;
        let mut acked = 10;
        while now < 1200 {
            now += STEP_SECS;
            acked += 100;
            h.record(now, &[topology(now as f64, acked, vec![(900_000, 10), (100, acked - 10)])]);
        }
        let t = topology(now as f64, acked, vec![(900_000, 10), (100, acked - 10)]);
        let last = h.window(&t, Window::Last(600), now);
        assert_eq!(last.figures[0].acked, 12_000, "600 s of 100 per 5 s");
        assert_eq!(last.figures[0].complete_us, vec![(100, 12_000)], "the spike is older than 10 minutes");
        assert!((last.elapsed_secs - 600.0).abs() < 1e-9);
        assert_eq!(h.window(&t, Window::AllTime, now).figures[0].acked, acked);
        assert_eq!(h.window(&t, Window::Last(10800), now).figures[0].acked, acked, "younger than 3 hours");
    }

    #[test]
    fn windows_parse_storms_spellings_only() {
        assert_eq!(Window::parse("600"), Ok(Window::Last(600)));
        assert_eq!(Window::parse(":all-time"), Ok(Window::AllTime));
        assert!(Window::parse("601").unwrap_err().contains("600, 10800 or :all-time"));
        assert_eq!(Window::ALL.map(|w| w.pretty()), ["10m 0s", "3h 0m 0s", "All time"]);
    }

    #[test]
    fn samples_stay_bounded_whatever_the_uptime() {
        let mut h = History::default();
        for now in (0..40_000).step_by(STEP_SECS as usize) {
            h.record(now, &[topology(now as f64, now, vec![])]);
        }
        let s = &h.topologies["wc"];
        assert!(s.fine.len() <= 600 / STEP_SECS as usize + 2, "{}", s.fine.len());
        assert!(s.coarse.len() <= 10800 / COARSE_SECS as usize + 2, "{}", s.coarse.len());
        h.record(40_000, &[]);
        assert!(h.topologies.is_empty(), "a topology gone is forgotten");
    }
}
