//! The simulated cache cluster: N hosts (each a [`CacheNode`] and the [`Directory`] of the keys
//! the ring homes on it) over a [`SimNetwork`], an in-memory backing store with random (reliable)
//! latency, and seeded clients. Invariants are checked after every step.

use std::collections::BTreeMap;
use std::hash::Hasher;

use distsync_cache::{
    BackingOp, BackingRequest, BackingResponse, BackingResult, CacheConfig, CacheNode,
    CoherenceMessage, Completion, Directory, HomeSelector, Key, LineData, NodeId, OpId, OpResult,
    OpStep, Outbound, Value, Version,
};
use distsync_ring::HashRing;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hash::DefaultHasher;

use super::checker::Checker;
use crate::net::{Envelope, SimMessage, SimNetwork};

/// One tick of simulated time: 10 ms.
pub const TICK_US: u64 = 10_000;

/// A coherence message on the simulated wire, stamped with the sender's tick and membership
/// epoch.
#[derive(Clone, Debug)]
pub struct WireMessage {
    /// Tick at which it was sent (for the lease checker).
    pub sent_tick: u64,
    /// The sender's membership epoch (the receiver drops messages of any other epoch).
    pub epoch: u64,
    /// The message.
    pub message: CoherenceMessage,
}

fn kind_of(message: &CoherenceMessage) -> &'static str {
    match message {
        CoherenceMessage::GetShared { .. } => "GetShared",
        CoherenceMessage::GetModified { .. } => "GetModified",
        CoherenceMessage::Upgrade { .. } => "Upgrade",
        CoherenceMessage::PutModified { .. } => "PutModified",
        CoherenceMessage::PutShared { .. } => "PutShared",
        CoherenceMessage::PutExclusive { .. } => "PutExclusive",
        CoherenceMessage::GrantAck { .. } => "GrantAck",
        CoherenceMessage::InvalidateAck { .. } => "InvalidateAck",
        CoherenceMessage::FetchResponse { .. } => "FetchResponse",
        CoherenceMessage::WriteBack { .. } => "WriteBack",
        CoherenceMessage::Heartbeat { .. } => "Heartbeat",
        CoherenceMessage::Grant { .. } => "Grant",
        CoherenceMessage::Invalidate { .. } => "Invalidate",
        CoherenceMessage::Fetch { .. } => "Fetch",
        CoherenceMessage::PutAck { .. } => "PutAck",
        CoherenceMessage::WriteBackAck { .. } => "WriteBackAck",
        CoherenceMessage::HeartbeatAck { .. } => "HeartbeatAck",
        CoherenceMessage::Holdings { .. } => "Holdings",
        CoherenceMessage::HoldingsAck => "HoldingsAck",
    }
}

impl SimMessage for WireMessage {
    fn size_bytes(&self) -> usize {
        let data = match &self.message {
            CoherenceMessage::Grant { data, .. }
            | CoherenceMessage::PutModified { data, .. }
            | CoherenceMessage::WriteBack { data, .. } => data.size_bytes(),
            CoherenceMessage::FetchResponse { data, .. } => {
                data.as_ref().map_or(0, LineData::size_bytes)
            }
            CoherenceMessage::Holdings { lines } => lines
                .iter()
                .map(|line| 32 + line.key.len() + line.data.size_bytes())
                .sum(),
            _ => 0,
        };
        32 + data
    }

    fn kind(&self) -> &'static str {
        kind_of(&self.message)
    }
}

/// Home selection through the consistent-hash ring; members are named `n<id>`.
#[derive(Clone, Debug)]
pub struct RingHomes {
    ring: HashRing,
}

impl RingHomes {
    /// A ring over nodes `1..=nodes`.
    pub fn new(nodes: u64) -> Self {
        let members: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
        Self::of_members(&members)
    }

    /// A ring over `members` (the same members give the same ring, whatever their order).
    pub fn of_members(members: &[NodeId]) -> Self {
        let mut ring = HashRing::new(64).expect("64 virtual nodes is in range");
        for id in members {
            ring.add(format!("n{id}")).expect("distinct member names");
        }
        Self { ring }
    }
}

