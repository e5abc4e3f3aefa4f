//! Bounded local stores: [`LineStore`] with an exact LRU or LFU replacement policy.
//!
//! The store knows nothing about coherence: it holds values under keys, counts entries and bytes,
//! and hands back the victims it evicts so that the owner (a [`crate::CacheNode`]) can write a
//! Modified line back before the data is gone. Every operation is O(1) (hash map + intrusive
//! lists over slabs); the map uses a fixed hasher so that runs are reproducible.

mod lfu;
mod lru;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::error::CacheError;
use lfu::LfuOrder;
use lru::LruOrder;

/// Which entry a full store evicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EvictionPolicy {
    /// Least recently used (every `get` hit and `insert` counts as a use).
    #[default]
    Lru,
    /// Least frequently used; ties go to the least recently used of the least frequent.
    Lfu,
}

impl std::fmt::Display for EvictionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EvictionPolicy::Lru => "lru",
            EvictionPolicy::Lfu => "lfu",
        })
    }
}

/// Bounds of a [`LineStore`]; at least one must be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Largest number of entries held at once.
    pub entries_max: Option<usize>,
    /// Largest sum of entry sizes (as given to [`LineStore::insert`]) held at once.
    pub bytes_max: Option<usize>,
}

impl StoreLimits {
    /// A store bounded by entry count only.
    pub fn entries(entries_max: usize) -> Self {
        Self {
            entries_max: Some(entries_max),
            bytes_max: None,
        }
    }
}

/// An entry the store pushed out to make room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evicted<K, V> {
    /// Key of the victim.
    pub key: K,
    /// Value of the victim; for a Modified line this is the data to write back.
    pub value: V,
}

/// FNV-1a: a fixed, seedless hasher, so that nothing depends on `RandomState`.
#[derive(Clone, Copy, Debug)]
pub struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<FnvHasher>>;

#[derive(Debug)]
struct Slot<V> {
    value: V,
    size_bytes: usize,
    handle: usize,
}

#[derive(Debug)]
enum Order<K> {
    Lru(LruOrder<K>),
    Lfu(LfuOrder<K>),
}

impl<K> Order<K> {
    fn insert(&mut self, key: K) -> usize {
        match self {
            Order::Lru(order) => order.insert(key),
            Order::Lfu(order) => order.insert(key),
        }
    }
    fn touch(&mut self, handle: usize) {
        match self {
            Order::Lru(order) => order.touch(handle),
            Order::Lfu(order) => order.touch(handle),
        }
    }
    fn remove(&mut self, handle: usize) -> K {
        match self {
            Order::Lru(order) => order.remove(handle),
            Order::Lfu(order) => order.remove(handle),
        }
    }
    fn victim(&self) -> Option<usize> {
        match self {
            Order::Lru(order) => order.victim(),
            Order::Lfu(order) => order.victim(),
        }
    }
    fn key(&self, handle: usize) -> &K {
        match self {
            Order::Lru(order) => order.key(handle),
            Order::Lfu(order) => order.key(handle),
        }
    }
    fn len(&self) -> usize {
        match self {
            Order::Lru(order) => order.len(),
            Order::Lfu(order) => order.len(),
        }
    }
}

/// A bounded map from keys to values with LRU or LFU eviction, all operations O(1).
///
/// `get`/`get_mut`/`insert` count as uses for the replacement policy; `peek`/`peek_mut` do not.
/// Eviction happens *before* an insert that would exceed a bound, so a new entry never evicts
/// itself, and the victims are returned to the caller.
#[derive(Debug)]
pub struct LineStore<K, V> {
    policy: EvictionPolicy,
    limits: StoreLimits,
    map: FnvMap<K, Slot<V>>,
    order: Order<K>,
    bytes: usize,
}

impl<K: Hash + Eq + Clone, V> LineStore<K, V> {
    /// An empty store.
    ///
    /// # Errors
    /// [`CacheError::InvalidConfig`] when neither bound is set or a bound is zero.
    pub fn new(policy: EvictionPolicy, limits: StoreLimits) -> Result<Self, CacheError> {
        if limits.entries_max.is_none() && limits.bytes_max.is_none() {
            return Err(CacheError::InvalidConfig(
                "a line store needs entries_max or bytes_max".into(),
            ));
        }
        if limits.entries_max == Some(0) || limits.bytes_max == Some(0) {
            return Err(CacheError::InvalidConfig(
                "line store bounds must be positive".into(),
            ));
        }
        let order = match policy {
            EvictionPolicy::Lru => Order::Lru(LruOrder::new()),
            EvictionPolicy::Lfu => Order::Lfu(LfuOrder::new()),
        };
        Ok(Self {
            policy,
            limits,
            map: FnvMap::default(),
            order,
            bytes: 0,
        })
    }

