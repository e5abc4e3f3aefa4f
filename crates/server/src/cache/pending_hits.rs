//! GET hits served under the core's shared lock, and what they still have to write.
//!
//! A hit only reads the node's core, so the RESP threads serve hits side by side under a read
//! lock. What a hit must still change (its use of the line, which orders LRU and LFU
//! eviction; the hit counter; the latency histogram) would be a write to memory every thread
//! shares, moving between the cores on each request: with one exclusive lock per hit, a
//! second RESP thread cost more per GET than it served (docs/performance/cache.md, "2026-12-05
//! morning"). So each thread notes its hits in a stripe of its own, and whoever next takes the
//! core exclusively applies every stripe first, or the thread itself once its stripe holds
//! [`HITS_PER_STRIPE_MAX`].
//!
//! Nothing changes the core between a hit and the write lock that applies it, so each
//! noted use still names the line it was found in, every eviction is decided with all earlier
//! hits counted, and the counters count every hit that finished before the core was last held
//! exclusively (`/metrics` and `/v1/stats` take it first). Within one batch, hits on different
//! threads are applied stripe by stripe, not in the order they happened: concurrent reads have
//! no order to keep.

use distsync_cache::EntryUse;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes, one per thread up to this many (threads beyond it share): a bit each in
/// [`PendingHits::noted`].
const STRIPES: usize = 16;

/// Hits a stripe holds before its thread applies them itself: a write lock per this many hits
/// instead of one per hit, and a bound on the stripe's memory.
pub(crate) const HITS_PER_STRIPE_MAX: usize = 64;

/// The hits of one thread (or of the threads that share it) since the core was last held
/// exclusively.
#[derive(Debug, Default)]
struct Stripe {
    uses: Vec<EntryUse>,
    /// Per hit, how long it took.
    seconds: Vec<f64>,
}

/// A stripe on cache lines of its own, so that noting a hit writes only to memory its own
/// thread already holds.
#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedStripe(Mutex<Stripe>);

/// Hits noted and not yet applied to the core and the metrics.
#[derive(Debug)]
pub(crate) struct PendingHits {
    stripes: Box<[PaddedStripe]>,
    /// A bit per stripe holding hits, so that a writer finds nothing to do in one load.
    noted: AtomicU64,
}

impl Default for PendingHits {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| PaddedStripe::default()).collect(),
            noted: AtomicU64::new(0),
        }
    }
}

fn this_threads_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

fn lock(stripe: &PaddedStripe) -> std::sync::MutexGuard<'_, Stripe> {
    stripe.0.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl PendingHits {
    /// Notes a hit. Must be called under the core's read lock (see the module's comment).
    /// Returns true when the caller's stripe is full: the caller should then take the core
    /// exclusively, which applies it.
    pub(crate) fn note(&self, used: EntryUse, seconds: f64) -> bool {
        let index = this_threads_stripe();
        let mut stripe = lock(&self.stripes[index]);
        stripe.uses.push(used);
        stripe.seconds.push(seconds);
        let full = stripe.uses.len() >= HITS_PER_STRIPE_MAX;
        // Marked at the first hit, and again when full: a stripe whose mark an interrupted
        // `apply` cleared is still emptied by the write lock its thread takes next.
        // Ordered before the writer's load by the core's lock (read unlock, write lock).
        if stripe.uses.len() == 1 || full {
            self.noted.fetch_or(1 << index, Ordering::Relaxed);
        }
        full
    }

    /// Hands every noted hit to `apply` and forgets it. Called under the core's write lock,
    /// before anything else is done with the core.
    pub(crate) fn apply(&self, mut apply: impl FnMut(EntryUse, f64)) {
        if self.noted.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut noted = self.noted.swap(0, Ordering::Relaxed);
        while noted != 0 {
            let index = noted.trailing_zeros() as usize;
            noted &= noted - 1;
            let mut stripe = lock(&self.stripes[index]);
            let Stripe { uses, seconds } = &mut *stripe;
            for (used, seconds) in uses.drain(..).zip(seconds.drain(..)) {
                apply(used, seconds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distsync_cache::{EvictionPolicy, LineStore, StoreLimits};

    fn use_of(store: &LineStore<u32, ()>, key: u32) -> EntryUse {
        store.peek_for_use(&key).expect("present").1
    }

    #[test]
    fn every_noted_hit_is_applied_once_whichever_thread_noted_it() {
        let pending = PendingHits::default();
        let mut store = LineStore::new(EvictionPolicy::Lru, StoreLimits::entries(3)).unwrap();
        for key in 0..3 {
            store.insert(key, (), 0).unwrap();
        }
        // 0 is the least recent; hits on it from two threads make 1 the victim.
        let used = use_of(&store, 0);
        assert!(!pending.note(used, 0.5));
        std::thread::scope(|scope| {
            scope.spawn(|| assert!(!pending.note(used, 0.25)));
        });
        let mut applied = Vec::new();
        pending.apply(|used, seconds| {
            store.count_use(used);
            applied.push(seconds);
        });
        applied.sort_by(f64::total_cmp);
        assert_eq!(applied, [0.25, 0.5]);
        assert_eq!(store.victim(), Some(&1));
        pending.apply(|_, _| panic!("applied twice"));
    }

    #[test]
    fn a_full_stripe_asks_to_be_applied() {
        let pending = PendingHits::default();
        let mut store = LineStore::new(EvictionPolicy::Lru, StoreLimits::entries(1)).unwrap();
        store.insert(7, (), 0).unwrap();
        let used = use_of(&store, 7);
        let full_at = (1..=HITS_PER_STRIPE_MAX * 2)
            .find(|_| pending.note(used, 0.0))
            .expect("the stripe fills");
        assert_eq!(full_at, HITS_PER_STRIPE_MAX);
    }
}
