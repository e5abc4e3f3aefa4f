//! Membership changes: a crashed node's keys move to a new home, which rebuilds their entries
//! from what the survivors report; stale-epoch messages are ignored.
//!
//! Harness: nodes 1..=3, each a `CacheNode` and a `Directory`; a reliable FIFO network that
//! stamps every message with the sender's epoch; the backing store is a map. The home of every
//! key is the first live member of `HOME_PREFERENCE`, so a test chooses who dies.

use std::collections::{BTreeMap, VecDeque};

use distsync_cache::{
    BackingOp, BackingResponse, BackingResult, CacheConfig, CacheNode, CoherenceMessage,
    Completion, Directory, HolderMode, HomeSelector, Key, LineData, LineState, NodeId, OpResult,
    OpStep, Outbound, StoreLimits, Value, WritePolicy,
};

#[derive(Clone, Debug)]
struct PreferenceHomes {
    preference: Vec<NodeId>,
    members: Vec<NodeId>,
}

impl HomeSelector for PreferenceHomes {
    fn home_of(&self, _: &[u8]) -> NodeId {
        *self
            .preference
            .iter()
            .find(|node| self.members.contains(node))
            .expect("a preferred node is a member")
    }

    fn set_members(&mut self, members: &[NodeId]) {
        self.members = members.to_vec();
    }
}

struct Host {
    node: CacheNode<PreferenceHomes>,
    directory: Directory,
}

struct Cluster {
    hosts: BTreeMap<NodeId, Host>,
    backing: BTreeMap<Key, LineData>,
    queue: VecDeque<(NodeId, u64, Outbound)>,
    completions: Vec<Completion>,
    epoch: u64,
}

fn key() -> Key {
    Key::from("k")
}

impl Cluster {
    /// Three nodes; `preference` orders the homes (the first live one homes every key).
    fn new(write_policy: WritePolicy, preference: [u64; 3]) -> Self {
        let config = CacheConfig {
            store_limits: StoreLimits::entries(8),
            write_policy,
            ..CacheConfig::default()
        };
        let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let homes = PreferenceHomes {
            preference: preference.into_iter().map(NodeId).collect(),
            members: members.clone(),
        };
        let hosts = members
            .iter()
            .map(|id| {
                let node = CacheNode::new(*id, config.clone(), homes.clone(), members.clone())
                    .expect("valid config");
                let directory = Directory::new(*id, config.clone()).expect("valid config");
                (*id, Host { node, directory })
            })
            .collect();
        let mut cluster = Self {
            hosts,
            backing: BTreeMap::new(),
            queue: VecDeque::new(),
            completions: Vec::new(),
            epoch: 1,
        };
        // The initial view (epoch 1), so that the homes know who is removed later.
        for id in members.clone() {
            let host = cluster.hosts.get_mut(&id).expect("live");
            let mut out = host.node.set_members(1, members.clone());
            out.extend(host.directory.set_members(1, members.clone()));
            cluster.push(id, out);
        }
        cluster.run();
        cluster.ticks(1);
        cluster
    }

    fn push(&mut self, from: NodeId, out: Vec<Outbound>) {
        let epoch = self.hosts[&from].node.epoch();
        self.queue
            .extend(out.into_iter().map(|effect| (from, epoch, effect)));
    }

    fn run(&mut self) {
        while let Some((from, epoch, effect)) = self.queue.pop_front() {
            match effect {
                Outbound::Send { to, message } => {
                    let Some(host) = self.hosts.get_mut(&to) else {
                        continue; // dead
                    };
                    let out = if message.is_for_directory() {
                        host.directory.handle_at(from, epoch, message)
                    } else {
                        host.node.on_message_at(from, epoch, message)
                    };
                    self.push(to, out);
                }
                Outbound::Backing(request) => {
                    let result = match request.op {
                        BackingOp::Read => BackingResult::Read(
                            self.backing.get(&request.key).cloned().unwrap_or_default(),
                        ),
                        BackingOp::Write(data) => {
                            let stored = self.backing.entry(request.key.clone()).or_default();
                            if data.version >= stored.version {
                                *stored = data;
                            }
                            BackingResult::Written
                        }
                    };
                    let Some(host) = self.hosts.get_mut(&from) else {
                        continue;
                    };
                    let out = host.directory.on_backing(BackingResponse {
                        id: request.id,
                        key: request.key,
                        result,
                    });
                    self.push(from, out);
                }
                Outbound::Complete(completion) => self.completions.push(completion),
            }
        }
    }

    fn ticks(&mut self, count: u64) {
        for _ in 0..count {
            let ids: Vec<NodeId> = self.hosts.keys().copied().collect();
            for id in ids {
                let host = self.hosts.get_mut(&id).expect("live");
                let mut out = host.node.tick();
                out.extend(host.directory.tick());
                self.push(id, out);
            }
            self.run();
        }
    }

