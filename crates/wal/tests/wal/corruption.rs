//! Torn tails are repaired; every other kind of damage is a clear error.

use crate::common::*;
use distsync_raft::PersistedState;
use distsync_wal::{RaftStorage, WalError, WalOptions};
use std::path::{Path, PathBuf};

/// Persists three batches into one segment; returns the offset where each record starts and
/// where the records end (preallocated zeros follow).
fn three_records(dir: &Path) -> (PathBuf, [u64; 3], u64) {
    let (mut storage, _) = open(dir);
    let segment = last_segment(dir);
    let mut starts = [0; 3];
    for (i, start) in starts.iter_mut().enumerate() {
        *start = storage.segment_end();
        let first = i as u64 * 3 + 1;
        storage
            .persist(
                Some(&hard_state(i as u64 + 1, None, first)),
                &entries(first..=first + 2, i as u64 + 1),
                None,
            )
            .expect("persist");
    }
    (segment.clone(), starts, storage.segment_end())
}

/// State after the first two of [`three_records`]'s batches.
fn first_two_batches() -> PersistedState {
    let mut expected = entries(1..=3, 1);
    expected.extend(entries(4..=6, 2));
    PersistedState {
        hard_state: hard_state(2, None, 4),
        snapshot: None,
        entries: expected,
    }
}

fn expect_corrupt(dir: &Path) -> (PathBuf, u64, String) {
    match RaftStorage::open(dir, WalOptions::default()) {
        Err(WalError::Corrupt {
            path,
            offset,
            reason,
        }) => (path, offset, reason),
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok((_, state)) => panic!("expected Corrupt, but recovered {state:?}"),
    }
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut data = std::fs::read(path).expect("read");
    data[offset as usize] ^= 1 << bit;
    std::fs::write(path, data).expect("write");
}

fn truncate(path: &Path, len: u64) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    file.set_len(len).expect("truncate");
}

#[test]
fn torn_tail_at_every_byte_offset_of_the_last_record_is_truncated() {
    // Proves that cutting the last record at any length — the file cut short (a crash while
    // it grew), or the rest of the record never written over the preallocated zeros — keeps
    // the earlier records, ends the log after them, and leaves a log that accepts and keeps
    // new writes.
    let template = tempfile::tempdir().expect("tempdir");
    let (_, starts, end) = three_records(template.path());
    for (cut, shortened) in (starts[2]..end).flat_map(|cut| [(cut, true), (cut, false)]) {
        let dir = tempfile::tempdir().expect("tempdir");
        three_records(dir.path());
        let segment = last_segment(dir.path());
        if shortened {
            truncate(&segment, cut);
        } else {
            tear_at(&segment, cut);
        }

        let (mut storage, state) = open(dir.path());
        assert_eq!(state, first_two_batches(), "cut at {cut}");
        assert_eq!(storage.segment_end(), starts[2], "cut at {cut}");
        storage
            .persist(None, &entries(7..=7, 9), None)
            .expect("persist");
        drop(storage);
        let mut expected = first_two_batches().entries;
        expected.push(entry(7, 9));
        assert_eq!(reopen(dir.path()).entries, expected, "cut at {cut}");
    }
}

#[test]
fn flipped_bit_in_middle_record_is_reported_as_corrupt_with_file_and_offset() {
    // Proves damage followed by valid records is never skipped or cut off.
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, starts, _) = three_records(dir.path());
    flip_bit(&segment, starts[1] + 12, 3);
    let (path, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(path, segment);
    assert_eq!(offset, starts[1]);
    assert!(reason.contains("checksum"), "{reason}");
}

#[test]
fn flipped_length_bit_in_middle_record_is_corrupt_not_torn() {
    // Proves a length that now points past the end of the file is not taken for a torn
    // write when valid records follow it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, starts, _) = three_records(dir.path());
    flip_bit(&segment, starts[1] + 2, 7);
    let (path, offset, reason) = expect_corrupt(dir.path());
    assert_eq!(path, segment);
    assert_eq!(offset, starts[1]);
    assert!(reason.contains("valid record follows"), "{reason}");
}

#[test]
fn complete_record_with_bad_crc_at_eof_is_treated_as_torn() {
    // Proves a whole frame whose checksum fails, at the very end, is a torn write.
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, _, end) = three_records(dir.path());
    let mut data = std::fs::read(&segment).expect("read");
    let payload = b"garbage payload of a torn write";
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
    frame.extend_from_slice(payload);
    let end_of_frame = end as usize + frame.len();
    if data.len() < end_of_frame {
        data.resize(end_of_frame, 0);
    }
    data[end as usize..end_of_frame].copy_from_slice(&frame);
    std::fs::write(&segment, data).expect("write");

    let (storage, state) = open(dir.path());
    assert_eq!(state.entries.len(), 9);
    assert_eq!(storage.segment_end(), end);
    assert_eq!(file_len(&segment), end);
}

#[test]
fn zeros_after_the_records_end_the_log_and_are_kept() {
    // Proves the preallocated zeros after the last record are no damage, stay allocated
    // (no repair), and take the next records.
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, _, end) = three_records(dir.path());
    let allocated = file_len(&segment);
    assert!(
        allocated > end,
        "zeros follow the records: {allocated} vs {end}"
    );
    let (mut storage, state) = open(dir.path());
    assert_eq!(state.entries.len(), 9);
    assert_eq!(storage.segment_end(), end);
    assert_eq!(file_len(&segment), allocated);
    storage
        .persist(None, &entries(10..=10, 3), None)
        .expect("persist");
    assert_eq!(file_len(&segment), allocated, "written into the zeros");
    drop(storage);
    assert_eq!(reopen(dir.path()).entries.len(), 10);
}

