//! The wait-for graph over sessions: an edge `a -> b` means session `a` waits for a lock that
//! session `b` holds, or for which `b` is queued ahead of `a` in an incompatible mode.
//!
//! The table keeps the graph acyclic: a wait whose edges would close a cycle is refused with
//! that cycle. Releases, grants and withdrawals only ever shrink reachability, so the check at
//! the moment a wait is added is the only one needed.

use crate::session::SessionId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Directed multigraph over sessions, with deterministic iteration (sorted adjacency) so every
/// replica reports the same cycle.
///
/// Edges are counted: one session can wait for another through several lock names, and each
/// name adds and removes its own edges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaitForGraph {
    out: BTreeMap<SessionId, BTreeMap<SessionId, u32>>,
}

impl WaitForGraph {
    /// An empty graph.
    pub fn new() -> WaitForGraph {
        WaitForGraph::default()
    }

    /// Add one edge `from -> to` (counted).
    pub fn add_edge(&mut self, from: SessionId, to: SessionId) {
        *self.out.entry(from).or_default().entry(to).or_insert(0) += 1;
    }

    /// Remove one count of the edge `from -> to`.
    ///
    /// # Panics
    /// If the edge is absent: the table removes exactly the edges it added.
    pub fn remove_edge(&mut self, from: SessionId, to: SessionId) {
        let targets = self
            .out
            .get_mut(&from)
            .unwrap_or_else(|| panic!("removing absent wait-for edge {from} -> {to}"));
        let count = targets
            .get_mut(&to)
            .unwrap_or_else(|| panic!("removing absent wait-for edge {from} -> {to}"));
        *count -= 1;
        if *count == 0 {
            targets.remove(&to);
            if targets.is_empty() {
                self.out.remove(&from);
            }
        }
    }

    /// The sessions `session` waits for, in ascending id order.
    pub fn waits_for(&self, session: SessionId) -> impl Iterator<Item = SessionId> + '_ {
        self.out
            .get(&session)
            .into_iter()
            .flat_map(|targets| targets.keys().copied())
    }

    /// Number of distinct edges.
    pub fn edge_count(&self) -> usize {
        self.out.values().map(BTreeMap::len).sum()
    }

    /// Whether the graph has no edges.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// A shortest cycle through `start`, as `[start, s1, …, sk]` where each waits for the next and
    /// `sk` waits for `start`; `None` if `start` is on no cycle.
    ///
    /// Breadth-first over sorted adjacency, so the answer is the same on every replica: among the
    /// shortest cycles, the one whose path is smallest in visiting order.
    pub fn find_cycle_through(&self, start: SessionId) -> Option<Vec<SessionId>> {
        let mut parent: BTreeMap<SessionId, SessionId> = BTreeMap::new();
        let mut frontier = VecDeque::from([start]);
        while let Some(node) = frontier.pop_front() {
            for next in self.waits_for(node) {
                if next == start {
                    let mut cycle = vec![node];
                    let mut at = node;
                    while at != start {
                        at = parent[&at];
                        cycle.push(at);
                    }
                    cycle.reverse();
                    return Some(cycle);
                }
                if let std::collections::btree_map::Entry::Vacant(slot) = parent.entry(next) {
                    slot.insert(node);
                    frontier.push_back(next);
                }
            }
        }
        None
    }

    /// Whether the graph has no cycle at all (Kahn's algorithm; used by checks and tests).
    pub fn is_acyclic(&self) -> bool {
        let mut indegree: BTreeMap<SessionId, usize> = BTreeMap::new();
        for (from, targets) in &self.out {
            indegree.entry(*from).or_insert(0);
            for to in targets.keys() {
                *indegree.entry(*to).or_insert(0) += 1;
            }
        }
        let mut ready: Vec<SessionId> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(s, _)| *s)
            .collect();
        let mut removed = BTreeSet::new();
        while let Some(node) = ready.pop() {
            removed.insert(node);
            for to in self.waits_for(node) {
                let d = indegree.get_mut(&to).expect("every target has an indegree");
                *d -= 1;
                if *d == 0 {
                    ready.push(to);
                }
            }
        }
        removed.len() == indegree.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(u64, u64)]) -> WaitForGraph {
        let mut g = WaitForGraph::new();
        for (a, b) in edges {
            g.add_edge(SessionId(*a), SessionId(*b));
        }
        g
    }

    fn ids(v: &[u64]) -> Vec<SessionId> {
        v.iter().map(|s| SessionId(*s)).collect()
    }

    #[test]
    fn finds_the_shortest_cycle_starting_at_the_requester() {
        // Proves the cycle is reported in wait-for order from the start node, and the shortest
        // of two cycles wins.
        let g = graph(&[(1, 2), (2, 3), (3, 1), (1, 4), (4, 1)]);
        assert_eq!(g.find_cycle_through(SessionId(1)), Some(ids(&[1, 4])));
        assert_eq!(g.find_cycle_through(SessionId(2)), Some(ids(&[2, 3, 1])));
    }

    #[test]
    fn no_cycle_in_a_diamond() {
        // Proves converging paths (a diamond) are not mistaken for a cycle.
        let g = graph(&[(1, 2), (1, 3), (2, 4), (3, 4)]);
        assert_eq!(g.find_cycle_through(SessionId(1)), None);
        assert!(g.is_acyclic());
        assert!(!graph(&[(1, 2), (2, 1)]).is_acyclic());
    }

    #[test]
    fn counted_edges_disappear_only_when_every_count_is_removed() {
        // Proves edges added through two lock names survive the removal of one.
        let mut g = graph(&[(1, 2), (1, 2)]);
        g.remove_edge(SessionId(1), SessionId(2));
        assert_eq!(g.waits_for(SessionId(1)).collect::<Vec<_>>(), ids(&[2]));
        g.remove_edge(SessionId(1), SessionId(2));
        assert!(g.is_empty());
        assert_eq!(g.edge_count(), 0);
    }

    #[test]
    #[should_panic(expected = "absent wait-for edge")]
    fn removing_an_absent_edge_panics() {
        // Proves edge bookkeeping errors are caught, not silently ignored.
        WaitForGraph::new().remove_edge(SessionId(1), SessionId(2));
    }
}
