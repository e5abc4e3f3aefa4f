//! Bounded local stores: [`LineStore`] with an exact LRU or LFU replacement policy.
//!
//! The store knows nothing about coherence: it holds values under keys, counts entries and bytes,
//! and hands back the victims it evicts so that the owner (a [`crate::CacheNode`]) can write a
//! Modified line back before the data is gone. Every operation is O(1) (hash map + intrusive
//! lists over slabs).

mod key;
mod lfu;
mod lru;

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use foldhash::SharedSeed;
use foldhash::fast::FoldHasher;
use hashbrown::HashTable;

use crate::error::CacheError;
pub use key::LineKey;
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

/// A store's slot number: what the replacement orders link. 32 bits keep their links dense.
type Handle = u32;

/// A use of an entry found by [`LineStore::peek_for_use`], counted later by
/// [`LineStore::count_use`]: lets readers that share the store find values without writing to
/// it, and leave the recency or frequency update to whoever next holds it exclusively. It
/// names the entry's slot, so it is exact only while the store has not changed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryUse(Handle);

/// Most entries a store holds: every handle but `Handle::MAX`, which the orders use for "none".
const ENTRIES_MAX: usize = Handle::MAX as usize;

/// The index's hash: foldhash, with both of its seeds drawn from the store's seed. Its shared
/// seed is the secret part: with foldhash's fixed one, whoever knows that constant can write
/// keys that hash alike whatever the per-hasher seed.
#[derive(Clone)]
struct KeyHasher {
    shared: SharedSeed,
    per_hasher: u64,
}

impl KeyHasher {
    fn new(seed: u64) -> Self {
        KeyHasher {
            shared: SharedSeed::from_u64(seed),
            // Any odd constant: keeps seed 0 from starting the accumulator at 0.
            per_hasher: seed.rotate_left(32) ^ 0x243f_6a88_85a3_08d3,
        }
    }

    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        let mut hasher = FoldHasher::with_seed(self.per_hasher, &self.shared);
        key.hash(&mut hasher);
        hasher.finish()
    }
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed is what keeps chosen keys from colliding: never in a log.
        f.write_str("KeyHasher(..)")
    }
}

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    value: V,
    size_bytes: usize,
}

#[derive(Debug)]
enum Order {
    Lru(LruOrder),
    Lfu(LfuOrder),
}

