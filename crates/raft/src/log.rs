//! The in-memory log: a snapshot-compacted prefix, the entries after it, and how much of it the
//! shell has persisted and applied.

use crate::entry::{Entry, Snapshot, SnapshotMeta};
use crate::types::{LogIndex, Term};

/// The replicated log as this node holds it.
///
/// Entries `1..=snapshot.last_index` live only in the snapshot; entries after it are kept here
/// until the application compacts them. `stable_last` is the highest index the shell is known to
/// have persisted with the same content as here: a leader counts itself towards a commit quorum
/// only up to it, and no node applies past it, which is what makes a committed entry durable on a
/// majority (TESTING I7).
#[derive(Debug)]
pub(crate) struct RaftLog {
    snapshot: Snapshot,
    entries: Vec<Entry>,
    /// Highest index persisted by the shell with the content held here.
    stable_last: LogIndex,
    /// First index not yet handed to the shell for persisting.
    unstable_from: LogIndex,
    /// A snapshot received from the leader that the shell has not persisted yet.
    pending_snapshot: bool,
    pub(crate) commit: LogIndex,
    pub(crate) applied: LogIndex,
}

impl RaftLog {
    /// A log restored from persisted state; everything in it counts as stable.
    pub(crate) fn restore(snapshot: Snapshot, entries: Vec<Entry>, commit: LogIndex) -> Self {
        let last = entries
            .last()
            .map_or(snapshot.meta.last_index, |entry| entry.index);
        let snapshot_index = snapshot.meta.last_index;
        RaftLog {
            snapshot,
            entries,
            stable_last: last,
            unstable_from: last.next(),
            pending_snapshot: false,
            // A persisted commit index can be ahead of a log that lost unsynced entries only if
            // the shell broke the persist order; clamp so we never apply what we do not hold.
            commit: commit.max(snapshot_index).min(last),
            applied: snapshot_index,
        }
    }

    pub(crate) fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot.meta
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Index of the first entry still held as an entry (not in the snapshot).
    pub(crate) fn first_index(&self) -> LogIndex {
        self.snapshot.meta.last_index.next()
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map_or(self.snapshot.meta.last_index, |entry| entry.index)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.snapshot.meta.last_term, |entry| entry.term)
    }

    pub(crate) fn stable_last(&self) -> LogIndex {
        self.stable_last
    }

    /// Term of the entry at `index`; `None` when it is beyond the log or compacted away
    /// (the snapshot's own last index still has a known term).
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        let snapshot_index = self.snapshot.meta.last_index;
        if index == snapshot_index {
            return Some(self.snapshot.meta.last_term);
        }
        if index < snapshot_index {
            return None;
        }
        self.entry(index).map(|entry| entry.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.first_index().0)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Whether a candidate's log, ending at (`last_term`, `last_index`), is at least as
    /// up to date as this one (§5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Entries from `from` on, at most `max_entries` and about `max_bytes` (always at least
    /// one entry if any exists). `from` must not be compacted.
    pub(crate) fn slice(&self, from: LogIndex, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        let Some(start) = from
            .0
            .checked_sub(self.first_index().0)
            .and_then(|offset| usize::try_from(offset).ok())
        else {
            return Vec::new();
        };
        let mut bytes = 0;
        let mut out = Vec::new();
        for entry in self.entries.iter().skip(start).take(max_entries) {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Appends one entry at the end; the caller assigns the next index.
    pub(crate) fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "log append must be contiguous"
        );
        self.entries.push(entry);
    }

    /// Follower side of AppendEntries after the consistency check passed at `entries[0].index - 1`:
    /// skips entries already present with the same term, truncates at the first conflict and
    /// appends the rest. Returns the index of the first truncated entry, if any.
    pub(crate) fn merge(&mut self, entries: Vec<Entry>) -> Option<LogIndex> {
        let mut truncated = None;
        for entry in entries {
            if entry.index <= self.snapshot.meta.last_index {
                continue;
            }
            match self.term(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    assert!(
                        entry.index > self.commit,
                        "a committed entry would be overwritten at index {}",
                        entry.index
                    );
                    self.truncate_from(entry.index);
                    truncated.get_or_insert(entry.index);
                    self.entries.push(entry);
                }
                None => self.push(entry),
            }
        }
        truncated
    }

    fn truncate_from(&mut self, index: LogIndex) {
        let keep = usize::try_from(index.0 - self.first_index().0)
            .expect("truncation point lies within the in-memory log");
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.stable_last = self.stable_last.min(index.prev());
    }

    /// Entries not yet handed to the shell; marks them handed.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from.max(self.first_index());
        let out = self.slice(from, usize::MAX, usize::MAX);
        self.unstable_from = self.last_index().next();
        out
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// The shell persisted everything up to `index` (the last entry of a handed-out batch).
    pub(crate) fn stable_to(&mut self, index: LogIndex) {
        if self.unstable_from > index && self.term(index).is_some() {
            self.stable_last = self.stable_last.max(index);
        }
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub(crate) fn install_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.last_index;
        assert!(
            index > self.commit,
            "installed snapshot must be ahead of commit"
        );
        self.snapshot = snapshot;
        self.entries.clear();
        self.commit = index;
        self.applied = index;
        self.stable_last = index;
        self.unstable_from = index.next();
        self.pending_snapshot = true;
    }

    pub(crate) fn take_pending_snapshot(&mut self) -> Option<Snapshot> {
        if std::mem::take(&mut self.pending_snapshot) {
            Some(self.snapshot.clone())
        } else {
            None
        }
    }

    pub(crate) fn has_pending_snapshot(&self) -> bool {
        self.pending_snapshot
    }

    /// The application snapshotted its state at `index` (already applied): drop the entries it
    /// covers.
    pub(crate) fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.last_index;
        assert!(index <= self.applied, "compaction beyond the applied index");
        assert!(
            index >= self.snapshot.meta.last_index,
            "compaction behind the current snapshot"
        );
        let drop = usize::try_from(index.0 - self.snapshot.meta.last_index.0)
            .expect("compaction span fits in memory");
        self.entries.drain(..drop);
        self.snapshot = snapshot;
    }

    /// Committed entries not yet applied (at most about `max_bytes`); marks them applied. Only
    /// called once every entry has been handed out for persisting, which the shell completes
    /// before it applies anything.
    pub(crate) fn take_committed(&mut self, max_bytes: usize) -> Vec<Entry> {
        assert!(
            !self.has_unstable(),
            "entries must be handed out before applying"
        );
        if self.commit <= self.applied {
            return Vec::new();
        }
        let count = usize::try_from(self.commit.0 - self.applied.0).unwrap_or(usize::MAX);
        let out = self.slice(self.applied.next(), count, max_bytes);
        if let Some(last) = out.last() {
            self.applied = last.index;
        }
        out
    }

    pub(crate) fn has_next_committed(&self) -> bool {
        self.commit > self.applied
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        if index > self.commit {
            assert!(
                index <= self.last_index(),
                "commit index {} beyond last index {}",
                index,
                self.last_index()
            );
            self.commit = index;
        }
    }
}
