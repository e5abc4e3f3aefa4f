//! A simulated disk per node: what the shell persisted from each `Ready`, with an fsync boundary.
//!
//! Writes go to a pending list first; [`SimDisk::fsync`] makes them durable. A crash keeps the
//! durable state and, at most, a prefix of the pending writes (a file system may have flushed some
//! of them on its own), never more: exactly the "lose un-fsynced writes" crash of the catalogue.

use distsync_raft::{Entry, HardState, LogIndex, PersistedState, Snapshot, Term};

#[derive(Clone, Debug)]
enum DiskWrite {
    Snapshot(Snapshot),
    Entries(Vec<Entry>),
    HardState(HardState),
}

/// The durable and pending state of one node's storage.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    durable: PersistedState,
    pending: Vec<DiskWrite>,
    /// Bytes written over the disk's life, for persisted-size criteria.
    pub fsyncs: u64,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        SimDisk::default()
    }

    /// Queues a snapshot write (received from a leader or taken locally).
    pub fn write_snapshot(&mut self, snapshot: Snapshot) {
        self.pending.push(DiskWrite::Snapshot(snapshot));
    }

    /// Queues an entries write: entries at or after `entries[0].index` are replaced.
    pub fn write_entries(&mut self, entries: Vec<Entry>) {
        if !entries.is_empty() {
            self.pending.push(DiskWrite::Entries(entries));
        }
    }

    /// Queues a hard state write.
    pub fn write_hard_state(&mut self, hard_state: HardState) {
        self.pending.push(DiskWrite::HardState(hard_state));
    }

    /// Whether any write is not yet durable.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Makes every pending write durable, in order. Returns the hard states that became durable
    /// (for the durability checker).
    pub fn fsync(&mut self) -> Vec<HardState> {
        let pending = std::mem::take(&mut self.pending);
        self.fsyncs += 1;
        let mut hard_states = Vec::new();
        for write in pending {
            if let DiskWrite::HardState(hs) = &write {
                hard_states.push(hs.clone());
            }
            self.make_durable(write);
        }
        hard_states
    }

    /// A crash: the first `keep` pending writes reach the platter, the rest are lost.
    pub fn crash(&mut self, keep: usize) -> Vec<HardState> {
        let pending = std::mem::take(&mut self.pending);
        let mut hard_states = Vec::new();
        for write in pending.into_iter().take(keep) {
            if let DiskWrite::HardState(hs) = &write {
                hard_states.push(hs.clone());
            }
            self.make_durable(write);
        }
        hard_states
    }

    /// Number of pending writes.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn make_durable(&mut self, write: DiskWrite) {
        let d = &mut self.durable;
        match write {
            DiskWrite::Snapshot(snapshot) => {
                let last = snapshot.meta.last_index;
                if d.snapshot
                    .as_ref()
                    .is_some_and(|s| s.meta.last_index >= last)
                {
                    return;
                }
                // Keep the suffix only if it continues the snapshot (Figure 13, step 6).
                let matches = d
                    .entries
                    .iter()
                    .any(|e| e.index == last && e.term == snapshot.meta.last_term);
                if matches {
                    d.entries.retain(|e| e.index > last);
                } else {
                    d.entries.clear();
                }
                d.snapshot = Some(snapshot);
            }
            DiskWrite::Entries(entries) => {
                let first = entries[0].index;
                d.entries.retain(|e| e.index < first);
                if let Some(last) = d.entries.last() {
                    if last.index.next() != first {
                        // A gap would make the log unusable; a real shell refuses such a write.
                        panic!(
                            "shell invariant: entries write at {first} does not follow persisted \
                             last index {}",
                            last.index
                        );
                    }
                } else if let Some(s) = &d.snapshot
                    && first > s.meta.last_index.next()
                {
                    panic!(
                        "shell invariant: entries write at {first} leaves a gap after snapshot \
                             {}",
                        s.meta.last_index
                    );
                }
                let snap_last = d
                    .snapshot
                    .as_ref()
                    .map_or(LogIndex(0), |s| s.meta.last_index);
                d.entries
                    .extend(entries.into_iter().filter(|e| e.index > snap_last));
            }
            DiskWrite::HardState(hs) => d.hard_state = hs,
        }
    }

    /// What survives a restart.
    pub fn durable(&self) -> &PersistedState {
        &self.durable
    }

    /// The durable term of the entry at `index`, if the durable log or snapshot holds it.
    pub fn durable_term_at(&self, index: LogIndex) -> Option<Term> {
        let d = &self.durable;
        if let Some(s) = &d.snapshot {
            if index == s.meta.last_index {
                return Some(s.meta.last_term);
            }
            if index < s.meta.last_index {
                return None;
            }
        }
        let first = d.entries.first()?.index;
        if index < first {
            return None;
        }
        d.entries.get((index.0 - first.0) as usize).map(|e| e.term)
    }

    /// Whether the durable state holds the entry `(index, term)`, counting a snapshot that covers
    /// `index` (a snapshot only ever covers applied, hence committed, entries).
    pub fn durably_holds(&self, index: LogIndex, term: Term) -> bool {
        if let Some(s) = &self.durable.snapshot
            && index <= s.meta.last_index
        {
            return true;
        }
        self.durable_term_at(index) == Some(term)
    }

    /// Last durable log index.
    pub fn durable_last_index(&self) -> LogIndex {
        self.durable
            .entries
            .last()
            .map(|e| e.index)
            .or_else(|| self.durable.snapshot.as_ref().map(|s| s.meta.last_index))
            .unwrap_or(LogIndex(0))
    }

    /// Approximate persisted Raft state size in bytes, excluding the snapshot data.
    pub fn raft_state_bytes(&self) -> usize {
        32 + self
            .durable
            .entries
            .iter()
            .map(Entry::size_bytes)
            .sum::<usize>()
    }
}
