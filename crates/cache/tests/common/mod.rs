//! A reliable, synchronous, FIFO harness: nodes 1..=n hold caches, node 0 is the home of every
//! key, the backing store is a map. Every message is recorded in a trace.

use std::collections::{BTreeMap, VecDeque};

use distsync_cache::{
    BackingOp, BackingResponse, BackingResult, CacheConfig, CacheNode, CoherenceMessage,
    Completion, Directory, Key, LineData, LineState, NodeId, OpId, OpResult, OpStep, Outbound,
    StoreLimits,
};

pub const HOME: NodeId = NodeId(0);

pub fn home_of(_: &[u8]) -> NodeId {
    HOME
}

pub type Node = CacheNode<fn(&[u8]) -> NodeId>;

pub fn config(entries_max: usize) -> CacheConfig {
    CacheConfig {
        store_limits: StoreLimits::entries(entries_max),
        lease_ticks: 1_000,
        ..CacheConfig::default()
    }
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    pub home: Directory,
    pub backing: BTreeMap<Key, LineData>,
    queue: VecDeque<(NodeId, Outbound)>,
    pub completions: Vec<Completion>,
    pub trace: Vec<String>,
    /// Message names (as in the trace) whose next occurrence is lost.
    pub lose_once: Vec<String>,
    /// A node cut off from everyone: every message from or to it is lost.
    pub partitioned: Option<NodeId>,
}

pub fn name(message: &CoherenceMessage) -> String {
    match message {
        CoherenceMessage::Grant { state, .. } => format!("Grant({state})"),
        CoherenceMessage::Fetch { downgrade_to, .. } => format!("Fetch(->{downgrade_to})"),
        CoherenceMessage::FetchResponse { data, dirty, .. } => {
            format!(
                "FetchResponse({}{})",
                if data.is_some() { "data" } else { "none" },
                if *dirty { ",dirty" } else { "" }
            )
        }
        other => {
            let debug = format!("{other:?}");
            debug
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string()
        }
    }
}

