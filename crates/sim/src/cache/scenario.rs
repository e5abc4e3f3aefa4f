//! Randomized cache scenarios: a fault phase with seeded clients, then a liveness phase without
//! faults, then a flush of every node and the durability check.

use distsync_cache::{
    CacheConfig, EvictionPolicy, HashSeed, InjectedBugs, Key, NodeId, StoreLimits, Value,
    WritePolicy,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::world::{CacheWorld, ClientOpKind, TICK_US};
use crate::net::LinkFaults;
use crate::raft::derive_seed;

/// LIVENESS BOUND: once faults stop, every operation (and then every flush) completes within
/// this many ticks (500 ticks = 5 s, the C-07 bound).
pub const LIVENESS_BOUND_TICKS: u64 = 500;

/// Options of a sweep.
#[derive(Clone, Debug)]
pub struct CacheSweepOptions {
    /// Cache nodes (each also a home).
    pub nodes: u64,
    /// Ticks of the fault phase (clients issue operations only in this phase).
    pub fault_ticks: u64,
    /// Seeded clients, each with at most one operation outstanding.
    pub clients: usize,
    /// Distinct keys (few, so that transactions collide).
    pub keys: usize,
    /// Deliberate protocol bugs (negative controls).
    pub bugs: InjectedBugs,
    /// Print every event.
    pub trace: bool,
}

impl Default for CacheSweepOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            fault_ticks: 1_000,
            clients: 8,
            keys: 5,
            bugs: InjectedBugs::default(),
            trace: false,
        }
    }
}

/// The outcome of one seed.
#[derive(Clone, Debug, Default)]
pub struct CacheSeedReport {
    /// The seed.
    pub seed: u64,
    /// Steps taken.
    pub steps: u64,
    /// Operations completed.
    pub completed_ops: u64,
    /// The first invariant violation, with the replay command.
    pub violation: Option<String>,
    /// A liveness failure, with the replay command.
    pub liveness_failure: Option<String>,
    /// Hash of the event trace.
    pub trace_hash: u64,
    /// The fault mix and configuration drawn for this seed.
    pub swarm: String,
    /// Node crashes (each followed by a view change, most by a restart and another one).
    pub crashes: u64,
    /// Operations lost with a crashed node (their clients saw an error).
    pub errored_ops: u64,
    /// Completed writes forgiven by the write-back carve-out (acknowledged by a node that died
    /// before writing them back).
    pub forgiven_writes: u64,
    /// Longest time, in ticks, from issuing a view to every live node having adopted it and every
    /// home having rebuilt its entries (the lines of a crashed node reclaimed).
    pub recovery_ticks_max: u64,
}

/// The verdict on a sweep of seeds.
pub type CacheSweepSummary = crate::sweep::SweepSummary<CacheSeedReport>;

/// Fault mix and configuration of one seed (swarm testing).
#[derive(Clone, Debug)]
struct Swarm {
    link: LinkFaults,
    partitions: bool,
    write_policy: WritePolicy,
    eviction_policy: EvictionPolicy,
    capacity_entries: usize,
    op_every_ticks: u64,
    /// Nodes crash (and restart as fresh members).
    crashes: bool,
    /// A view reaches each node after its own delay of up to this many ticks.
    view_delay_ticks_max: u64,
}

