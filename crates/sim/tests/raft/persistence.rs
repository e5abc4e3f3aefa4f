//! R-14..R-20: persistence across crashes, Figure 8, unreliable networks and churn.

use crate::common::*;
use distsync_raft::NodeId;
use distsync_sim::net::LinkFaults;
use rand::Rng;

#[test]
fn r14_persist1_agreement_survives_restarts() {
    // restart all; restart the leader; restart a lagging ex-leader; restart a follower;
    // every agreement succeeds within COMMIT_BOUND.
    let mut c = cluster(3, 114);
    let all = ids(3);
    one(&mut c, 3);
    for &id in &all {
        c.crash(id, false);
    }
    for &id in &all {
        c.restart(id);
    }
    one(&mut c, 3);
    let leader1 = check_one_leader(&mut c, &all);
    c.crash_restart(leader1);
    one(&mut c, 3);
    let leader2 = check_one_leader(&mut c, &all);
    c.isolate(leader2);
    one(&mut c, 2);
    c.crash(leader2, false);
    c.reconnect(leader2);
    c.restart(leader2);
    one(&mut c, 3);
    let leader3 = check_one_leader(&mut c, &all);
    let i3 = NodeId(leader3.0 % 3 + 1);
    c.isolate(i3);
    one(&mut c, 2);
    c.crash(i3, false);
    c.reconnect(i3);
    c.restart(i3);
    one(&mut c, 3);
}

#[test]
fn r15_persist2_partial_crashes_over_five_rounds() {
    // 5 rounds of partial crash/restart with disconnections; final commit on 5.
    let mut c = cluster(5, 115);
    let all = ids(5);
    for _ in 0..5 {
        one(&mut c, 5);
        let leader = check_one_leader(&mut c, &all);
        let at = |k: u64| NodeId((leader.0 - 1 + k) % 5 + 1);
        c.isolate(at(1));
        c.isolate(at(2));
        one(&mut c, 3);
        c.isolate(at(0));
        c.isolate(at(3));
        c.isolate(at(4));
        c.crash(at(1), false);
        c.crash(at(2), false);
        c.reconnect(at(1));
        c.reconnect(at(2));
        c.restart(at(1));
        c.restart(at(2));
        c.crash(at(3), false);
        c.reconnect(at(3));
        c.restart(at(3));
        // Only at(1), at(2), at(3) are connected now.
        c.isolate(at(0));
        c.isolate(at(4));
        one(&mut c, 3);
        c.reconnect(at(4));
        c.reconnect(at(0));
    }
    one(&mut c, 5);
}

#[test]
fn r16_persist3_restarted_leader_commits_with_stale_follower() {
    // partitioned leader and one follower crash, leader restarts: commit with
    // {restarted leader, stale follower}; then on 3.
    let mut c = cluster(3, 116);
    let all = ids(3);
    one(&mut c, 3);
    let leader = check_one_leader(&mut c, &all);
    let stale = NodeId(leader.0 % 3 + 1);
    let other = NodeId(stale.0 % 3 + 1);
    c.isolate(stale);
    one(&mut c, 2);
    c.crash(leader, false);
    c.crash(other, false);
    c.reconnect(stale);
    c.restart(leader);
    one(&mut c, 2);
    c.restart(other);
    one(&mut c, 3);
}