    /// `dead` crashes; the survivors adopt the view without it; the new homes rebuild.
    fn crash(&mut self, dead: u64) {
        self.hosts.remove(&NodeId(dead));
        self.epoch += 1;
        let members: Vec<NodeId> = self.hosts.keys().copied().collect();
        let ids = members.clone();
        for id in ids {
            let host = self.hosts.get_mut(&id).expect("live");
            let mut out = host.node.set_members(self.epoch, members.clone());
            out.extend(host.directory.set_members(self.epoch, members.clone()));
            self.push(id, out);
        }
        self.run();
        // Reports are in at once; the rebuild waits until a removed node's leases ran out.
        let config = CacheConfig::default();
        self.ticks(config.lease_ticks + config.lease_revoke_margin_ticks + 1);
        assert!(
            self.hosts
                .values()
                .all(|host| !host.directory.is_recovering() && !host.node.is_reporting()),
            "every home rebuilt its entries"
        );
    }

    fn op(&mut self, id: u64, step: OpStep) -> OpResult {
        let (op, out, done) = match step {
            OpStep::Done { result, outbound } => (None, outbound, Some(result)),
            OpStep::Pending { op, outbound } => (Some(op), outbound, None),
        };
        self.push(NodeId(id), out);
        self.run();
        if let Some(result) = done {
            return result;
        }
        let op = op.expect("pending");
        for _ in 0..200 {
            if let Some(index) = self.completions.iter().position(|c| c.op == op) {
                return self.completions.remove(index).result;
            }
            self.ticks(1);
        }
        panic!("operation {op} did not complete");
    }

    fn read(&mut self, id: u64) -> LineData {
        let step = self.node_mut(id).read(key()).expect("accepted");
        match self.op(id, step) {
            OpResult::Read(data) => data,
            other => panic!("read returned {other:?}"),
        }
    }

    fn write(&mut self, id: u64, value: &str) {
        let step = self
            .node_mut(id)
            .write(key(), Value::from(value.to_string()))
            .expect("accepted");
        assert!(matches!(self.op(id, step), OpResult::Written(_)));
    }

    fn node_mut(&mut self, id: u64) -> &mut CacheNode<PreferenceHomes> {
        &mut self.hosts.get_mut(&NodeId(id)).expect("live").node
    }

    fn state(&self, id: u64) -> LineState {
        self.hosts[&NodeId(id)].node.state_of(&key())
    }