impl Swarm {
    fn draw(rng: &mut ChaCha8Rng) -> Swarm {
        let delay_max_ticks = rng.random_range(1..=5);
        let link = LinkFaults {
            drop_probability: if rng.random_bool(0.3) {
                0.0
            } else {
                rng.random_range(0.0..0.4)
            },
            duplicate_probability: if rng.random_bool(0.5) {
                0.0
            } else {
                rng.random_range(0.0..0.1)
            },
            delay_min_us: TICK_US / 2,
            delay_max_us: delay_max_ticks * TICK_US,
            reorder_probability: if rng.random_bool(0.5) {
                0.0
            } else {
                rng.random_range(0.0..0.3)
            },
            reorder_delay_max_us: rng.random_range(1..=10) * TICK_US,
        };
        Swarm {
            link,
            partitions: rng.random_bool(0.5),
            write_policy: if rng.random_bool(0.5) {
                WritePolicy::WriteBack
            } else {
                WritePolicy::WriteThrough
            },
            eviction_policy: if rng.random_bool(0.5) {
                EvictionPolicy::Lru
            } else {
                EvictionPolicy::Lfu
            },
            capacity_entries: [1, 2, 3, 8][rng.random_range(0..4)],
            op_every_ticks: rng.random_range(1..=6),
            crashes: rng.random_bool(0.6),
            view_delay_ticks_max: rng.random_range(0..=40),
        }
    }
}

/// The configuration every simulated node runs with.
fn config(swarm: &Swarm, bugs: InjectedBugs) -> CacheConfig {
    CacheConfig {
        eviction_policy: swarm.eviction_policy,
        store_limits: StoreLimits::entries(swarm.capacity_entries),
        store_hash_seed: HashSeed(0),
        write_policy: swarm.write_policy,
        value_bytes_max: 64,
        pending_transactions_max: 16,
        queued_operations_per_key_max: 16,
        pending_requests_per_key_max: 16,
        fetch_answers_max: 64,
        retry_interval_ticks: 8,
        lease_ticks: 60,
        lease_revoke_margin_ticks: 10,
        heartbeat_interval_ticks: 10,
        injected_bugs: bugs,
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, opts: &CacheSweepOptions) -> CacheSeedReport {
    let outcome = std::panic::catch_unwind(|| run_seed_inner(seed, opts));
    outcome.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        CacheSeedReport {
            seed,
            violation: Some(format!(
                "asserted invariant failed: {why}\n  {}",
                replay(seed, opts)
            )),
            ..CacheSeedReport::default()
        }
    })
}

fn replay(seed: u64, opts: &CacheSweepOptions) -> String {
    format!(
        "seed {seed}; replay with: distsync sim cache --seed {seed} --nodes {} --trace",
        opts.nodes
    )
}