    /// The replacement policy.
    pub fn policy(&self) -> EvictionPolicy {
        self.policy
    }

    /// The bounds.
    pub fn limits(&self) -> StoreLimits {
        self.limits
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Sum of the sizes of the entries.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `key` is present (not a use).
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// The value under `key`, counting a use.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.get_mut(key).map(|value| &*value)
    }

    /// The value under `key`, mutably, counting a use.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let slot = self.map.get_mut(key)?;
        self.order.touch(slot.handle);
        Some(&mut slot.value)
    }

    /// The value under `key` without counting a use.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|slot| &slot.value)
    }

    /// The value under `key`, mutably, without counting a use.
    pub fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|slot| &mut slot.value)
    }

    /// The key that would be evicted next.
    pub fn victim(&self) -> Option<&K> {
        self.order.victim().map(|handle| self.order.key(handle))
    }

    /// Inserts or replaces `key` (counting a use) and returns the entries evicted to make room,
    /// oldest victim first.
    ///
    /// # Errors
    /// [`CacheError::ValueTooLarge`] when `size_bytes` alone exceeds `bytes_max`; the store is
    /// unchanged then.
    pub fn insert(
        &mut self,
        key: K,
        value: V,
        size_bytes: usize,
    ) -> Result<Vec<Evicted<K, V>>, CacheError> {
        if let Some(bytes_max) = self.limits.bytes_max
            && size_bytes > bytes_max
        {
            return Err(CacheError::ValueTooLarge {
                size_bytes,
                limit_bytes: bytes_max,
            });
        }
        let mut evicted = Vec::new();
        if let Some(slot) = self.map.get_mut(&key) {
            self.order.touch(slot.handle);
            self.bytes = self.bytes - slot.size_bytes + size_bytes;
            slot.value = value;
            slot.size_bytes = size_bytes;
            while self.over_limits(0, 0) {
                let victim = self
                    .evict()
                    .expect("over a bound implies a non-empty store");
                assert!(
                    victim.key != key,
                    "a replaced entry fits alone, so it is never its own victim"
                );
                evicted.push(victim);
            }
        } else {
            while self.over_limits(1, size_bytes) {
                evicted.push(
                    self.evict()
                        .expect("over a bound implies a non-empty store"),
                );
            }
            let handle = self.order.insert(key.clone());
            self.map.insert(
                key,
                Slot {
                    value,
                    size_bytes,
                    handle,
                },
            );
            self.bytes += size_bytes;
        }
        self.assert_consistent();
        Ok(evicted)
    }

    fn over_limits(&self, extra_entries: usize, extra_bytes: usize) -> bool {
        if self.map.is_empty() {
            return false;
        }
        let entries = self.map.len() + extra_entries;
        let bytes = self.bytes + extra_bytes;
        self.limits.entries_max.is_some_and(|max| entries > max)
            || self.limits.bytes_max.is_some_and(|max| bytes > max)
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.order.remove(slot.handle);
        self.bytes -= slot.size_bytes;
        Some(slot.value)
    }

    /// Removes and returns the victim chosen by the policy.
    pub fn evict(&mut self) -> Option<Evicted<K, V>> {
        let handle = self.order.victim()?;
        let key = self.order.remove(handle);
        let slot = self
            .map
            .remove(&key)
            .expect("every ordered key is in the map");
        self.bytes -= slot.size_bytes;
        Some(Evicted {
            key,
            value: slot.value,
        })
    }

    /// All entries, in no particular (but deterministic) order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(key, slot)| (key, &slot.value))
    }

    fn assert_consistent(&self) {
        assert_eq!(
            self.map.len(),
            self.order.len(),
            "line store invariant: map and replacement order hold the same keys"
        );
        if let Some(max) = self.limits.entries_max {
            assert!(self.map.len() <= max, "line store exceeded entries_max");
        }
        if let Some(max) = self.limits.bytes_max {
            assert!(self.bytes <= max, "line store exceeded bytes_max");
        }
    }
}

impl<K: Hash + Eq + Clone, V> LineStore<K, V> {
    /// The access count of `key` under LFU (`None` under LRU or when absent); for tests and stats.
    pub fn frequency(&self, key: &K) -> Option<u64> {
        let slot = self.map.get(key)?;
        match &self.order {
            Order::Lfu(order) => Some(order.frequency(slot.handle)),
            Order::Lru(_) => None,
        }
    }
}