    fn holders_at(&self, home: u64) -> Vec<(u64, HolderMode)> {
        self.hosts[&NodeId(home)]
            .directory
            .entry(&key())
            .map(|entry| {
                entry
                    .holders()
                    .iter()
                    .map(|(node, holding)| (node.0, holding.mode))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn value_of(data: &LineData) -> Option<&str> {
    data.value
        .as_ref()
        .map(|value| std::str::from_utf8(value).expect("utf-8"))
}

#[test]
fn survivor_holding_m_becomes_the_owner_at_the_new_home_and_keeps_its_dirty_data() {
    // Home 3 dies; node 1 holds the key in M with a write never written back (write-back).
    let mut cluster = Cluster::new(WritePolicy::WriteBack, [3, 2, 1]);
    cluster.write(1, "v1");
    assert_eq!(cluster.state(1), LineState::Modified);
    assert!(
        cluster.backing.is_empty(),
        "the write is not written back yet"
    );
    cluster.crash(3);
    assert_eq!(cluster.holders_at(2), vec![(1, HolderMode::Owned)]);
    assert_eq!(
        cluster.state(1),
        LineState::Modified,
        "the owner keeps its line"
    );
    // A read elsewhere fetches the surviving dirty copy, not the (empty) backing store.
    let data = cluster.read(2);
    assert_eq!(value_of(&data), Some("v1"));
    assert_eq!(cluster.state(1), LineState::Shared);
    assert_eq!(
        cluster.backing.get(&key()).and_then(value_of),
        Some("v1"),
        "the dirty data was written back when another node read it"
    );
}

#[test]
fn survivor_holding_s_becomes_a_sharer_at_the_new_home() {
    let mut cluster = Cluster::new(WritePolicy::WriteBack, [3, 2, 1]);
    cluster.write(1, "v1");
    assert_eq!(value_of(&cluster.read(2)), Some("v1"));
    assert_eq!(cluster.state(1), LineState::Shared);
    assert_eq!(cluster.state(2), LineState::Shared);
    // Rebuild synchronously (no ticks) to see exactly what the new home learned.
    cluster.hosts.remove(&NodeId(3));
    let members = vec![NodeId(1), NodeId(2)];
    for id in [1, 2] {
        let host = cluster.hosts.get_mut(&NodeId(id)).expect("live");
        let mut out = host.node.set_members(2, members.clone());
        out.extend(host.directory.set_members(2, members.clone()));
        cluster.push(NodeId(id), out);
    }
    cluster.run();
    assert!(cluster.hosts[&NodeId(2)].directory.is_recovering());
    let config = CacheConfig::default();
    for _ in 0..config.lease_ticks + config.lease_revoke_margin_ticks {
        // Only the directories tick: the nodes keep their copies (a node drops an old Shared
        // copy at its first lease renewal in the new view).
        let host = cluster.hosts.get_mut(&NodeId(2)).expect("live");
        let out = host.directory.tick();
        cluster.push(NodeId(2), out);
        cluster.run();
    }
    assert!(!cluster.hosts[&NodeId(2)].directory.is_recovering());
    assert_eq!(
        cluster.holders_at(2),
        vec![(1, HolderMode::Shared), (2, HolderMode::Shared)]
    );
    // A write through the new home invalidates the other sharer; everyone reads it.
    cluster.write(2, "v2");
    assert_eq!(cluster.state(1), LineState::Invalid);
    assert_eq!(value_of(&cluster.read(1)), Some("v2"));
}

#[test]
fn dead_owner_under_write_through_loses_nothing_acknowledged() {
    // Node 3 owns the key (written twice, acknowledged after the backing store had it) and is
    // also its home; it dies.
    let mut cluster = Cluster::new(WritePolicy::WriteThrough, [3, 2, 1]);
    cluster.write(3, "v1");
    cluster.write(3, "v2");
    assert_eq!(cluster.state(3), LineState::Modified);
    cluster.crash(3);
    assert_eq!(value_of(&cluster.read(1)), Some("v2"));
}

#[test]
fn dead_owner_under_write_through_with_a_surviving_home_loses_nothing_acknowledged() {
    // Home 1 survives; owner 3 dies. The home drops it from the holders within the rebuild.
    let mut cluster = Cluster::new(WritePolicy::WriteThrough, [1, 2, 3]);
    cluster.write(3, "v1");
    assert_eq!(cluster.holders_at(1), vec![(3, HolderMode::Owned)]);
    cluster.crash(3);
    assert_eq!(cluster.holders_at(1), vec![]);
    assert_eq!(value_of(&cluster.read(2)), Some("v1"));
}

#[test]
fn a_fetch_from_an_older_epoch_does_not_take_the_line() {
    // After the view change, the old home's Fetch arrives late: the owner must not hand its data
    // to a home that no longer serves the key (it would be lost) nor drop its copy.
    let mut cluster = Cluster::new(WritePolicy::WriteBack, [3, 2, 1]);
    cluster.write(1, "v1");
    cluster.crash(3);
    let out = cluster.node_mut(1).on_message_at(
        NodeId(3),
        1,
        CoherenceMessage::Fetch {
            key: key(),
            seq: distsync_cache::DirectorySeq(u64::MAX >> 24),
            downgrade_to: LineState::Invalid,
        },
    );
    assert!(out.is_empty());
    assert_eq!(cluster.state(1), LineState::Modified);
}

#[test]
fn a_view_that_follows_a_removal_before_its_wait_ran_out_waits_as_long() {
    // Proves a removal's wait is not skipped by a quick second view: node 3 is removed (epoch
    // 2: the new home waits lease_ticks + margin, so 3 has stopped serving under leases it
    // still holds), and a joiner is admitted (epoch 3) before that wait ran out. Epoch 3
    // removes nobody from epoch 2, yet its rebuild must wait too: node 3's leases from the
    // members of epoch 2 are as valid as before.
    let config = CacheConfig::default();
    let wait = config.lease_ticks + config.lease_revoke_margin_ticks;
    let mut directory = Directory::new(NodeId(1), config).expect("valid config");
    let report = |directory: &mut Directory, epoch: u64, members: &[u64]| {
        for member in members {
            directory.handle_at(
                NodeId(*member),
                epoch,
                CoherenceMessage::Holdings { lines: Vec::new() },
            );
        }
    };
    directory.set_members(1, [1, 2, 3].map(NodeId).to_vec());
    report(&mut directory, 1, &[1, 2, 3]);
    assert!(!directory.is_recovering(), "the first view removes nobody");
    directory.set_members(2, [1, 2].map(NodeId).to_vec());
    report(&mut directory, 2, &[1, 2]);
    directory.tick();
    assert!(directory.is_recovering(), "waiting for node 3's leases");
    directory.set_members(3, [1, 2, 4].map(NodeId).to_vec());
    report(&mut directory, 3, &[1, 2, 4]);
    for tick in 1..wait {
        directory.tick();
        assert!(
            directory.is_recovering(),
            "rebuilt {tick} ticks after the reports, before node 3's leases ran out"
        );
    }
    directory.tick();
    assert!(!directory.is_recovering());
}
