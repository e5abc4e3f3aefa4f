//! Seed sweeps: the CI sweep (R-50..R-56 + R-60), determinism and negative controls.

use distsync_raft::TestBugs;
use distsync_sim::raft::{CheckerOptions, SweepOptions, run_seed, sweep};

/// Simulated fault phase per CI seed: 60 s (6000 ticks of 10 ms), then the liveness phase.
const CI_FAULT_TICKS: u64 = 6_000;

#[test]
fn sweep_500_seeds_of_5_nodes_with_every_fault_kind() {
    // R-50..R-56 + R-60: 500 seeds x 5 nodes, fault kinds and intensities drawn per seed (swarm);
    // no invariant violation and no liveness failure; every fault kind was exercised.
    let opts = SweepOptions {
        fault_ticks: CI_FAULT_TICKS,
        ..SweepOptions::default()
    };
    let started = std::time::Instant::now();
    let mut kinds = [0u32; 9];
    let names = [
        "partitions: true",
        "crashes: true",
        "unsynced_loss: true",
        "pauses: true",
        "clogs: true",
        "membership: true",
        "transfers: true",
        "snapshot_every_entries: Some",
        "small_batches: Some",
    ];
    let summary = sweep(0, 500, &opts, |report, _| {
        for (k, name) in names.iter().enumerate() {
            if report.swarm.contains(name) {
                kinds[k] += 1;
            }
        }
    });
    println!("{summary} ({:.1}s)", started.elapsed().as_secs_f64());
    for failure in &summary.failures {
        for line in failure.violation.iter().chain(&failure.liveness_failure) {
            println!("{line}");
        }
    }
    assert_eq!(summary.seeds, 500);
    assert_eq!(summary.violations, 0, "{summary}");
    assert_eq!(summary.liveness_failures, 0, "{summary}");
    for (k, name) in names.iter().enumerate() {
        assert!(
            kinds[k] > 50,
            "fault kind '{name}' ran in only {} seeds",
            kinds[k]
        );
    }
}

#[test]
fn r70_same_seed_gives_same_trace_hash() {
    // 20 seeds run twice give identical trace hashes; different seeds differ.
    let opts = SweepOptions {
        fault_ticks: 1_000,
        ..SweepOptions::default()
    };
    let mut hashes = Vec::new();
    for seed in 1000..1020 {
        let a = run_seed(seed, &opts);
        let b = run_seed(seed, &opts);
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "seed {seed} is not deterministic"
        );
        assert_eq!(a.steps, b.steps);
        hashes.push(a.trace_hash);
    }
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), 20, "different seeds gave the same trace");
}

/// Runs seeds from 0 until the first violation; returns how many seeds it took.
fn seeds_until_violation(bugs: TestBugs, checker: CheckerOptions, max_seeds: u64) -> Option<u64> {
    let opts = SweepOptions {
        fault_ticks: CI_FAULT_TICKS,
        bugs,
        checker,
        skip_liveness: true,
        ..SweepOptions::default()
    };
    (0..max_seeds)
        .find(|&seed| run_seed(seed, &opts).violation.is_some())
        .map(|s| s + 1)
}

const CORE_ONLY: CheckerOptions = CheckerOptions {
    persist_before_send: false,
    leader_commits_own_term_only: false,
};

#[test]
fn negative_control_commit_previous_term_is_caught() {
    // The Figure 8 bug (commit an old-term entry by counting) is reported within 50 seeds with
    // every check on, and within 200 seeds by I1-I7 alone.
    let bugs = TestBugs {
        commit_previous_term_by_count: true,
        ..TestBugs::default()
    };
    let all = seeds_until_violation(bugs, CheckerOptions::default(), 50);
    println!("commit-previous-term: caught after {all:?} seeds (all checks)");
    assert!(all.is_some(), "not caught within 50 seeds");
    // I1-I7 alone need the rarer Figure 8 schedule: about 2 seeds in 1000 of the swarm
    // (`distsync sim raft --seeds 1000 --bug commit-previous-term --core-checks-only`), and within
    // 100 seeds of R-17's schedule (next test).
}

#[test]
fn negative_control_double_vote_is_caught() {
    // Granting a second vote in a term is reported within 5 seeds (every check) and within
    // 50 seeds by I1 (two leaders in a term) alone.
    let bugs = TestBugs {
        grant_second_vote_in_term: true,
        ..TestBugs::default()
    };
    let all = seeds_until_violation(bugs, CheckerOptions::default(), 5);
    assert!(all.is_some(), "not caught within 5 seeds");
    let core = seeds_until_violation(bugs, CORE_ONLY, 50);
    println!("double-vote: caught after {all:?} seeds (all checks), {core:?} (I1-I7 only)");
    assert!(
        core.is_some(),
        "I1-I7 alone did not catch it within 50 seeds"
    );
}

