//! Replaying segment records into the state they describe.

use crate::record::{Batch, Checkpoint};
use distsync_raft::{Entry, HardState, LogIndex, Snapshot, Term};

/// The log and hard state rebuilt from segment records, before the snapshot file is applied.
///
/// The log is `entries`, contiguous, preceded by the position `base_index`. What lies at or
/// before `base_index` is either the origin (index 0), an installed snapshot, or entries in
/// segments already deleted because a snapshot covers them.
#[derive(Debug)]
pub(crate) struct Replay {
    base_index: LogIndex,
    /// `None` when a batch overwrote entries below the first replayed segment's start, so the
    /// term of the entry before it is not known here (the snapshot then covers that position).
    base_term: Option<Term>,
    entries: Vec<Entry>,
    hard_state: HardState,
    started: bool,
}

/// The recovered state, ready for [`distsync_raft::PersistedState`].
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) hard_state: HardState,
    pub(crate) entries: Vec<Entry>,
    /// The snapshot file does not extend the replayed log: it was installed (replacing the log)
    /// but the crash came before the batch that records the install reached the disk. The
    /// caller must write that record now, so that later entries continue the right log.
    pub(crate) needs_install_record: bool,
}

impl Replay {
    /// An empty replay, waiting for the first segment's checkpoint.
    pub(crate) fn new() -> Replay {
        Replay {
            base_index: LogIndex(0),
            base_term: Some(Term(0)),
            entries: Vec::new(),
            hard_state: HardState::default(),
            started: false,
        }
    }

    /// Index of the last entry, or the base when there is none.
    pub(crate) fn last_index(&self) -> LogIndex {
        self.entries.last().map_or(self.base_index, |e| e.index)
    }

    fn last_term(&self) -> Option<Term> {
        self.entries.last().map_or(self.base_term, |e| Some(e.term))
    }

    /// Applies a segment's opening checkpoint. The first one seeds the replay; every later one
    /// must agree with the state replayed so far.
    ///
    /// # Errors
    /// A reason for [`crate::WalError::Corrupt`] when a later checkpoint disagrees.
    pub(crate) fn apply_checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), String> {
        if !self.started {
            self.started = true;
            self.base_index = checkpoint.last_index;
            self.base_term = Some(checkpoint.last_term);
            self.hard_state = checkpoint.hard_state;
            return Ok(());
        }
        let term_agrees = self
            .last_term()
            .is_none_or(|term| term == checkpoint.last_term);
        if checkpoint.last_index != self.last_index()
            || !term_agrees
            || checkpoint.hard_state != self.hard_state
        {
            return Err(format!(
                "segment checkpoint (last index {}, last term {}, {:?}) disagrees with the \
                 preceding segments (last index {}, last term {:?}, {:?})",
                checkpoint.last_index,
                checkpoint.last_term,
                checkpoint.hard_state,
                self.last_index(),
                self.last_term(),
                self.hard_state
            ));
        }
        Ok(())
    }

    /// Applies one persist batch: install, then overwrite-and-append, then hard state.
    ///
    /// # Errors
    /// A reason for [`crate::WalError::Corrupt`] when the entries are not contiguous or would
    /// leave a gap after the log.
    pub(crate) fn apply_batch(&mut self, batch: Batch) -> Result<(), String> {
        if let Some(snapshot) = batch.snapshot {
            self.base_index = snapshot.last_index;
            self.base_term = Some(snapshot.last_term);
            self.entries.clear();
        }
        if let Some(first) = batch.entries.first() {
            let first_index = first.index;
            if first_index.0 == 0 {
                return Err("entry with index 0".to_owned());
            }
            if let Some(pair) = batch
                .entries
                .windows(2)
                .find(|pair| pair[1].index.0 != pair[0].index.0 + 1)
            {
                return Err(format!(
                    "entries not contiguous: index {} follows {}",
                    pair[1].index, pair[0].index
                ));
            }
            if first_index > self.last_index().next() {
                return Err(format!(
                    "gap in the log: entries start at {first_index} but the log ends at {}",
                    self.last_index()
                ));
            }
            if first_index <= self.base_index {
                // Overwrites entries that only deleted segments held; the snapshot covers them.
                self.base_index = first_index.prev();
                self.base_term = None;
                self.entries.clear();
            } else {
                let keep = (first_index.0 - self.base_index.0 - 1) as usize;
                self.entries.truncate(keep);
            }
            self.entries.extend(batch.entries);
        }
        if let Some(hard_state) = batch.hard_state {
            self.hard_state = hard_state;
        }
        Ok(())
    }

    /// Combines the replayed log with the snapshot file: the result holds the entries after
    /// the snapshot, contiguous from its `last_index + 1`.
    ///
    /// If the replayed log holds the snapshot's last entry (same index and term), the entries
    /// after it are kept: by Log Matching the two agree on everything before. Otherwise the
    /// snapshot was installed and replaces the log, and no entry is kept.
    ///
    /// # Errors
    /// A reason for [`crate::WalError::Corrupt`] when the log starts after the snapshot's end:
    /// entries in between are missing (a deleted segment the snapshot does not cover).
    pub(crate) fn finish(self, snapshot: Option<&Snapshot>) -> Result<Recovered, String> {
        let (snapshot_index, snapshot_term) = snapshot.map_or((LogIndex(0), Term(0)), |s| {
            (s.meta.last_index, s.meta.last_term)
        });
        if self.base_index > snapshot_index {
            return Err(format!(
                "the log starts after index {} but the snapshot ends at {snapshot_index}: \
                 entries in between are missing",
                self.base_index
            ));
        }
        let extends = if self.base_index == snapshot_index {
            self.base_term == Some(snapshot_term)
        } else {
            let offset = (snapshot_index.0 - self.base_index.0 - 1) as usize;
            self.entries
                .get(offset)
                .is_some_and(|e| e.index == snapshot_index && e.term == snapshot_term)
        };
        let mut entries = self.entries;
        if extends {
            let covered = (snapshot_index.0 - self.base_index.0) as usize;
            entries.drain(..covered);
        } else {
            tracing::info!(
                snapshot_index = snapshot_index.0,
                dropped_entries = entries.len(),
                "snapshot file does not extend the logged entries: it replaces the log"
            );
            entries.clear();
        }
        Ok(Recovered {
            hard_state: self.hard_state,
            entries,
            needs_install_record: !extends,
        })
    }
}
