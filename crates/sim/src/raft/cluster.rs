//! The simulated cluster: Raft nodes played by a shell that follows the `Ready` order exactly,
//! over a [`SimNetwork`] and a [`SimDisk`] per node, with invariant checks after every step.
//!
//! One step is one input to one node (a tick, a delivered message, a proposal, a restart) plus
//! every `Ready` that input produced: persist, fsync, send, apply, advance, compact.

use super::checker::{Checker, CheckerOptions, LeaderLog, Violation, entry_term};
use super::disk::SimDisk;
use super::state_machine::{KvStateMachine, encode_command};
use super::{ELECTION_TIMEOUT_TICKS, HEARTBEAT_INTERVAL_TICKS, TICK_US, derive_seed};
use crate::net::{LinkFaults, SendOutcome, SimMessage, SimNetwork};
use bytes::Bytes;
use distsync_raft::{
    EntryPayload, LogIndex, Membership, MembershipChange, Message, MessageBody, NodeId, Proposal,
    ProposeError, RaftConfig, RaftNode, Role, Status, Term, TransferError,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

impl SimMessage for Message {
    fn size_bytes(&self) -> usize {
        32 + match &self.body {
            MessageBody::AppendEntries { entries, .. } => {
                entries.iter().map(distsync_raft::Entry::size_bytes).sum()
            }
            MessageBody::InstallSnapshot { snapshot } => 32 + snapshot.data.len(),
            _ => 0,
        }
    }

    fn kind(&self) -> &'static str {
        self.body.kind_name()
    }
}

/// How a cluster is built.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Root seed: every component's seed is derived from it.
    pub seed: u64,
    /// Bootstrap voters, ids `1..=nodes`.
    pub nodes: u64,
    /// Raft settings; `id` is overwritten per node.
    pub raft: RaftConfig,
    /// Take an application snapshot and compact every this many applied entries.
    pub snapshot_every_entries: Option<u64>,
    /// Print every event as it happens.
    pub trace: bool,
    /// Optional checks.
    pub checker: CheckerOptions,
    /// Panic (with the replay command) on the first violation; sweeps turn this off.
    pub panic_on_violation: bool,
    /// Per-node tick periods are drawn from `TICK_US * [1 - skew, 1 + skew]`.
    pub tick_rate_skew: f64,
    /// A crash mid-`Ready` may keep any prefix of its writes (entries without the hard state),
    /// not only all or none. Off by default: see sim-findings (restore rejects such a disk).
    pub torn_ready_writes: bool,
}

impl ClusterOptions {
    /// `nodes` voters with default Raft settings (30-tick election timeout, 5-tick heartbeat),
    /// reliable 1 ms links, no snapshots.
    pub fn new(nodes: u64, seed: u64) -> Self {
        let mut raft = RaftConfig::new(NodeId(1));
        raft.election_timeout_ticks = ELECTION_TIMEOUT_TICKS;
        raft.heartbeat_interval_ticks = HEARTBEAT_INTERVAL_TICKS;
        ClusterOptions {
            seed,
            nodes,
            raft,
            snapshot_every_entries: None,
            trace: false,
            checker: CheckerOptions::default(),
            panic_on_violation: true,
            tick_rate_skew: 0.0,
            torn_ready_writes: false,
        }
    }
}

/// One node as its shell sees it.
#[derive(Debug)]
pub struct SimNode {
    /// Identity.
    pub id: NodeId,
    raft: Option<RaftNode>,
    /// What it persisted.
    pub disk: SimDisk,
    /// Its application state.
    pub state: KvStateMachine,
    bootstrap: Membership,
    paused: bool,
    missed_ticks: u64,
    inbox: VecDeque<Message>,
    tick_period_us: u64,
    next_tick_at_us: u64,
    incarnation: u64,
    last_snapshot_index: LogIndex,
    last_role: Option<(Role, Term)>,
    /// Crash in the middle of the next `Ready`: after writing, before fsync.
    crash_mid_ready: bool,
}

impl SimNode {
    /// Whether the node is up (not crashed).
    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// Whether the node is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The Raft node, if up.
    pub fn raft(&self) -> Option<&RaftNode> {
        self.raft.as_ref()
    }
}

