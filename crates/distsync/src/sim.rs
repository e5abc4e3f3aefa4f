//! `distsync sim …`: deterministic simulation sweeps.

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use distsync_raft::TestBugs;
use distsync_sim::raft::{CheckerOptions, SweepOptions, run_seed, sweep};
use std::time::Instant;

/// A line of output; `distsync_sim::print_line` tolerates a reader that left (`| head`).
macro_rules! say {
    ($($arg:tt)*) => {
        distsync_sim::print_line(format_args!($($arg)*))
    };
}

/// Arguments of `distsync sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(subcommand)]
    pub target: SimTarget,
}

/// Which protocol to simulate.
#[derive(Debug, Subcommand)]
pub enum SimTarget {
    /// The Raft core: randomized fault scenarios, invariants I1–I7 after every step, liveness.
    Raft(RaftSimArgs),
    /// The MESI cache protocol: random reads/writes/evictions over a faulty network, SWMR and
    /// data-value checked after every step, liveness after faults stop, durability after flush.
    Cache(CacheSimArgs),
}

/// Arguments of `distsync sim raft`.
#[derive(Debug, Args)]
pub struct RaftSimArgs {
    /// Replay this one seed (with `--trace`, print its events).
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    pub seed: Option<u64>,
    /// Number of seeds in the sweep.
    #[arg(long, default_value_t = 500)]
    pub seeds: u64,
    /// First seed of the sweep.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Bootstrap voters per seed.
    #[arg(long, default_value_t = 5)]
    pub nodes: u64,
    /// Length of each seed's fault phase in ticks of 10 ms (the liveness phase follows).
    #[arg(long, default_value_t = 6_000)]
    pub fault_ticks: u64,
    /// Print every event of the run (use with `--seed`).
    #[arg(long)]
    pub trace: bool,
    /// Let a crash keep any prefix of one Ready's writes (entries without the hard state), not
    /// only all or none.
    #[arg(long)]
    pub torn_ready_writes: bool,
    /// Run only the invariants I1–I7 (drop the stricter persist-before-send and §5.4.2 commit-rule
    /// checks), to measure how fast I1–I7 alone catch a negative control.
    #[arg(long)]
    pub core_checks_only: bool,
    /// Switch on a deliberate protocol bug (negative control); the sweep should then fail.
    #[arg(long, value_enum)]
    pub bug: Option<Bug>,
}

/// Deliberate bugs for negative controls.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Bug {
    /// Commit an entry of an earlier term by counting replicas (Figure 8).
    CommitPreviousTerm,
    /// Grant two votes in one term.
    DoubleVote,
    /// Answer a vote request without persisting the vote.
    SkipPersistVote,
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.target {
        SimTarget::Raft(args) => run_raft(args),
        SimTarget::Cache(args) => run_cache(args),
    }
}

