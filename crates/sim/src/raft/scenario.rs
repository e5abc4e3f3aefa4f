//! Randomized swarm scenarios (R-50..R-56): per seed, the fault probabilities are themselves drawn
//! at random, a fault phase runs with invariant checks after every step, then the liveness phase
//! heals everything and demands a leader and a commit within stated bounds.

use super::cluster::{Cluster, ClusterOptions};
use super::{
    COMMIT_BOUND_TICKS, CheckerOptions, ELECTION_TIMEOUT_MAX_TICKS, LEADER_BOUND_TICKS, TICK_US,
    derive_seed,
};
use crate::net::LinkFaults;
use distsync_raft::{LogIndex, Membership, MembershipChange, NodeId, Role, TestBugs};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a sweep runs.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Bootstrap voters per seed.
    pub nodes: u64,
    /// Length of the fault phase in ticks (10 ms each).
    pub fault_ticks: u64,
    /// Deliberate protocol bugs (negative controls).
    pub bugs: TestBugs,
    /// Optional checks.
    pub checker: CheckerOptions,
    /// Print every event.
    pub trace: bool,
    /// Skip the liveness phase (negative controls only need the safety verdict).
    pub skip_liveness: bool,
    /// Let a crash keep any prefix of a `Ready`'s writes (see `ClusterOptions`).
    pub torn_ready_writes: bool,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            nodes: 5,
            fault_ticks: 6_000,
            bugs: TestBugs::default(),
            checker: CheckerOptions::default(),
            trace: false,
            skip_liveness: false,
            torn_ready_writes: false,
        }
    }
}

/// The verdict on one seed.
#[derive(Clone, Debug)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Steps taken.
    pub steps: u64,
    /// The first invariant violation, with replay command.
    pub violation: Option<String>,
    /// A liveness failure, with replay command.
    pub liveness_failure: Option<String>,
    /// Hash of the event trace.
    pub trace_hash: u64,
    /// Entries committed.
    pub committed: usize,
    /// The swarm parameters drawn for this seed.
    pub swarm: String,
}

/// The verdict on a sweep of seeds.
pub type SweepSummary = crate::sweep::SweepSummary<SeedReport>;

/// Fault mix of one seed ("swarm testing": each seed enables a random subset of fault kinds with
/// random intensities, which finds more bugs than one fixed mix).
#[derive(Clone, Debug)]
struct Swarm {
    link: LinkFaults,
    nemesis_every_ticks: u64,
    propose_every_ticks: u64,
    partitions: bool,
    crashes: bool,
    unsynced_loss: bool,
    pauses: bool,
    clogs: bool,
    membership: bool,
    transfers: bool,
    snapshot_every_entries: Option<u64>,
    tick_rate_skew: f64,
    /// BUGGIFY-style: split batches and a small in-flight window, so that entries of one
    /// append travel in separate messages (and can be lost separately).
    small_batches: Option<(usize, usize)>,
}

