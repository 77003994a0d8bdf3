//! The bounded cache of open sealed-segment files, shared by every log of the process.
//!
//! Contract:
//! - At most [`capacity`] sealed segments hold a file descriptor through this cache at any
//!   time ([`DEFAULT_CAPACITY`] unless [`set_capacity`] changed it); opening one more closes
//!   the least recently used. So with small segments and many of them, the process still has
//!   descriptors for its sockets, active segments and new topics.
//! - An evicted file is closed once the last reader holding it (a `ReadView` in progress)
//!   drops it; the next read of that segment opens it again. Reads never fail because of an
//!   eviction.
//! - [`forget`] drops a segment's entry (retention deleted its files).
//! - The bookkeeping is [`Lru`], a pure structure tested on its own; the cache's lock is held
//!   only to look up or insert, never across an `open`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::Hash;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::util::lock;

/// How many sealed segments may be open at once, by default.
pub const DEFAULT_CAPACITY: usize = 256;

static CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_CAPACITY);
static FILES: OnceLock<Mutex<Lru<Arc<Path>, Arc<File>>>> = OnceLock::new();

/// Sets how many sealed segments the process keeps open at most (at least 1); takes effect
/// from the next open.
pub fn set_capacity(n: usize) {
    CAPACITY.store(n.max(1), Ordering::Relaxed);
}

/// How many sealed segments the process keeps open at most.
pub fn capacity() -> usize {
    CAPACITY.load(Ordering::Relaxed)
}

fn files() -> &'static Mutex<Lru<Arc<Path>, Arc<File>>> {
    FILES.get_or_init(|| Mutex::new(Lru::default()))
}

/// The open file of the sealed segment at `path`, opening it (and closing the least recently
/// used one beyond the capacity) if it is not open.
pub(crate) fn get(path: &Arc<Path>) -> std::io::Result<Arc<File>> {
    if let Some(file) = lock(files()).get(path) {
        return Ok(file.clone());
    }
    let file = Arc::new(File::open(path)?);
    let evicted = lock(files()).insert(path.clone(), file.clone(), capacity());
    // Closed outside the lock.
    drop(evicted);
    Ok(file)
}

/// Drops the entry of `path`, if any.
pub(crate) fn forget(path: &Path) {
    let removed = lock(files()).remove(path);
    drop(removed);
}

/// How many files the cache holds now.
#[cfg(test)]
pub(crate) fn open_count() -> usize {
    lock(files()).len()
}

/// A least-recently-used map: `get` marks an entry used, `insert` evicts the least recently
/// used entries beyond a capacity.
pub(crate) struct Lru<K, V> {
    entries: HashMap<K, (V, u64)>,
    /// Use tick → key, oldest first.
    order: BTreeMap<u64, K>,
    tick: u64,
}

impl<K, V> Default for Lru<K, V> {
    fn default() -> Self {
        Lru { entries: HashMap::new(), order: BTreeMap::new(), tick: 0 }
    }
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub(crate) fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, used) = self.entries.get_mut(key)?;
        let key = self.order.remove(used)?;
        self.tick += 1;
        *used = self.tick;
        self.order.insert(self.tick, key);
        Some(value)
    }

    /// Inserts (or replaces) `key`, then evicts the least recently used entries until at most
    /// `capacity` are left; returns the evicted values.
    pub(crate) fn insert(&mut self, key: K, value: V, capacity: usize) -> Vec<V> {
        let mut evicted = Vec::new();
        if let Some(old) = self.remove(&key) {
            evicted.push(old);
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (value, self.tick));
        while self.entries.len() > capacity.max(1) {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((v, _)) = self.entries.remove(&oldest) {
                evicted.push(v);
            }
        }
        evicted
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, used) = self.entries.remove(key)?;
        self.order.remove(&used);
        Some(value)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn the_least_recently_used_entry_is_evicted_first() {
        let mut lru = Lru::default();
        assert!(lru.insert("a", 1, 2).is_empty());
        assert!(lru.insert("b", 2, 2).is_empty());
        assert_eq!(lru.get("a"), Some(&1), "a is now the most recently used");
        assert_eq!(lru.insert("c", 3, 2), [2], "b was the least recently used");
        assert_eq!(lru.get("b"), None);
        assert_eq!(lru.get("a"), Some(&1));
        assert_eq!(lru.get("c"), Some(&3));
        assert_eq!(lru.len(), 2);
    }

    #[test]
    fn replacing_and_removing_keep_the_order_consistent() {
        let mut lru = Lru::default();
        lru.insert("a", 1, 3);
        lru.insert("b", 2, 3);
        assert_eq!(lru.insert("a", 10, 3), [1], "the replaced value comes back");
        assert_eq!(lru.remove("b"), Some(2));
        assert_eq!(lru.remove("b"), None);
        lru.insert("c", 3, 3);
        lru.insert("d", 4, 3);
        assert_eq!(lru.insert("e", 5, 3), [10], "a (replaced before c and d) is the oldest");
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.insert("f", 6, 1), [3, 4, 5], "a lower capacity evicts down to it");
        assert_eq!(lru.get("f"), Some(&6));
    }
}
