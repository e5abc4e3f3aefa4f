//! [`RaftStorage`]: the durable storage of one Raft node.

use crate::error::{IoContext, WalError};
use crate::fs::sync_dir;
use crate::options::WalOptions;
use crate::record::{BatchRef, Checkpoint, Record, RecordRef, SnapshotRef, encode_frame};
use crate::recovery::Replay;
use crate::segment::{SEGMENT_MAGIC, ScanEnd, list_segments, scan_segment, segment_path};
use crate::snapshot::{read_snapshot_file, snapshot_tmp_path, write_snapshot_file};
use distsync_raft::{Entry, HardState, LogIndex, PersistedState, Snapshot, Term};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The write buffer is kept between calls, unless one huge batch grew it past this.
const WRITE_BUFFER_KEEP_BYTES: usize = 8 * 1024 * 1024;

/// The durable storage of one Raft node: a segmented write-ahead log plus a snapshot file in
/// one directory. See the crate documentation for the on-disk format and recovery rules.
///
/// It keeps only positions and terms in memory (8 bytes per entry after the snapshot); the
/// entries themselves live in the Raft core between snapshots.
#[derive(Debug)]
pub struct RaftStorage {
    dir: PathBuf,
    wal_dir: PathBuf,
    options: WalOptions,
    /// Live segments in sequence order; never empty, and the last one is `file`.
    segments: Vec<SegmentInfo>,
    file: File,
    /// Where the next record of `file` goes: the end of its records.
    file_bytes: u64,
    /// The length of `file`: records, then preallocated zeros.
    file_allocated: u64,
    hard_state: HardState,
    snapshot: Option<SnapshotRef>,
    /// `terms[i]` is the term of the entry at `snapshot_index() + 1 + i`: enough to write
    /// segment checkpoints and to check that a compaction snapshot matches the log.
    terms: Vec<Term>,
    buf: Vec<u8>,
    last_sync_duration: Option<Duration>,
    /// Held (locked) for as long as the storage is open, so a second process cannot write the
    /// same log; the lock goes with the process, so a crash never leaves it behind.
    _dir_lock: File,
    /// Set after a failed write or fsync: what the kernel kept is unknown from then on, so no
    /// further write may build on it (retrying an fsync can report success for lost pages).
    poisoned: bool,
}

#[derive(Debug)]
struct SegmentInfo {
    seq: u64,
    path: PathBuf,
    /// The log's last index when the segment was started (from its checkpoint). Everything the
    /// segments before this one contribute lies at or below it.
    start_last_index: LogIndex,
}

