//! H-01 (balance with virtual nodes) and H-05 (the V = 1 negative control).

use crate::common::{MEMBER_COUNTS, SALTS, Salting, VNODE_COUNTS, balance, key_counts, ring_of};

/// Mean CV over the salts, after asserting the per-salt H-01 bounds
/// (CV <= 2/sqrt(V), max/mean <= 1 + 4/sqrt(V)) on every salt.
fn mean_cv_with_per_salt_bounds(members: usize, vnodes: u32, salting: Salting) -> f64 {
    let root_v = f64::from(vnodes).sqrt();
    let (cv_max, max_over_mean_max) = (2.0 / root_v, 1.0 + 4.0 / root_v);
    let (mut cv_sum, mut cv_worst, mut max_over_mean_worst) = (0.0, 0.0f64, 0.0f64);
    for salt in 0..SALTS {
        let ring = ring_of(members, vnodes, salting, salt);
        let b = balance(&key_counts(&ring, salt));
        assert!(
            b.cv <= cv_max && b.max_over_mean <= max_over_mean_max,
            "H-01 {salting:?} N={members} V={vnodes} salt={salt}: cv={:.4} (max {cv_max:.4}), \
             max/mean={:.4} (max {max_over_mean_max:.4})",
            b.cv,
            b.max_over_mean
        );
        cv_sum += b.cv;
        cv_worst = cv_worst.max(b.cv);
        max_over_mean_worst = max_over_mean_worst.max(b.max_over_mean);
    }
    let cv_mean = cv_sum / f64::from(SALTS);
    println!(
        "H-01 {salting:?} N={members:2} V={vnodes}: mean cv {cv_mean:.4} (bound {:.4}), \
         worst cv {cv_worst:.4} (<= {cv_max:.4}), worst max/mean {max_over_mean_worst:.4} \
         (<= {max_over_mean_max:.4})",
        1.25 / root_v
    );
    cv_mean
}

#[test]
fn keys_spread_evenly_with_virtual_nodes() {
    // Proves H-01 as TESTING.md B3 states it (20 ring layouts, averaged): for N in {3,5,10},
    // V in {128,256}, 100k keys, mean CV <= 1.25/sqrt(V), every salt CV <= 2/sqrt(V) and
    // max/mean <= 1 + 4/sqrt(V).
    for members in MEMBER_COUNTS {
        for vnodes in VNODE_COUNTS {
            let cv_mean = mean_cv_with_per_salt_bounds(members, vnodes, Salting::KeysAndNames);
            let bound = 1.25 / f64::from(vnodes).sqrt();
            assert!(
                cv_mean <= bound,
                "H-01 N={members} V={vnodes}: mean cv {cv_mean:.4} > {bound:.4}"
            );
        }
    }
}

#[test]
fn production_shard_names_meet_per_salt_balance_bounds() {
    // Proves the per-salt H-01 bounds (CV <= 2/sqrt(V), max/mean <= 1 + 4/sqrt(V)) for the one
    // layout production uses, members r1..rN, with 20 key sets of 100k keys.
    for members in MEMBER_COUNTS {
        for vnodes in VNODE_COUNTS {
            mean_cv_with_per_salt_bounds(members, vnodes, Salting::KeysOnly);
        }
    }
}

#[test]
#[ignore = "known to fail at N=10 V=128 (mean cv 0.114 > 0.1105): one fixed layout is a single \
            draw whose CV exceeds 1.25/sqrt(V) with probability 7-10 % per (N, V), whatever the \
            hash; see the crate report. H-01 over 20 layouts is keys_spread_evenly_with_virtual_nodes"]
fn production_shard_names_mean_cv_within_bound() {
    // Proves (when it passes) the H-01 mean bound, mean CV <= 1.25/sqrt(V), for the single
    // production layout r1..rN, averaging only over 20 key sets.
    for members in MEMBER_COUNTS {
        for vnodes in VNODE_COUNTS {
            let cv_mean = mean_cv_with_per_salt_bounds(members, vnodes, Salting::KeysOnly);
            let bound = 1.25 / f64::from(vnodes).sqrt();
            assert!(
                cv_mean <= bound,
                "H-01 r1..rN N={members} V={vnodes}: mean cv {cv_mean:.4} > {bound:.4}"
            );
        }
    }
}

#[test]
fn one_vnode_per_member_is_badly_unbalanced() {
    // Proves H-05, the negative control: with V = 1 the H-01 measurement sees mean CV > 0.5 (for
    // both the 20 layouts and the production names), so the detector can fail and virtual nodes
    // are what make H-01 pass.
    for salting in [Salting::KeysAndNames, Salting::KeysOnly] {
        for members in MEMBER_COUNTS {
            let cv_mean = (0..SALTS)
                .map(|salt| balance(&key_counts(&ring_of(members, 1, salting, salt), salt)).cv)
                .sum::<f64>()
                / f64::from(SALTS);
            println!("H-05 {salting:?} N={members:2} V=1: mean cv {cv_mean:.4} (> 0.5 expected)");
            assert!(
                cv_mean > 0.5,
                "H-05 {salting:?} N={members} V=1: mean cv {cv_mean:.4} <= 0.5"
            );
        }
    }
}
