//! A fast, unseeded hasher for the bolts' hot-path maps (word counts, seen-input sets).
//!
//! Contract: [`FastMap`] and [`FastSet`] are std collections hashed with the API's
//! [`StableHasher`] (8 bytes per multiply) instead of SipHash. It is not keyed, so input
//! crafted to collide could slow a map down; that is fine for these demonstration bolts,
//! whose keys come from the topology's own data.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use squall_api::StableHasher;

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
pub type FastSet<K> = HashSet<K, BuildHasherDefault<FastHasher>>;

#[derive(Default)]
pub struct FastHasher(StableHasher);

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0.write_bytes(bytes);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0.write_u64(i.into());
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0.write_u64(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0.write_u64(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}
