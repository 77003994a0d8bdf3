//! The items of a task's open windows, and the windows they fire.
//!
//! Contract: a [`Windower<T>`] holds items of any type `T` (the runtime stores tuples, or only
//! their acking handles), each with a timestamp in integer ms (event time, or the arrival
//! time with processing time: the caller then passes `ts = now` and advances to `now`).
//!
//! - [`insert`](Windower::insert) refuses an item whose timestamp is behind the watermark last
//!   passed to [`advance`](Windower::advance): it is handed back as [`Insert::Late`] and never
//!   held. Every other item is held once (not once per window) until released.
//! - [`advance`](Windower::advance) moves the watermark (never back);
//!   [`finish`](Windower::finish) moves it to [`END_OF_TIME`], which fires every open window.
//!   [`next_window`](Windower::next_window) then hands out the windows ready to fire, one at a
//!   time, in order of their end. A window not taken stays ready.
//! - Time length and time slide: windows are aligned to multiples of the slide since the epoch
//!   (`start = k·slide`, `end = start + length`, start inclusive, end exclusive); an item at
//!   `ts` belongs to every window with `start <= ts < end`; a window fires once
//!   `end <= watermark`; empty windows do not fire.
//! - Count windows take items in timestamp order as the watermark passes them (an item is fed
//!   once `ts <= watermark`; ties in insertion order), so with processing time in arrival
//!   order. Count length `N`, count slide `M`: every `M` items a window of the last `N` (fewer
//!   at the start, as Storm fires a sliding count window with what it has); its start and end
//!   are the timestamps of its first and last item (end exclusive: last + 1). Time length `L`,
//!   count slide `M`: every `M` items, the items with `ts` in `(t - L, t]`, `t` the timestamp
//!   of the latest item; start `t - L + 1`, end `t + 1`. Count length `N`, time slide `S`: at
//!   every multiple of `S` up to the watermark that has items fed since the previous firing, the
//!   last `N` items before it; start the first item's timestamp, end the multiple of `S`. At
//!   the end of time, count-slide windows fire once more with the items that did not complete
//!   a slide.
//! - A fired [`Window`] gives its start and end, its items, the items new since the previous
//!   fired window and those of the previous fired window it no longer holds (Storm's
//!   `TupleWindow`: `get()`, `getNew()`, `getExpired()`), all borrowed: no item is copied.
//! - [`take_released`](Windower::take_released) hands out the items released since its last
//!   call: those in no window that can still fire, which the caller now acks. An item is
//!   released only after every window holding it was handed out by `next_window`, and exactly
//!   once; once the watermark is at the end of time and every window fired, every item held is
//!   released. Time windows release an item as soon as the last window holding it fires;
//!   time-length, count-slide windows when a firing no longer holds it (later timestamps are
//!   unknown until they come).
//! - An item released is dropped once no window view can still show it (it may be the next
//!   window's `expired`): memory is the items of the open windows, plus at most those of the
//!   last fired window, plus items not yet passed by the watermark (count windows). The caller
//!   must take the releases for memory to be freed.
//!
//! Time windows keep items in buckets of `gcd(length, slide)` ms, kept sorted and only for
//! timestamps that occur (a far outlier costs one bucket, not the gap); count windows keep them
//! in one deque in feeding order, with out-of-order arrivals waiting in a heap until the
//! watermark passes them. An insert is O(1) amortized for in-order items (O(log) out of order);
//! firing is O(log of buckets held + items fired and released), never a scan of everything
//! held. Emptied buckets are reused, so steady state allocates nothing per insert.

use std::cmp::Ordering;
use std::collections::{vec_deque, BinaryHeap, VecDeque};
use std::time::Duration;

use super::spec::{Size, WindowSpec};
use super::watermark::END_OF_TIME;

/// What [`Windower::insert`] did with an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert<T> {
    /// Held until released.
    Accepted,
    /// Behind the watermark: handed back, not held.
    Late(T),
}

impl<T> Insert<T> {
    pub fn is_late(&self) -> bool {
        matches!(self, Insert::Late(_))
    }
}

/// Milliseconds of a duration, at least 1.
pub(super) fn millis(d: Duration) -> i64 {
    d.as_millis().clamp(1, i64::MAX as u128) as i64
}

pub(super) fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The smallest multiple of `m` (> 0) at least `a`.
pub(super) fn ceil_to(a: i64, m: i64) -> i64 {
    let q = a.div_euclid(m) + i64::from(a.rem_euclid(m) != 0);
    q.saturating_mul(m)
}

