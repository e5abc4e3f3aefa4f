//! Crash simulation: unsynced writes are lost at an arbitrary byte.

use crate::common::*;
use distsync_raft::{HardState, LogIndex, NodeId, PersistedState, Term};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn crash_losing_unsynced_writes_recovers_a_prefix_containing_everything_synced(
        batches in proptest::collection::vec((0..3u64, 1..5u64), 2..12),
        synced_fraction in 0.0..1.0f64,
        cut_fraction in 0.0..=1.0f64,
        shortened in any::<bool>(),
    ) {
        // Proves that cutting the segment anywhere between the last fsync boundary and its end
        // recovers exactly the state after some batch at or after that boundary: all synced
        // batches, then a prefix of the rest, never a partial batch. The cut either shortens
        // the file or leaves the preallocated zeros where the lost bytes were.
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut storage, _) = open(dir.path());
        let segment = last_segment(dir.path());
        // boundaries[k] = (end of the segment's records, state) after the first k batches.
        let mut state = PersistedState::default();
        let mut boundaries = vec![(storage.segment_end(), state.clone())];
        for (k, (back, count)) in batches.iter().enumerate() {
            let term = k as u64 + 1;
            let last = state.entries.last().map_or(0, |e| e.index.0);
            let first = (last + 1).saturating_sub(*back).max(1);
            let new = entries(first..=first + count - 1, term);
            let hard_state = HardState {
                term: Term(term),
                voted_for: Some(NodeId(term % 3)),
                commit: LogIndex(first - 1),
            };
            storage.persist(Some(&hard_state), &new, None).expect("persist");
            state.entries.truncate((first - 1) as usize);
            state.entries.extend(new);
            state.hard_state = hard_state;
            boundaries.push((storage.segment_end(), state.clone()));
        }
        drop(storage);

        let synced = ((boundaries.len() - 1) as f64 * synced_fraction) as usize;
        let synced_len = boundaries[synced].0;
        let end = boundaries.last().expect("non-empty").0;
        let cut = synced_len + ((end - synced_len) as f64 * cut_fraction) as u64;
        // The first byte the crash changed. Zeros written over bytes that were zero already
        // (a record ending in zero bytes, such as a commit index of 0) lose nothing, so a
        // record whose changed part starts only after its end survives whole.
        let lost_from = if shortened {
            let file = std::fs::OpenOptions::new().write(true).open(&segment).expect("open");
            file.set_len(cut).expect("truncate");
            cut
        } else {
            let original = std::fs::read(&segment).expect("read");
            tear_at(&segment, cut);
            original[cut as usize..]
                .iter()
                .position(|&byte| byte != 0)
                .map_or(original.len() as u64, |offset| cut + offset as u64)
        };

        let (storage, recovered) = open(dir.path());
        let survivor = boundaries
            .iter()
            .rposition(|(len, _)| *len <= lost_from)
            .expect("the first boundary is the empty log");
        prop_assert!(survivor >= synced);
        prop_assert_eq!(&recovered, &boundaries[survivor].1, "cut at {} (first changed byte {}) of {}", cut, lost_from, end);
        prop_assert_eq!(storage.segment_end(), boundaries[survivor].0);
    }
}
