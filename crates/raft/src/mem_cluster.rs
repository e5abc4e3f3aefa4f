//! A minimal in-memory cluster with perfect, instant delivery: for examples, unit tests and the
//! benchmark of the core alone. Fault injection and invariant checking live in `distsync-sim`.

use crate::entry::{Entry, EntryPayload};
use crate::membership::Membership;
use crate::message::Message;
use crate::node::{RaftNode, Role};
use crate::{RaftConfig, TestBugs};
use std::collections::{BTreeMap, VecDeque};

/// Nodes wired together by a FIFO queue of messages; "persisting" keeps nothing (the nodes hold
/// their logs in memory) and applying records the committed commands per node.
#[derive(Debug)]
pub struct MemCluster {
    /// The nodes, by id.
    pub nodes: BTreeMap<crate::NodeId, RaftNode>,
    /// Commands applied by each node, in order.
    pub applied: BTreeMap<crate::NodeId, Vec<Entry>>,
    in_flight: VecDeque<Message>,
}

impl MemCluster {
    /// `size` voters with ids 1..=size, deterministic seeds, and default timing.
    pub fn new(size: u64) -> Self {
        Self::with_bugs(size, TestBugs::default())
    }

    /// As [`MemCluster::new`] with test-only bugs switched on.
    pub fn with_bugs(size: u64, bugs: TestBugs) -> Self {
        let ids: Vec<crate::NodeId> = (1..=size).map(crate::NodeId).collect();
        let membership = Membership::with_voters(ids.iter().copied());
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut config = RaftConfig::new(id);
                config.election_timeout_ticks = 10;
                config.heartbeat_interval_ticks = 2;
                config.bugs = bugs;
                let node = RaftNode::new(config, membership.clone(), id.0)
                    .expect("the default configuration is valid");
                (id, node)
            })
            .collect();
        MemCluster {
            nodes,
            applied: ids.iter().map(|&id| (id, Vec::new())).collect(),
            in_flight: VecDeque::new(),
        }
    }

    /// Carries out every node's `Ready` and delivers messages until nothing moves.
    pub fn stabilize(&mut self) {
        loop {
            let mut moved = false;
            for (id, node) in &mut self.nodes {
                while node.has_ready() {
                    moved = true;
                    let ready = node.ready();
                    self.in_flight.extend(ready.messages.iter().cloned());
                    let applied = self.applied.get_mut(id).expect("every node has a record");
                    applied.extend(
                        ready
                            .committed_entries
                            .iter()
                            .filter(|entry| matches!(entry.payload, EntryPayload::Command(_)))
                            .cloned(),
                    );
                    node.advance(ready);
                }
            }
            while let Some(message) = self.in_flight.pop_front() {
                moved = true;
                if let Some(node) = self.nodes.get_mut(&message.to) {
                    node.step(message);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Ticks every node and stabilizes, until some node leads; returns its id.
    ///
    /// # Panics
    /// If no leader emerges within 1000 ticks, which a healthy cluster never needs.
    pub fn elect(&mut self) -> crate::NodeId {
        for _ in 0..1000 {
            if let Some(leader) = self.leader() {
                return leader;
            }
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.stabilize();
        }
        panic!("no leader elected within 1000 ticks");
    }

    /// The node that currently believes it leads, if any.
    pub fn leader(&self) -> Option<crate::NodeId> {
        self.nodes
            .iter()
            .find(|(_, node)| node.role == Role::Leader)
            .map(|(&id, _)| id)
    }
}
