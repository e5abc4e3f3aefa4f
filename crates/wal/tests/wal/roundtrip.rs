//! Round trips: what is persisted comes back after reopening.

use crate::common::*;
use distsync_raft::{LogIndex, PersistedState};
use distsync_wal::WalOptions;

#[test]
fn empty_directory_opens_to_an_empty_state() {
    // Proves a fresh directory yields the default state and one segment.
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, state) = open(dir.path());
    assert_eq!(state, PersistedState::default());
    assert_eq!(storage.segment_count(), 1);
    drop(storage);
    assert_eq!(reopen(dir.path()), PersistedState::default());
}

#[test]
fn hard_state_and_entries_survive_reopen() {
    // Proves persisted hard state and entries come back unchanged, across several calls.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(Some(&hard_state(1, Some(1), 0)), &entries(1..=3, 1), None)
        .expect("persist");
    storage
        .persist(Some(&hard_state(2, Some(2), 3)), &entries(4..=5, 2), None)
        .expect("persist");
    storage
        .persist(None, &entries(6..=6, 2), None)
        .expect("persist");
    drop(storage);

    let state = reopen(dir.path());
    assert_eq!(state.hard_state, hard_state(2, Some(2), 3));
    assert_eq!(state.snapshot, None);
    let mut expected = entries(1..=3, 1);
    expected.extend(entries(4..=6, 2));
    assert_eq!(state.entries, expected);
}

#[test]
fn suffix_overwrite_replaces_divergent_entries_across_reopen() {
    // Proves entries starting inside the persisted log replace everything from there on.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(None, &entries(1..=10, 1), None)
        .expect("persist");
    storage
        .persist(None, &entries(6..=8, 2), None)
        .expect("persist");
    assert_eq!(storage.last_index(), LogIndex(8));
    drop(storage);

    let mut expected = entries(1..=5, 1);
    expected.extend(entries(6..=8, 2));
    assert_eq!(reopen(dir.path()).entries, expected);
}

#[test]
fn suffix_overwrite_reaches_back_into_earlier_segments() {
    // Proves an overwrite whose start lies in an older segment is replayed correctly.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open_with(dir.path(), options(100));
    for index in 1..=30 {
        storage
            .persist(None, &entries(index..=index, 1), None)
            .expect("persist");
    }
    assert!(storage.segment_count() > 3, "small segments must rotate");
    storage
        .persist(None, &entries(2..=4, 3), None)
        .expect("persist");
    drop(storage);

    let mut expected = entries(1..=1, 1);
    expected.extend(entries(2..=4, 3));
    assert_eq!(reopen(dir.path()).entries, expected);
}

#[test]
fn installed_snapshot_replaces_log() {
    // Proves a received snapshot drops every persisted entry, even ones after its index.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(Some(&hard_state(1, None, 4)), &entries(1..=10, 1), None)
        .expect("persist");
    storage
        .persist(
            Some(&hard_state(2, Some(3), 6)),
            &entries(7..=9, 2),
            Some(&snapshot(6, 2)),
        )
        .expect("persist");
    drop(storage);

    let state = reopen(dir.path());
    assert_eq!(state.snapshot, Some(snapshot(6, 2)));
    assert_eq!(state.entries, entries(7..=9, 2));
    assert_eq!(state.hard_state, hard_state(2, Some(3), 6));
}

#[test]
fn installed_snapshot_beyond_the_log_end_then_appends() {
    // Proves a snapshot past the last entry works and later appends continue after it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(None, &entries(1..=3, 1), None)
        .expect("persist");
    storage
        .persist(None, &[], Some(&snapshot(20, 4)))
        .expect("persist");
    storage
        .persist(None, &entries(21..=22, 4), None)
        .expect("persist");
    drop(storage);

    let state = reopen(dir.path());
    assert_eq!(state.snapshot, Some(snapshot(20, 4)));
    assert_eq!(state.entries, entries(21..=22, 4));
}

