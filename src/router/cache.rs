//! Bounded classification cache keyed by exact statement text.
//!
//! Sharded so sessions on different worker threads rarely meet on one lock; each lock is held
//! for one hash-map operation, never across parsing. Eviction is deliberately crude: a shard
//! that would exceed its byte budget is cleared. A hot working set smaller than the budget
//! refills within one parse per statement; anything cleverer (CLOCK, LRU) would add
//! bookkeeping to every hit, which is the path that must stay well under a microsecond.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use super::Verdict;

const SHARDS: usize = 16;

/// Approximate per-entry overhead beyond the key bytes: hash-map slot, `Box<str>` header,
/// allocator rounding.
const ENTRY_OVERHEAD: usize = 64;

/// Cache counters, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to tokenize (and maybe parse).
    pub misses: u64,
    /// Statements cached now.
    pub entries: usize,
    /// Their estimated memory, counted against `cache_bytes`.
    pub bytes: usize,
    /// How many times a full shard was cleared.
    pub evictions: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, Verdict>,
    bytes: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
}

pub(super) struct Cache {
    shards: Box<[Mutex<Shard>]>,
    /// Picks the shard; keyed randomly per process so clients cannot aim at one shard.
    picker: RandomState,
    shard_budget: usize,
}

impl Cache {
    /// `budget` bytes in total; 0 disables the cache.
    pub(super) fn new(budget: usize) -> Self {
        let shards = if budget == 0 { 0 } else { SHARDS };
        Cache {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            picker: RandomState::new(),
            shard_budget: budget / SHARDS,
        }
    }

    fn shard(&self, key: &str) -> Option<std::sync::MutexGuard<'_, Shard>> {
        if self.shards.is_empty() {
            return None;
        }
        let index = (self.picker.hash_one(key) as usize) % self.shards.len();
        // A panic while holding the lock cannot leave a half-written entry (one map call),
        // so a poisoned shard is still consistent.
        Some(self.shards[index].lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) fn get(&self, key: &str) -> Option<Verdict> {
        let mut shard = self.shard(key)?;
        let found = shard.map.get(key).copied();
        if found.is_some() {
            shard.hits += 1;
        } else {
            shard.misses += 1;
        }
        found
    }

    pub(super) fn insert(&self, key: &str, verdict: Verdict) {
        let cost = key.len() + ENTRY_OVERHEAD;
        if cost > self.shard_budget / 4 {
            // One huge statement must not flush everything else; it is re-parsed each time.
            return;
        }
        let Some(mut shard) = self.shard(key) else { return };
        if shard.map.contains_key(key) {
            return;
        }
        if shard.bytes + cost > self.shard_budget {
            shard.map.clear();
            shard.bytes = 0;
            shard.evictions += 1;
        }
        shard.map.insert(key.into(), verdict);
        shard.bytes += cost;
    }

    pub(super) fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            stats.hits += shard.hits;
            stats.misses += shard.misses;
            stats.entries += shard.map.len();
            stats.bytes += shard.bytes;
            stats.evictions += shard.evictions;
        }
        stats
    }
}