/// A window's items (or its new or expired ones), borrowed from the windower.
pub struct Items<'a, T> {
    src: Src<'a, T>,
}

enum Src<'a, T> {
    /// Deque positions `from..to`.
    Buckets(&'a VecDeque<Bucket<T>>, usize, usize),
    Seq(&'a VecDeque<(i64, T)>, usize, usize),
}

impl<T> Clone for Src<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Src<'_, T> {}
impl<T> Clone for Items<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Items<'_, T> {}

impl<'a, T> Items<'a, T> {
    pub fn iter(&self) -> ItemsIter<'a, T> {
        match self.src {
            Src::Buckets(buckets, from, to) => {
                ItemsIter(IterInner::Buckets { buckets, next: from, to, cur: [].iter() })
            }
            Src::Seq(seq, from, to) => ItemsIter(IterInner::Seq(seq.range(from..to))),
        }
    }

    /// O(buckets) for time windows, O(1) for count windows.
    pub fn len(&self) -> usize {
        match self.src {
            Src::Buckets(buckets, from, to) => buckets.range(from..to).map(|b| b.items.len()).sum(),
            Src::Seq(_, from, to) => to - from,
        }
    }

    pub fn is_empty(&self) -> bool {
        match self.src {
            Src::Buckets(_, from, to) | Src::Seq(_, from, to) => from == to,
        }
    }
}

impl<'a, T> IntoIterator for Items<'a, T> {
    type Item = &'a T;
    type IntoIter = ItemsIter<'a, T>;
    fn into_iter(self) -> ItemsIter<'a, T> {
        self.iter()
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Items<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterates [`Items`].
pub struct ItemsIter<'a, T>(IterInner<'a, T>);

enum IterInner<'a, T> {
    Buckets { buckets: &'a VecDeque<Bucket<T>>, next: usize, to: usize, cur: std::slice::Iter<'a, T> },
    Seq(vec_deque::Iter<'a, (i64, T)>),
}

impl<'a, T> Iterator for ItemsIter<'a, T> {
    type Item = &'a T;
    #[inline]
    fn next(&mut self) -> Option<&'a T> {
        match &mut self.0 {
            IterInner::Buckets { buckets, next, to, cur } => loop {
                if let Some(item) = cur.next() {
                    return Some(item);
                }
                if *next >= *to {
                    return None;
                }
                *cur = buckets[*next].items.iter();
                *next += 1;
            },
            IterInner::Seq(iter) => iter.next().map(|(_, item)| item),
        }
    }
}

/// A fired window (see the module docs).
#[derive(Debug)]
pub struct Window<'a, T> {
    start: i64,
    end: i64,
    items: Items<'a, T>,
    new: Items<'a, T>,
    expired: Items<'a, T>,
}

impl<'a, T> Window<'a, T> {
    /// Inclusive, ms.
    pub fn start(&self) -> i64 {
        self.start
    }
    /// Exclusive, ms.
    pub fn end(&self) -> i64 {
        self.end
    }
    /// Every item of the window (Storm's `get()`).
    pub fn items(&self) -> Items<'a, T> {
        self.items
    }
    /// The items not in the previous fired window (`getNew()`).
    pub fn new_items(&self) -> Items<'a, T> {
        self.new
    }
    /// The items of the previous fired window not in this one (`getExpired()`).
    pub fn expired(&self) -> Items<'a, T> {
        self.expired
    }
}

struct Bucket<T> {
    /// `floor(ts / width)`.
    idx: i64,
    items: Vec<T>,
}

/// Time length and time slide: items in buckets of `width` ms.
struct TimeEngine<T> {
    width: i64,
    /// Length and slide in buckets.
    len_b: i64,
    slide_b: i64,
    /// Sorted by `idx`, no two alike.
    buckets: VecDeque<Bucket<T>>,
    pool: Vec<Vec<T>>,
    /// The last fired window, `[start, end)` in buckets.
    last: Option<(i64, i64)>,
    /// Buckets below this may be released (nothing that can still fire holds them).
    release_to: i64,
    /// Buckets below this were handed out by `take_released`.
    released_to: i64,
}

const POOL: usize = 64;

impl<T> TimeEngine<T> {
    fn new(length: i64, slide: i64) -> Self {
        let width = gcd(length, slide);
        TimeEngine {
            width,
            len_b: length / width,
            slide_b: slide / width,
            buckets: VecDeque::new(),
            pool: Vec::new(),
            last: None,
            release_to: i64::MIN,
            released_to: i64::MIN,
        }
    }

