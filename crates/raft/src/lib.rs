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
#![warn(missing_docs)]

mod config;
mod entry;
mod error;
mod membership;
mod message;
mod ready;
mod types;

pub use config::{RaftConfig, TestBugs};
pub use entry::{Entry, EntryPayload, HardState, PersistedState, Snapshot, SnapshotMeta};
pub use error::{ConfigError, ProposeError, RaftError, ReadError, TransferError};
pub use membership::{Membership, MembershipChange};
pub use message::{CampaignKind, ConflictHint, Message, MessageBody};
pub use ready::{ReadState, Ready};
pub use types::{LogIndex, NodeId, ReadId, Term};