#[test]
fn save_snapshot_removes_covered_segments_and_keeps_later_entries() {
    // Proves compaction deletes whole segments at or below the snapshot and keeps the rest.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open_with(dir.path(), options(200));
    for index in 1..=30 {
        storage
            .persist(None, &entries(index..=index, 1), None)
            .expect("persist");
    }
    let before = segment_files(dir.path());
    assert_eq!(before.len(), storage.segment_count());
    storage
        .save_snapshot(&snapshot(20, 1))
        .expect("save_snapshot");
    let after = segment_files(dir.path());
    assert!(
        after.len() < before.len(),
        "covered segments must go: {} before, {} after",
        before.len(),
        after.len()
    );
    assert_eq!(after, before[before.len() - after.len()..]);
    assert_eq!(storage.snapshot_index(), LogIndex(20));
    drop(storage);

    let state = reopen(dir.path());
    assert_eq!(state.snapshot, Some(snapshot(20, 1)));
    assert_eq!(state.entries, entries(21..=30, 1));
}

#[test]
fn hard_state_survives_compaction_of_the_segment_that_held_it() {
    // Proves segment checkpoints carry the hard state past deleted segments.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open_with(dir.path(), options(150));
    storage
        .persist(Some(&hard_state(7, Some(2), 0)), &entries(1..=1, 7), None)
        .expect("persist");
    for index in 2..=40 {
        storage
            .persist(None, &entries(index..=index, 7), None)
            .expect("persist");
    }
    storage
        .save_snapshot(&snapshot(39, 7))
        .expect("save_snapshot");
    assert!(storage.segment_count() <= 2);
    drop(storage);

    let state = reopen(dir.path());
    assert_eq!(state.hard_state, hard_state(7, Some(2), 0));
    assert_eq!(state.entries, entries(40..=40, 7));
}

#[test]
fn segments_rotate_at_configured_size() {
    // Proves a new segment starts once the current one reaches the size, and each holds
    // at most one record beyond it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open_with(dir.path(), options(4096));
    let big = |index: u64| distsync_raft::Entry {
        payload: distsync_raft::EntryPayload::Command(vec![index as u8; 1024].into()),
        ..entry(index, 1)
    };
    for index in 1..=20 {
        storage.persist(None, &[big(index)], None).expect("persist");
    }
    let files = segment_files(dir.path());
    assert_eq!(files.len(), storage.segment_count());
    assert!(
        files.len() >= 5,
        "20 KiB in 4 KiB segments: {} files",
        files.len()
    );
    for file in &files[..files.len() - 1] {
        let len = file_len(file);
        assert!(
            (4096..4096 + 1100).contains(&len),
            "{} is {len} bytes",
            file.display()
        );
    }
    drop(storage);
    assert_eq!(
        reopen(dir.path()).entries,
        (1..=20).map(big).collect::<Vec<_>>()
    );
}

#[test]
fn entries_covered_by_the_snapshot_are_skipped() {
    // Proves entries at or below the snapshot index in a persist call are ignored.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(None, &entries(1..=10, 1), None)
        .expect("persist");
    storage
        .save_snapshot(&snapshot(8, 1))
        .expect("save_snapshot");
    storage
        .persist(None, &entries(5..=12, 1), None)
        .expect("persist");
    drop(storage);

    let state = reopen(dir.path());
    assert_eq!(state.snapshot, Some(snapshot(8, 1)));
    assert_eq!(state.entries, entries(9..=12, 1));
}

#[test]
fn stale_save_snapshot_is_ignored() {
    // Proves a compaction snapshot no newer than the current one changes nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(None, &entries(1..=10, 1), None)
        .expect("persist");
    storage
        .save_snapshot(&snapshot(8, 1))
        .expect("save_snapshot");
    storage
        .save_snapshot(&snapshot(5, 1))
        .expect("stale save_snapshot");
    drop(storage);
    assert_eq!(reopen(dir.path()).snapshot, Some(snapshot(8, 1)));
}

#[test]
#[should_panic(expected = "snapshot's last term disagrees")]
fn save_snapshot_with_a_term_the_log_does_not_hold_panics() {
    // Proves a compaction snapshot that does not match the log is refused as a caller bug.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(None, &entries(1..=10, 1), None)
        .expect("persist");
    let _ = storage.save_snapshot(&snapshot(8, 2));
}