impl RaftStorage {
    /// Opens (creating if needed) the storage in `dir` and recovers what it holds.
    ///
    /// Recovery reads the snapshot file, then replays the segments in order. A torn write at
    /// the tail of the last segment is cut off (logged with `tracing::warn!`); any other damage
    /// is an error. The returned state's entries are contiguous from the snapshot's
    /// `last_index + 1` (or from 1 without a snapshot).
    ///
    /// # Errors
    /// [`WalError::Io`] for a failed file operation; [`WalError::Corrupt`] or
    /// [`WalError::Decode`] for damage that is not a torn tail, a missing segment, or segments
    /// that do not fit the snapshot.
    pub fn open(
        dir: impl AsRef<Path>,
        options: WalOptions,
    ) -> Result<(RaftStorage, PersistedState), WalError> {
        let dir = dir.as_ref().to_path_buf();
        let wal_dir = dir.join("wal");
        let created = !dir.exists();
        std::fs::create_dir_all(&wal_dir).at(&wal_dir)?;
        sync_dir(&dir)?;
        if let Some(parent) = dir
            .parent()
            .filter(|p| created && !p.as_os_str().is_empty())
        {
            sync_dir(parent)?;
        }
        let dir_lock = lock_dir(&dir)?;
        let tmp = snapshot_tmp_path(&dir);
        match std::fs::remove_file(&tmp) {
            Ok(()) => {
                tracing::debug!(file = %tmp.display(), "removed an unfinished snapshot file");
                sync_dir(&dir)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(WalError::Io { path: tmp, source }),
        }

        let snapshot = read_snapshot_file(&dir)?;
        let listed = list_segments(&wal_dir)?;
        if let Some(pair) = listed.windows(2).find(|pair| pair[1].0 != pair[0].0 + 1) {
            return Err(WalError::corrupt(
                &pair[1].1,
                0,
                format!("segment {} is missing before this one", pair[0].0 + 1),
            ));
        }
        let mut replay = Replay::new();
        let mut segments = Vec::with_capacity(listed.len());
        let mut last_end = 0;
        for (position, (seq, path)) in listed.iter().enumerate() {
            let is_last = position + 1 == listed.len();
            if let Some((start_last_index, end)) = open_replay_segment(path, is_last, &mut replay)?
            {
                segments.push(SegmentInfo {
                    seq: *seq,
                    path: path.clone(),
                    start_last_index,
                });
                last_end = end;
            }
        }
        if segments.is_empty() && snapshot.is_some() {
            return Err(WalError::corrupt(
                &wal_dir,
                0,
                "no WAL segment found but a snapshot exists: the hard state is lost",
            ));
        }
        let first_path = segments.first().map_or(&wal_dir, |s| &s.path);
        let recovered = replay
            .finish(snapshot.as_ref())
            .map_err(|reason| WalError::corrupt(first_path, 0, reason))?;

        let snapshot_ref = snapshot.as_ref().map(|s| SnapshotRef {
            last_index: s.meta.last_index,
            last_term: s.meta.last_term,
        });
        let (file, file_bytes) = match segments.last() {
            Some(last) => {
                // Not append mode: records are written at their offset, before the zeros.
                let file = OpenOptions::new()
                    .write(true)
                    .open(&last.path)
                    .at(&last.path)?;
                (file, last_end)
            }
            None => {
                let seq = listed.first().map_or(1, |(seq, _)| *seq);
                let checkpoint = Checkpoint {
                    hard_state: HardState::default(),
                    last_index: LogIndex(0),
                    last_term: Term(0),
                };
                let (file, bytes) = create_segment(&wal_dir, seq, &checkpoint)?;
                segments.push(SegmentInfo {
                    seq,
                    path: segment_path(&wal_dir, seq),
                    start_last_index: LogIndex(0),
                });
                (file, bytes)
            }
        };
        let file_allocated = file.metadata().at(&current_segment(&segments).path)?.len();
        let mut storage = RaftStorage {
            dir,
            wal_dir,
            options,
            segments,
            file,
            file_bytes,
            file_allocated,
            hard_state: recovered.hard_state.clone(),
            snapshot: snapshot_ref,
            terms: recovered.entries.iter().map(|e| e.term).collect(),
            buf: Vec::new(),
            last_sync_duration: None,
            _dir_lock: dir_lock,
            poisoned: false,
        };
        if recovered.needs_install_record {
            // Record the install that the crash cut off, so that entries appended from now on
            // continue the snapshot rather than the stale log before it.
            storage.write_batch(snapshot_ref, &[], None, true)?;
        }
        tracing::info!(
            dir = %storage.dir.display(),
            segments = storage.segments.len(),
            snapshot_index = storage.snapshot_index().0,
            last_index = storage.last_index().0,
            term = storage.hard_state.term.0,
            "opened Raft storage"
        );
        let state = PersistedState {
            hard_state: recovered.hard_state,
            snapshot,
            entries: recovered.entries,
        };
        Ok((storage, state))
    }

    /// Makes one `Ready` durable, in one record and with one fsync: `snapshot` (a snapshot
    /// received from the leader, which replaces the whole log), then `entries` (which replace
    /// the persisted log from `entries[0].index` on), then `hard_state`. After a crash either
    /// all of it is recovered or none of it. A call with nothing to persist does nothing.
    ///
    /// Entries at or below the snapshot's index are skipped: the snapshot covers them and, by
    /// Log Matching, they equal what it holds.
    ///
    /// # Errors
    /// [`WalError::Io`] for a failed write or fsync, after which the storage is poisoned
    /// ([`WalError::Poisoned`] on every later call); [`WalError::Encode`] or
    /// [`WalError::RecordTooLarge`] when the batch cannot be framed.
    ///
    /// # Panics
    /// When `entries` are not contiguous and ascending, when they would leave a gap after the
    /// last persisted index, or when `snapshot` is older than the current snapshot. Each is a
    /// bug in the caller.
    pub fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        let result = self.persist_unpoisoned(hard_state, entries, snapshot);
        self.poisoned = result.is_err();
        result
    }

