//! The Raft shell: one task owns the [`distsync_raft::RaftNode`], its write-ahead log and the
//! replicated state machine, and carries out every `Ready` in the order the core demands:
//! persist (fsync), send, apply, advance.

mod cluster;
mod driver;
mod envelope;
mod state_machine;

pub use cluster::{ClusterSpec, MemberAddress};
pub use driver::{DriverConfig, DriverError, NodeStatus, RaftHandle, spawn_driver};
pub use state_machine::{Responder, StateMachine};