impl HomeSelector for RingHomes {
    fn home_of(&self, key: &[u8]) -> NodeId {
        let name = self.ring.owner(key).expect("the ring has members");
        NodeId(name[1..].parse().expect("member names are n<number>"))
    }

    fn set_members(&mut self, members: &[NodeId]) {
        *self = Self::of_members(members);
    }
}

/// One simulated machine: the node side and the home side of one cache node.
#[derive(Debug)]
pub struct SimHost {
    /// The node side.
    pub node: CacheNode<RingHomes>,
    /// The home side.
    pub directory: Directory,
}

impl SimHost {
    fn new(id: NodeId, config: &CacheConfig, epoch: u64, members: &[NodeId]) -> Self {
        let homes = RingHomes::of_members(members);
        let mut node = CacheNode::new(id, config.clone(), homes, members.to_vec())
            .expect("simulation config is valid");
        let mut directory = Directory::new(id, config.clone()).expect("simulation config is valid");
        // A fresh host learns the view it joins before it does anything; nothing is in flight
        // yet, so the reports go out on its first tick.
        let _ = node.set_members(epoch, members.to_vec());
        let _ = directory.set_members(epoch, members.to_vec());
        Self { node, directory }
    }
}

/// What a simulated client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOpKind {
    /// `read(key)`.
    Read,
    /// `write(key, value)`, or `delete(key)` for `None`.
    Write(Option<Value>),
    /// `evict(key)`.
    Evict,
    /// `flush()`.
    Flush,
}

#[derive(Clone, Debug)]
struct ClientOp {
    client: usize,
    key: Key,
    kind: ClientOpKind,
    issued_tick: u64,
    required: Version,
}

/// A membership view on its way to one host.
#[derive(Clone, Debug)]
struct ViewDelivery {
    host: NodeId,
    epoch: u64,
    members: Vec<NodeId>,
}

/// The simulated cluster.
#[derive(Debug)]
pub struct CacheWorld {
    /// Hosts by id.
    pub hosts: BTreeMap<NodeId, SimHost>,
    /// The network between them.
    pub net: SimNetwork<WireMessage>,
    config: CacheConfig,
    /// The newest view: epoch and members.
    view: (u64, Vec<NodeId>),
    /// Views not yet delivered, by (tick due, sequence).
    view_queue: BTreeMap<(u64, u64), ViewDelivery>,
    view_seq: u64,
    /// Per crashed host, the tick it crashed (until it restarts).
    crashed: BTreeMap<NodeId, u64>,
    /// Operations lost with a crashed node (their clients saw an error).
    pub errored_ops: u64,
    /// Crashes so far.
    pub crashes: u64,
    /// Per view epoch, the tick it was issued; and the longest time from a view to the end of
    /// every live home's recovery (reclaiming the lines of a crashed node).
    view_issued_tick: BTreeMap<u64, u64>,
    /// Longest time from a view change to every live home having rebuilt its entries.
    pub recovery_ticks_max: u64,
    backing: BTreeMap<Key, LineData>,
    backing_queue: BTreeMap<(u64, u64), (NodeId, BackingRequest)>,
    backing_seq: u64,
    backing_delay_ticks_max: u64,
    rng: ChaCha8Rng,
    now_tick: u64,
    outstanding: BTreeMap<(NodeId, OpId), ClientOp>,
    busy_clients: BTreeMap<usize, (NodeId, OpId)>,
    checker: Checker,
    /// Steps taken (deliveries, ticks, submissions).
    pub steps: u64,
    /// The first violation.
    pub violation: Option<String>,
    trace: bool,
    trace_hash: DefaultHasher,
    /// Operations completed.
    pub completed_ops: u64,
}