impl Swarm {
    fn draw(rng: &mut ChaCha8Rng) -> Swarm {
        let mut on = |p: f64| rng.random_bool(p);
        let (
            partitions,
            crashes,
            unsynced_loss,
            pauses,
            clogs,
            membership,
            transfers,
            snapshots,
            skew,
        ) = (
            on(0.7),
            on(0.6),
            on(0.5),
            on(0.4),
            on(0.3),
            on(0.4),
            on(0.3),
            on(0.6),
            on(0.5),
        );
        let delay_min_us = rng.random_range(100..2_000);
        let jitter_max_us = if rng.random_bool(0.3) {
            200_000
        } else {
            20_000
        };
        let link = LinkFaults {
            drop_probability: if rng.random_bool(0.4) {
                0.0
            } else {
                rng.random_range(0.0..0.3)
            },
            duplicate_probability: if rng.random_bool(0.5) {
                0.0
            } else {
                rng.random_range(0.0..0.1)
            },
            delay_min_us,
            delay_max_us: delay_min_us + rng.random_range(0..jitter_max_us),
            reorder_probability: if rng.random_bool(0.5) {
                0.0
            } else {
                rng.random_range(0.0..0.3)
            },
            reorder_delay_max_us: rng.random_range(1_000..200_000),
        };
        Swarm {
            link,
            nemesis_every_ticks: rng.random_range(20..300),
            propose_every_ticks: rng.random_range(2..20),
            partitions,
            crashes,
            unsynced_loss,
            pauses,
            clogs,
            membership,
            transfers,
            snapshot_every_entries: snapshots.then(|| rng.random_range(5..100)),
            tick_rate_skew: if skew {
                rng.random_range(0.0..0.3)
            } else {
                0.0
            },
            small_batches: rng
                .random_bool(0.4)
                .then(|| (rng.random_range(1..4), rng.random_range(1..4))),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Pending {
    Restart(NodeId),
    Resume(NodeId),
    Unclog(NodeId),
    Heal,
}

/// Runs one seed: fault phase, then (unless skipped) the liveness phase.
pub fn run_seed(seed: u64, opts: &SweepOptions) -> SeedReport {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, 3));
    let swarm = Swarm::draw(&mut rng);
    let mut cluster_opts = ClusterOptions::new(opts.nodes, seed);
    cluster_opts.raft.bugs = opts.bugs;
    if let Some((entries, inflight)) = swarm.small_batches {
        cluster_opts.raft.max_entries_per_message = entries;
        cluster_opts.raft.max_inflight_messages = inflight;
    }
    cluster_opts.snapshot_every_entries = swarm.snapshot_every_entries;
    cluster_opts.trace = opts.trace;
    cluster_opts.checker = opts.checker;
    cluster_opts.panic_on_violation = false;
    cluster_opts.tick_rate_skew = swarm.tick_rate_skew;
    cluster_opts.torn_ready_writes = opts.torn_ready_writes;
    let mut c = Cluster::new(cluster_opts);
    c.net.set_default_faults(swarm.link);
    let swarm_text = format!("{swarm:?}");
    c.note(&format!("swarm {swarm_text}"));

    let mut pending: Vec<(u64, Pending)> = Vec::new();
    let spare = NodeId(opts.nodes + 1);
    for tick in 0..opts.fault_ticks {
        if c.failed() {
            break;
        }
        c.run_ticks(1);
        let due: Vec<Pending> = pending
            .iter()
            .filter(|(at, _)| *at <= tick)
            .map(|(_, p)| *p)
            .collect();
        pending.retain(|(at, _)| *at > tick);
        for p in due {
            match p {
                Pending::Restart(id) => c.restart(id),
                Pending::Resume(id) => c.resume(id),
                Pending::Unclog(id) => {
                    for other in c.hosts() {
                        c.net.unclog_link(c.now_us(), id.0, other);
                        c.net.unclog_link(c.now_us(), other, id.0);
                    }
                }
                Pending::Heal => {
                    c.net.heal();
                    c.note("heal cuts");
                }
            }
        }
        if rng.random_range(0..swarm.propose_every_ticks) == 0
            && let Some(leader) = c.leader()
        {
            let _ = c.propose(leader);
        }
        if rng.random_range(0..swarm.nemesis_every_ticks) == 0 {
            nemesis(&mut c, &mut rng, &swarm, tick, &mut pending, spare);
        }
    }

    let mut liveness_failure = None;
    if !c.failed()
        && !opts.skip_liveness
        && let Err(why) = liveness(&mut c)
    {
        liveness_failure = Some(format!(
            "liveness failure at t={}ms: {why}\n  seed {seed}; replay with: distsync sim raft --seed {seed} --nodes {} --trace",
            c.now_us() / 1000,
            opts.nodes
        ));
    }
    SeedReport {
        seed,
        steps: c.steps(),
        violation: c.violation().map(str::to_string),
        liveness_failure,
        trace_hash: c.trace_hash(),
        committed: c.committed_values().len(),
        swarm: swarm_text,
    }
}

fn nemesis(
    c: &mut Cluster,
    rng: &mut ChaCha8Rng,
    swarm: &Swarm,
    tick: u64,
    pending: &mut Vec<(u64, Pending)>,
    spare: NodeId,
) {
    let mut kinds = Vec::new();
    for (on, kind) in [
        (swarm.partitions, 0),
        (swarm.crashes, 1),
        (swarm.pauses, 2),
        (swarm.clogs, 3),
        (swarm.membership, 4),
        (swarm.transfers, 5),
    ] {
        if on {
            kinds.push(kind);
        }
    }
    let Some(&kind) = kinds.choose(rng) else {
        return;
    };
    let ids = c.ids();
    let up = c.up_ids();
    match kind {
        0 => {
            c.net.heal();
            let hosts = c.hosts();
            let n = ids.len();
            let mut shuffled = ids.clone();
            for i in (1..n).rev() {
                shuffled.swap(i, rng.random_range(0..=i));
            }
            match rng.random_range(0..6) {
                0 => {
                    let split = rng.random_range(1..n);
                    let groups = vec![shuffled[..split].to_vec(), shuffled[split..].to_vec()];
                    c.partition(&groups);
                }
                1 => {
                    if let Some(leader) = c.leader() {
                        c.isolate(leader);
                    }
                }
                2 => {
                    // Majorities ring: node i talks only to its ring neighbours within n/4.
                    let reach = (n / 4).max(1);
                    for (i, a) in shuffled.iter().enumerate() {
                        for (j, b) in shuffled.iter().enumerate() {
                            let d = i.abs_diff(j).min(n - i.abs_diff(j));
                            if d > reach {
                                c.net.cut_one_way(a.0, b.0);
                            }
                        }
                    }
                    c.note(&format!("majorities ring {shuffled:?}"));
                }
                3 => {
                    let mid = n / 2;
                    let bridge = shuffled[mid];
                    let left: Vec<u64> = shuffled[..=mid].iter().map(|id| id.0).collect();
                    let right: Vec<u64> = shuffled[mid..].iter().map(|id| id.0).collect();
                    c.net.partition_bridge(&left, &right, bridge.0);
                    c.note(&format!("bridge {left:?} | {right:?} via {bridge}"));
                }
                4 => {
                    for _ in 0..rng.random_range(1..=n) {
                        let a = *ids.choose(rng).expect("cluster has nodes");
                        let b = *ids.choose(rng).expect("cluster has nodes");
                        c.net.cut_one_way(a.0, b.0);
                        c.note(&format!("cut one way {a} -> {b}"));
                    }
                }
                _ => {
                    let victim = *ids.choose(rng).expect("cluster has nodes");
                    c.net.isolate(victim.0, &hosts);
                    c.note(&format!("isolate {victim}"));
                }
            }
            pending.push((tick + rng.random_range(20..400), Pending::Heal));
        }
        1 => {
            let down = ids.len() - up.len();
            if down < ids.len().div_ceil(2) {
                // Half the time the leader (Figure 8 schedules: leaders die with entries half
                // replicated), else anyone.
                let leader = c.leader().filter(|_| rng.random_bool(0.5));
                if let Some(victim) = leader.or_else(|| up.choose(rng).copied()) {
                    if swarm.unsynced_loss && rng.random_bool(0.3) {
                        c.crash_during_next_ready(victim);
                        c.note(&format!("arm crash of {victim} during its next ready"));
                    } else {
                        c.crash(victim, swarm.unsynced_loss && rng.random_bool(0.3));
                    }
                    pending.push((tick + rng.random_range(0..500), Pending::Restart(victim)));
                }
            }
        }
        2 => {
            if let Some(&victim) = up.choose(rng)
                && !c.node(victim).is_paused()
            {
                c.pause(victim);
                let ticks = rng
                    .random_range(ELECTION_TIMEOUT_MAX_TICKS / 2..=3 * ELECTION_TIMEOUT_MAX_TICKS);
                pending.push((tick + ticks, Pending::Resume(victim)));
            }
        }
        3 => {
            // Swizzle-clog: clog one node's links in both directions, unclog later.
            let victim = *ids.choose(rng).expect("cluster has nodes");
            for other in c.hosts() {
                c.net.clog_link(victim.0, other);
                c.net.clog_link(other, victim.0);
            }
            c.note(&format!("clog {victim}"));
            pending.push((tick + rng.random_range(20..300), Pending::Unclog(victim)));
        }
        4 => membership_change(c, rng, spare),
        _ => {
            if let Some(leader) = c.leader() {
                let voters: Vec<NodeId> = c
                    .status(leader)
                    .map(|s| s.membership.voters.iter().copied().collect())
                    .unwrap_or_default();
                if let Some(&to) = voters.choose(rng) {
                    let _ = c.transfer_leadership(leader, to);
                }
            }
        }
    }
}

fn membership_change(c: &mut Cluster, rng: &mut ChaCha8Rng, spare: NodeId) {
    let Some(leader) = c.leader() else {
        return;
    };
    let Some(status) = c.status(leader) else {
        return;
    };
    let m = status.membership;
    let known = c.ids();
    let outsiders: Vec<NodeId> = known
        .iter()
        .copied()
        .filter(|id| !m.contains(*id))
        .collect();
    let learners: Vec<NodeId> = m.learners.iter().copied().collect();
    let voters: Vec<NodeId> = m.voters.iter().copied().collect();
    let change = if let Some(&id) = learners.choose(rng) {
        MembershipChange::AddVoter(id)
    } else if !known.contains(&spare) && rng.random_bool(0.3) {
        c.add_node(spare, Membership::default());
        MembershipChange::AddLearner(spare)
    } else if let Some(&id) = outsiders.choose(rng) {
        MembershipChange::AddLearner(id)
    } else if voters.len() > 3 {
        MembershipChange::Remove(*voters.choose(rng).expect("more than 3 voters"))
    } else {
        return;
    };
    let _ = c.propose_membership(leader, change);
}

/// heal everything, restart everyone, then a leader within [`LEADER_BOUND_TICKS`] and a new
/// command applied on every member that is up within [`COMMIT_BOUND_TICKS`].
fn liveness(c: &mut Cluster) -> Result<(), String> {
    c.heal();
    c.resume_all();
    for id in c.ids() {
        c.restart(id);
    }
    c.note("liveness phase: all faults healed");
    if c.failed() {
        return Ok(());
    }
    let start = c.now_us();
    if !c.run_until_cond(LEADER_BOUND_TICKS, |c| c.leader().is_some()) {
        return Err(format!(
            "no leader within {LEADER_BOUND_TICKS} ticks after healing"
        ));
    }
    if c.failed() {
        return Ok(());
    }
    let deadline = start + (LEADER_BOUND_TICKS + COMMIT_BOUND_TICKS) * TICK_US;
    let mut current: Option<(u64, LogIndex, u64)> = None;
    while c.now_us() < deadline && !c.failed() {
        let Some(leader) = c.leader() else {
            c.run_ticks(1);
            continue;
        };
        let retry = match current {
            None => true,
            Some((value, index, since)) => match c.committed_value(index) {
                Some(v) if v != Some(value) => true,
                Some(_) => {
                    let members: Membership =
                        c.status(leader).map(|s| s.membership).unwrap_or_default();
                    let all = members
                        .members()
                        .filter(|id| c.status(*id).is_some())
                        .all(|id| c.node(id).state.applied >= index);
                    if all {
                        return Ok(());
                    }
                    false
                }
                None => c.now_us() > since + 100 * TICK_US,
            },
        };
        if retry {
            let (value, result) = c.propose(leader);
            if let Ok(p) = result {
                current = Some((value, p.index, c.now_us()));
            }
        }
        c.run_ticks(1);
    }
    if c.failed() {
        return Ok(());
    }
    let leader = c.leader();
    let detail: Vec<String> = c
        .ids()
        .into_iter()
        .filter_map(|id| c.status(id))
        .map(|s| {
            format!(
                "{}:{:?} t{} commit {} applied {} last {} voters {:?}",
                s.id, s.role, s.term, s.commit, s.applied, s.last_index, s.membership.voters
            )
        })
        .collect();
    let _ = Role::Leader;
    Err(format!(
        "no command applied on every member within {COMMIT_BOUND_TICKS} ticks of a leader \
         (leader {leader:?}; {})",
        detail.join("; ")
    ))
}

/// Runs `seeds` seeds from `first_seed`, calling `progress` after each.
pub fn sweep(
    first_seed: u64,
    seeds: u64,
    opts: &SweepOptions,
    mut progress: impl FnMut(&SeedReport, &SweepSummary),
) -> SweepSummary {
    let mut summary = SweepSummary::default();
    for seed in first_seed..first_seed + seeds {
        let report = run_seed(seed, opts);
        summary.seeds += 1;
        summary.steps += report.steps;
        let failed = report.violation.is_some() || report.liveness_failure.is_some();
        if report.violation.is_some() {
            summary.violations += 1;
        }
        if report.liveness_failure.is_some() {
            summary.liveness_failures += 1;
        }
        progress(&report, &summary);
        if failed && summary.failures.len() < 10 {
            summary.failures.push(report);
        }
    }
    summary
}