    #[inline]
    fn insert(&mut self, ts: i64, item: T) {
        let idx = ts.div_euclid(self.width);
        if let Some(back) = self.buckets.back_mut() {
            if back.idx == idx {
                back.items.push(item);
                return;
            }
        }
        let pos = self.pos(idx);
        if let Some(b) = self.buckets.get_mut(pos).filter(|b| b.idx == idx) {
            b.items.push(item);
            return;
        }
        let mut items = self.pool.pop().unwrap_or_default();
        items.push(item);
        self.buckets.insert(pos, Bucket { idx, items });
    }

    /// The deque position of the first bucket with an index at least `idx`.
    #[inline]
    fn pos(&self, idx: i64) -> usize {
        if self.buckets.back().is_none_or(|b| b.idx < idx) {
            return self.buckets.len();
        }
        self.buckets.partition_point(|b| b.idx < idx)
    }

    /// Drops the buckets released and out of every view; returns how many items went.
    fn compact(&mut self) -> usize {
        let keep = self.released_to.min(self.last.map_or(i64::MIN, |(s, _)| s));
        let mut dropped = 0;
        while self.buckets.front().is_some_and(|b| b.idx < keep) {
            let mut b = self.buckets.pop_front().expect("front");
            dropped += b.items.len();
            b.items.clear();
            if self.pool.len() < POOL {
                self.pool.push(b.items);
            }
        }
        dropped
    }

    fn next_window(&mut self, watermark: i64) -> Option<Window<'_, T>> {
        let cand = self.last.map_or(i64::MIN, |(s, _)| s + self.slide_b);
        let first = self.pos(cand);
        let b = self.buckets.get(first)?.idx;
        let start = ceil_to(cand.max(b.saturating_sub(self.len_b - 1)), self.slide_b);
        let end = start.saturating_add(self.len_b);
        let end_ms = end.saturating_mul(self.width);
        if end_ms > watermark {
            return None;
        }
        let (from, to) = (self.pos(start), self.pos(end));
        let (new, expired) = match self.last {
            None => ((from, to), (from, from)),
            Some((ps, pe)) => ((self.pos(pe.max(start)), to), (self.pos(ps), self.pos(pe.min(start)))),
        };
        self.last = Some((start, end));
        self.release_to = start.saturating_add(self.slide_b);
        let buckets = &self.buckets;
        let span = |(f, t)| Items { src: Src::Buckets(buckets, f, t) };
        Some(Window {
            start: start.saturating_mul(self.width),
            end: end_ms,
            items: span((from, to)),
            new: span(new),
            expired: span(expired),
        })
    }

    fn take_released(&mut self) -> Items<'_, T> {
        let (from, to) = (self.pos(self.released_to), self.pos(self.release_to));
        self.released_to = self.released_to.max(self.release_to);
        Items { src: Src::Buckets(&self.buckets, from, to) }
    }
}

/// An item waiting for the watermark (count windows), ordered for a min-heap.
struct Pending<T> {
    ts: i64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Pending<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.seq) == (other.ts, other.seq)
    }
}
impl<T> Eq for Pending<T> {}
impl<T> PartialOrd for Pending<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Pending<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.ts, other.seq).cmp(&(self.ts, self.seq))
    }
}

#[derive(Debug, Clone, Copy)]
enum SeqKind {
    /// Count length, count slide.
    Count { n: u64, m: u64 },
    /// Time length (ms), count slide.
    TimeCount { len: i64, m: u64 },
    /// Count length, time slide (ms).
    CountTime { n: u64, slide: i64 },
}

/// Windows with a count length or slide: items in feeding order.
struct SeqEngine<T> {
    kind: SeqKind,
    /// Fed items; `fed[0]` is at absolute position `base`.
    fed: VecDeque<(i64, T)>,
    base: u64,
    /// Not yet passed by the watermark: in timestamp order (the usual case) ...
    in_order: VecDeque<(i64, u64, T)>,
    /// ... or not.
    out_of_order: BinaryHeap<Pending<T>>,
    seq: u64,
    /// The last fired window, `[start, end)` in positions.
    last: Option<(u64, u64)>,
    /// Positions below this were in a fired window's new items.
    covered: u64,
    /// Time-length windows: the start of the last one.
    scan: u64,
    release_to: u64,
    released_to: u64,
}

