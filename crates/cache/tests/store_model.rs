//! C-06: the O(1) LRU and LFU stores against simple O(n) reference models. Capacity ∈
//! {1, 2, 8, 64}, key space 2 × capacity; the hit/miss pattern and the victim sequence must be
//! identical. Default budget: 64 cases × 2,000 ops per policy (set `PROPTEST_CASES` for more).

use distsync_cache::{EvictionPolicy, LineStore, StoreLimits};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum StoreOp {
    Get(u32),
    Put(u32),
    Remove(u32),
}

/// Reference LRU: a vector ordered from least to most recently used.
struct ReferenceLru {
    capacity: usize,
    order: Vec<u32>,
}

impl ReferenceLru {
    fn get(&mut self, key: u32) -> bool {
        match self.order.iter().position(|k| *k == key) {
            Some(index) => {
                self.order.remove(index);
                self.order.push(key);
                true
            }
            None => false,
        }
    }
    fn put(&mut self, key: u32) -> Vec<u32> {
        if self.get(key) {
            return Vec::new();
        }
        let mut victims = Vec::new();
        if self.order.len() == self.capacity {
            victims.push(self.order.remove(0));
        }
        self.order.push(key);
        victims
    }
    fn remove(&mut self, key: u32) -> bool {
        let index = self.order.iter().position(|k| *k == key);
        index.map(|index| self.order.remove(index)).is_some()
    }
}

/// Reference LFU: (key, frequency, last use); victim = least frequency, then oldest last use.
struct ReferenceLfu {
    capacity: usize,
    entries: Vec<(u32, u64, u64)>,
    clock: u64,
}

impl ReferenceLfu {
    fn get(&mut self, key: u32) -> bool {
        self.clock += 1;
        match self.entries.iter_mut().find(|entry| entry.0 == key) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 = self.clock;
                true
            }
            None => false,
        }
    }
    fn put(&mut self, key: u32) -> Vec<u32> {
        if self.get(key) {
            return Vec::new();
        }
        let mut victims = Vec::new();
        if self.entries.len() == self.capacity {
            let index = (0..self.entries.len())
                .min_by_key(|i| (self.entries[*i].1, self.entries[*i].2))
                .expect("full means non-empty");
            victims.push(self.entries.remove(index).0);
        }
        self.entries.push((key, 1, self.clock));
        victims
    }
    fn remove(&mut self, key: u32) -> bool {
        let index = self.entries.iter().position(|entry| entry.0 == key);
        index.map(|index| self.entries.remove(index)).is_some()
    }
}

fn ops_strategy() -> impl Strategy<Value = (usize, Vec<StoreOp>)> {
    prop::sample::select(vec![1usize, 2, 8, 64]).prop_flat_map(|capacity| {
        let key = 0..(2 * capacity as u32);
        let op = prop_oneof![
            4 => key.clone().prop_map(StoreOp::Get),
            4 => key.clone().prop_map(StoreOp::Put),
            1 => key.prop_map(StoreOp::Remove),
        ];
        (Just(capacity), prop::collection::vec(op, 2_000))
    })
}