#[test]
#[should_panic(expected = "would leave a gap")]
fn entries_leaving_a_gap_panic() {
    // Proves persisting entries past last_index + 1 is refused as a caller bug.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(None, &entries(1..=3, 1), None)
        .expect("persist");
    let _ = storage.persist(None, &entries(5..=6, 1), None);
}

#[test]
fn leftover_snapshot_tmp_is_removed_on_open() {
    // Proves a snapshot write interrupted before its rename is discarded.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(None, &entries(1..=4, 1), None)
        .expect("persist");
    drop(storage);
    let tmp = dir.path().join("snapshot.tmp");
    std::fs::write(&tmp, b"half a snapshot").expect("write");
    let state = reopen(dir.path());
    assert!(!tmp.exists());
    assert_eq!(state.snapshot, None);
    assert_eq!(state.entries, entries(1..=4, 1));
}

#[test]
fn persist_with_nothing_to_do_writes_nothing() {
    // Proves an empty Ready costs neither a write nor an fsync.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    let len = file_len(&last_segment(dir.path()));
    storage.persist(None, &[], None).expect("persist");
    assert_eq!(file_len(&last_segment(dir.path())), len);
    assert_eq!(storage.last_sync_duration(), None);
}

#[test]
fn last_sync_duration_is_recorded_after_persist() {
    // Proves the fsync latency is observable for metrics, and absent when sync is off.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(Some(&hard_state(1, None, 0)), &[], None)
        .expect("persist");
    assert!(storage.last_sync_duration().is_some());

    let unsynced = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        sync: false,
        ..WalOptions::default()
    };
    let (mut storage, _) = open_with(unsynced.path(), options);
    storage
        .persist(None, &entries(1..=2, 1), None)
        .expect("persist");
    assert_eq!(storage.last_sync_duration(), None);
    drop(storage);
    assert_eq!(reopen(unsynced.path()).entries, entries(1..=2, 1));
}

#[test]
fn load_snapshot_reads_back_the_current_snapshot() {
    // Proves the snapshot file can be read back for sending to a follower.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    assert_eq!(storage.load_snapshot().expect("load"), None);
    storage
        .persist(None, &entries(1..=5, 1), None)
        .expect("persist");
    storage
        .save_snapshot(&snapshot(3, 1))
        .expect("save_snapshot");
    assert_eq!(storage.load_snapshot().expect("load"), Some(snapshot(3, 1)));
}

#[test]
fn crash_between_snapshot_file_and_install_record_drops_the_stale_log() {
    // Proves that when the snapshot file was renamed but the batch recording the install was
    // lost, the snapshot replaces the log, and appends after reopening continue it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, _) = open(dir.path());
    storage
        .persist(Some(&hard_state(1, None, 0)), &entries(1..=10, 1), None)
        .expect("persist");
    let before_install = storage.segment_end();
    storage
        .persist(None, &entries(9..=12, 2), Some(&snapshot(8, 2)))
        .expect("persist");
    drop(storage);
    // The crash: the install batch never reached the disk.
    tear_at(&last_segment(dir.path()), before_install);

    let (mut storage, state) = open(dir.path());
    assert_eq!(state.snapshot, Some(snapshot(8, 2)));
    assert_eq!(state.entries, vec![]);
    assert_eq!(state.hard_state, hard_state(1, None, 0));
    storage
        .persist(None, &entries(9..=10, 2), None)
        .expect("persist");
    drop(storage);
    let state = reopen(dir.path());
    assert_eq!(state.snapshot, Some(snapshot(8, 2)));
    assert_eq!(state.entries, entries(9..=10, 2));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_until_the_first_is_dropped() {
    // Proves two processes (or two opens) never write one log: the second open fails with
    // `Locked` naming the lock file, and succeeds once the first storage is gone.
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, _) = open(dir.path());
    let error = distsync_wal::RaftStorage::open(dir.path(), WalOptions::default())
        .expect_err("a second open must be refused");
    assert!(
        matches!(error, distsync_wal::WalError::Locked { .. }),
        "{error}"
    );
    drop(storage);
    distsync_wal::RaftStorage::open(dir.path(), WalOptions::default())
        .expect("open after the first storage is dropped");
}