impl Order {
    fn new(policy: EvictionPolicy) -> Self {
        match policy {
            EvictionPolicy::Lru => Order::Lru(LruOrder::new()),
            EvictionPolicy::Lfu => Order::Lfu(LfuOrder::new()),
        }
    }
    fn insert(&mut self, handle: Handle) {
        match self {
            Order::Lru(order) => order.insert(handle),
            Order::Lfu(order) => order.insert(handle),
        }
    }
    fn touch(&mut self, handle: Handle) {
        match self {
            Order::Lru(order) => order.touch(handle),
            Order::Lfu(order) => order.touch(handle),
        }
    }
    fn remove(&mut self, handle: Handle) {
        match self {
            Order::Lru(order) => order.remove(handle),
            Order::Lfu(order) => order.remove(handle),
        }
    }
    fn victim(&self) -> Option<Handle> {
        match self {
            Order::Lru(order) => order.victim(),
            Order::Lfu(order) => order.victim(),
        }
    }
    fn victim_except(&self, kept: Handle) -> Option<Handle> {
        match self {
            Order::Lru(order) => order.victim_except(kept),
            Order::Lfu(order) => order.victim_except(kept),
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
///
/// Layout, for the hit path (`get`), which touches as few cache lines as it can: an index of
/// 32-bit slot numbers (a `HashTable`, so each key is stored once, in its slot), a slab of
/// slots (key, value, size), and the replacement order's links in an array of their own.
#[derive(Debug)]
pub struct LineStore<K, V> {
    policy: EvictionPolicy,
    limits: StoreLimits,
    hasher: KeyHasher,
    index: HashTable<Handle>,
    slots: Vec<Option<Slot<K, V>>>,
    free: Vec<Handle>,
    order: Order,
    bytes: usize,
}

impl<K: Hash + Eq, V> LineStore<K, V> {
    /// An empty store whose index hashes with seed 0 (for tests and benchmarks; what the store
    /// does never depends on the seed, only how fast it does it).
    ///
    /// # Errors
    /// [`CacheError::InvalidConfig`] when neither bound is set, a bound is zero, or
    /// `entries_max` is 2^32 − 1 or more.
    pub fn new(policy: EvictionPolicy, limits: StoreLimits) -> Result<Self, CacheError> {
        Self::with_hash_seed(policy, limits, 0)
    }

    /// An empty store whose index hashes with `hash_seed`. A server picks it at random: the
    /// keys come from clients, and without knowing the seed they cannot choose keys that share
    /// a hash (foldhash resists that as far as a fast, non-cryptographic hash does).
    ///
    /// # Errors
    /// As [`LineStore::new`].
    pub fn with_hash_seed(
        policy: EvictionPolicy,
        limits: StoreLimits,
        hash_seed: u64,
    ) -> Result<Self, CacheError> {
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
        if limits.entries_max.is_some_and(|max| max > ENTRIES_MAX) {
            return Err(CacheError::InvalidConfig(format!(
                "a line store holds at most {ENTRIES_MAX} entries"
            )));
        }
        Ok(Self {
            policy,
            limits,
            hasher: KeyHasher::new(hash_seed),
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            order: Order::new(policy),
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
        self.index.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Sum of the sizes of the entries.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn slot(&self, handle: Handle) -> &Slot<K, V> {
        self.slots[handle as usize]
            .as_ref()
            .expect("the index holds only live slots")
    }

    fn slot_mut(&mut self, handle: Handle) -> &mut Slot<K, V> {
        self.slots[handle as usize]
            .as_mut()
            .expect("the index holds only live slots")
    }

    fn find<Q>(&self, key: &Q) -> Option<Handle>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find_hashed(self.hasher.hash(key), key)
    }

    /// [`LineStore::find`] for a caller that needs the hash again (to insert or to remove).
    fn find_hashed<Q>(&self, hash: u64, key: &Q) -> Option<Handle>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slots = &self.slots;
        self.index
            .find(hash, |&handle| {
                slots[handle as usize]
                    .as_ref()
                    .is_some_and(|slot| slot.key.borrow() == key)
            })
            .copied()
    }

    /// Whether `key` is present (not a use).
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find(key).is_some()
    }

    /// The value under `key`, counting a use.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_mut(key).map(|value| &*value)
    }

    /// The value under `key`, mutably, counting a use.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let handle = self.find(key)?;
        self.order.touch(handle);
        Some(&mut self.slot_mut(handle).value)
    }

    /// The value under `key` without counting a use.
    pub fn peek<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let handle = self.find(key)?;
        Some(&self.slot(handle).value)
    }