impl<T> SeqEngine<T> {
    fn new(kind: SeqKind) -> Self {
        SeqEngine {
            kind,
            fed: VecDeque::new(),
            base: 0,
            in_order: VecDeque::new(),
            out_of_order: BinaryHeap::new(),
            seq: 0,
            last: None,
            covered: 0,
            scan: 0,
            release_to: 0,
            released_to: 0,
        }
    }

    fn total(&self) -> u64 {
        self.base + self.fed.len() as u64
    }

    fn pending(&self) -> usize {
        self.in_order.len() + self.out_of_order.len()
    }

    #[inline]
    fn insert(&mut self, ts: i64, item: T, watermark: Option<i64>) {
        if self.pending() == 0 && watermark.is_some_and(|w| ts <= w) {
            // Not late, so ts == watermark: no fed item is later.
            self.fed.push_back((ts, item));
            return;
        }
        let seq = self.seq;
        self.seq += 1;
        if self.in_order.back().is_none_or(|&(b, _, _)| b <= ts) {
            self.in_order.push_back((ts, seq, item));
        } else {
            self.out_of_order.push(Pending { ts, seq, item });
        }
    }

    /// Feeds the pending items the watermark passed, in (timestamp, arrival) order.
    fn feed(&mut self, watermark: i64) {
        loop {
            let a = self.in_order.front().map(|&(ts, seq, _)| (ts, seq));
            let b = self.out_of_order.peek().map(|p| (p.ts, p.seq));
            let take_heap = match (a, b) {
                (None, None) => return,
                (Some(a), Some(b)) => b < a,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            let ts = if take_heap { b } else { a }.expect("some").0;
            if ts > watermark {
                return;
            }
            if take_heap {
                let p = self.out_of_order.pop().expect("peeked");
                self.fed.push_back((p.ts, p.item));
            } else {
                let (ts, _, item) = self.in_order.pop_front().expect("peeked");
                self.fed.push_back((ts, item));
            }
        }
    }

    fn compact(&mut self) -> usize {
        let keep = self.released_to.min(self.last.map_or(0, |(s, _)| s));
        let mut dropped = 0;
        while self.base < keep {
            self.fed.pop_front();
            self.base += 1;
            dropped += 1;
        }
        dropped
    }

    #[inline]
    fn ts(&self, pos: u64) -> i64 {
        self.fed[(pos - self.base) as usize].0
    }

    fn next_window(&mut self, watermark: i64) -> Option<Window<'_, T>> {
        self.feed(watermark);
        let total = self.total();
        let at_end = watermark == END_OF_TIME;
        let (start, end, start_ms, end_ms, release_to) = match self.kind {
            SeqKind::Count { m, .. } | SeqKind::TimeCount { m, .. } => {
                let end = if total >= self.covered + m {
                    self.covered + m
                } else if at_end && total > self.covered {
                    total
                } else {
                    return None;
                };
                let t = self.ts(end - 1);
                match self.kind {
                    SeqKind::Count { n, .. } => {
                        let start = end.saturating_sub(n);
                        let release = if end == total && at_end { end } else { (end + m).saturating_sub(n) };
                        (start, end, self.ts(start), t.saturating_add(1), release.clamp(start, end))
                    }
                    SeqKind::TimeCount { len, .. } => {
                        let floor = t.saturating_sub(len);
                        self.scan = self.scan.max(self.base);
                        while self.scan < end && self.ts(self.scan) <= floor {
                            self.scan += 1;
                        }
                        (self.scan, end, floor.saturating_add(1), t.saturating_add(1), self.scan)
                    }
                    SeqKind::CountTime { .. } => unreachable!(),
                }
            }
            SeqKind::CountTime { n, slide } => {
                if self.covered >= total {
                    return None;
                }
                let t = self.ts(self.covered);
                let end_ms = (t.div_euclid(slide) + 1).saturating_mul(slide);
                if end_ms > watermark {
                    return None;
                }
                let mut end = self.covered;
                while end < total && self.ts(end) < end_ms {
                    end += 1;
                }
                let start = end.saturating_sub(n);
                (start, end, self.ts(start), end_ms, (end + 1).saturating_sub(n).max(start))
            }
        };
        let (new, expired) = match self.last {
            None => ((start, end), (start, start)),
            Some((ps, pe)) => ((pe.max(start), end), (ps, pe.min(start))),
        };
        self.last = Some((start, end));
        self.covered = end;
        self.release_to = self.release_to.max(release_to);
        let (fed, base) = (&self.fed, self.base);
        let span =
            |(f, t): (u64, u64)| Items { src: Src::Seq(fed, (f - base) as usize, (t - base) as usize) };
        Some(Window {
            start: start_ms,
            end: end_ms,
            items: span((start, end)),
            new: span(new),
            expired: span(expired),
        })
    }