fn run_seed_inner(seed: u64, opts: &CacheSweepOptions) -> CacheSeedReport {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, 23));
    let swarm = Swarm::draw(&mut rng);
    let swarm_text = format!("{swarm:?}");
    let mut world = CacheWorld::new(opts.nodes, &config(&swarm, opts.bugs), seed, opts.trace);
    if opts.trace {
        crate::print_line(format_args!("seed {seed} swarm {swarm_text}"));
    }
    world.net.set_default_faults(swarm.link);
    let hosts = world.host_ids();
    // A majority stays up, so crashes never take every copy of the cluster at once.
    let live_min = opts.nodes / 2 + 1;
    let mut restarts: Vec<(u64, NodeId)> = Vec::new();
    let keys: Vec<Key> = (0..opts.keys).map(|k| Key::from(format!("k{k}"))).collect();
    let mut heal_at: Option<u64> = None;
    let mut writes = 0u64;

    for _ in 0..opts.fault_ticks {
        world.run_tick();
        if world.violation.is_some() {
            break;
        }
        let now = world.now_tick();
        if heal_at.is_some_and(|at| now >= at) {
            world.net.heal();
            heal_at = None;
        }
        if swarm.partitions && heal_at.is_none() && rng.random_range(0..100) == 0 {
            let victim = hosts[rng.random_range(0..hosts.len())];
            world.net.isolate(victim, &hosts);
            heal_at = Some(now + rng.random_range(20..150));
        }
        if swarm.crashes {
            let live: Vec<NodeId> = world.hosts.keys().copied().collect();
            if live.len() as u64 > live_min && rng.random_range(0..150) == 0 {
                let victim = live[rng.random_range(0..live.len())];
                world.crash(victim, swarm.view_delay_ticks_max);
                restarts.push((now + rng.random_range(50..250), victim));
            }
            let due: Vec<NodeId> = restarts
                .iter()
                .filter(|(at, _)| *at <= now)
                .map(|(_, node)| *node)
                .collect();
            restarts.retain(|(at, _)| *at > now);
            for node in due {
                world.restart(node, swarm.view_delay_ticks_max);
            }
            if world.violation.is_some() {
                break;
            }
        }
        let serving: Vec<NodeId> = hosts
            .iter()
            .map(|id| NodeId(*id))
            .filter(|id| world.serving(*id))
            .collect();
        for client in 0..opts.clients {
            if world.client_busy(client) || rng.random_range(0..swarm.op_every_ticks) != 0 {
                continue;
            }
            let node = serving[rng.random_range(0..serving.len())];
            let key = keys[rng.random_range(0..keys.len())].clone();
            let kind = match rng.random_range(0..100) {
                0..45 => ClientOpKind::Read,
                45..80 => {
                    writes += 1;
                    ClientOpKind::Write(Some(Value::from(format!("c{client}-w{writes}"))))
                }
                80..85 => ClientOpKind::Write(None),
                _ => ClientOpKind::Evict,
            };
            world.submit(client, node, key, kind);
        }
    }

    // Liveness phase: faults stop and the views settle (the failure detector has converged);
    // every outstanding operation must complete in time.
    world.settle_views();
    world.net.heal();
    world.net.set_default_faults(LinkFaults {
        drop_probability: 0.0,
        duplicate_probability: 0.0,
        reorder_probability: 0.0,
        ..swarm.link
    });
    let mut liveness_failure = None;
    if world.violation.is_none() {
        let deadline = world.now_tick() + LIVENESS_BOUND_TICKS;
        while world.outstanding() > 0 && world.now_tick() < deadline && world.violation.is_none() {
            world.run_tick();
        }
        if world.outstanding() > 0 {
            liveness_failure = Some(format!(
                "liveness failure: {} operations still pending {LIVENESS_BOUND_TICKS} ticks after \
                 faults stopped and the view settled; oldest: {}\n  {}",
                world.outstanding(),
                world.oldest_outstanding().unwrap_or_default(),
                replay(seed, opts)
            ));
        }
    }
    // Shutdown: every node flushes; then the backing store must hold every last write.
    if world.violation.is_none() && liveness_failure.is_none() {
        let live: Vec<u64> = world.host_ids();
        for (client, host) in live.iter().enumerate() {
            world.submit(
                opts.clients + client,
                NodeId(*host),
                Key::new(),
                ClientOpKind::Flush,
            );
        }
        let deadline = world.now_tick() + LIVENESS_BOUND_TICKS;
        while world.outstanding() > 0 && world.now_tick() < deadline && world.violation.is_none() {
            world.run_tick();
        }
        if world.outstanding() > 0 {
            liveness_failure = Some(format!(
                "liveness failure: flush not finished within {LIVENESS_BOUND_TICKS} ticks; \
                 oldest: {}\n  {}",
                world.oldest_outstanding().unwrap_or_default(),
                replay(seed, opts)
            ));
        } else {
            world.check_backing();
        }
    }
    CacheSeedReport {
        seed,
        steps: world.steps,
        completed_ops: world.completed_ops,
        violation: world
            .violation
            .clone()
            .map(|why| format!("violation {why}\n  {}", replay(seed, opts))),
        liveness_failure,
        trace_hash: world.trace_hash(),
        swarm: swarm_text,
        crashes: world.crashes,
        errored_ops: world.errored_ops,
        forgiven_writes: world.forgiven_writes(),
        recovery_ticks_max: world.recovery_ticks_max,
    }
}

/// Runs seeds `first_seed..first_seed + seeds`, calling `progress` after each.
pub fn sweep(
    first_seed: u64,
    seeds: u64,
    opts: &CacheSweepOptions,
    mut progress: impl FnMut(&CacheSeedReport, &CacheSweepSummary),
) -> CacheSweepSummary {
    let mut summary = CacheSweepSummary::default();
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
