//! Windows aggregated incrementally: one accumulator per key and window instead of the items.
//!
//! Contract: [`Aggregates<K, A, T>`] has time windows only (length and slide are durations:
//! count windows are refused by the constructor's types, and [`Aggregates::from_spec`] gives
//! `None` for them); they are aligned, fire and refuse late items exactly as the
//! [`Windower`](super::Windower)'s time windows do: an item at `ts` is in every window
//! `[k·slide, k·slide + length)` holding `ts`; a window fires once its end is at most the
//! watermark, in order of their end; windows with no item do not exist, so never fire; an item
//! behind the watermark is handed back as [`Insert::Late`] and touches nothing.
//! [`insert`](Aggregates::insert) folds an item into the accumulator of its key in each of its
//! windows (made by the `create` closure the first time a key meets a window).
//!
//! Each item also leaves a `T` (the runtime's acking handle; `()` when none is needed), held
//! once, with the last window holding the item: a fired window's
//! [`released`](AggWindow::released) handles are those whose every window has now fired (the
//! caller acks them). Every handle is released exactly once, and finishing (the watermark at
//! [`END_OF_TIME`](super::END_OF_TIME)) fires every window, so every handle.
//!
//! Memory is proportional to keys × open windows, not to items: each open window holds one
//! accumulator per key it met and a slot index sized to the keys seen so far (4 bytes per key
//! ever seen); the key map keeps every key seen (it is the only hashing: one probe per insert,
//! with no allocation for a key seen before). Emptied windows are reused.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use super::spec::{Size, WindowSpec};
use super::windower::{millis, Insert};

struct AccWindow<A, T> {
    /// Window `[k·slide, k·slide + length)`.
    k: i64,
    /// By key index: 1 + the index of the key's entry, 0 if none.
    slots: Vec<u32>,
    entries: Vec<(u32, A)>,
    /// Of the items for which this is the last window.
    handles: Vec<T>,
}

impl<A, T> AccWindow<A, T> {
    fn reset(&mut self) {
        for &(key, _) in &self.entries {
            self.slots[key as usize] = 0;
        }
        self.entries.clear();
        self.handles.clear();
    }
}

/// Per key accumulators of open time windows (see the module docs).
pub struct Aggregates<K, A, T = ()> {
    length: i64,
    slide: i64,
    keys: HashMap<K, u32>,
    key_list: Vec<K>,
    /// Sorted by `k`, no two alike.
    windows: VecDeque<AccWindow<A, T>>,
    pool: Vec<AccWindow<A, T>>,
    /// The window last handed out, kept for its view.
    fired: Option<AccWindow<A, T>>,
    create: Box<dyn FnMut() -> A + Send>,
    watermark: Option<i64>,
    accumulators: usize,
}

const POOL: usize = 8;

impl<K: Hash + Eq + Clone, A, T> Aggregates<K, A, T> {
    /// Windows of `length`, every `slide` (equal for tumbling windows); `create` makes a key's
    /// accumulator in a window. Panics if `slide` is longer than `length` (the spec's parser
    /// refuses it).
    pub fn new(length: Duration, slide: Duration, create: impl FnMut() -> A + Send + 'static) -> Self {
        let (length, slide) = (millis(length), millis(slide));
        assert!(slide <= length, "a slide of {slide} ms longer than the window's {length} ms");
        Aggregates {
            length,
            slide,
            keys: HashMap::new(),
            key_list: Vec::new(),
            windows: VecDeque::new(),
            pool: Vec::new(),
            fired: None,
            create: Box::new(create),
            watermark: None,
            accumulators: 0,
        }
    }

    /// The windows of a bolt's spec; `None` for count windows.
    pub fn from_spec(spec: &WindowSpec, create: impl FnMut() -> A + Send + 'static) -> Option<Self> {
        match (spec.length, spec.slide) {
            (Size::Time(l), Size::Time(s)) => Some(Self::new(l, s, create)),
            _ => None,
        }
    }

    /// Accumulators held, over every open window.
    pub fn accumulators(&self) -> usize {
        self.accumulators
    }

    /// Windows holding at least one item, not yet fired.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Distinct keys seen.
    pub fn keys(&self) -> usize {
        self.key_list.len()
    }

    /// The last watermark passed to [`advance`](Self::advance).
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// The deque position of the first window with `k` at least `k`.
    #[inline]
    fn pos(&self, k: i64) -> usize {
        match self.windows.back() {
            None => 0,
            Some(b) if b.k < k => self.windows.len(),
            Some(_) => self.windows.partition_point(|w| w.k < k),
        }
    }