fn run_raft(args: RaftSimArgs) -> anyhow::Result<()> {
    let mut bugs = TestBugs::default();
    match args.bug {
        Some(Bug::CommitPreviousTerm) => bugs.commit_previous_term_by_count = true,
        Some(Bug::DoubleVote) => bugs.grant_second_vote_in_term = true,
        Some(Bug::SkipPersistVote) => bugs.skip_persist_vote = true,
        None => {}
    }
    let opts = SweepOptions {
        nodes: args.nodes,
        fault_ticks: args.fault_ticks,
        bugs,
        trace: args.trace,
        torn_ready_writes: args.torn_ready_writes,
        checker: if args.core_checks_only {
            CheckerOptions {
                persist_before_send: false,
                leader_commits_own_term_only: false,
            }
        } else {
            CheckerOptions::default()
        },
        ..SweepOptions::default()
    };
    if let Some(seed) = args.seed {
        let report = run_seed(seed, &opts);
        say!("swarm: {}", report.swarm);
        for failure in report.violation.iter().chain(&report.liveness_failure) {
            say!("{failure}");
        }
        let summary = format!(
            "seeds=1 steps={} violations={} liveness_failures={} trace_hash={:016x}",
            report.steps,
            u8::from(report.violation.is_some()),
            u8::from(report.liveness_failure.is_some()),
            report.trace_hash
        );
        say!("{summary}");
        if report.violation.is_some() || report.liveness_failure.is_some() {
            bail!("seed {seed} failed");
        }
        return Ok(());
    }
    let started = Instant::now();
    let every = (args.seeds / 10).max(1);
    let summary = sweep(args.first_seed, args.seeds, &opts, |report, so_far| {
        for failure in report.violation.iter().chain(&report.liveness_failure) {
            eprintln!("{failure}");
        }
        if so_far.seeds % every == 0 {
            eprintln!(
                "progress: {so_far} ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
        }
    });
    say!("{summary}");
    if summary.violations > 0 || summary.liveness_failures > 0 {
        let seeds: Vec<u64> = summary.failures.iter().map(|r| r.seed).collect();
        bail!("simulation found failures (first failing seeds: {seeds:?})");
    }
    Ok(())
}

/// Arguments of `distsync sim cache`.
#[derive(Debug, Args)]
pub struct CacheSimArgs {
    /// Replay this one seed (with `--trace`, print its events).
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    pub seed: Option<u64>,
    /// Number of seeds in the sweep.
    #[arg(long, default_value_t = 200)]
    pub seeds: u64,
    /// First seed of the sweep.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Cache nodes per seed (each is also the home of its share of the keys).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Length of each seed's fault phase in ticks of 10 ms (the liveness phase follows).
    #[arg(long, default_value_t = 1_000)]
    pub fault_ticks: u64,
    /// Print every event of the run (use with `--seed`).
    #[arg(long)]
    pub trace: bool,
    /// Run only the invariants I1–I7 (drop the stricter persist-before-send and §5.4.2 commit-rule
    /// checks), to measure how fast I1–I7 alone catch a negative control.
    #[arg(long)]
    pub core_checks_only: bool,
    /// Switch on a deliberate protocol bug (negative control); the sweep should then fail.
    #[arg(long, value_enum)]
    pub bug: Option<CacheBug>,
}

/// Deliberate cache-protocol bugs for negative controls.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CacheBug {
    /// The home grants M before every InvalidateAck arrived.
    GrantBeforeInvalidateAcks,
    /// A node drops an evicted Modified line without writing it back.
    SkipWriteBackOnEviction,
    /// A node serves hits after its coherence lease ran out.
    ServeWithoutLease,
    /// A node keeps its Shared copies across a lease lapse (the home may have revoked them).
    KeepSharedAfterLeaseLapse,
    /// After a node crash or join, the new home ignores what the survivors hold and rebuilds
    /// every entry as uncached (reading the backing store).
    RebuildWithoutHoldings,
}

fn run_cache(args: CacheSimArgs) -> anyhow::Result<()> {
    use distsync_sim::cache;
    let mut bugs = cache::InjectedBugs::default();
    match args.bug {
        Some(CacheBug::GrantBeforeInvalidateAcks) => bugs.grant_before_invalidate_acks = true,
        Some(CacheBug::SkipWriteBackOnEviction) => bugs.skip_write_back_on_eviction = true,
        Some(CacheBug::ServeWithoutLease) => bugs.serve_without_lease = true,
        Some(CacheBug::KeepSharedAfterLeaseLapse) => bugs.keep_shared_after_lease_lapse = true,
        Some(CacheBug::RebuildWithoutHoldings) => bugs.rebuild_without_holdings = true,
        None => {}
    }
    let opts = cache::CacheSweepOptions {
        nodes: args.nodes,
        fault_ticks: args.fault_ticks,
        bugs,
        trace: args.trace,
        ..cache::CacheSweepOptions::default()
    };
    if let Some(seed) = args.seed {
        let report = cache::run_seed(seed, &opts);
        say!("swarm: {}", report.swarm);
        for failure in report.violation.iter().chain(&report.liveness_failure) {
            say!("{failure}");
        }
        say!(
            "seeds=1 steps={} violations={} liveness_failures={} trace_hash={:016x}",
            report.steps,
            u8::from(report.violation.is_some()),
            u8::from(report.liveness_failure.is_some()),
            report.trace_hash
        );
        if report.violation.is_some() || report.liveness_failure.is_some() {
            bail!("seed {seed} failed");
        }
        return Ok(());
    }
    let started = Instant::now();
    let every = (args.seeds / 10).max(1);
    let summary = cache::sweep(args.first_seed, args.seeds, &opts, |report, so_far| {
        for failure in report.violation.iter().chain(&report.liveness_failure) {
            eprintln!("{failure}");
        }
        if so_far.seeds % every == 0 {
            eprintln!(
                "progress: {so_far} ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
        }
    });
    say!("{summary}");
    if summary.violations > 0 || summary.liveness_failures > 0 {
        let seeds: Vec<u64> = summary.failures.iter().map(|r| r.seed).collect();
        bail!("simulation found failures (first failing seeds: {seeds:?})");
    }
    Ok(())
}