impl Cluster {
    pub fn new(nodes: u64, config: CacheConfig) -> Self {
        let peers = vec![HOME];
        let nodes = (1..=nodes)
            .map(|id| {
                let node = CacheNode::new(
                    NodeId(id),
                    config.clone(),
                    home_of as fn(&[u8]) -> NodeId,
                    peers.clone(),
                )
                .expect("valid config");
                (NodeId(id), node)
            })
            .collect();
        let mut cluster = Self {
            nodes,
            home: Directory::new(HOME, config).expect("valid config"),
            backing: BTreeMap::new(),
            queue: VecDeque::new(),
            completions: Vec::new(),
            trace: Vec::new(),
            lose_once: Vec::new(),
            partitioned: None,
        };
        // One tick: every node sends a heartbeat, the answers start the leases.
        let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
        for id in ids {
            let out = cluster.nodes.get_mut(&id).expect("node").tick();
            cluster.queue.extend(out.into_iter().map(|o| (id, o)));
        }
        cluster.run();
        cluster.trace.clear();
        cluster
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&NodeId(id)]
    }

    pub fn state(&self, id: u64, key: &str) -> LineState {
        self.node(id).state_of(&Key::from(key.to_string()))
    }

    /// Ticks node `id` (and the home with it), queueing what they send.
    pub fn tick(&mut self, id: u64) {
        let out = self.nodes.get_mut(&NodeId(id)).expect("node").tick();
        self.queue.extend(out.into_iter().map(|o| (NodeId(id), o)));
        let out = self.home.tick();
        self.queue.extend(out.into_iter().map(|o| (HOME, o)));
    }

    /// Loses every queued effect that is a message (a partition); returns how many.
    pub fn drop_messages(&mut self) -> usize {
        let before = self.queue.len();
        self.queue
            .retain(|(_, effect)| !matches!(effect, Outbound::Send { .. }));
        before - self.queue.len()
    }

    /// Queues the effects of a local operation without delivering them.
    pub fn queue_step(&mut self, id: u64, step: OpStep) -> Option<OpId> {
        match step {
            OpStep::Done { outbound, .. } => {
                self.queue
                    .extend(outbound.into_iter().map(|o| (NodeId(id), o)));
                None
            }
            OpStep::Pending { op, outbound } => {
                self.queue
                    .extend(outbound.into_iter().map(|o| (NodeId(id), o)));
                Some(op)
            }
        }
    }

    /// Delivers every effect in FIFO order until nothing is left.
    pub fn run(&mut self) {
        while self.step() {}
    }

    /// Delivers the oldest effect; false when there was none.
    pub fn step(&mut self) -> bool {
        let Some((from, effect)) = self.queue.pop_front() else {
            return false;
        };
        match effect {
            Outbound::Send { to, message } => {
                if self.partitioned.is_some_and(|cut| cut == from || cut == to) {
                    return true;
                }
                if let Some(index) = self.lose_once.iter().position(|n| *n == name(&message)) {
                    self.lose_once.remove(index);
                    self.trace.push(format!("LOST {}", name(&message)));
                    return true;
                }
                if !matches!(
                    message,
                    CoherenceMessage::Heartbeat { .. } | CoherenceMessage::HeartbeatAck { .. }
                ) {
                    let label = |id: NodeId| {
                        if id == HOME {
                            "H".to_string()
                        } else {
                            format!("N{}", id.0)
                        }
                    };
                    self.trace
                        .push(format!("{}->{} {}", label(from), label(to), name(&message)));
                }
                let out = if message.is_for_directory() {
                    assert_eq!(to, HOME, "directory messages go to the home");
                    self.home.handle(from, message)
                } else {
                    self.nodes
                        .get_mut(&to)
                        .expect("known node")
                        .on_message(from, message)
                };
                self.queue.extend(out.into_iter().map(|o| (to, o)));
            }
            Outbound::Backing(request) => {
                let result = match request.op {
                    BackingOp::Read => {
                        self.trace.push("H backing Read".into());
                        BackingResult::Read(
                            self.backing.get(&request.key).cloned().unwrap_or_default(),
                        )
                    }
                    BackingOp::Write(data) => {
                        self.trace.push("H backing Write".into());
                        let stored = self.backing.entry(request.key.clone()).or_default();
                        if data.version >= stored.version {
                            *stored = data;
                        }
                        BackingResult::Written
                    }
                };
                let out = self.home.on_backing(BackingResponse {
                    id: request.id,
                    key: request.key,
                    result,
                });
                self.queue.extend(out.into_iter().map(|o| (HOME, o)));
            }
            Outbound::Complete(completion) => self.completions.push(completion),
        }
        true
    }

    /// Runs a local operation to completion and returns its result.
    pub fn finish(&mut self, id: u64, step: OpStep) -> OpResult {
        match step {
            OpStep::Done { result, outbound } => {
                self.queue
                    .extend(outbound.into_iter().map(|o| (NodeId(id), o)));
                self.run();
                result
            }
            OpStep::Pending { op, outbound } => {
                self.queue
                    .extend(outbound.into_iter().map(|o| (NodeId(id), o)));
                self.run();
                self.take_completion(op)
            }
        }
    }

    pub fn take_completion(&mut self, op: OpId) -> OpResult {
        let index = self
            .completions
            .iter()
            .position(|completion| completion.op == op)
            .expect("operation completed");
        self.completions.remove(index).result
    }

    pub fn read(&mut self, id: u64, key: &str) -> LineData {
        let step = self
            .nodes
            .get_mut(&NodeId(id))
            .expect("node")
            .read(Key::from(key.to_string()))
            .expect("accepted");
        match self.finish(id, step) {
            OpResult::Read(data) => data,
            other => panic!("read returned {other:?}"),
        }
    }

    pub fn write(&mut self, id: u64, key: &str, value: &str) -> distsync_cache::Version {
        let step = self
            .nodes
            .get_mut(&NodeId(id))
            .expect("node")
            .write(Key::from(key.to_string()), value.to_string().into())
            .expect("accepted");
        match self.finish(id, step) {
            OpResult::Written(version) => version,
            other => panic!("write returned {other:?}"),
        }
    }

    pub fn evict(&mut self, id: u64, key: &str) {
        let step = self
            .nodes
            .get_mut(&NodeId(id))
            .expect("node")
            .evict(Key::from(key.to_string()))
            .expect("accepted");
        assert_eq!(self.finish(id, step), OpResult::Evicted);
    }

    pub fn flush(&mut self, id: u64) {
        let step = self.nodes.get_mut(&NodeId(id)).expect("node").flush();
        assert_eq!(self.finish(id, step), OpResult::Flushed);
    }

    pub fn backing_value(&self, key: &str) -> Option<String> {
        self.backing
            .get(&Key::from(key.to_string()))
            .and_then(|data| data.value.as_ref())
            .map(|value| String::from_utf8_lossy(value).into_owned())
    }
}

pub fn value(data: &LineData) -> Option<String> {
    data.value
        .as_ref()
        .map(|value| String::from_utf8_lossy(value).into_owned())
}