#[test]
fn negative_control_skip_persist_vote_is_caught() {
    // Answering a vote before persisting it is reported within 2 seeds by the persist-before-send
    // check, and within 400 seeds by I1-I7 alone (a restarted voter votes twice in a term).
    let bugs = TestBugs {
        skip_persist_vote: true,
        ..TestBugs::default()
    };
    let all = seeds_until_violation(bugs, CheckerOptions::default(), 2);
    assert!(all.is_some(), "not caught within 2 seeds");
    let core = seeds_until_violation(bugs, CORE_ONLY, 400);
    println!("skip-persist-vote: caught after {all:?} seeds (all checks), {core:?} (I1-I7 only)");
    assert!(
        core.is_some(),
        "I1-I7 alone did not catch it within 400 seeds"
    );
}

/// R-17's schedule (submit, short or long pause, crash the leader, restart one when fewer than
/// 3 are up) with one entry per append, for `iterations`; returns whether a violation was found.
fn figure8_finds_violation(
    seed: u64,
    bugs: TestBugs,
    checker: CheckerOptions,
    iterations: u32,
) -> bool {
    use distsync_raft::NodeId;
    use distsync_sim::raft::{Cluster, ClusterOptions};
    use rand::Rng;
    let mut opts = ClusterOptions::new(5, seed);
    opts.raft.bugs = bugs;
    opts.raft.max_entries_per_message = 1;
    opts.checker = checker;
    opts.panic_on_violation = false;
    let mut c = Cluster::new(opts);
    c.net.set_default_faults(distsync_sim::net::LinkFaults {
        drop_probability: 0.2,
        duplicate_probability: 0.0,
        delay_min_us: 1_000,
        delay_max_us: 30_000,
        reorder_probability: 0.0,
        reorder_delay_max_us: 0,
    });
    let mut down: Vec<NodeId> = Vec::new();
    for _ in 0..iterations {
        let mut leader = None;
        for id in (1..=5).map(NodeId) {
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
            c.crash(leader, false);
            down.push(leader);
        }
        if down.len() > 2 {
            let k = c.rng().random_range(0..down.len());
            c.restart(down.swap_remove(k));
        }
        if c.failed() {
            println!("{}", c.violation().unwrap_or_default());
            return true;
        }
    }
    false
}

#[test]
fn negative_control_commit_previous_term_on_figure8_schedule() {
    // The Figure 8 bug under R-17's schedule (with drops, one entry per append): I1-I7 alone
    // report it within 100 seeds.
    let bugs = TestBugs {
        commit_previous_term_by_count: true,
        ..TestBugs::default()
    };
    let found = (0..100).find(|&seed| figure8_finds_violation(seed, bugs, CORE_ONLY, 1000));
    println!(
        "commit-previous-term on the Figure 8 schedule: caught at seed {found:?} (I1-I7 only)"
    );
    assert!(
        found.is_some(),
        "I1-I7 alone did not catch it within 100 seeds"
    );
    // Without the bug the same schedule is clean.
    assert!(!figure8_finds_violation(
        0,
        TestBugs::default(),
        CheckerOptions::default(),
        1000
    ));
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
#[ignore = "long soak or single-seed replay; run explicitly (see crate docs)"]
fn soak_from_env() {
    // The same sweep as `distsync sim raft`, driven by RAFT_SIM_SEED (replay one seed, with
    // RAFT_SIM_TRACE=1 to print events) or RAFT_SIM_SEEDS / RAFT_SIM_FIRST_SEED.
    let opts = SweepOptions {
        trace: std::env::var("RAFT_SIM_TRACE").is_ok(),
        ..SweepOptions::default()
    };
    if let Some(seed) = env_u64("RAFT_SIM_SEED") {
        let report = run_seed(seed, &opts);
        for line in report.violation.iter().chain(&report.liveness_failure) {
            println!("{line}");
        }
        println!(
            "seeds=1 steps={} trace_hash={:016x}",
            report.steps, report.trace_hash
        );
        assert!(report.violation.is_none() && report.liveness_failure.is_none());
        return;
    }
    let seeds = env_u64("RAFT_SIM_SEEDS").unwrap_or(500);
    let first = env_u64("RAFT_SIM_FIRST_SEED").unwrap_or(0);
    let started = std::time::Instant::now();
    let summary = sweep(first, seeds, &opts, |report, so_far| {
        for line in report.violation.iter().chain(&report.liveness_failure) {
            println!("{line}");
        }
        if so_far.seeds % 1000 == 0 {
            eprintln!(
                "progress: {so_far} ({:.0}s)",
                started.elapsed().as_secs_f64()
            );
        }
    });
    println!("{summary}");
    println!("wall time {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(
        summary.violations + summary.liveness_failures,
        0,
        "{summary}"
    );
}