/// Events of a run: hashed into the trace hash, printed with `--trace`.
#[derive(Debug, Hash)]
enum Event<'a> {
    Tick(NodeId),
    Send {
        from: NodeId,
        to: NodeId,
        kind: &'static str,
        term: Term,
        outcome: SendOutcome,
    },
    Deliver {
        from: NodeId,
        to: NodeId,
        kind: &'static str,
        term: Term,
    },
    Role {
        node: NodeId,
        role: Role,
        term: Term,
    },
    Apply {
        node: NodeId,
        index: LogIndex,
        term: Term,
        value: Option<u64>,
    },
    InstallSnapshot {
        node: NodeId,
        index: LogIndex,
    },
    Compact {
        node: NodeId,
        index: LogIndex,
    },
    Propose {
        node: NodeId,
        value: u64,
        result: Option<(LogIndex, Term)>,
    },
    Fault(&'a str),
}

/// The simulated cluster.
#[derive(Debug)]
pub struct Cluster {
    opts: ClusterOptions,
    now_us: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    /// The network, exposed for fault injection and counters.
    pub net: SimNetwork<Message>,
    checker: Checker,
    rng: ChaCha8Rng,
    trace_hasher: DefaultHasher,
    steps: u64,
    violation: Option<String>,
    next_value: u64,
    proposed: BTreeSet<u64>,
    committed_values: BTreeMap<LogIndex, Option<u64>>,
    rejections_sent: BTreeMap<NodeId, u64>,
}