    fn take_released(&mut self, watermark: Option<i64>) -> Items<'_, T> {
        let total = self.total();
        if watermark == Some(END_OF_TIME) && self.pending() == 0 && self.covered == total {
            self.release_to = total;
        }
        let from = self.released_to.max(self.base);
        let to = self.release_to.max(from);
        self.released_to = to;
        Items { src: Src::Seq(&self.fed, (from - self.base) as usize, (to - self.base) as usize) }
    }
}

enum Engine<T> {
    Time(TimeEngine<T>),
    Seq(SeqEngine<T>),
}

/// The items of one task's open windows (see the module docs).
pub struct Windower<T> {
    engine: Engine<T>,
    watermark: Option<i64>,
    /// Items held, released or not.
    len: usize,
}

impl<T> Windower<T> {
    /// Windows of `length`, every `slide` (equal for tumbling windows). Panics on a zero size
    /// (the spec's parser refuses them).
    pub fn new(length: Size, slide: Size) -> Self {
        let count = |n: u64| {
            assert!(n > 0, "a window size of 0 tuples");
            n
        };
        let engine = match (length, slide) {
            (Size::Time(l), Size::Time(s)) => Engine::Time(TimeEngine::new(millis(l), millis(s))),
            (Size::Count(n), Size::Count(m)) => {
                Engine::Seq(SeqEngine::new(SeqKind::Count { n: count(n), m: count(m) }))
            }
            (Size::Time(l), Size::Count(m)) => {
                Engine::Seq(SeqEngine::new(SeqKind::TimeCount { len: millis(l), m: count(m) }))
            }
            (Size::Count(n), Size::Time(s)) => {
                Engine::Seq(SeqEngine::new(SeqKind::CountTime { n: count(n), slide: millis(s) }))
            }
        };
        Windower { engine, watermark: None, len: 0 }
    }

    /// The windows of a bolt's spec.
    pub fn from_spec(spec: &WindowSpec) -> Self {
        Self::new(spec.length, spec.slide)
    }

    /// Items held: waiting, in open windows, or released but still shown as a window's
    /// expired items.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last watermark passed to [`advance`](Self::advance).
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Holds `item`, at `ts_ms`, unless it is behind the watermark: then it is handed back.
    #[inline]
    pub fn insert(&mut self, ts_ms: i64, item: T) -> Insert<T> {
        if self.watermark.is_some_and(|w| ts_ms < w) {
            return Insert::Late(item);
        }
        match &mut self.engine {
            Engine::Time(e) => e.insert(ts_ms, item),
            Engine::Seq(e) => e.insert(ts_ms, item, self.watermark),
        }
        self.len += 1;
        Insert::Accepted
    }

    /// Moves the watermark to `watermark_ms` (an earlier one is ignored). Windows ready then
    /// come out of [`next_window`](Self::next_window).
    pub fn advance(&mut self, watermark_ms: i64) {
        self.watermark = Some(self.watermark.map_or(watermark_ms, |w| w.max(watermark_ms)));
    }

    /// The end of the stream: every open window is ready to fire.
    pub fn finish(&mut self) {
        self.advance(END_OF_TIME);
    }