    fn persist_unpoisoned(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<(), WalError> {
        if let Some(pair) = entries
            .windows(2)
            .find(|pair| pair[1].index.0 != pair[0].index.0 + 1)
        {
            panic!(
                "entries to persist must be contiguous and ascending: index {} follows {}",
                pair[1].index, pair[0].index
            );
        }
        let install = snapshot.map(|s| SnapshotRef {
            last_index: s.meta.last_index,
            last_term: s.meta.last_term,
        });
        if let Some(install) = install {
            assert!(
                install.last_index >= self.snapshot_index(),
                "a received snapshot must not go backwards: it ends at {} but the current \
                 snapshot ends at {}",
                install.last_index,
                self.snapshot_index()
            );
        }
        let base = install.map_or(self.snapshot_index(), |s| s.last_index);
        let log_last = if install.is_some() {
            base
        } else {
            self.last_index()
        };
        let entries = &entries[entries.partition_point(|e| e.index <= base)..];
        if let Some(first) = entries.first() {
            assert!(
                first.index <= log_last.next(),
                "entries starting at {} would leave a gap after the last persisted index {}",
                first.index,
                log_last
            );
        }
        if install.is_none() && entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }

        if let Some(snapshot) = snapshot {
            write_snapshot_file(&self.dir, snapshot)?;
        }
        self.write_batch(install, entries, hard_state, self.options.sync)?;

        if let Some(install) = install {
            self.snapshot = Some(install);
            self.terms.clear();
        }
        if let Some(first) = entries.first() {
            self.terms.truncate((first.index.0 - base.0 - 1) as usize);
            self.terms.extend(entries.iter().map(|e| e.term));
        }
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state.clone();
        }
        if install.is_some() {
            self.remove_covered_segments()?;
        }
        Ok(())
    }

    /// Compacts the log behind a snapshot the application took of its own state: replaces the
    /// snapshot file atomically (temp file, fsync, rename, fsync directory), then deletes the
    /// segments whose entries the snapshot covers entirely. Entries after the snapshot stay.
    /// A snapshot no newer than the current one is ignored.
    ///
    /// # Errors
    /// [`WalError::Io`] for a failed write, rename or removal, after which the storage is
    /// poisoned; [`WalError::Encode`] or [`WalError::RecordTooLarge`] when the snapshot cannot
    /// be framed.
    ///
    /// # Panics
    /// When the snapshot ends beyond the last persisted entry, or its `last_term` differs from
    /// the persisted entry at its `last_index`: the application snapshotted something this log
    /// does not hold.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), WalError> {
        if self.poisoned {
            return Err(WalError::Poisoned);
        }
        let result = self.save_snapshot_unpoisoned(snapshot);
        self.poisoned = result.is_err();
        result
    }

    fn save_snapshot_unpoisoned(&mut self, snapshot: &Snapshot) -> Result<(), WalError> {
        let meta = &snapshot.meta;
        let old_index = self.snapshot_index();
        if meta.last_index <= old_index {
            tracing::debug!(
                snapshot_index = meta.last_index.0,
                current_snapshot_index = old_index.0,
                "ignoring a snapshot no newer than the current one"
            );
            return Ok(());
        }
        assert!(
            meta.last_index <= self.last_index(),
            "a snapshot at {} is beyond the last persisted index {}",
            meta.last_index,
            self.last_index()
        );
        let logged_term = self.terms[(meta.last_index.0 - old_index.0 - 1) as usize];
        assert_eq!(
            logged_term, meta.last_term,
            "the snapshot's last term disagrees with the persisted entry at index {}",
            meta.last_index
        );
        write_snapshot_file(&self.dir, snapshot)?;
        self.terms
            .drain(..(meta.last_index.0 - old_index.0) as usize);
        self.snapshot = Some(SnapshotRef {
            last_index: meta.last_index,
            last_term: meta.last_term,
        });
        self.remove_covered_segments()
    }

    /// Reads the current snapshot file back (for sending it to a follower).
    ///
    /// # Errors
    /// [`WalError::Io`] when it cannot be read; [`WalError::Corrupt`] or [`WalError::Decode`]
    /// when it is damaged.
    pub fn load_snapshot(&self) -> Result<Option<Snapshot>, WalError> {
        read_snapshot_file(&self.dir)
    }

    /// How long the fsync of the most recent [`RaftStorage::persist`] took (`None` before the
    /// first one, or when `sync` is off); for the fsync latency metric.
    pub fn last_sync_duration(&self) -> Option<Duration> {
        self.last_sync_duration
    }

    /// The directory this storage lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last persisted hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Index of the last persisted entry (the snapshot's index when no entry follows it).
    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot_index().0 + self.terms.len() as u64)
    }

    /// Index of the last entry the current snapshot covers (0 without a snapshot).
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot.map_or(LogIndex(0), |s| s.last_index)
    }

    /// Where the next record goes in the current (last) segment: the end of its records,
    /// which the preallocated zeros after it make different from the file's length.
    pub fn segment_end(&self) -> u64 {
        self.file_bytes
    }

    /// Number of segment files in use.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn last_term(&self) -> Term {
        self.terms
            .last()
            .copied()
            .unwrap_or(self.snapshot.map_or(Term(0), |s| s.last_term))
    }

    /// Appends one batch record to the current segment (rotating first when it is full) and,
    /// when `sync` is set, fsyncs it.
    fn write_batch(
        &mut self,
        snapshot: Option<SnapshotRef>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), WalError> {
        if self.file_bytes >= self.options.segment_size_bytes {
            self.rotate()?;
        }
        self.buf.clear();
        let record = RecordRef::Batch(BatchRef {
            snapshot,
            entries,
            hard_state,
        });
        encode_frame(&record, &mut self.buf)?;
        let path = &current_segment(&self.segments).path;
        self.file
            .write_all_at(&self.buf, self.file_bytes)
            .at(path)?;
        self.file_bytes += self.buf.len() as u64;
        if self.file_bytes > self.file_allocated {
            // This fsync carries the new length anyway; the zeros spare the next ones that.
            let allocated = match self.options.preallocate_bytes {
                0 => self.file_bytes,
                chunk => self
                    .file_bytes
                    .next_multiple_of(chunk)
                    .min(self.options.segment_size_bytes)
                    .max(self.file_bytes),
            };
            write_zeros(&self.file, self.file_bytes, allocated).at(path)?;
            self.file_allocated = allocated;
        }
        if sync {
            let started = Instant::now();
            self.file.sync_data().at(path)?;
            self.last_sync_duration = Some(started.elapsed());
        }
        if self.buf.capacity() > WRITE_BUFFER_KEEP_BYTES {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Starts the next segment, opening it with a checkpoint of the current state.
    fn rotate(&mut self) -> Result<(), WalError> {
        // The old segment stops being the last one: from now on a torn tail in it would be
        // reported as corruption, so it must be complete on disk (matters when sync is off).
        let old_path = &current_segment(&self.segments).path;
        self.file.sync_data().at(old_path)?;
        let seq = current_segment(&self.segments).seq + 1;
        let checkpoint = Checkpoint {
            hard_state: self.hard_state.clone(),
            last_index: self.last_index(),
            last_term: self.last_term(),
        };
        let (file, bytes) = create_segment(&self.wal_dir, seq, &checkpoint)?;
        self.segments.push(SegmentInfo {
            seq,
            path: segment_path(&self.wal_dir, seq),
            start_last_index: checkpoint.last_index,
        });
        self.file = file;
        self.file_bytes = bytes;
        self.file_allocated = bytes;
        tracing::debug!(
            seq,
            last_index = checkpoint.last_index.0,
            "started a WAL segment"
        );
        Ok(())
    }

    /// Deletes, oldest first, every segment whose contribution to the log lies at or below
    /// the snapshot: those followed by a segment that started at or below the snapshot index.
    /// The next segment's checkpoint carries the hard state forward.
    fn remove_covered_segments(&mut self) -> Result<(), WalError> {
        let snapshot_index = self.snapshot_index();
        let removable = self
            .segments
            .windows(2)
            .take_while(|pair| pair[1].start_last_index <= snapshot_index)
            .count();
        if removable == 0 {
            return Ok(());
        }
        for segment in self.segments.drain(..removable) {
            std::fs::remove_file(&segment.path).at(&segment.path)?;
            tracing::debug!(
                seq = segment.seq,
                "removed a WAL segment covered by the snapshot"
            );
        }
        sync_dir(&self.wal_dir)
    }
}

/// The segment being appended to.
fn current_segment(segments: &[SegmentInfo]) -> &SegmentInfo {
    segments.last().expect(
        "there is always a current segment: open creates one and only earlier ones are removed",
    )
}

/// Replays one segment file into `replay` and repairs a torn tail. Returns the index its
/// checkpoint started at and the end of its records, or `None` when the segment was removed
/// because the crash came before its checkpoint was complete (nothing else was ever written
/// to it then).
fn open_replay_segment(
    path: &Path,
    is_last: bool,
    replay: &mut Replay,
) -> Result<Option<(LogIndex, u64)>, WalError> {
    let data = std::fs::read(path).at(path)?;
    let mut start_last_index = None;
    let end = scan_segment(path, &data, is_last, |offset, record| {
        let applied = match (start_last_index.is_none(), record) {
            (true, Record::Checkpoint(checkpoint)) => {
                start_last_index = Some(checkpoint.last_index);
                replay.apply_checkpoint(checkpoint)
            }
            (true, Record::Batch(_)) => {
                Err("segment does not start with a checkpoint record".to_owned())
            }
            (false, Record::Checkpoint(_)) => {
                Err("checkpoint record after the start of a segment".to_owned())
            }
            (false, Record::Batch(batch)) => replay.apply_batch(batch),
        };
        applied.map_err(|reason| WalError::corrupt(path, offset, reason))
    })?;
    if start_last_index.is_none() {
        if !is_last {
            return Err(WalError::corrupt(
                path,
                SEGMENT_MAGIC.len() as u64,
                "segment has no checkpoint record",
            ));
        }
        tracing::warn!(
            file = %path.display(),
            "removing a WAL segment whose creation was interrupted by a crash"
        );
        std::fs::remove_file(path).at(path)?;
        return path
            .parent()
            .map_or(Ok(None), |dir| sync_dir(dir).map(|()| None));
    }
    let end = match end {
        ScanEnd::Clean { end } => end,
        ScanEnd::Torn { offset, reason } => {
            repair_torn_tail(path, &data, offset, &reason)?;
            offset
        }
    };
    Ok(start_last_index.map(|start| (start, end)))
}

/// Cuts the file back to `offset`, where a torn write begins (the preallocated zeros after
/// it go too; the next write preallocates again).
fn repair_torn_tail(path: &Path, data: &[u8], offset: u64, reason: &str) -> Result<(), WalError> {
    tracing::warn!(
        file = %path.display(),
        offset,
        cut_bytes = data.len() as u64 - offset,
        reason,
        "truncating a torn write at the tail of the WAL"
    );
    let file = OpenOptions::new().write(true).open(path).at(path)?;
    file.set_len(offset).at(path)?;
    file.sync_all().at(path)
}

/// Writes zeros over `from..to` of `file` (really written, not a hole or an unwritten extent:
/// overwriting those would change the file's metadata again).
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = from;
    while at < to {
        let len = (to - at).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..len as usize], at)?;
        at += len;
    }
    Ok(())
}

/// Creates segment `seq` holding the header and `checkpoint`, and makes it durable (file and
/// directory entry) before anything else is written to it.
fn create_segment(
    wal_dir: &Path,
    seq: u64,
    checkpoint: &Checkpoint,
) -> Result<(File, u64), WalError> {
    let path = segment_path(wal_dir, seq);
    let mut buf = SEGMENT_MAGIC.to_vec();
    encode_frame(&RecordRef::Checkpoint(checkpoint), &mut buf)?;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .at(&path)?;
    file.write_all_at(&buf, 0).at(&path)?;
    file.sync_data().at(&path)?;
    sync_dir(wal_dir)?;
    Ok((file, buf.len() as u64))
}

/// Takes the exclusive lock on `dir/LOCK`.
fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(WalError::Locked { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(WalError::Io { path, source }),
    }
}