    /// The value under `key` without counting a use yet: the use to count with
    /// [`LineStore::count_use`] before the store next changes.
    pub fn peek_for_use<Q>(&self, key: &Q) -> Option<(&V, EntryUse)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let handle = self.find(key)?;
        Some((&self.slot(handle).value, EntryUse(handle)))
    }

    /// Counts a use found by [`LineStore::peek_for_use`]. Counted after the store changed, it
    /// may land on another entry or on none (then it is dropped): a recency error, never a
    /// broken store.
    pub fn count_use(&mut self, used: EntryUse) {
        if self.slots.get(used.0 as usize).is_some_and(Option::is_some) {
            self.order.touch(used.0);
        }
    }

    /// The value under `key`, mutably, without counting a use.
    pub fn peek_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let handle = self.find(key)?;
        Some(&mut self.slot_mut(handle).value)
    }

    /// The key that would be evicted next.
    pub fn victim(&self) -> Option<&K> {
        self.order.victim().map(|handle| &self.slot(handle).key)
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
        let hash = self.hasher.hash(&key);
        if let Some(handle) = self.find_hashed(hash, &key) {
            self.order.touch(handle);
            let slot = self.slot_mut(handle);
            let replaced_bytes = std::mem::replace(&mut slot.size_bytes, size_bytes);
            slot.value = value;
            self.bytes = self.bytes - replaced_bytes + size_bytes;
            // A larger value may push the store over `bytes_max`. The entry being written is
            // never its own victim, even when the policy ranks it last (under LFU a fresh entry
            // that just grew): it fits alone, so evicting the others is always enough.
            while self.over_limits(0, 0) {
                let victim = self
                    .order
                    .victim_except(handle)
                    .expect("over a bound with this entry fitting alone implies another entry");
                evicted.push(self.evict_handle(victim));
            }
        } else {
            while self.over_limits(1, size_bytes) {
                evicted.push(
                    self.evict()
                        .expect("over a bound implies a non-empty store"),
                );
            }
            let slot = Some(Slot {
                key,
                value,
                size_bytes,
            });
            let handle = match self.free.pop() {
                Some(handle) => {
                    self.slots[handle as usize] = slot;
                    handle
                }
                None => {
                    // No free slot: every slot is live, and `over_limits` kept them under
                    // ENTRIES_MAX, so the new handle is below Handle::MAX.
                    let handle = self.slots.len() as Handle;
                    self.slots.push(slot);
                    handle
                }
            };
            let (hasher, slots) = (&self.hasher, &self.slots);
            self.index.insert_unique(hash, handle, |&other| {
                hasher.hash(&slots[other as usize].as_ref().expect("live slot").key)
            });
            self.order.insert(handle);
            self.bytes += size_bytes;
        }
        self.assert_consistent();
        Ok(evicted)
    }

    fn over_limits(&self, extra_entries: usize, extra_bytes: usize) -> bool {
        if self.index.is_empty() {
            return false;
        }
        let entries = self.index.len() + extra_entries;
        let bytes = self.bytes + extra_bytes;
        let entries_max = self.limits.entries_max.unwrap_or(ENTRIES_MAX);
        entries > entries_max || self.limits.bytes_max.is_some_and(|max| bytes > max)
    }

    /// Takes the slot `handle`, whose key hashes to `hash`, out of the index, the order and the
    /// slab.
    fn take(&mut self, handle: Handle, hash: u64) -> Slot<K, V> {
        self.index
            .find_entry(hash, |&other| other == handle)
            .expect("a live slot is in the index")
            .remove();
        self.order.remove(handle);
        let slot = self.slots[handle as usize]
            .take()
            .expect("a live slot is in the slab");
        self.free.push(handle);
        self.bytes -= slot.size_bytes;
        slot
    }

    /// Removes `key` and returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash(key);
        let handle = self.find_hashed(hash, key)?;
        Some(self.take(handle, hash).value)
    }

    /// Removes and returns the victim chosen by the policy.
    pub fn evict(&mut self) -> Option<Evicted<K, V>> {
        let handle = self.order.victim()?;
        Some(self.evict_handle(handle))
    }

    fn evict_handle(&mut self, handle: Handle) -> Evicted<K, V> {
        let hash = self.hasher.hash(&self.slot(handle).key);
        let Slot { key, value, .. } = self.take(handle, hash);
        Evicted { key, value }
    }

    /// Removes every entry (a node dropped from the membership holds nothing any more).
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.order = Order::new(self.policy);
        self.bytes = 0;
    }

    /// All entries, in no particular (but deterministic) order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots
            .iter()
            .flatten()
            .map(|slot| (&slot.key, &slot.value))
    }

    fn assert_consistent(&self) {
        assert_eq!(
            self.index.len(),
            self.order.len(),
            "line store invariant: index and replacement order hold the same entries"
        );
        assert_eq!(
            self.index.len() + self.free.len(),
            self.slots.len(),
            "line store invariant: every slot is live or free"
        );
        if let Some(max) = self.limits.entries_max {
            assert!(self.index.len() <= max, "line store exceeded entries_max");
        }
        if let Some(max) = self.limits.bytes_max {
            assert!(self.bytes <= max, "line store exceeded bytes_max");
        }
    }

    /// The access count of `key` under LFU (`None` under LRU or when absent); for tests and stats.
    pub fn frequency<Q>(&self, key: &Q) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let handle = self.find(key)?;
        match &self.order {
            Order::Lfu(order) => Some(order.frequency(handle)),
            Order::Lru(_) => None,
        }
    }
}