fn figure8(seed: u64, unreliable: bool) {
    let mut c = cluster(5, seed);
    let all = ids(5);
    one(&mut c, 1);
    // Nodes that are down: crashed (reliable variant) or disconnected (unreliable variant).
    let mut down: Vec<NodeId> = Vec::new();
    for iteration in 0..1000 {
        if unreliable && iteration == 200 {
            c.net.set_default_faults(LinkFaults {
                drop_probability: 0.1,
                duplicate_probability: 0.0,
                delay_min_us: 0,
                delay_max_us: 27_000,
                reorder_probability: 0.66,
                reorder_delay_max_us: 2_200_000,
            });
        }
        let mut leader = None;
        for &id in &all {
            if !down.contains(&id) && c.propose(id).1.is_ok() {
                leader = Some(id);
            }
        }
        let ticks = if c.rng().random_bool(0.1) {
            c.rng().random_range(0..50)
        } else {
            c.rng().random_range(0..2)
        };
        c.run_ticks(ticks);
        if let Some(leader) = leader {
            if !unreliable {
                c.crash(leader, false);
                down.push(leader);
            } else if c.rng().random_bool(0.5) {
                c.isolate(leader);
                down.push(leader);
            }
        }
        if all.len() - down.len() < 3 {
            let k = c.rng().random_range(0..down.len());
            let id = down.swap_remove(k);
            if unreliable {
                c.reconnect(id);
                // Reconnecting restores links to isolated peers too; re-cut those.
                for &other in &down {
                    c.isolate(other);
                }
            } else {
                c.restart(id);
            }
        }
    }
    c.heal();
    for &id in &all {
        c.restart(id);
    }
    one(&mut c, 5);
}

#[test]
fn r17_figure8_crashing_leaders_keep_every_invariant() {
    // 1000 iterations of submit, short or long sleep, crash the leader, restart one when
    // fewer than 3 are up; I1-I7 hold throughout; afterwards a command commits on 5.
    figure8(117, false);
}

#[test]
fn r18_unreliable_agree_commits_every_command() {
    // drop 10 % requests and replies, delay 0-26 ms: 245 commands all commit; after
    // reliability is restored a command commits on 5.
    let mut c = cluster(5, 118);
    c.net.set_default_faults(LinkFaults {
        drop_probability: 0.1,
        duplicate_probability: 0.0,
        delay_min_us: 0,
        delay_max_us: 26_000,
        reorder_probability: 0.0,
        reorder_delay_max_us: 0,
    });
    for _ in 0..245 {
        one(&mut c, 1);
    }
    c.heal();
    one(&mut c, 5);
}

#[test]
fn r19_figure8_unreliable_with_long_reordering() {
    // as R-17 with disconnections instead of crashes (p = 0.5) and, from iteration 200,
    // about 2/3 of messages delayed up to 2.2 s.
    figure8(119, true);
}

fn churn(seed: u64, unreliable: bool) {
    let mut c = cluster(5, seed);
    let all = ids(5);
    if unreliable {
        c.net.set_default_faults(LinkFaults {
            drop_probability: 0.1,
            duplicate_probability: 0.0,
            delay_min_us: 0,
            delay_max_us: 26_000,
            reorder_probability: 0.1,
            reorder_delay_max_us: 100_000,
        });
    }
    let mut seen = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..20 {
        for _ in 0..70 {
            // Three clients submit to whoever leads, every tick.
            for _ in 0..3 {
                if let Some((v, p)) = c.propose_on_leader() {
                    pending.push((v, p.index));
                }
            }
            c.run_ticks(1);
        }
        let victim = NodeId(c.rng().random_range(1..=5));
        let roll: f64 = c.rng().random();
        if roll < 0.2 {
            c.isolate(victim);
        } else if roll < 0.7 {
            c.restart(victim);
            c.reconnect(victim);
        } else if roll < 0.9 {
            c.crash(victim, false);
        }
        pending.retain(|&(v, index)| match c.committed_value(index) {
            Some(got) => {
                if got == Some(v) {
                    seen.push((v, index));
                }
                false
            }
            None => true,
        });
    }
    c.heal();
    for &id in &all {
        c.restart(id);
    }
    let last = one(&mut c, 5);
    c.run_until_cond(COMMIT_BOUND_TICKS, |c| c.n_applied(last) == 5);
    assert!(!seen.is_empty(), "nothing committed during churn");
    for (v, index) in seen {
        assert_eq!(c.committed_value(index), Some(Some(v)));
    }
    assert_eq!(c.n_applied(last), 5, "not every node applied the final log");
}

#[test]
fn r20_churn_reliable_keeps_every_seen_commit() {
    // R-20 (reliable): every value a client saw committed is in the final log of all 5.
    churn(120, false);
}

#[test]
fn r20_churn_unreliable_keeps_every_seen_commit() {
    // R-20 (unreliable): as above with 10 % drops and reordering.
    churn(1200, true);
}
