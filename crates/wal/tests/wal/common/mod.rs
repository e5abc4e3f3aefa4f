//! Builders shared by the storage tests.

use bytes::Bytes;
use distsync_raft::{
    Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, PersistedState, Snapshot,
    SnapshotMeta, Term,
};
use distsync_wal::{RaftStorage, WalOptions};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// An entry whose command names its position, so that mix-ups show in assertion output.
pub fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from(format!("cmd-{index}-{term}"))),
    }
}

/// Contiguous entries of one term.
pub fn entries(indexes: RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes.map(|index| entry(index, term)).collect()
}

pub fn hard_state(term: u64, voted_for: Option<u64>, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        voted_for: voted_for.map(NodeId),
        commit: LogIndex(commit),
    }
}

pub fn snapshot(last_index: u64, last_term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: LogIndex(last_index),
            last_term: Term(last_term),
            membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
        },
        data: Bytes::from(format!("state-at-{last_index}")),
    }
}

pub fn options(segment_size_bytes: u64) -> WalOptions {
    WalOptions {
        segment_size_bytes,
        ..WalOptions::default()
    }
}

/// Opens with default options and panics with the error on failure.
pub fn open(dir: &Path) -> (RaftStorage, PersistedState) {
    open_with(dir, WalOptions::default())
}

pub fn open_with(dir: &Path, options: WalOptions) -> (RaftStorage, PersistedState) {
    match RaftStorage::open(dir, options) {
        Ok(opened) => opened,
        Err(e) => panic!("opening {} failed: {e:?}", dir.display()),
    }
}

/// Reopens and returns only the recovered state.
pub fn reopen(dir: &Path) -> PersistedState {
    open(dir).1
}

/// The segment files, in sequence order.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .expect("the wal directory exists after open")
        .map(|dirent| dirent.expect("readable dirent").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("file exists").len()
}

/// A write torn at `at`: what should have followed is still the preallocated zeros.
pub fn tear_at(path: &Path, at: u64) {
    let mut data = std::fs::read(path).expect("read");
    data[at as usize..].fill(0);
    std::fs::write(path, data).expect("write");
}

/// One past the last non-zero byte: inside the file's last record, whatever zeros follow it.
pub fn last_nonzero_end(path: &Path) -> u64 {
    let data = std::fs::read(path).expect("read");
    data.iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |last| last + 1) as u64
}

pub fn last_segment(dir: &Path) -> PathBuf {
    segment_files(dir)
        .pop()
        .expect("there is always a segment after open")
}