fn check(policy: EvictionPolicy, capacity: usize, ops: &[StoreOp]) -> Result<(), TestCaseError> {
    let mut store: LineStore<u32, u32> =
        LineStore::new(policy, StoreLimits::entries(capacity)).expect("valid limits");
    let mut lru = ReferenceLru {
        capacity,
        order: Vec::new(),
    };
    let mut lfu = ReferenceLfu {
        capacity,
        entries: Vec::new(),
        clock: 0,
    };
    for (step, op) in ops.iter().enumerate() {
        match *op {
            StoreOp::Get(key) => {
                let hit = store.get(&key).is_some();
                let expected = match policy {
                    EvictionPolicy::Lru => lru.get(key),
                    EvictionPolicy::Lfu => lfu.get(key),
                };
                prop_assert_eq!(hit, expected, "step {}: get {}", step, key);
            }
            StoreOp::Put(key) => {
                let victims: Vec<u32> = store
                    .insert(key, key, 1)
                    .expect("size fits")
                    .into_iter()
                    .map(|evicted| evicted.key)
                    .collect();
                let expected = match policy {
                    EvictionPolicy::Lru => lru.put(key),
                    EvictionPolicy::Lfu => lfu.put(key),
                };
                prop_assert_eq!(victims, expected, "step {}: put {}", step, key);
            }
            StoreOp::Remove(key) => {
                let removed = store.remove(&key).is_some();
                let expected = match policy {
                    EvictionPolicy::Lru => lru.remove(key),
                    EvictionPolicy::Lfu => lfu.remove(key),
                };
                prop_assert_eq!(removed, expected, "step {}: remove {}", step, key);
            }
        }
        prop_assert!(store.len() <= capacity);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lru_store_evicts_exactly_like_reference_lru((capacity, ops) in ops_strategy()) {
        check(EvictionPolicy::Lru, capacity, &ops)?;
    }

    #[test]
    fn lfu_store_evicts_exactly_like_reference_lfu_with_lru_tie_break((capacity, ops) in ops_strategy()) {
        check(EvictionPolicy::Lfu, capacity, &ops)?;
    }
}

#[test]
fn byte_bound_evicts_until_the_new_entry_fits() {
    // Proves the byte limit: inserting a 6-byte entry into a 10-byte store holding 4+4 bytes
    // evicts the oldest entry only, and an entry larger than the bound is refused.
    let limits = StoreLimits {
        entries_max: None,
        bytes_max: Some(10),
    };
    let mut store: LineStore<u32, ()> = LineStore::new(EvictionPolicy::Lru, limits).expect("valid");
    assert!(store.insert(1, (), 4).expect("fits").is_empty());
    assert!(store.insert(2, (), 4).expect("fits").is_empty());
    let victims: Vec<u32> = store
        .insert(3, (), 6)
        .expect("fits")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(victims, vec![1]);
    assert_eq!(store.bytes(), 10);
    assert!(store.insert(4, (), 11).is_err());
    assert_eq!(store.len(), 2);
}

#[test]
fn lfu_tie_break_is_least_recently_used_among_least_frequent() {
    // Proves the documented tie-break on a hand-made case: a and b both have frequency 2, a was
    // used less recently, so a is the victim; c (frequency 3) survives.
    let mut store: LineStore<&str, ()> =
        LineStore::new(EvictionPolicy::Lfu, StoreLimits::entries(3)).expect("valid");
    for key in ["a", "b", "c"] {
        store.insert(key, (), 1).expect("fits");
    }
    store.get(&"c");
    store.get(&"a");
    store.get(&"b");
    store.get(&"c");
    assert_eq!(store.victim(), Some(&"a"));
    assert_eq!(store.frequency(&"c"), Some(3));
}

#[test]
fn a_value_that_grows_in_place_evicts_others_never_itself() {
    // Proves the replace path under a byte bound: "grown" is the entry the policy ranks last
    // (LFU: frequency 2 against 3; LRU: least recent after the others are read), yet when a
    // larger value is written under it, the others go and it stays, with its new value.
    for policy in [EvictionPolicy::Lru, EvictionPolicy::Lfu] {
        let limits = StoreLimits {
            entries_max: None,
            bytes_max: Some(10),
        };
        let mut store: LineStore<&str, u32> = LineStore::new(policy, limits).expect("valid");
        store.insert("grown", 1, 2).expect("fits");
        store.insert("hot", 1, 4).expect("fits");
        store.insert("warm", 1, 4).expect("fits");
        for _ in 0..2 {
            store.get(&"hot");
            store.get(&"warm");
        }
        let victims: Vec<&str> = store
            .insert("grown", 2, 9)
            .expect("fits alone")
            .into_iter()
            .map(|evicted| evicted.key)
            .collect();
        assert_eq!(victims, vec!["hot", "warm"], "{policy}");
        assert_eq!(store.peek(&"grown"), Some(&2), "{policy}");
        assert_eq!((store.len(), store.bytes()), (1, 9), "{policy}");
    }
}

#[test]
fn a_store_refuses_more_entries_than_its_handles_can_name() {
    // Handles are 32-bit and one value means "none": 2^32 - 1 entries at most.
    let limits = StoreLimits::entries(u32::MAX as usize + 1);
    assert!(LineStore::<u32, ()>::new(EvictionPolicy::Lru, limits).is_err());
    let limits = StoreLimits::entries(u32::MAX as usize);
    assert!(LineStore::<u32, ()>::new(EvictionPolicy::Lru, limits).is_ok());
}

#[test]
fn a_cleared_store_is_empty_and_fills_again() {
    for policy in [EvictionPolicy::Lru, EvictionPolicy::Lfu] {
        let mut store: LineStore<u32, ()> =
            LineStore::new(policy, StoreLimits::entries(2)).expect("valid");
        for key in 0..3 {
            store.insert(key, (), 1).expect("fits");
        }
        store.clear();
        assert_eq!((store.len(), store.bytes(), store.victim()), (0, 0, None));
        assert!(!store.contains(&2));
        for key in 10..13 {
            store.insert(key, (), 1).expect("fits");
        }
        assert_eq!(
            store.victim(),
            Some(&11),
            "{policy}: the order starts afresh"
        );
        assert_eq!(store.len(), 2);
    }
}

#[test]
fn a_use_counted_later_is_a_use_and_a_stale_one_breaks_nothing() {
    for policy in [EvictionPolicy::Lru, EvictionPolicy::Lfu] {
        let mut store: LineStore<&str, ()> =
            LineStore::new(policy, StoreLimits::entries(2)).expect("valid");
        store.insert("a", (), 1).expect("fits");
        store.insert("b", (), 1).expect("fits");
        // Found without a use: "a" is still the victim until the use is counted.
        let (_, used) = store.peek_for_use(&"a").expect("present");
        assert_eq!(store.victim(), Some(&"a"), "{policy:?}");
        store.count_use(used);
        assert_eq!(store.victim(), Some(&"b"), "{policy:?}");
        // Counted after its entry left, the use is dropped; the store stays whole.
        let (_, stale) = store.peek_for_use(&"b").expect("present");
        store.remove(&"b");
        store.count_use(stale);
        assert_eq!(store.len(), 1);
        assert_eq!(store.victim(), Some(&"a"), "{policy:?}");
    }
}
