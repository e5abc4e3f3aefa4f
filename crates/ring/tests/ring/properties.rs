//! Proptest models of membership changes: the ring against a plain set of names.

use std::collections::BTreeSet;

use distsync_ring::{HashRing, RingError};
use proptest::prelude::*;

/// Member names are drawn from a small pool so that sequences re-add and re-remove names.
const NAME_POOL: usize = 8;

fn name(i: usize) -> String {
    format!("n{i}")
}

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..NAME_POOL).prop_map(Op::Add),
        (0..NAME_POOL).prop_map(Op::Remove),
    ]
}

/// The ring built from scratch from `names`, in name order.
fn fresh(vnodes: u32, names: &BTreeSet<String>) -> HashRing {
    let mut ring = HashRing::new(vnodes).expect("test vnodes are in range");
    for name in names {
        ring.add(name.clone()).expect("set members are distinct");
    }
    ring
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn ring_after_any_changes_equals_a_fresh_ring_of_its_members(
        vnodes in 1u32..=24,
        ops in proptest::collection::vec(op(), 0..40),
        keys in proptest::collection::vec(any::<u64>(), 16),
    ) {
        // Proves, against a set-of-names model, that after any add/remove sequence: errors match
        // the model, every owner is a current member, and the ring equals one built from scratch
        // from its members (so removing then re-adding restores the exact same placement).
        let mut ring: HashRing = HashRing::new(vnodes).expect("in range");
        let mut model = BTreeSet::new();
        for op in ops {
            match op {
                Op::Add(i) => {
                    let result = ring.add(name(i));
                    if model.insert(name(i)) {
                        prop_assert_eq!(result, Ok(()));
                    } else {
                        prop_assert_eq!(result, Err(RingError::MemberExists { name: name(i) }));
                    }
                }
                Op::Remove(i) => {
                    let result = ring.remove(&name(i));
                    if model.remove(&name(i)) {
                        prop_assert_eq!(result, Ok(name(i)));
                    } else {
                        prop_assert_eq!(result, Err(RingError::UnknownMember { name: name(i) }));
                    }
                }
            }
            prop_assert!(ring.members().iter().eq(model.iter()));
            for key in &keys {
                match ring.owner(&key.to_le_bytes()) {
                    Some(owner) => prop_assert!(model.contains(owner)),
                    None => prop_assert!(model.is_empty()),
                }
            }
        }
        prop_assert_eq!(&ring, &fresh(vnodes, &model));
    }

    #[test]
    fn join_moves_keys_only_to_the_joiner_and_leave_undoes_it(
        vnodes in 1u32..=64,
        members in proptest::collection::btree_set("[a-z]{1,6}", 1..8),
        joiner in "[A-Z]{1,6}",
        keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 64),
    ) {
        // Proves monotonicity for arbitrary names and keys: after a join every key either keeps
        // its owner or moves to the joiner, and removing the joiner restores every owner.
        let before = fresh(vnodes, &members);
        let mut after = before.clone();
        after.add(joiner.clone()).expect("upper-case joiner is not among lower-case members");
        for key in &keys {
            let (old, new) = (before.owner(key), after.owner(key));
            prop_assert!(old == new || new == Some(&joiner), "{:?} -> {:?}", old, new);
        }
        after.remove(&joiner).expect("joiner is a member");
        prop_assert_eq!(&after, &before);
    }

    #[test]
    fn owners_are_distinct_and_in_failover_order(
        vnodes in 1u32..=32,
        members in proptest::collection::btree_set("[a-z0-9]{1,4}", 1..10),
        key in proptest::collection::vec(any::<u8>(), 0..32),
        n in 0usize..12,
    ) {
        // Proves owners(key, n) has min(n, len) distinct members, is a prefix of the full
        // failover order, and that each entry is the owner once all earlier entries are gone.
        let ring = fresh(vnodes, &members);
        let owners = ring.owners(&key, n);
        prop_assert_eq!(owners.len(), n.min(ring.len()));
        let distinct: BTreeSet<&String> = owners.iter().copied().collect();
        prop_assert_eq!(distinct.len(), owners.len());
        let all = ring.owners(&key, ring.len());
        prop_assert_eq!(&all[..owners.len()], &owners[..]);
        let mut shrinking = ring.clone();
        for expected in &all {
            prop_assert_eq!(shrinking.owner(&key), Some(*expected));
            shrinking.remove(expected).expect("listed owners are members");
        }
        prop_assert!(shrinking.is_empty());
    }
}
