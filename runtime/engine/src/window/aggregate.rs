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
    /// accumulator in a window.
    pub fn new(length: Duration, slide: Duration, create: impl FnMut() -> A + Send + 'static) -> Self {
        Aggregates {
            length: millis(length),
            slide: millis(slide),
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
    pub fn insert<Q>(&mut self, ts_ms: i64, key: &Q, handle: T, mut add: impl FnMut(&mut A)) -> Insert<T>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.watermark.is_some_and(|w| ts_ms < w) {
            return Insert::Late(handle);
        }
        let key_idx = match self.keys.get(key) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.key_list.len()).expect("more than 2^32 keys");
                let owned = key.to_owned();
                self.key_list.push(owned.clone());
                self.keys.insert(owned, i);
                i
            }
        };
        let last_k = ts_ms.div_euclid(self.slide);
        let first_k = ts_ms.saturating_sub(self.length).div_euclid(self.slide) + 1;
        let mut pos = self.pos(first_k);
        for k in first_k..=last_k {
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
            pos += 1;
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
    /// The handles of the items whose last window this is: the caller acks them now.
    pub fn released(&self) -> &'a [T] {
        &self.window.handles
    }
}
