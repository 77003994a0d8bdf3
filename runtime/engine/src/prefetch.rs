//! Hints to the CPU to load memory that a loop is about to touch.
//!
//! Contract: [`read`] never changes what a program computes: it only asks the CPU to start
//! loading the cache line of a value that a later access will need, so that a loop over a
//! batch of ids (a spout's outcomes, an acker's messages), each naming a slot of a table far
//! larger than the caches, overlaps the misses instead of waiting on each in turn. On targets
//! without a prefetch instruction it does nothing.

/// How many items ahead of the one being handled a batch loop prefetches: far enough to cover
/// a miss to memory, near enough that the line is still in cache when its turn comes.
pub const AHEAD: usize = 8;

/// Starts loading the cache line holding `value`.
#[inline(always)]
pub fn read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and has no effect the program can observe
    // (and `value` is a valid reference anyway). SSE, which it needs, is part of x86_64.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