impl CacheWorld {
    /// A cluster of `nodes` hosts with `config`; `seed` drives the network and backing latency.
    pub fn new(nodes: u64, config: &CacheConfig, seed: u64, trace: bool) -> Self {
        let members: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
        let hosts = members
            .iter()
            .map(|id| (*id, SimHost::new(*id, config, 1, &members)))
            .collect();
        Self {
            hosts,
            net: SimNetwork::new(crate::raft::derive_seed(seed, 21)),
            config: config.clone(),
            view: (1, members),
            view_queue: BTreeMap::new(),
            view_seq: 0,
            crashed: BTreeMap::new(),
            errored_ops: 0,
            crashes: 0,
            view_issued_tick: BTreeMap::new(),
            recovery_ticks_max: 0,
            backing: BTreeMap::new(),
            backing_queue: BTreeMap::new(),
            backing_seq: 0,
            backing_delay_ticks_max: 2,
            rng: ChaCha8Rng::seed_from_u64(crate::raft::derive_seed(seed, 22)),
            now_tick: 0,
            outstanding: BTreeMap::new(),
            busy_clients: BTreeMap::new(),
            checker: Checker::new(config.lease_ticks),
            steps: 0,
            violation: None,
            trace,
            trace_hash: DefaultHasher::new(),
            completed_ops: 0,
        }
    }

    /// Current tick.
    pub fn now_tick(&self) -> u64 {
        self.now_tick
    }

    /// Hash of the event trace (same seed, same hash).
    pub fn trace_hash(&self) -> u64 {
        self.trace_hash.finish()
    }

    /// Host ids.
    pub fn host_ids(&self) -> Vec<u64> {
        self.hosts.keys().map(|id| id.0).collect()
    }

    /// The backing store's contents.
    pub fn backing(&self) -> &BTreeMap<Key, LineData> {
        &self.backing
    }

    /// Operations not yet completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether `client` waits for an operation.
    pub fn client_busy(&self, client: usize) -> bool {
        self.busy_clients.contains_key(&client)
    }

    /// The oldest outstanding operation, described.
    pub fn oldest_outstanding(&self) -> Option<String> {
        self.outstanding
            .iter()
            .min_by_key(|(_, op)| op.issued_tick)
            .map(|((node, op_id), op)| {
                format!(
                    "client {} op {op_id} {:?} on {:?} at node {node}, issued t={}",
                    op.client, op.kind, op.key, op.issued_tick
                )
            })
    }

    fn note(&mut self, event: impl FnOnce() -> String, hash_parts: &[u64]) {
        for part in hash_parts {
            self.trace_hash.write_u64(*part);
        }
        if self.trace {
            crate::print_line(format_args!("t={} {}", self.now_tick, event()));
        }
    }

    fn fail(&mut self, why: String) {
        if self.violation.is_none() {
            self.note(|| format!("VIOLATION {why}"), &[u64::MAX]);
            self.violation = Some(format!("t={}: {why}", self.now_tick));
        }
    }

    fn check(&mut self) {
        if self.violation.is_some() {
            return;
        }
        let nodes = self.hosts.values().map(|host| &host.node);
        if let Err(why) = self.checker.check_lines(nodes) {
            self.fail(why);
        }
    }