    /// The next window ready to fire, in order of their end; `None` once none is ready.
    pub fn next_window(&mut self) -> Option<Window<'_, T>> {
        let watermark = self.watermark?;
        match &mut self.engine {
            Engine::Time(e) => {
                self.len -= e.compact();
                e.next_window(watermark)
            }
            Engine::Seq(e) => {
                self.len -= e.compact();
                e.next_window(watermark)
            }
        }
    }

    /// The items released since the last call (the caller acks them): every window holding
    /// them has fired.
    pub fn take_released(&mut self) -> Items<'_, T> {
        match &mut self.engine {
            Engine::Time(e) => {
                self.len -= e.compact();
                e.take_released()
            }
            Engine::Seq(e) => {
                if let Some(w) = self.watermark {
                    e.feed(w);
                }
                self.len -= e.compact();
                e.take_released(self.watermark)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const fn ms(n: u64) -> Size {
        Size::Time(Duration::from_millis(n))
    }

    /// A fired window, owned, items sorted.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Fired {
        start: i64,
        end: i64,
        items: Vec<u32>,
        new: Vec<u32>,
        expired: Vec<u32>,
    }

    fn fired(start: i64, end: i64, items: &[u32], new: &[u32], expired: &[u32]) -> Fired {
        Fired { start, end, items: items.to_vec(), new: new.to_vec(), expired: expired.to_vec() }
    }

    fn sorted(items: Items<'_, u32>) -> Vec<u32> {
        let mut v: Vec<u32> = items.iter().copied().collect();
        assert_eq!(v.len(), items.len());
        v.sort_unstable();
        v
    }

    /// Every window ready, then the releases.
    fn drain(w: &mut Windower<u32>) -> (Vec<Fired>, Vec<u32>) {
        let mut out = Vec::new();
        while let Some(win) = w.next_window() {
            out.push(Fired {
                start: win.start(),
                end: win.end(),
                items: sorted(win.items()),
                new: sorted(win.new_items()),
                expired: sorted(win.expired()),
            });
        }
        let released = w.take_released().iter().copied().collect();
        (out, released)
    }

    /// Items are their own timestamps.
    fn insert_all(w: &mut Windower<u32>, ts: &[u32]) {
        for &t in ts {
            assert_eq!(w.insert(t as i64, t), Insert::Accepted);
        }
    }

    #[test]
    fn time_length_time_slide_fires_the_aligned_windows_storm_would() {
        let mut w = Windower::new(ms(10_000), ms(5_000));
        insert_all(&mut w, &[6_000, 1_000, 12_000]);
        w.advance(10_000);
        let (windows, released) = drain(&mut w);
        assert_eq!(
            windows,
            vec![
                fired(-5_000, 5_000, &[1_000], &[1_000], &[]),
                fired(0, 10_000, &[1_000, 6_000], &[6_000], &[]),
            ]
        );
        assert_eq!(released, vec![1_000], "6 000 is still in [5 000, 15 000)");
        w.finish();
        let (windows, released) = drain(&mut w);
        assert_eq!(
            windows,
            vec![
                fired(5_000, 15_000, &[6_000, 12_000], &[12_000], &[1_000]),
                fired(10_000, 20_000, &[12_000], &[], &[6_000]),
            ]
        );
        assert_eq!(released, vec![6_000, 12_000]);
    }

    #[test]
    fn tumbling_time_windows_skip_empty_windows() {
        let mut w = Windower::new(ms(1_000), ms(1_000));
        insert_all(&mut w, &[100, 900, 1_500, 3_200]);
        w.finish();
        let (windows, released) = drain(&mut w);
        assert_eq!(
            windows,
            vec![
                fired(0, 1_000, &[100, 900], &[100, 900], &[]),
                fired(1_000, 2_000, &[1_500], &[1_500], &[100, 900]),
                fired(3_000, 4_000, &[3_200], &[3_200], &[1_500]),
            ]
        );
        assert_eq!(released, vec![100, 900, 1_500, 3_200]);
    }

    #[test]
    fn count_length_count_slide_fires_every_m_with_the_last_n() {
        // Processing time: ts = arrival, watermark = now.
        let mut w = Windower::new(Size::Count(3), Size::Count(2));
        let mut windows = Vec::new();
        let mut released = Vec::new();
        for t in 1..=7 {
            insert_all(&mut w, &[t]);
            w.advance(t as i64);
            let (f, r) = drain(&mut w);
            windows.extend(f);
            released.push(r);
        }
        assert_eq!(
            windows,
            vec![
                fired(1, 3, &[1, 2], &[1, 2], &[]),
                fired(2, 5, &[2, 3, 4], &[3, 4], &[1]),
                fired(4, 7, &[4, 5, 6], &[5, 6], &[2, 3]),
            ]
        );
        assert_eq!(released, vec![vec![], vec![1], vec![], vec![2, 3], vec![], vec![4, 5], vec![]]);
        w.finish();
        let (windows, released) = drain(&mut w);
        assert_eq!(windows, vec![fired(5, 8, &[5, 6, 7], &[7], &[4])], "the tail fires at the end");
        assert_eq!(released, vec![6, 7]);
    }

    #[test]
    fn count_windows_with_event_time_take_items_in_timestamp_order() {
        let mut w = Windower::new(Size::Count(2), Size::Count(2));
        insert_all(&mut w, &[30, 10, 40, 20]);
        w.advance(25);
        let (windows, released) = drain(&mut w);
        assert_eq!(windows, vec![fired(10, 21, &[10, 20], &[10, 20], &[])]);
        assert_eq!(released, vec![10, 20], "tumbling: no later window holds them");
        w.advance(40);
        let (windows, released) = drain(&mut w);
        assert_eq!(windows, vec![fired(30, 41, &[30, 40], &[30, 40], &[10, 20])]);
        assert_eq!(released, vec![30, 40]);
    }

    #[test]
    fn time_length_count_slide_fires_every_m_with_the_last_length_of_time() {
        let mut w = Windower::new(ms(1_000), Size::Count(2));
        insert_all(&mut w, &[1_200, 100, 500, 2_000, 1_300, 2_600]);
        w.advance(1_300);
        let (windows, released) = drain(&mut w);
        assert_eq!(
            windows,
            vec![
                // Every 2 items in timestamp order; the items of (t - 1 000, t].
                fired(-499, 501, &[100, 500], &[100, 500], &[]),
                fired(301, 1_301, &[500, 1_200, 1_300], &[1_200, 1_300], &[100]),
            ]
        );
        assert_eq!(released, vec![100]);
        w.finish();
        let (windows, released) = drain(&mut w);
        assert_eq!(
            windows,
            vec![fired(1_601, 2_601, &[2_000, 2_600], &[2_000, 2_600], &[500, 1_200, 1_300])]
        );
        assert_eq!(released, vec![500, 1_200, 1_300, 2_000, 2_600]);
    }

    #[test]
    fn count_length_time_slide_fires_every_slide_with_the_last_n() {
        let mut w = Windower::new(Size::Count(2), ms(1_000));
        insert_all(&mut w, &[100, 300, 200, 1_500, 3_100]);
        w.advance(2_500);
        let (windows, released) = drain(&mut w);
        assert_eq!(
            windows,
            vec![
                fired(200, 1_000, &[200, 300], &[200, 300], &[]),
                fired(300, 2_000, &[300, 1_500], &[1_500], &[200]),
            ]
        );
        // Item 100 is in no window (not among the last 2 before 1 000): released unseen.
        assert_eq!(released, vec![100, 200, 300]);
        w.finish();
        let (windows, released) = drain(&mut w);
        // [2 000, 3 000) has no new item: no window ends there.
        assert_eq!(windows, vec![fired(1_500, 4_000, &[1_500, 3_100], &[3_100], &[300])]);
        assert_eq!(released, vec![1_500, 3_100]);
    }

    #[test]
    fn items_behind_the_watermark_are_late_and_nowhere_else() {
        for (length, slide) in [(ms(1_000), ms(1_000)), (Size::Count(2), Size::Count(1))] {
            let mut w = Windower::new(length, slide);
            insert_all(&mut w, &[5_100]);
            w.advance(5_000);
            assert_eq!(w.insert(4_999, 4_999), Insert::Late(4_999));
            assert_eq!(w.insert(5_000, 5_000), Insert::Accepted, "at the watermark is on time");
            assert_eq!(w.len(), 2);
            w.finish();
            let (windows, mut released) = drain(&mut w);
            assert!(windows.iter().all(|f| !f.items.contains(&4_999)), "{windows:?}");
            released.sort_unstable();
            assert_eq!(released, vec![5_000, 5_100]);
        }
    }

    /// A deterministic stream: (id, ts), out of order within `lag`.
    fn stream(n: u32, lag: i64) -> Vec<(u32, i64)> {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..n).map(|i| (i, (i as i64 * 3 - rng.i64(0..=lag)).max(0))).collect()
    }

    /// Feeds `stream` with a watermark trailing the max timestamp by `lag`, checking every
    /// firing and release; returns the windows (items by id).
    fn run(length: Size, slide: Size, events: &[(u32, i64)], lag: i64) -> Vec<Fired> {
        let mut w = Windower::new(length, slide);
        let mut windows: Vec<Fired> = Vec::new();
        let mut released_after: HashMap<u32, usize> = HashMap::new();
        let mut max_ts = i64::MIN;
        let mut take = |w: &mut Windower<u32>, windows: &mut Vec<Fired>| {
            let (f, r) = drain(w);
            windows.extend(f);
            for id in r {
                assert!(released_after.insert(id, windows.len()).is_none(), "{id} released twice");
            }
        };
        for (k, &(id, ts)) in events.iter().enumerate() {
            assert_eq!(w.insert(ts, id), Insert::Accepted, "{id} at {ts} late");
            max_ts = max_ts.max(ts);
            if k % 37 == 0 {
                w.advance(max_ts - lag);
                take(&mut w, &mut windows);
            }
        }
        w.finish();
        take(&mut w, &mut windows);
        assert_eq!(released_after.len(), events.len(), "every item released");
        for pair in windows.windows(2) {
            assert!(pair[0].end <= pair[1].end, "fired out of order: {pair:?}");
        }
        for (i, f) in windows.iter().enumerate() {
            for id in &f.items {
                assert!(i < released_after[id], "{id} released before window {f:?} fired");
            }
        }
        windows
    }

    #[test]
    fn out_of_order_items_within_the_lag_give_exact_time_windows() {
        let lag = 200;
        let events = stream(5_000, lag);
        for (length, slide) in [(1_000, 1_000), (1_000, 250), (700, 300)] {
            let windows = run(ms(length), ms(slide), &events, lag);
            let (length, slide) = (length as i64, slide as i64);
            let mut expected: HashMap<i64, Vec<u32>> = HashMap::new();
            for &(id, ts) in &events {
                let mut k = ts.div_euclid(slide);
                while k * slide + length > ts {
                    expected.entry(k * slide).or_default().push(id);
                    k -= 1;
                }
            }
            assert_eq!(windows.len(), expected.len(), "{length}/{slide}");
            for f in &windows {
                assert_eq!(f.end - f.start, length);
                let mut want = expected[&f.start].clone();
                want.sort_unstable();
                assert_eq!(f.items, want, "window at {}", f.start);
            }
        }
    }

    #[test]
    fn every_mix_fires_in_order_and_releases_each_item_once_after_its_windows() {
        let lag = 200;
        let events = stream(3_000, lag);
        for (length, slide) in [
            (ms(1_000), ms(200)),
            (Size::Count(50), Size::Count(20)),
            (Size::Count(10), Size::Count(10)),
            (ms(500), Size::Count(30)),
            (Size::Count(40), ms(300)),
        ] {
            let windows = run(length, slide, &events, lag);
            assert!(!windows.is_empty());
            // Count windows see items in timestamp order.
            if let Size::Count(_) = slide {
                let ts: HashMap<u32, i64> = events.iter().copied().collect();
                let new: usize = windows.iter().map(|f| f.new.len()).sum();
                assert_eq!(new, events.len(), "each item new once");
                let span = |f: &Fired| {
                    let ts = f.new.iter().map(|id| ts[id]);
                    (ts.clone().min(), ts.max())
                };
                for pair in windows.windows(2) {
                    let ((_, max0), (min1, _)) = (span(&pair[0]), span(&pair[1]));
                    assert!(max0 <= min1 || min1.is_none(), "fed out of order: {length:?}/{slide:?}");
                }
            }
        }
    }

    #[test]
    fn finishing_fires_every_open_window() {
        let mut w = Windower::new(ms(10_000), ms(2_000));
        insert_all(&mut w, &[0, 3_000, 9_999, 25_000]);
        w.finish();
        let (windows, released) = drain(&mut w);
        let starts: Vec<i64> = windows.iter().map(|f| f.start).collect();
        assert_eq!(
            starts,
            vec![
                -8_000, -6_000, -4_000, -2_000, 0, 2_000, 4_000, 6_000, 8_000, 16_000, 18_000, 20_000,
                22_000, 24_000
            ]
        );
        assert_eq!(released, vec![0, 3_000, 9_999, 25_000]);
        assert!(w.next_window().is_none());
        assert_eq!(w.insert(i64::MAX - 1, 1), Insert::Late(1), "nothing is on time after the end");
    }

    #[test]
    fn released_items_are_dropped() {
        let mut w = Windower::new(ms(100), ms(100));
        for t in 0..10_000u32 {
            insert_all(&mut w, &[t]);
            if t % 100 == 99 {
                w.advance(t as i64 + 1);
                drain(&mut w);
                assert!(w.len() <= 200, "held {} at {t}", w.len());
            }
        }
    }

    #[test]
    fn a_far_outlier_costs_one_bucket_not_the_gap() {
        let mut w = Windower::new(ms(1), ms(1));
        insert_all(&mut w, &[0, 4_000_000_000]);
        w.finish();
        let (windows, released) = drain(&mut w);
        assert_eq!(windows.len(), 2);
        assert_eq!(released, vec![0, 4_000_000_000]);
    }
}
