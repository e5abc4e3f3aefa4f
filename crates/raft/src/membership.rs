//! Cluster membership: who votes, who only listens, and how it changes one server at a time.
//!
//! Changes follow the single-server approach of Ongaro's thesis (§4.1): any two consecutive
//! configurations that differ by one voter share a majority, so no joint phase is needed, provided a
//! leader has at most one uncommitted change at a time. A configuration takes effect as soon as it is
//! appended to a log, not when it commits, and is rolled back if the entry is truncated.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Start replicating to a node without giving it a vote, so it can catch up first.
    AddLearner(NodeId),
    /// Give a node a vote (a learner is promoted; an unknown node is added directly).
    AddVoter(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}

/// The set of voters and learners in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Nodes that vote and count towards commit quorums.
    pub voters: BTreeSet<NodeId>,
    /// Nodes that receive the log but neither vote nor count.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A membership of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Size of a majority of voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters and learners, in id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.union(&self.learners).copied()
    }

    /// The membership after `change`; `None` when the change would be a no-op or would leave no
    /// voter at all.
    pub fn apply(&self, change: MembershipChange) -> Option<Membership> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner(id) => {
                if self.contains(id) {
                    return None;
                }
                next.learners.insert(id);
            }
            MembershipChange::AddVoter(id) => {
                if self.is_voter(id) {
                    return None;
                }
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if !self.contains(id) {
                    return None;
                }
                next.learners.remove(&id);
                next.voters.remove(&id);
                if next.voters.is_empty() {
                    return None;
                }
            }
        }
        Some(next)
    }

    /// Whether the voters in `granted` form a majority of this membership.
    pub fn has_quorum<'a>(&self, granted: impl IntoIterator<Item = &'a NodeId>) -> bool {
        granted
            .into_iter()
            .filter(|id| self.voters.contains(id))
            .count()
            >= self.quorum()
    }
}
