//! H-02 (a member joins) and H-03 (a member leaves).

use crate::common::{
    KEYS_PER_SALT, MEMBER_COUNTS, SALTS, Salting, VNODE_COUNTS, index_of, member_name,
    owner_indices, ring_of,
};

/// Asserts the moved fractions of one configuration against `expected`: every salt within
/// ±35 %, and the mean over salts within ±10 %.
fn check_moved_fractions(scenario: &str, fractions: &[f64], expected: f64) {
    for (salt, fraction) in fractions.iter().enumerate() {
        assert!(
            (fraction / expected - 1.0).abs() <= 0.35,
            "{scenario} salt={salt}: moved {fraction:.4}, expected {expected:.4} ±35 %"
        );
    }
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    let (low, high) = fractions
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), f| (l.min(*f), h.max(*f)));
    println!(
        "{scenario}: mean moved {mean:.4}, expected {expected:.4} (mean/expected {:.3}, \
         salts {:.3}..{:.3})",
        mean / expected,
        low / expected,
        high / expected
    );
    assert!(
        (mean / expected - 1.0).abs() <= 0.10,
        "{scenario}: mean moved {mean:.4}, expected {expected:.4} ±10 %"
    );
}

/// H-02 for one salting: member N+1 joins members 1..=N.
fn check_join(salting: Salting) {
    for members in MEMBER_COUNTS {
        for vnodes in VNODE_COUNTS {
            let fractions: Vec<f64> = (0..SALTS)
                .map(|salt| {
                    let before = ring_of(members, vnodes, salting, salt);
                    let mut after = before.clone();
                    let joiner = member_name(salting, salt, members + 1);
                    after.add(joiner.clone()).expect("new name");
                    let joiner_at = index_of(&after, &joiner);
                    let old = owner_indices(&before, salt);
                    let new = owner_indices(&after, salt);
                    let mut moved = 0u32;
                    for (i, (&old, &new)) in old.iter().zip(&new).enumerate() {
                        let (old, new_name) = (&before.members()[old], &after.members()[new]);
                        if old != new_name {
                            assert_eq!(
                                new, joiner_at,
                                "H-02 salt={salt} key={i}: moved {old} -> {new_name}, not to {joiner}"
                            );
                            moved += 1;
                        }
                    }
                    f64::from(moved) / f64::from(KEYS_PER_SALT)
                })
                .collect();
            let scenario = format!("H-02 {salting:?} N={members:2} V={vnodes} join");
            check_moved_fractions(&scenario, &fractions, 1.0 / (members + 1) as f64);
        }
    }
}

/// H-03 for one salting: member 1 leaves members 1..=N.
fn check_leave(salting: Salting) {
    for members in MEMBER_COUNTS {
        for vnodes in VNODE_COUNTS {
            let fractions: Vec<f64> = (0..SALTS)
                .map(|salt| {
                    let before = ring_of(members, vnodes, salting, salt);
                    let mut after = before.clone();
                    let leaver = member_name(salting, salt, 1);
                    after.remove(&leaver).expect("member");
                    let old = owner_indices(&before, salt);
                    let new = owner_indices(&after, salt);
                    let mut moved = 0u32;
                    for (i, (&old, &new)) in old.iter().zip(&new).enumerate() {
                        let (old, new) = (&before.members()[old], &after.members()[new]);
                        assert_eq!(
                            old != new,
                            *old == leaver,
                            "H-03 salt={salt} key={i}: {old} -> {new} after {leaver} left"
                        );
                        moved += u32::from(old != new);
                    }
                    f64::from(moved) / f64::from(KEYS_PER_SALT)
                })
                .collect();
            let scenario = format!("H-03 {salting:?} N={members:2} V={vnodes} leave");
            check_moved_fractions(&scenario, &fractions, 1.0 / members as f64);
        }
    }
}

#[test]
fn adding_a_member_moves_about_one_over_n_plus_one_of_keys_and_only_to_it() {
    // Proves H-02 over 20 layouts: when member N+1 joins, every key that changes owner moves to
    // it (every key, every salt), and the moved fraction is 1/(N+1) ±35 % per salt, ±10 % mean.
    check_join(Salting::KeysAndNames);
}

#[test]
fn adding_a_shard_to_production_names_moves_keys_only_to_it() {
    // Proves H-02 for the production layout: r(N+1) joining r1..rN takes keys only for itself,
    // 1/(N+1) ±35 % per key set and ±10 % on average over 20 key sets.
    check_join(Salting::KeysOnly);
}

#[test]
fn removing_a_member_moves_exactly_its_keys() {
    // Proves H-03 over 20 layouts: when member 1 leaves, exactly the keys it owned change owner
    // (every key, every salt), and the moved fraction is 1/N ±35 % per salt and ±10 % mean.
    check_leave(Salting::KeysAndNames);
}

#[test]
fn removing_a_shard_from_production_names_moves_exactly_its_keys() {
    // Proves H-03 for the production layout: r1 leaving r1..rN moves exactly r1's keys, 1/N
    // ±35 % per key set and ±10 % on average over 20 key sets.
    check_leave(Salting::KeysOnly);
}
