//! Random persist / overwrite / install / compact / reopen sequences against an in-memory model.

use crate::common::*;
use distsync_raft::{Entry, HardState, LogIndex, NodeId, PersistedState, Snapshot, Term};
use distsync_wal::RaftStorage;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Entries from `back` positions before the end (an overwrite when > 0).
    Append {
        back: u64,
        count: u64,
        new_term: bool,
        with_hard_state: bool,
    },
    /// A snapshot received from a leader, `offset` from the log's end, then `count` entries.
    Install {
        offset: i64,
        count: u64,
    },
    /// Application-side compaction `back` positions before the end.
    Compact {
        back: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u64, 0..6u64, any::<bool>(), any::<bool>()).prop_map(
            |(back, count, new_term, with_hard_state)| Op::Append {
                back,
                count,
                new_term,
                with_hard_state,
            }
        ),
        1 => (-4..6i64, 0..4u64).prop_map(|(offset, count)| Op::Install { offset, count }),
        2 => (0..6u64).prop_map(|back| Op::Compact { back }),
        2 => Just(Op::Reopen),
    ]
}

/// What the storage should recover: exactly what Raft would hand back.
#[derive(Default)]
struct Model {
    state: PersistedState,
    term: u64,
}

impl Model {
    fn snapshot_index(&self) -> u64 {
        self.state
            .snapshot
            .as_ref()
            .map_or(0, |s| s.meta.last_index.0)
    }

    fn last_index(&self) -> u64 {
        self.state
            .entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index.0)
    }

    fn term_at(&self, index: u64) -> Term {
        let base = self.snapshot_index();
        if index == base {
            return self
                .state
                .snapshot
                .as_ref()
                .map_or(Term(0), |s| s.meta.last_term);
        }
        self.state.entries[(index - base - 1) as usize].term
    }

    fn fresh_entries(&self, first: u64, count: u64, tag: u64) -> Vec<Entry> {
        (first..first + count)
            .map(|index| Entry {
                payload: distsync_raft::EntryPayload::Command(
                    format!("{index}/{}/{tag}", self.term).into_bytes().into(),
                ),
                ..entry(index, self.term)
            })
            .collect()
    }

    fn append(&mut self, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            let keep = (first.index.0 - self.snapshot_index() - 1) as usize;
            self.state.entries.truncate(keep);
            self.state.entries.extend_from_slice(entries);
        }
    }
}

fn snapshot_at(index: u64, term: Term, tag: usize) -> Snapshot {
    Snapshot {
        data: format!("snapshot-{index}-{tag}").into_bytes().into(),
        ..snapshot(index, term.0)
    }
}

fn run(segment_size_bytes: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut storage, initial) = open_with(dir.path(), options(segment_size_bytes));
    prop_assert_eq!(initial, PersistedState::default());
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append {
                back,
                count,
                new_term,
                with_hard_state,
            } => {
                if new_term || model.term == 0 {
                    model.term += 1;
                }
                let first = (model.last_index() + 1)
                    .saturating_sub(back)
                    .max(model.snapshot_index() + 1);
                let new = model.fresh_entries(first, count, step as u64);
                let hard_state = with_hard_state.then(|| HardState {
                    term: Term(model.term),
                    voted_for: Some(NodeId(step as u64 % 3 + 1)),
                    commit: LogIndex(model.snapshot_index()),
                });
                storage
                    .persist(hard_state.as_ref(), &new, None)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                model.append(&new);
                if let Some(hard_state) = hard_state {
                    model.state.hard_state = hard_state;
                }
            }
            Op::Install { offset, count } => {
                model.term += 1;
                let index = (model.last_index() as i64 + offset)
                    .max(model.snapshot_index() as i64)
                    .max(1) as u64;
                let snap = snapshot_at(index, Term(model.term), step);
                let new = model.fresh_entries(index + 1, count, step as u64);
                storage
                    .persist(None, &new, Some(&snap))
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                model.state.snapshot = Some(snap);
                model.state.entries = new;
            }
            Op::Compact { back } => {
                let index = model.last_index().saturating_sub(back);
                if index <= model.snapshot_index() {
                    continue;
                }
                let snap = snapshot_at(index, model.term_at(index), step);
                storage
                    .save_snapshot(&snap)
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                let covered = (index - model.snapshot_index()) as usize;
                model.state.entries.drain(..covered);
                model.state.snapshot = Some(snap);
            }
            Op::Reopen => {
                drop(storage);
                let (reopened, state) = RaftStorage::open(dir.path(), options(segment_size_bytes))
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                storage = reopened;
                prop_assert_eq!(&state, &model.state, "after step {}", step);
            }
        }
        prop_assert_eq!(storage.last_index(), LogIndex(model.last_index()));
    }
    drop(storage);
    let state = reopen(dir.path());
    prop_assert_eq!(&state, &model.state, "at the end");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_the_model_across_reopens(
        segment_size_bytes in prop_oneof![Just(64u64), Just(300), Just(1 << 20)],
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        // Proves persist, overwrite, install, compaction and rotation compose: whatever the
        // sequence, every reopen recovers exactly what an in-memory model holds.
        run(segment_size_bytes, ops)?;
    }
}