    /// Client `client` submits `kind` on `key` to node `node`.
    pub fn submit(&mut self, client: usize, node: NodeId, key: Key, kind: ClientOpKind) {
        self.steps += 1;
        let host = self.hosts.get_mut(&node).expect("known node");
        let required = self.checker.required_version(&key);
        if let ClientOpKind::Write(Some(value)) = &kind {
            self.checker.on_write_issued(&key, value);
        }
        let step = match &kind {
            ClientOpKind::Read => host.node.read(key.clone()),
            ClientOpKind::Write(Some(value)) => host.node.write(key.clone(), value.clone()),
            ClientOpKind::Write(None) => host.node.delete(key.clone()),
            ClientOpKind::Evict => host.node.evict(key.clone()),
            ClientOpKind::Flush => Ok(host.node.flush()),
        };
        let home = host.node.home_of(&key);
        let kind_text = format!("{kind:?}");
        let key_text = format!("{key:?}");
        self.note(
            || format!("client {client} -> n{node}: {kind_text} {key_text}"),
            &[1, node.0, client as u64],
        );
        let step = match step {
            Ok(step) => step,
            Err(error) => {
                self.note(|| format!("  rejected: {error}"), &[2]);
                return;
            }
        };
        let op = ClientOp {
            client,
            key: key.clone(),
            kind,
            issued_tick: self.now_tick,
            required,
        };
        match step {
            OpStep::Done { result, outbound } => {
                if matches!(result, OpResult::Read(_))
                    && let Err(why) = self.checker.on_hit(node, home, self.now_tick)
                {
                    self.fail(why);
                }
                self.finish_op(node, op, result);
                self.dispatch(node, outbound);
            }
            OpStep::Pending {
                op: op_id,
                outbound,
            } => {
                self.busy_clients.insert(client, (node, op_id));
                self.outstanding.insert((node, op_id), op);
                self.dispatch(node, outbound);
            }
        }
        self.check();
    }

    fn finish_op(&mut self, node: NodeId, op: ClientOp, result: OpResult) {
        self.completed_ops += 1;
        let result_text = format!("{result:?}");
        self.note(
            || {
                format!(
                    "  n{node} completed client {} {:?}: {result_text}",
                    op.client, op.kind
                )
            },
            &[3, node.0],
        );
        match &result {
            OpResult::Read(data) => {
                if let Err(why) = self.checker.on_read_completed(&op.key, data, op.required) {
                    self.fail(why);
                }
            }
            OpResult::Written(version) => {
                self.checker
                    .on_write_completed(&op.key, *version, node, op.issued_tick)
            }
            OpResult::Evicted | OpResult::Flushed => {}
        }
    }

    fn on_completion(&mut self, node: NodeId, completion: Completion) {
        let Some(op) = self.outstanding.remove(&(node, completion.op)) else {
            self.fail(format!(
                "completion of unknown op {} at n{node}",
                completion.op
            ));
            return;
        };
        self.busy_clients.remove(&op.client);
        self.finish_op(node, op, completion.result);
    }

    fn dispatch(&mut self, from: NodeId, outbound: Vec<Outbound>) {
        let Some(epoch) = self.hosts.get(&from).map(|host| host.node.epoch()) else {
            return;
        };
        for effect in outbound {
            match effect {
                Outbound::Send { to, message } => {
                    let wire = WireMessage {
                        sent_tick: self.now_tick,
                        epoch,
                        message,
                    };
                    self.net.send(self.now_tick * TICK_US, from.0, to.0, wire);
                }
                Outbound::Backing(request) => {
                    let delay = self.rng.random_range(0..=self.backing_delay_ticks_max);
                    self.backing_seq += 1;
                    self.backing_queue
                        .insert((self.now_tick + delay, self.backing_seq), (from, request));
                }
                Outbound::Complete(completion) => self.on_completion(from, completion),
            }
        }
    }

    fn deliver(&mut self, envelope: Envelope<WireMessage>) {
        self.steps += 1;
        let from = NodeId(envelope.from);
        let to = NodeId(envelope.to);
        let WireMessage {
            sent_tick,
            epoch,
            message,
        } = envelope.message;
        self.trace_hash.write(kind_of(&message).as_bytes());
        if let Some(key) = message.key() {
            self.trace_hash.write(key);
        }
        self.note(
            || format!("n{from}->n{to} e{epoch} {message:?}"),
            &[4, from.0, to.0, epoch],
        );
        let Some(host) = self.hosts.get_mut(&to) else {
            return; // crashed: the message is lost
        };
        if epoch == host.node.epoch()
            && matches!(
                message,
                CoherenceMessage::HeartbeatAck { .. } | CoherenceMessage::Grant { .. }
            )
        {
            self.checker.on_confirmation(to, from, sent_tick);
        }
        let out = if message.is_for_directory() {
            host.directory.handle_at(from, epoch, message)
        } else {
            host.node.on_message_at(from, epoch, message)
        };
        self.dispatch(to, out);
        self.check();
    }