impl Cluster {
    /// Builds and starts the cluster.
    pub fn new(opts: ClusterOptions) -> Self {
        let seed = opts.seed;
        let membership = Membership::with_voters((1..=opts.nodes).map(NodeId));
        let mut cluster = Cluster {
            now_us: 0,
            nodes: BTreeMap::new(),
            net: SimNetwork::new(derive_seed(seed, 1)),
            checker: Checker::new(membership.clone(), opts.checker),
            rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, 2)),
            trace_hasher: DefaultHasher::new(),
            steps: 0,
            violation: None,
            next_value: 1,
            proposed: BTreeSet::new(),
            committed_values: BTreeMap::new(),
            rejections_sent: BTreeMap::new(),
            opts,
        };
        for id in 1..=cluster.opts.nodes {
            cluster.add_node(NodeId(id), membership.clone());
        }
        cluster
    }

    /// Adds a fresh node (bootstrap members pass the bootstrap membership, joiners the empty one)
    /// and starts it. Membership changes are proposed separately.
    pub fn add_node(&mut self, id: NodeId, bootstrap: Membership) {
        assert!(!self.nodes.contains_key(&id), "node {id} exists already");
        let skew = self.opts.tick_rate_skew;
        let rate = if skew > 0.0 {
            self.rng.random_range(1.0 - skew..=1.0 + skew)
        } else {
            1.0
        };
        let tick_period_us = ((TICK_US as f64) * rate) as u64;
        let first_tick = self.now_us + self.rng.random_range(1..=tick_period_us);
        let node = SimNode {
            id,
            raft: None,
            disk: SimDisk::new(),
            state: KvStateMachine::default(),
            bootstrap,
            paused: false,
            missed_ticks: 0,
            inbox: VecDeque::new(),
            tick_period_us,
            next_tick_at_us: first_tick,
            incarnation: 0,
            last_snapshot_index: LogIndex(0),
            last_role: None,
            crash_mid_ready: false,
        };
        self.nodes.insert(id, node);
        self.start_node(id);
    }

    fn start_node(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("start_node on a known node");
        let mut config = self.opts.raft.clone();
        config.id = id;
        node.incarnation += 1;
        let rng_seed = derive_seed(self.opts.seed, 1000 + id.0 * 1000 + node.incarnation);
        let persisted = node.disk.durable().clone();
        node.state = persisted
            .snapshot
            .as_ref()
            .and_then(|s| KvStateMachine::decode(&s.data))
            .unwrap_or_default();
        node.last_snapshot_index = node.state.applied;
        let durable_term = persisted.hard_state.term;
        let raft = match RaftNode::restore(config, node.bootstrap.clone(), persisted, rng_seed) {
            Ok(raft) => raft,
            Err(e) => {
                self.fail(Violation {
                    invariant: "I6 durability (restart)",
                    detail: format!("node {id} cannot restart from its own disk: {e}"),
                });
                return;
            }
        };
        let term = raft.status().term;
        node.raft = Some(raft);
        self.checker.on_restart(id);
        let node = self.nodes.get_mut(&id).expect("start_node on a known node");
        node.paused = false;
        node.missed_ticks = 0;
        node.inbox.clear();
        node.last_role = None;
        node.next_tick_at_us = node.next_tick_at_us.max(self.now_us);
        if term < durable_term {
            self.fail(Violation {
                invariant: "I6 durability",
                detail: format!(
                    "node {id} restarted in term {term} below its durable term {durable_term}"
                ),
            });
        }
        self.after_input(id);
    }

    // ---------------------------------------------------------------- accessors

    /// The root seed.
    pub fn seed(&self) -> u64 {
        self.opts.seed
    }

    /// Simulated time.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// Simulated time in ticks of [`TICK_US`].
    pub fn now_ticks(&self) -> u64 {
        self.now_us / TICK_US
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The first violation, formatted with seed and replay command.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    /// Whether a violation was found.
    pub fn failed(&self) -> bool {
        self.violation.is_some()
    }

    /// Hash of every event so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace_hasher.clone().finish()
    }

    /// The checker's record.
    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// The checker's record, for tests that need a stricter or looser option mid-run.
    pub fn checker_mut(&mut self) -> &mut Checker {
        &mut self.checker
    }

    /// Every node id, in order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Host ids for the network.
    pub fn hosts(&self) -> Vec<u64> {
        self.nodes.keys().map(|id| id.0).collect()
    }

    /// A node.
    pub fn node(&self, id: NodeId) -> &SimNode {
        &self.nodes[&id]
    }

    /// A node's status, if it is up.
    pub fn status(&self, id: NodeId) -> Option<Status> {
        self.nodes.get(&id)?.raft.as_ref().map(RaftNode::status)
    }

    /// Ids of nodes that are up.
    pub fn up_ids(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.is_up())
            .map(|n| n.id)
            .collect()
    }

    /// The node that is leader in the highest term among nodes that are up, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader_among(&self.ids())
    }

    /// The leader with the highest term among `ids` (up and not paused).
    pub fn leader_among(&self, ids: &[NodeId]) -> Option<NodeId> {
        ids.iter()
            .filter(|id| self.nodes.get(id).is_some_and(|n| !n.paused))
            .filter_map(|&id| self.status(id))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    /// Number of leaders among `ids` in their current terms.
    pub fn leaders_count_among(&self, ids: &[NodeId]) -> usize {
        ids.iter()
            .filter_map(|&id| self.status(id))
            .filter(|s| s.role == Role::Leader)
            .count()
    }

    /// The value committed at `index`, once anyone applied it (`Some(None)` for a no-op or
    /// membership entry).
    pub fn committed_value(&self, index: LogIndex) -> Option<Option<u64>> {
        self.committed_values.get(&index).copied()
    }

    /// Every committed command value, by index.
    pub fn committed_values(&self) -> &BTreeMap<LogIndex, Option<u64>> {
        &self.committed_values
    }

    /// How many nodes (up or down) have applied `index` (6.5840 `nCommitted`).
    pub fn n_applied(&self, index: LogIndex) -> usize {
        self.nodes
            .values()
            .filter(|n| n.state.applied >= index)
            .count()
    }

    /// A fresh unique command value.
    pub fn next_value(&mut self) -> u64 {
        let v = self.next_value;
        self.next_value += 1;
        v
    }

    // ---------------------------------------------------------------- driving

    /// Runs for `ticks` ticks of simulated time.
    pub fn run_ticks(&mut self, ticks: u64) {
        self.run_until(self.now_us + ticks * TICK_US);
    }

    /// Runs every event due up to and including `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        while !self.failed() {
            let next_message = self.net.next_delivery_at();
            let next_tick = self
                .nodes
                .values()
                .filter(|n| n.is_up())
                .map(|n| (n.next_tick_at_us, n.id))
                .min();
            let take_message = match (next_message, next_tick) {
                (Some(m), Some((t, _))) => m <= t,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if take_message {
                let at = next_message.expect("checked above");
                if at > until_us {
                    break;
                }
                self.now_us = self.now_us.max(at);
                let envelope = self.net.pop_due(at);
                if let Some(envelope) = envelope {
                    self.deliver(envelope.message);
                }
            } else if let Some((at, id)) = next_tick {
                if at > until_us {
                    break;
                }
                self.now_us = self.now_us.max(at);
                self.tick_node(id);
            } else {
                break;
            }
        }
        self.now_us = self.now_us.max(until_us);
    }

    /// Runs until `done` holds (checked every tick) or `max_ticks` pass; returns whether it held.
    pub fn run_until_cond(
        &mut self,
        max_ticks: u64,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> bool {
        for _ in 0..max_ticks {
            if done(self) {
                return true;
            }
            self.run_ticks(1);
            if self.failed() {
                return false;
            }
        }
        done(self)
    }

    /// Waits for a leader among `ids` (up to `max_ticks`).
    pub fn wait_leader_among(&mut self, ids: &[NodeId], max_ticks: u64) -> Option<NodeId> {
        let ids = ids.to_vec();
        self.run_until_cond(max_ticks, |c| c.leader_among(&ids).is_some());
        self.leader_among(&ids)
    }

    fn tick_node(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("tick of a known node");
        node.next_tick_at_us += node.tick_period_us;
        if node.paused {
            node.missed_ticks += 1;
            return;
        }
        if let Some(raft) = node.raft.as_mut() {
            raft.tick();
        }
        self.record(&Event::Tick(id));
        self.after_input(id);
    }

    fn deliver(&mut self, message: Message) {
        let to = message.to;
        let Some(node) = self.nodes.get_mut(&to) else {
            return;
        };
        if node.raft.is_none() {
            return;
        }
        if node.paused {
            node.inbox.push_back(message);
            return;
        }
        let event = Event::Deliver {
            from: message.from,
            to,
            kind: message.body.kind_name(),
            term: message.term,
        };
        self.record(&event);
        if self.opts.trace {
            self.print_line(&format!("deliver {message:?}"));
        }
        self.nodes
            .get_mut(&to)
            .and_then(|n| n.raft.as_mut())
            .expect("checked above that the node is up")
            .step(message);
        self.after_input(to);
    }

    /// Proposes a new unique command on `id`, padded to `size_bytes`. Returns the value and
    /// where it landed.
    pub fn propose_sized(
        &mut self,
        id: NodeId,
        size_bytes: usize,
    ) -> (u64, Result<Proposal, ProposeError>) {
        let value = self.next_value();
        let result = self.propose_value(id, value, size_bytes);
        (value, result)
    }

    /// Proposes a new unique 8-byte command on `id`.
    pub fn propose(&mut self, id: NodeId) -> (u64, Result<Proposal, ProposeError>) {
        self.propose_sized(id, 8)
    }

    /// Proposes `value` on `id`.
    pub fn propose_value(
        &mut self,
        id: NodeId,
        value: u64,
        size_bytes: usize,
    ) -> Result<Proposal, ProposeError> {
        let node = self.nodes.get_mut(&id).expect("propose on a known node");
        let Some(raft) = node.raft.as_mut().filter(|_| !node.paused) else {
            return Err(ProposeError::NotLeader { leader_hint: None });
        };
        self.proposed.insert(value);
        let result = raft.propose(encode_command(value, size_bytes));
        self.record(&Event::Propose {
            node: id,
            value,
            result: result.as_ref().ok().map(|p| (p.index, p.term)),
        });
        self.after_input(id);
        result
    }

    /// Proposes `count` fresh 8-byte commands on `id` and only then carries out the `Ready`, as a
    /// shell does that drains its proposal queue before asking for work (so they batch).
    pub fn propose_batch(
        &mut self,
        id: NodeId,
        count: usize,
    ) -> Vec<(u64, Result<Proposal, ProposeError>)> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let value = self.next_value();
            self.proposed.insert(value);
            let node = self.nodes.get_mut(&id).expect("propose on a known node");
            let result = match node.raft.as_mut().filter(|_| !node.paused) {
                Some(raft) => raft.propose(encode_command(value, 8)),
                None => Err(ProposeError::NotLeader { leader_hint: None }),
            };
            self.record(&Event::Propose {
                node: id,
                value,
                result: result.as_ref().ok().map(|p| (p.index, p.term)),
            });
            out.push((value, result));
        }
        self.after_input(id);
        out
    }

    /// Proposes a membership change on `id`.
    pub fn propose_membership(
        &mut self,
        id: NodeId,
        change: MembershipChange,
    ) -> Result<Proposal, ProposeError> {
        let node = self
            .nodes
            .get_mut(&id)
            .expect("membership change on a known node");
        let Some(raft) = node.raft.as_mut().filter(|_| !node.paused) else {
            return Err(ProposeError::NotLeader { leader_hint: None });
        };
        let result = raft.propose_membership(change);
        let text = format!("membership {change:?} via {id}: {result:?}");
        self.record(&Event::Fault(&text));
        self.after_input(id);
        result
    }

    /// Asks leader `id` to hand leadership to `to`.
    pub fn transfer_leadership(&mut self, id: NodeId, to: NodeId) -> Result<(), TransferError> {
        let node = self.nodes.get_mut(&id).expect("transfer on a known node");
        let Some(raft) = node.raft.as_mut().filter(|_| !node.paused) else {
            return Err(TransferError::NotLeader);
        };
        let result = raft.transfer_leadership(to);
        let text = format!("transfer {id} -> {to}: {result:?}");
        self.record(&Event::Fault(&text));
        self.after_input(id);
        result
    }

    /// Drives a node directly with one message (paper tests).
    pub fn step_node(&mut self, message: Message) {
        self.deliver(message);
    }

    /// Proposes on whoever leads and waits until the command is applied by at least `expected`
    /// nodes, retrying for up to `max_ticks` (6.5840 `one()`). Returns the index, or `None`.
    pub fn one(&mut self, expected: usize, retry: bool, max_ticks: u64) -> Option<LogIndex> {
        let value = self.next_value();
        self.one_value(value, 8, expected, retry, max_ticks)
    }

    /// As [`one`](Cluster::one) with a given value and size.
    pub fn one_value(
        &mut self,
        value: u64,
        size_bytes: usize,
        expected: usize,
        retry: bool,
        max_ticks: u64,
    ) -> Option<LogIndex> {
        let deadline = self.now_us + max_ticks * TICK_US;
        while self.now_us < deadline && !self.failed() {
            let mut landed = None;
            for id in self.ids() {
                let is_leader = self
                    .status(id)
                    .is_some_and(|s| s.role == Role::Leader && !self.nodes[&id].paused);
                if is_leader && let Ok(p) = self.propose_value(id, value, size_bytes) {
                    landed = Some(p.index);
                    break;
                }
            }
            if let Some(index) = landed {
                // Wait up to 2 s for it to commit on `expected` nodes.
                let wait_until = (self.now_us + 200 * TICK_US).min(deadline);
                while self.now_us < wait_until && !self.failed() {
                    if self.n_applied(index) >= expected
                        && self.committed_value(index) == Some(Some(value))
                    {
                        return Some(index);
                    }
                    if self
                        .committed_value(index)
                        .is_some_and(|v| v != Some(value))
                    {
                        break;
                    }
                    self.run_ticks(1);
                }
                if !retry {
                    return None;
                }
            } else {
                self.run_ticks(5);
            }
        }
        None
    }

    // ---------------------------------------------------------------- faults

    fn fault_note(&mut self, text: String) {
        self.record(&Event::Fault(&text));
    }

    /// Cuts `id` from everyone, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        let hosts = self.hosts();
        self.net.isolate(id.0, &hosts);
        self.fault_note(format!("isolate {id}"));
    }

    /// Reconnects `id` with everyone (other cuts stay).
    pub fn reconnect(&mut self, id: NodeId) {
        let hosts = self.hosts();
        self.net.reconnect(id.0, &hosts);
        self.fault_note(format!("reconnect {id}"));
    }

    /// Symmetric partition into groups (nodes in no group are isolated); replaces earlier cuts.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.net.heal();
        let hosts = self.hosts();
        let groups: Vec<Vec<u64>> = groups
            .iter()
            .map(|g| g.iter().map(|id| id.0).collect())
            .collect();
        self.net.partition(&groups, &hosts);
        self.fault_note(format!("partition {groups:?}"));
    }

    /// Removes every cut and clog, and makes links reliable again.
    pub fn heal(&mut self) {
        self.net.heal();
        self.net.unclog_all(self.now_us);
        self.net.clear_link_faults();
        self.net.set_default_faults(LinkFaults::default());
        self.fault_note("heal".to_string());
    }

    /// Crashes `id`: the Raft node and its traffic vanish; with `lose_unsynced`, it dies halfway
    /// through its next `Ready` (writes issued, fsync not done), keeping a random prefix of them.
    pub fn crash(&mut self, id: NodeId, lose_unsynced: bool) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        if lose_unsynced && raft.has_ready() {
            let ready = raft.ready();
            if let Some(snapshot) = ready.snapshot {
                node.disk.write_snapshot(snapshot);
            }
            node.disk.write_entries(ready.entries);
            if let Some(hs) = ready.hard_state {
                node.disk.write_hard_state(hs);
            }
        }
        // One Ready is one WAL record: either all of its writes reached the platter or none
        // (a torn record fails its checksum and is dropped). Keeping a strict prefix (entries
        // but not the hard state) is what `ClusterOptions::torn_ready_writes` adds.
        let pending = node.disk.pending_len();
        let keep = if pending == 0 {
            0
        } else if self.opts.torn_ready_writes {
            self.rng.random_range(0..=pending)
        } else if self.rng.random_bool(0.5) {
            pending
        } else {
            0
        };
        let durable_hard_states = node.disk.crash(keep);
        node.raft = None;
        node.paused = false;
        node.inbox.clear();
        self.net.drop_host_traffic(id.0);
        self.fault_note(format!(
            "crash {id} (unsynced writes: {pending}, kept {keep})"
        ));
        for hs in durable_hard_states {
            if let Err(v) = self.checker.check_durable_hard_state(id, &hs) {
                self.fail(v);
            }
        }
        self.check_committed_durable();
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: NodeId) {
        if self.nodes.get(&id).is_none_or(SimNode::is_up) {
            return;
        }
        self.fault_note(format!("restart {id}"));
        self.start_node(id);
    }

    /// Crashes (if up) and restarts `id`.
    pub fn crash_restart(&mut self, id: NodeId) {
        self.crash(id, false);
        self.restart(id);
    }

    /// Pauses `id` (SIGSTOP): it processes nothing; messages to it queue up.
    pub fn pause(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id)
            && node.is_up()
        {
            node.paused = true;
            self.fault_note(format!("pause {id}"));
        }
    }

    /// Resumes a paused node: the ticks it missed fire at once (capped at four election
    /// timeouts), then its queued messages are delivered.
    pub fn resume(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.paused {
            return;
        }
        node.paused = false;
        let missed = node.missed_ticks.min(8 * ELECTION_TIMEOUT_TICKS);
        node.missed_ticks = 0;
        let inbox = std::mem::take(&mut node.inbox);
        self.fault_note(format!(
            "resume {id} (missed ticks {missed}, queued {})",
            inbox.len()
        ));
        for _ in 0..missed {
            if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                raft.tick();
            }
            self.after_input(id);
        }
        for message in inbox {
            self.deliver(message);
        }
    }

    /// Resumes every paused node.
    pub fn resume_all(&mut self) {
        for id in self.ids() {
            self.resume(id);
        }
    }

    // ---------------------------------------------------------------- the shell

    /// Carries out every `Ready` of `id`, then checks the invariants on it.
    fn after_input(&mut self, id: NodeId) {
        self.steps += 1;
        if self.failed() {
            return;
        }
        loop {
            let has_ready = self
                .nodes
                .get(&id)
                .and_then(|n| n.raft.as_ref())
                .is_some_and(RaftNode::has_ready);
            if !has_ready {
                break;
            }
            if let Err(v) = self.handle_ready(id) {
                self.fail(v);
                return;
            }
            if self.nodes.get(&id).is_none_or(|n| !n.is_up()) {
                return;
            }
        }
        if let Err(v) = self.check_node(id) {
            self.fail(v);
        }
    }

    fn handle_ready(&mut self, id: NodeId) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("ready of a known node");
        let raft = node.raft.as_mut().expect("ready of a node that is up");
        let status = raft.status();
        let ready = raft.ready();

        // I3 / I2 on what is about to be persisted.
        if let Some(first) = ready.entries.first() {
            let (meta, entries) = raft.log_entries();
            let prev_index = first.index.prev();
            let prev_term = if prev_index == LogIndex(0) {
                Term(0)
            } else if prev_index == meta.last_index {
                meta.last_term
            } else {
                entry_term(entries, prev_index).unwrap_or(Term(0))
            };
            let leader_of = (status.role == Role::Leader)
                .then(|| (status.term, node.disk.durable_last_index()));
            self.checker
                .check_appended(id, &ready.entries, prev_term, leader_of)?;
        }

        // 1. Persist, then fsync.
        if let Some(snapshot) = &ready.snapshot {
            node.disk.write_snapshot(snapshot.clone());
        }
        node.disk.write_entries(ready.entries.clone());
        if let Some(hs) = &ready.hard_state {
            node.disk.write_hard_state(hs.clone());
        }
        if node.crash_mid_ready {
            node.crash_mid_ready = false;
            self.crash(id, false);
            return Ok(());
        }
        let node = self.nodes.get_mut(&id).expect("still here");
        for hs in node.disk.fsync() {
            self.checker.check_durable_hard_state(id, &hs)?;
        }

        // 2. Send.
        let node = self.nodes.get(&id).expect("still here");
        let durable_hs = node.disk.durable().hard_state.clone();
        let durable_last = node.disk.durable_last_index();
        for message in &ready.messages {
            self.checker
                .check_send(message, &durable_hs, durable_last)?;
        }
        for message in ready.messages.iter().cloned() {
            if matches!(
                message.body,
                MessageBody::AppendEntriesResponse { success: false, .. }
            ) {
                *self.rejections_sent.entry(message.from).or_default() += 1;
            }
            let (from, to, kind, term) = (
                message.from,
                message.to,
                message.body.kind_name(),
                message.term,
            );
            if self.opts.trace {
                self.print_line(&format!("send {message:?}"));
            }
            let outcome = self.net.send(self.now_us, from.0, to.0, message);
            self.record(&Event::Send {
                from,
                to,
                kind,
                term,
                outcome,
            });
        }

        // 3. Apply: snapshot first, then committed entries.
        if let Some(snapshot) = &ready.snapshot {
            let node = self.nodes.get_mut(&id).expect("still here");
            let restored = KvStateMachine::decode(&snapshot.data).ok_or_else(|| Violation {
                invariant: "I5 state machine safety",
                detail: format!("node {id} received a snapshot it cannot decode"),
            })?;
            if snapshot.meta.last_index < node.state.applied {
                return Err(Violation {
                    invariant: "I5 state machine safety",
                    detail: format!(
                        "node {id} installed snapshot at {} below its applied index {}",
                        snapshot.meta.last_index, node.state.applied
                    ),
                });
            }
            self.checker.check_snapshot_state(
                id,
                snapshot.meta.last_index,
                snapshot.meta.last_term,
                restored.hash,
            )?;
            node.state = restored;
            node.last_snapshot_index = snapshot.meta.last_index;
            self.record(&Event::InstallSnapshot {
                node: id,
                index: snapshot.meta.last_index,
            });
        }
        if !ready.committed_entries.is_empty() {
            self.apply_entries(id, &ready.committed_entries)?;
        }

        // 5. Advance, then compact if due.
        let node = self.nodes.get_mut(&id).expect("still here");
        let raft = node.raft.as_mut().expect("still up");
        raft.advance(ready);
        if let Some(every) = self.opts.snapshot_every_entries
            && node.state.applied.0 >= node.last_snapshot_index.0 + every
        {
            let index = node.state.applied;
            raft.compact(index, node.state.encode());
            if let Some(snapshot) = raft.snapshot()
                && snapshot.meta.last_index == index
            {
                node.disk.write_snapshot(snapshot.clone());
                node.disk.fsync();
                node.last_snapshot_index = index;
                self.record(&Event::Compact { node: id, index });
            }
        }
        Ok(())
    }

    fn apply_entries(
        &mut self,
        id: NodeId,
        entries: &[distsync_raft::Entry],
    ) -> Result<(), Violation> {
        // Context for first applications, built once per batch.
        let mut context: Option<(Vec<Membership>, Vec<LeaderLog>)> = None;
        for entry in entries {
            let node = self.nodes.get_mut(&id).expect("still here");
            if entry.index != node.state.applied.next() {
                return Err(Violation {
                    invariant: "I5 state machine safety",
                    detail: format!(
                        "node {id} applied index {} right after {} (gap or repeat)",
                        entry.index, node.state.applied
                    ),
                });
            }
            let value = node.state.apply(entry);
            let state_hash = node.state.hash;
            if let Some(v) = value
                && !self.proposed.contains(&v)
            {
                return Err(Violation {
                    invariant: "I5 state machine safety",
                    detail: format!("node {id} applied value {v} that nobody proposed"),
                });
            }
            let first_time = !self.checker.committed().contains_key(&entry.index);
            let durable_on: BTreeSet<NodeId> = if first_time {
                self.nodes
                    .values()
                    .filter(|n| n.disk.durably_holds(entry.index, entry.term))
                    .map(|n| n.id)
                    .collect()
            } else {
                BTreeSet::new()
            };
            if first_time && context.is_none() {
                let memberships = self
                    .nodes
                    .values()
                    .filter_map(|n| n.raft.as_ref())
                    .map(|r| r.status().membership)
                    .collect();
                let leaders = self
                    .nodes
                    .values()
                    .filter_map(|n| n.raft.as_ref())
                    .filter(|r| r.status().role == Role::Leader)
                    .map(|r| {
                        let status = r.status();
                        let (meta, log) = r.log_entries();
                        (
                            status.id,
                            status.term,
                            meta.last_index,
                            log.iter().map(|e| (e.index, e.term)).collect(),
                        )
                    })
                    .collect();
                context = Some((memberships, leaders));
            }
            let (memberships, leaders) = match &context {
                Some((m, l)) if first_time => (m.as_slice(), l.as_slice()),
                _ => (&[][..], &[][..]),
            };
            let node_term = self
                .nodes
                .get(&id)
                .and_then(|n| n.raft.as_ref())
                .map_or(Term(0), |r| r.status().term);
            self.checker.check_applied(
                id,
                node_term,
                entry,
                state_hash,
                &durable_on,
                memberships,
                leaders,
            )?;
            if first_time {
                self.committed_values.insert(entry.index, value);
            }
            if matches!(entry.payload, EntryPayload::Membership(_)) {
                context = None;
            }
            self.record(&Event::Apply {
                node: id,
                index: entry.index,
                term: entry.term,
                value,
            });
        }
        Ok(())
    }

    fn check_node(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Some(raft) = node.raft.as_ref() else {
            return Ok(());
        };
        let status = raft.status();
        let (meta, entries) = raft.log_entries();
        let term_at = |index: LogIndex| {
            if index == meta.last_index {
                Some(meta.last_term)
            } else {
                entry_term(entries, index)
            }
        };
        self.checker.check_status(&status, term_at)?;
        self.checker
            .check_commit(id, status.term, status.commit, term_at)?;
        if status.role == Role::Leader {
            self.checker
                .check_new_leader(&status, meta.last_index, entries)?;
        }
        let role = (status.role, status.term);
        if node.last_role != Some(role) {
            node.last_role = Some(role);
            self.record(&Event::Role {
                node: id,
                role: status.role,
                term: status.term,
            });
        }
        Ok(())
    }

    fn check_committed_durable(&mut self) {
        // Any configuration a leader may have committed under: what live nodes use, and the
        // latest one in every disk (a crashed leader may have been the only one to append a
        // change, and single-server changes take effect on append).
        let mut memberships: Vec<Membership> = self
            .nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .map(|r| r.status().membership)
            .collect();
        memberships.extend(self.nodes.values().filter_map(|n| {
            let d = n.disk.durable();
            d.entries
                .iter()
                .rev()
                .find_map(|e| match &e.payload {
                    EntryPayload::Membership(m) => Some(m.clone()),
                    _ => None,
                })
                .or_else(|| d.snapshot.as_ref().map(|s| s.meta.membership.clone()))
        }));
        let nodes = &self.nodes;
        let result = self.checker.check_committed_durable(
            |id, index, term| {
                nodes
                    .get(&id)
                    .is_some_and(|n| n.disk.durably_holds(index, term))
            },
            &memberships,
        );
        if let Err(v) = result {
            self.fail(v);
        }
    }

    /// Arms a crash of `id` halfway through its next non-empty `Ready` (after the writes, before
    /// the fsync), so that exactly the unsynced writes are at risk.
    pub fn crash_during_next_ready(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id)
            && node.is_up()
        {
            node.crash_mid_ready = true;
        }
    }

    // ---------------------------------------------------------------- reporting

    fn fail(&mut self, v: Violation) {
        if self.violation.is_some() {
            return;
        }
        let text = format!(
            "invariant violated at t={}ms step {}: {v}\n  seed {seed}; replay with: distsync sim raft --seed {seed} --nodes {} --trace",
            self.now_us / 1000,
            self.steps,
            self.opts.nodes,
            seed = self.opts.seed,
        );
        if self.opts.trace {
            self.print_line(&text);
        }
        self.violation = Some(text.clone());
        if self.opts.panic_on_violation {
            panic!("{text}");
        }
    }

    /// Panics with the violation, if any (for tests).
    pub fn assert_ok(&self) {
        if let Some(v) = &self.violation {
            panic!("{v}");
        }
    }

    fn record(&mut self, event: &Event<'_>) {
        self.now_us.hash(&mut self.trace_hasher);
        event.hash(&mut self.trace_hasher);
        if self.opts.trace
            && !matches!(
                event,
                Event::Tick(_) | Event::Send { .. } | Event::Deliver { .. }
            )
        {
            self.print_line(&format!("{event:?}"));
        }
    }

    fn print_line(&self, line: &str) {
        crate::print_line(format_args!(
            "[seed {} t={}.{:02}s] {line}",
            self.opts.seed,
            self.now_us / 1_000_000,
            (self.now_us / 10_000) % 100
        ));
    }

    /// Prints a free-form line into the trace (when tracing).
    pub fn note(&mut self, text: &str) {
        self.record(&Event::Fault(text));
    }

    /// AppendEntries rejections each node has sent (fast-backup criterion of R-12).
    pub fn rejections_sent(&self) -> &BTreeMap<NodeId, u64> {
        &self.rejections_sent
    }

    /// Bytes of persisted Raft state (log and hard state, not the snapshot) on `id`'s disk.
    pub fn raft_state_bytes(&self, id: NodeId) -> usize {
        self.nodes[&id].disk.raft_state_bytes()
    }

    /// Proposes a fresh value on the current leader, if any.
    pub fn propose_on_leader(&mut self) -> Option<(u64, Proposal)> {
        let leader = self.leader()?;
        let (value, result) = self.propose(leader);
        result.ok().map(|p| (value, p))
    }

    /// The random generator of the harness (for scenario decisions in tests).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Raw byte command helper for tests that drive nodes directly.
    pub fn command(value: u64) -> Bytes {
        encode_command(value, 8)
    }
}