    /// Folds an item at `ts_ms` of `key` into each of its windows with `add`, and holds its
    /// `handle` until the last of them fires; behind the watermark, hands `handle` back.
    #[inline]
    pub fn insert<Q>(&mut self, ts_ms: i64, key: &Q, handle: T, add: impl FnMut(&mut A)) -> Insert<T>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.is_late(ts_ms) {
            return Insert::Late(handle);
        }
        let key = self.key_index(key);
        self.insert_indexed(ts_ms, key, handle, add)
    }

    /// Whether an item at `ts_ms` is behind the watermark.
    #[inline]
    pub fn is_late(&self, ts_ms: i64) -> bool {
        self.watermark.is_some_and(|w| ts_ms < w)
    }

    /// The index of `key` among the keys seen (the order they were first met), made the first
    /// time: what [`insert_indexed`](Self::insert_indexed) and [`AggWindow::indexed`] name a
    /// key by.
    #[inline]
    pub fn key_index<Q>(&mut self, key: &Q) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match self.keys.get(key) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.key_list.len()).expect("more than 2^32 keys");
                let owned = key.to_owned();
                self.key_list.push(owned.clone());
                self.keys.insert(owned, i);
                i
            }
        }
    }

    /// [`insert`](Self::insert) of the key whose [`key_index`](Self::key_index) is `key_idx`.
    #[inline]
    pub fn insert_indexed(
        &mut self,
        ts_ms: i64,
        key_idx: u32,
        handle: T,
        mut add: impl FnMut(&mut A),
    ) -> Insert<T> {
        if self.is_late(ts_ms) {
            return Insert::Late(handle);
        }
        let last_k = ts_ms.div_euclid(self.slide);
        let first_k = ts_ms.saturating_sub(self.length).div_euclid(self.slide) + 1;
        let first_pos = self.pos(first_k);
        for (pos, k) in (first_pos..).zip(first_k..=last_k) {
            if self.windows.get(pos).is_none_or(|w| w.k != k) {
                let mut w = self.pool.pop().unwrap_or_else(|| AccWindow {
                    k,
                    slots: Vec::new(),
                    entries: Vec::new(),
                    handles: Vec::new(),
                });
                w.k = k;
                self.windows.insert(pos, w);
            }
            let w = &mut self.windows[pos];
            let slot = key_idx as usize;
            if slot >= w.slots.len() {
                w.slots.resize(self.key_list.len(), 0);
            }
            let entry = match w.slots[slot] {
                0 => {
                    w.entries.push((key_idx, (self.create)()));
                    w.slots[slot] = w.entries.len() as u32;
                    self.accumulators += 1;
                    w.entries.len() - 1
                }
                e => e as usize - 1,
            };
            add(&mut w.entries[entry].1);
            if k == last_k {
                w.handles.push(handle);
                break;
            }
        }
        Insert::Accepted
    }

    /// Moves the watermark to `watermark_ms` (an earlier one is ignored).
    pub fn advance(&mut self, watermark_ms: i64) {
        self.watermark = Some(self.watermark.map_or(watermark_ms, |w| w.max(watermark_ms)));
    }

    /// The end of the stream: every open window is ready to fire.
    pub fn finish(&mut self) {
        self.advance(super::END_OF_TIME);
    }

    /// The next window ready to fire, in order of their end; `None` once none is ready.
    pub fn next_window(&mut self) -> Option<AggWindow<'_, K, A, T>> {
        if let Some(mut w) = self.fired.take() {
            w.reset();
            if self.pool.len() < POOL {
                self.pool.push(w);
            }
        }
        let watermark = self.watermark?;
        let front = self.windows.front()?;
        let start = front.k.saturating_mul(self.slide);
        let end = start.saturating_add(self.length);
        if end > watermark {
            return None;
        }
        let w = self.windows.pop_front().expect("front");
        self.accumulators -= w.entries.len();
        let w = self.fired.insert(w);
        Some(AggWindow { start, end, window: w, keys: &self.key_list })
    }
}

/// A fired window of [`Aggregates`].
pub struct AggWindow<'a, K, A, T> {
    start: i64,
    end: i64,
    window: &'a AccWindow<A, T>,
    keys: &'a [K],
}