    fn deliver_backing(&mut self, home: NodeId, request: BackingRequest) {
        self.steps += 1;
        let result = match request.op {
            BackingOp::Read => {
                BackingResult::Read(self.backing.get(&request.key).cloned().unwrap_or_default())
            }
            BackingOp::Write(data) => {
                let stored = self.backing.entry(request.key.clone()).or_default();
                if data.version >= stored.version {
                    *stored = data;
                }
                BackingResult::Written
            }
        };
        let result_text = format!("{result:?}");
        self.note(
            || format!("backing -> n{home} {:?}: {result_text}", request.key),
            &[5, home.0],
        );
        // The backing store is a separate process: a write applies even if its home crashed.
        let Some(host) = self.hosts.get_mut(&home) else {
            return;
        };
        let out = host.directory.on_backing(BackingResponse {
            id: request.id,
            key: request.key,
            result,
        });
        self.dispatch(home, out);
        self.check();
    }

    /// Completed writes forgiven by the write-back carve-out so far.
    pub fn forgiven_writes(&self) -> u64 {
        self.checker.forgiven_writes
    }

    /// The newest view's epoch and members.
    pub fn view(&self) -> (u64, &[NodeId]) {
        (self.view.0, &self.view.1)
    }

    /// Hosts that crashed and have not restarted, with the tick they crashed.
    pub fn crashed(&self) -> &BTreeMap<NodeId, u64> {
        &self.crashed
    }

    /// Whether every live host has adopted the newest view and every home finished rebuilding.
    pub fn view_settled(&self) -> bool {
        self.view_queue.is_empty()
            && self
                .hosts
                .values()
                .all(|host| host.node.epoch() == self.view.0 && !host.directory.is_recovering())
    }

    /// Whether `node` is alive and a member of the view it has adopted (it may take clients).
    pub fn serving(&self, node: NodeId) -> bool {
        self.hosts
            .get(&node)
            .is_some_and(|host| host.node.members().contains(&node))
    }

    /// Issues the view `members` (next epoch) and schedules its delivery to every live host,
    /// each after its own delay in `0..=delay_ticks_max` (so hosts adopt it at different times,
    /// and possibly after a newer view, which they then ignore).
    fn issue_view(&mut self, members: Vec<NodeId>, delay_ticks_max: u64) {
        let epoch = self.view.0 + 1;
        self.view = (epoch, members.clone());
        self.view_issued_tick.insert(epoch, self.now_tick);
        let hosts: Vec<NodeId> = self.hosts.keys().copied().collect();
        for host in hosts {
            let delay = self.rng.random_range(0..=delay_ticks_max);
            self.view_seq += 1;
            self.view_queue.insert(
                (self.now_tick + delay, self.view_seq),
                ViewDelivery {
                    host,
                    epoch,
                    members: members.clone(),
                },
            );
        }
        let members_text = format!("{members:?}");
        self.note(|| format!("VIEW e{epoch} {members_text}"), &[6, epoch]);
    }

    /// Crashes `node` (its state is gone; operations outstanding there fail) and issues the view
    /// without it. Under write-back, the checker forgives exactly the writes this node
    /// acknowledged that had not reached the backing store.
    pub fn crash(&mut self, node: NodeId, view_delay_ticks_max: u64) {
        self.steps += 1;
        if self.hosts.remove(&node).is_none() {
            return;
        }
        self.crashes += 1;
        self.crashed.insert(node, self.now_tick);
        // What it already sent stays in the network and may arrive late (stale epochs).
        self.note(|| format!("CRASH n{node}"), &[7, node.0]);
        let lost: Vec<(NodeId, OpId)> = self
            .outstanding
            .keys()
            .filter(|(at, _)| *at == node)
            .copied()
            .collect();
        for key in lost {
            let op = self.outstanding.remove(&key).expect("listed above");
            self.busy_clients.remove(&op.client);
            self.errored_ops += 1;
        }
        let mut surviving: BTreeMap<Key, Version> = BTreeMap::new();
        for host in self.hosts.values() {
            for (key, line) in host.node.store().iter() {
                let version = surviving.entry(key.to_key()).or_default();
                *version = (*version).max(line.data.version);
            }
        }
        let write_back = self.config.write_policy == distsync_cache::WritePolicy::WriteBack;
        let floors = self
            .checker
            .on_crash(node, write_back, &self.backing, &surviving);
        for op in self.outstanding.values_mut() {
            if let Some(floor) = floors.get(&op.key) {
                op.required = op.required.min(*floor);
            }
        }
        let members: Vec<NodeId> = self
            .view
            .1
            .iter()
            .copied()
            .filter(|member| *member != node)
            .collect();
        self.issue_view(members, view_delay_ticks_max);
    }