#[test]
fn zero_filled_tail_of_an_unpreallocated_file_is_the_end_of_the_log() {
    // Proves a tail of zeros where preallocation was off (file size grew, data never
    // written) ends the log too.
    let dir = tempfile::tempdir().expect("tempdir");
    let no_zeros = WalOptions {
        preallocate_bytes: 0,
        ..WalOptions::default()
    };
    let (mut storage, _) = open_with(dir.path(), no_zeros.clone());
    storage
        .persist(None, &entries(1..=3, 1), None)
        .expect("persist");
    let end = storage.segment_end();
    drop(storage);
    let segment = last_segment(dir.path());
    assert_eq!(file_len(&segment), end, "no zeros without preallocation");
    truncate(&segment, end + 4096);
    let (storage, state) = open_with(dir.path(), no_zeros);
    assert_eq!(state.entries.len(), 3);
    assert_eq!(storage.segment_end(), end);
}

#[test]
fn bad_crc_followed_by_garbage_is_corrupt() {
    // Proves a damaged record followed by more non-zero bytes is not taken for a torn tail.
    let dir = tempfile::tempdir().expect("tempdir");
    let (segment, starts, _) = three_records(dir.path());
    let mut data = std::fs::read(&segment).expect("read");
    data.extend_from_slice(b"trailing bytes");
    std::fs::write(&segment, &data).expect("write");
    flip_bit(&segment, starts[2] + 10, 0);
    let (path, offset, _) = expect_corrupt(dir.path());
    assert_eq!((path, offset), (segment, starts[2]));
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_is_corrupt() {
    // Proves even a tail-shaped cut is corruption when a later segment exists.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open_with(dir.path(), options(100));
    for index in 1..=10 {
        storage
            .persist(None, &entries(index..=index, 1), None)
            .expect("persist");
    }
    drop(storage);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    tear_at(&files[0], last_nonzero_end(&files[0]) - 1);
    let (path, _, reason) = expect_corrupt(dir.path());
    assert_eq!(path, files[0]);
    assert!(reason.contains("not the last"), "{reason}");
}

#[test]
fn missing_middle_segment_is_corrupt() {
    // Proves a gap in segment numbers is reported rather than replayed around.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open_with(dir.path(), options(100));
    for index in 1..=10 {
        storage
            .persist(None, &entries(index..=index, 1), None)
            .expect("persist");
    }
    drop(storage);
    let files = segment_files(dir.path());
    std::fs::remove_file(&files[1]).expect("remove");
    let (path, _, reason) = expect_corrupt(dir.path());
    assert_eq!(path, files[2]);
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn missing_first_segments_without_a_covering_snapshot_is_corrupt() {
    // Proves entries lost before the first remaining segment are detected.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open_with(dir.path(), options(100));
    for index in 1..=10 {
        storage
            .persist(None, &entries(index..=index, 1), None)
            .expect("persist");
    }
    drop(storage);
    let files = segment_files(dir.path());
    std::fs::remove_file(&files[0]).expect("remove");
    let (_, _, reason) = expect_corrupt(dir.path());
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn damaged_snapshot_file_is_corrupt() {
    // Proves the snapshot's checksum is verified on open.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(None, &entries(1..=5, 1), None)
        .expect("persist");
    storage
        .save_snapshot(&snapshot(3, 1))
        .expect("save_snapshot");
    drop(storage);
    let path = dir.path().join("snapshot");
    flip_bit(&path, 20, 1);
    let (corrupt_path, offset, _) = expect_corrupt(dir.path());
    assert_eq!((corrupt_path, offset), (path, 8));
}

#[test]
fn torn_checkpoint_of_a_new_last_segment_is_removed() {
    // Proves a crash while creating a segment (before its checkpoint was complete) loses
    // nothing: the half-made segment goes and appends continue in the previous one.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open_with(dir.path(), options(100));
    for index in 1..=6 {
        storage
            .persist(None, &entries(index..=index, 1), None)
            .expect("persist");
    }
    drop(storage);
    let files = segment_files(dir.path());
    let last = files.last().expect("segments").clone();
    let header_only = files.len() as u64 + 1;
    let next = last.with_file_name(format!("{header_only:020}.seg"));
    std::fs::write(&next, &b"DSWAL01\n\x10\x00"[..]).expect("write");

    let (mut storage, state) = open_with(dir.path(), options(100));
    assert_eq!(state.entries, entries(1..=6, 1));
    assert!(!next.exists());
    storage
        .persist(None, &entries(7..=7, 1), None)
        .expect("persist");
    drop(storage);
    assert_eq!(reopen(dir.path()).entries, entries(1..=7, 1));
}

#[test]
fn poisoned_storage_refuses_further_writes() {
    // Proves that after a failed write the storage refuses to build on unknown disk state.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(None, &entries(1..=2, 1), None)
        .expect("persist");
    // Make the snapshot write fail: a directory where the temporary file must go.
    std::fs::create_dir(dir.path().join("snapshot.tmp")).expect("mkdir");
    let failed = storage.persist(None, &[], Some(&snapshot(5, 1)));
    assert!(matches!(failed, Err(WalError::Io { .. })), "{failed:?}");
    let refused = storage.persist(None, &entries(3..=3, 1), None);
    assert!(matches!(refused, Err(WalError::Poisoned)), "{refused:?}");
}