impl<'a, K, A, T> AggWindow<'a, K, A, T> {
    /// Inclusive, ms.
    pub fn start(&self) -> i64 {
        self.start
    }
    /// Exclusive, ms.
    pub fn end(&self) -> i64 {
        self.end
    }
    /// Keys with an accumulator in this window.
    pub fn len(&self) -> usize {
        self.window.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.window.entries.is_empty()
    }
    /// Each key of the window with its accumulator, in the order the keys met the window.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'a K, &'a A)> + 'a {
        let keys = self.keys;
        self.window.entries.iter().map(move |(k, a)| (&keys[*k as usize], a))
    }
    /// Each key of the window as its [`key_index`](Aggregates::key_index), with the key and
    /// its accumulator, in the order the keys met the window.
    pub fn indexed(&self) -> impl ExactSizeIterator<Item = (u32, &'a K, &'a A)> + 'a {
        let keys = self.keys;
        self.window.entries.iter().map(move |(k, a)| (*k, &keys[*k as usize], a))
    }
    /// The handles of the items whose last window this is: the caller acks them now.
    pub fn released(&self) -> &'a [T] {
        &self.window.handles
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Instant;

    use super::super::{Watermarks, Windower};
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn counts() -> Aggregates<String, u64, u32> {
        Aggregates::new(ms(1_000), ms(500), || 0)
    }

    /// (start, end, sorted (key, count)), released handles.
    type Fired = (i64, i64, Vec<(String, u64)>);

    fn drain<T: Copy>(a: &mut Aggregates<String, u64, T>) -> (Vec<Fired>, Vec<T>) {
        let (mut out, mut released) = (Vec::new(), Vec::new());
        while let Some(w) = a.next_window() {
            let mut keys: Vec<(String, u64)> = w.iter().map(|(k, &c)| (k.clone(), c)).collect();
            keys.sort();
            out.push((w.start(), w.end(), keys));
            released.extend_from_slice(w.released());
        }
        (out, released)
    }

    fn kc(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|&(k, c)| (k.to_string(), c)).collect()
    }

    #[test]
    fn sliding_aggregates_fire_the_windows_storm_would() {
        let mut a = counts();
        for (id, (ts, key)) in [(100, "a"), (600, "b"), (700, "a"), (1_200, "a")].into_iter().enumerate() {
            assert_eq!(a.insert(ts, key, id as u32, |c| *c += 1), Insert::Accepted);
        }
        a.advance(1_000);
        let (windows, released) = drain(&mut a);
        assert_eq!(
            windows,
            vec![(-500, 500, kc(&[("a", 1)])), (0, 1_000, kc(&[("a", 2), ("b", 1)]))],
            "windows every 500 ms, 1 s long"
        );
        assert_eq!(released, vec![0], "the item at 100 is in no later window");
        a.finish();
        let (windows, released) = drain(&mut a);
        assert_eq!(windows, vec![(500, 1_500, kc(&[("a", 2), ("b", 1)])), (1_000, 2_000, kc(&[("a", 1)]))]);
        assert_eq!(released, vec![1, 2, 3]);
        assert_eq!(a.accumulators(), 0);
        assert_eq!(a.open_windows(), 0);
    }

    #[test]
    fn late_items_are_refused_and_touch_nothing() {
        let mut a = counts();
        a.insert(2_000, "a", 1, |c| *c += 1);
        a.advance(1_900);
        assert_eq!(a.insert(1_899, "late", 2, |c| *c += 1), Insert::Late(2));
        assert_eq!(a.keys(), 1, "a late item's key is not even recorded");
        a.finish();
        let (windows, released) = drain(&mut a);
        assert!(windows.iter().all(|(_, _, keys)| keys == &kc(&[("a", 1)])), "{windows:?}");
        assert_eq!(released, vec![1]);
    }

    #[test]
    fn count_windows_are_refused() {
        let spec = WindowSpec::tumbling(Size::Count(10));
        assert!(Aggregates::<String, u64>::from_spec(&spec, || 0).is_none());
        let spec = WindowSpec::tumbling(Size::Time(ms(10)));
        assert!(Aggregates::<String, u64>::from_spec(&spec, || 0).is_some());
    }

    #[test]
    fn handles_are_released_once_after_every_window_holding_them_fired() {
        let mut a: Aggregates<String, u64, u32> = Aggregates::new(ms(1_000), ms(250), || 0);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut ts_of = Vec::new();
        let mut max_ts = 0;
        let mut fired_ends: Vec<i64> = Vec::new();
        let mut released_at: HashMap<u32, usize> = HashMap::new();
        for id in 0..20_000u32 {
            let ts = (id as i64 - rng.i64(0..=200)).max(0);
            ts_of.push(ts);
            max_ts = max_ts.max(ts);
            assert_eq!(a.insert(ts, "k", id, |c| *c += 1), Insert::Accepted);
            if id % 50 == 0 || id == 19_999 {
                if id == 19_999 {
                    a.finish();
                } else {
                    a.advance(max_ts - 200);
                }
                while let Some(w) = a.next_window() {
                    fired_ends.push(w.end());
                    for &h in w.released() {
                        assert!(released_at.insert(h, fired_ends.len()).is_none(), "{h} released twice");
                    }
                }
            }
        }
        assert_eq!(released_at.len(), 20_000);
        assert!(fired_ends.windows(2).all(|p| p[0] < p[1]), "fired in order of end");
        for (id, &ts) in ts_of.iter().enumerate() {
            // The last window holding ts ends at floor(ts / 250) * 250 + 1 000; it fired at or
            // before the handle's release.
            let last_end = ts.div_euclid(250) * 250 + 1_000;
            let fired = fired_ends.iter().position(|&e| e == last_end).expect("the window fired");
            assert!(fired < released_at[&(id as u32)]);
        }
    }

    #[test]
    fn a_million_events_over_1000_keys_keep_accumulators_bounded_by_keys_times_open_windows() {
        let mut a: Aggregates<u32, u64> = Aggregates::new(ms(1_000), ms(250), || 0);
        let (mut max_open, mut max_acc, mut total) = (0, 0, 0u64);
        for i in 0..1_000_000u32 {
            let ts = (i / 100) as i64;
            a.insert(ts, &(i % 1_000), (), |c| *c += 1);
            if i % 1_000 == 999 {
                a.advance(ts - 200);
                while let Some(w) = a.next_window() {
                    total += w.iter().map(|(_, c)| c).sum::<u64>();
                }
                max_open = max_open.max(a.open_windows());
                max_acc = max_acc.max(a.accumulators());
                assert!(a.accumulators() <= a.keys() * a.open_windows());
            }
        }
        a.finish();
        while let Some(w) = a.next_window() {
            total += w.iter().map(|(_, c)| c).sum::<u64>();
        }
        assert_eq!(a.keys(), 1_000);
        // 210 ms of open time (lag + one advance step) over 1 s windows every 250 ms.
        assert!(max_open <= 6, "{max_open} windows open");
        assert!(max_acc <= 1_000 * 6, "{max_acc} accumulators");
        assert_eq!(total, 4 * 1_000_000, "each event in 4 windows");
    }

    /// WIN-1's event `i`: key "w" + (i % 1000), ts = max(0, floor(i / 100) - ((i * 7919) mod 201)).
    fn win1(i: u64) -> (String, i64) {
        (format!("w{}", i % 1_000), ((i / 100) as i64 - ((i * 7_919) % 201) as i64).max(0))
    }

    #[test]
    fn win1_pattern_has_no_late_event_and_exact_per_key_window_counts() {
        const N: u64 = 200_000;
        let t0 = Instant::now();
        let mut marks = Watermarks::new([0], ms(200), None, t0);
        let mut agg: Aggregates<String, u64, u64> = Aggregates::new(ms(1_000), ms(1_000), || 0);
        let mut handles: Windower<u64> = Windower::new(Size::Time(ms(1_000)), Size::Time(ms(1_000)));
        let mut expected: HashMap<(String, i64), u64> = HashMap::new();
        let mut got: HashMap<(String, i64), u64> = HashMap::new();
        let (mut released, mut released_by_windower, mut in_windows) = (0u64, 0u64, 0u64);
        let mut take = |agg: &mut Aggregates<String, u64, u64>, handles: &mut Windower<u64>| {
            while let Some(w) = agg.next_window() {
                for (k, &c) in w.iter() {
                    assert!(got.insert((k.clone(), w.start()), c).is_none());
                }
                released += w.released().len() as u64;
            }
            while let Some(w) = handles.next_window() {
                in_windows += w.items().len() as u64;
            }
            released_by_windower += handles.take_released().len() as u64;
        };
        for i in 0..N {
            let (key, ts) = win1(i);
            *expected.entry((key.clone(), ts.div_euclid(1_000) * 1_000)).or_default() += 1;
            marks.observe(0, ts, t0);
            assert_eq!(agg.insert(ts, key.as_str(), i, |c| *c += 1), Insert::Accepted, "event {i} late");
            assert_eq!(handles.insert(ts, i), Insert::Accepted, "event {i} late");
            if i % 1_000 == 999 {
                let wm = marks.current(t0).expect("the only task spoke");
                agg.advance(wm);
                handles.advance(wm);
                take(&mut agg, &mut handles);
            }
        }
        marks.finish(0);
        let end = marks.current(t0).unwrap();
        agg.advance(end);
        handles.advance(end);
        take(&mut agg, &mut handles);
        assert_eq!(got.values().sum::<u64>(), N, "the counts of all windows sum to N");
        assert_eq!(got, expected, "each (key, window) count is the formula's");
        assert_eq!((released, released_by_windower, in_windows), (N, N, N));
    }
}