    /// Restarts crashed `node` as a fresh member (empty store, new directory) and issues the
    /// view with it.
    pub fn restart(&mut self, node: NodeId, view_delay_ticks_max: u64) {
        self.steps += 1;
        if self.crashed.remove(&node).is_none() {
            return;
        }
        let mut members = self.view.1.clone();
        members.push(node);
        members.sort();
        self.note(|| format!("RESTART n{node}"), &[8, node.0]);
        self.issue_view(members.clone(), view_delay_ticks_max);
        let epoch = self.view.0;
        self.hosts
            .insert(node, SimHost::new(node, &self.config, epoch, &members));
        // The fresh host already has the view; drop its own scheduled delivery.
        self.view_queue.retain(|_, delivery| delivery.host != node);
    }

    /// Delivers every scheduled view now (the failure detector has converged).
    pub fn settle_views(&mut self) {
        while let Some((_, delivery)) = self.view_queue.pop_first() {
            self.adopt(delivery);
        }
    }

    fn adopt(&mut self, delivery: ViewDelivery) {
        self.steps += 1;
        let ViewDelivery {
            host: id,
            epoch,
            members,
        } = delivery;
        let Some(host) = self.hosts.get_mut(&id) else {
            return;
        };
        if epoch <= host.node.epoch() {
            return;
        }
        let mut out = host.node.set_members(epoch, members.clone());
        out.extend(host.directory.set_members(epoch, members));
        self.checker.on_view_adopted(id);
        self.note(|| format!("n{id} adopts e{epoch}"), &[9, id.0, epoch]);
        self.dispatch(id, out);
        self.check();
    }

    fn note_recovery(&mut self) {
        let epoch = self.view.0;
        if let Some(issued) = self.view_issued_tick.get(&epoch).copied()
            && self.view_settled()
        {
            self.recovery_ticks_max = self.recovery_ticks_max.max(self.now_tick - issued);
            self.view_issued_tick.remove(&epoch);
        }
    }

    /// Advances one tick: delivers what is due, then ticks every node and directory.
    pub fn run_tick(&mut self) {
        self.now_tick += 1;
        while let Some(entry) = self.view_queue.first_entry() {
            if entry.key().0 > self.now_tick {
                break;
            }
            let delivery = entry.remove();
            self.adopt(delivery);
        }
        let now_us = self.now_tick * TICK_US;
        while let Some(envelope) = self.net.pop_due(now_us) {
            self.deliver(envelope);
        }
        while let Some(entry) = self.backing_queue.first_entry() {
            if entry.key().0 > self.now_tick {
                break;
            }
            let (home, request) = entry.remove();
            self.deliver_backing(home, request);
        }
        let ids: Vec<NodeId> = self.hosts.keys().copied().collect();
        for id in ids {
            self.steps += 1;
            let host = self.hosts.get_mut(&id).expect("known node");
            let mut out = host.node.tick();
            out.extend(host.directory.tick());
            self.dispatch(id, out);
            self.check();
        }
        self.note_recovery();
    }

    /// After every node flushed: the backing store must hold the newest version of every key.
    pub fn check_backing(&mut self) {
        if let Err(why) = self.checker.check_backing(&self.backing) {
            self.fail(why);
        }
    }
}
