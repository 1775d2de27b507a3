//! Small pieces of synchronisation the core and the faces share.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// How many shards per-thread structures have (a drain's waiter lists, the counters of
/// admitted requests): more than the cores of most hosts that run one service, few
/// enough that the end of a drain wakes them all at once.
pub(crate) const SHARDS: usize = 16;

/// Keeps a value alone on its cache line (128 bytes covers adjacent-line prefetching), so
/// that writes to its neighbours (the verdict's pointer changes at every check) never
/// evict it from the readers' caches.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct CacheLine<T>(pub(crate) T);

/// This thread's shard: threads take the shards in turn, once each.
pub(crate) fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold plain counters: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
