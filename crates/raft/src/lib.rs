//! A pure, deterministic Raft consensus core.
//!
//! This crate is the protocol and nothing else: no threads, no sockets, no files, no clock and no
//! ambient randomness. A [`RaftNode`] is driven by its caller (the "shell"), which feeds it
//! messages, ticks and proposals and carries out the [`Ready`] batches it hands back, in the order
//! [`Ready`] documents: persist, send, apply, advance. Because nothing inside reads the outside
//! world, the same inputs always give the same outputs, which is what lets the simulator in
//! `distsync-sim` explore crashes and partitions from a seed and replay any failure exactly.
//!
//! What it implements: leader election with randomized timeouts, PreVote and CheckQuorum with
//! leader stickiness, log replication with the consistency check, fast conflict backtracking and
//! pipelined, batched appends under a per-follower in-flight window; commitment by counting only
//! current-term entries (a no-op opens every term); snapshots and InstallSnapshot; ReadIndex
//! reads; single-server membership changes with learners; leadership transfer.
//!
//! What it is not: a storage engine or a transport. The log lives in memory between snapshots and
//! is handed to the shell to persist; on restart the shell hands back what it persisted.
//!
//! # The drive loop
//!
//! ```
//! use distsync_raft::{Membership, NodeId, RaftConfig, RaftNode};
//!
//! let membership = Membership::with_voters([NodeId(1)]);
//! let mut node = RaftNode::new(RaftConfig::new(NodeId(1)), membership, 7).unwrap();
//! let mut applied = Vec::new();
//! for _ in 0..100 {
//!     node.tick(); // the shell calls this on a timer, e.g. every 10 ms
//!     if node.status().role == distsync_raft::Role::Leader && applied.is_empty() {
//!         node.propose(bytes::Bytes::from_static(b"set x=1")).unwrap();
//!     }
//!     while node.has_ready() {
//!         let ready = node.ready();
//!         // 1. persist ready.snapshot, ready.entries, ready.hard_state; fsync
//!         // 2. send ready.messages to their `to` nodes
//!         // 3. apply ready.committed_entries to the state machine
//!         applied.extend(ready.committed_entries.iter().map(|entry| entry.index));
//!         // 4. tell the node what was done
//!         node.advance(ready);
//!     }
//! }
//! assert!(!applied.is_empty());
//! ```
#![warn(missing_docs)]

mod config;
mod election;
mod entry;
mod error;
mod log;
pub mod mem_cluster;
mod membership;
mod message;
mod node;
mod progress;
mod read_index;
mod ready;
mod replication;
mod types;

pub use config::{RaftConfig, TestBugs};
pub use entry::{Entry, EntryPayload, HardState, PersistedState, Snapshot, SnapshotMeta};
pub use error::{ConfigError, ProposeError, RaftError, ReadError, TransferError};
pub use mem_cluster::MemCluster;
pub use membership::{Membership, MembershipChange};
pub use message::{CampaignKind, ConflictHint, Message, MessageBody};
pub use node::{Proposal, RaftNode, Role, Status};
pub use ready::{ReadState, Ready};
pub use types::{LogIndex, NodeId, ReadId, Term};

#[cfg(test)]
mod tests;
