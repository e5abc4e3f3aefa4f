//! Pure MESI coherence protocol (directory and cache node) and bounded LRU/LFU line stores.
//!
//! This crate is the *core* of the distsync cache service: it takes inputs (a local operation,
//! a message from another node, a backing-store answer, a tick) and returns effects
//! ([`Outbound`]: messages to send, backing-store requests, finished operations). It never reads
//! a clock, a socket, a file or a random source; the shell (server, simulator) carries the
//! effects out. See `docs/cache-protocol.md` for the transition tables.
//!
//! - [`CacheNode`]: the node side: a bounded [`LineStore`] of M/E/S lines, hits served locally
//!   under a coherence lease, misses and upgrades as transactions with the key's home.
//! - [`Directory`]: the home side: per key the holders and a queue, one transaction at a time.
//! - [`LineStore`]: O(1) LRU or LFU store bounded by entries and/or bytes.
//!
//! Guarantees (checked by the simulator after every step): at most one node holds a key in M
//! or E, and then no other node serves it; every valid copy holds the newest version; a read
//! returns a written value no older than the last write completed before it began; after
//! `flush` the backing store holds every key's last write. Lost, duplicated and reordered
//! messages are survived by retransmission on [`CacheNode::tick`] / [`Directory::tick`]. A node
//! serves a line only under its home's coherence lease; a home revokes a silent sharer once its
//! lease has surely expired. Writes are acknowledged under [`WritePolicy::WriteBack`] at once or
//! under [`WritePolicy::WriteThrough`] once in the backing store.
//!
//! Membership is dynamic: [`CacheNode::set_members`] and [`Directory::set_members`] install a
//! view `(epoch, members)`; keys whose home changes are rebuilt at the new home from what every
//! member reports (`Holdings`), lines of removed nodes are dropped, transactions are re-sent to
//! the new homes. A shell that changes membership must stamp every message with the sender's
//! epoch and deliver it with [`CacheNode::on_message_at`] / [`Directory::handle_at`], which drop
//! messages of any other epoch.
//!
//! What it is not: the IO shell (transport, Redis, HTTP) and the failure detector (the shell
//! decides who is a member).
//!
//! # Drive loop
//!
//! ```
//! use bytes::Bytes;
//! use distsync_cache::{
//!     BackingOp, BackingResponse, BackingResult, CacheConfig, CacheNode, Directory, LineData,
//!     LineState, NodeId, OpResult, OpStep, Outbound,
//! };
//! use std::collections::{BTreeMap, VecDeque};
//!
//! // One node that is also the home of every key; the backing store is a map.
//! let id = NodeId(1);
//! let mut node = CacheNode::new(id, CacheConfig::default(), |_: &[u8]| NodeId(1), vec![id])?;
//! let mut home = Directory::new(id, CacheConfig::default())?;
//! let mut backing: BTreeMap<Bytes, LineData> = BTreeMap::new();
//!
//! let OpStep::Pending { op, outbound } = node.write("k".into(), "v1".into())? else {
//!     unreachable!("a write miss asks the home")
//! };
//! let mut queue: VecDeque<Outbound> = outbound.into();
//! let mut done = None;
//! while let Some(effect) = queue.pop_front() {
//!     match effect {
//!         Outbound::Send { to: _, message } if message.is_for_directory() => {
//!             queue.extend(home.handle(id, message))
//!         }
//!         Outbound::Send { to: _, message } => queue.extend(node.on_message(id, message)),
//!         Outbound::Backing(request) => {
//!             let result = match request.op {
//!                 BackingOp::Read => BackingResult::Read(
//!                     backing.get(&request.key).cloned().unwrap_or_default(),
//!                 ),
//!                 BackingOp::Write(data) => {
//!                     backing.insert(request.key.clone(), data);
//!                     BackingResult::Written
//!                 }
//!             };
//!             queue.extend(home.on_backing(BackingResponse { id: request.id, key: request.key, result }));
//!         }
//!         Outbound::Complete(completion) if completion.op == op => done = Some(completion.result),
//!         Outbound::Complete(_) => {}
//!     }
//! }
//! assert!(matches!(done, Some(OpResult::Written(_))));
//! assert_eq!(node.state_of(&"k".into()), LineState::Modified);
//! # Ok::<(), distsync_cache::CacheError>(())
//! ```

#![warn(missing_docs)]

mod config;
mod directory;
mod error;
mod line;
mod node;
mod protocol;
pub mod store;
mod types;

pub use config::{CacheConfig, HashSeed, InjectedBugs, WritePolicy};
pub use directory::{Directory, DirectoryEntry, EPOCH_SEQ_SHIFT, HolderMode, Holding};
pub use error::CacheError;
pub use line::{Line, LineState};
pub use node::{CacheNode, HomeSelector, NodeLoad};
pub use protocol::{
    BackingOp, BackingRequest, BackingResponse, BackingResult, CoherenceMessage, Completion,
    HeldLine, OpResult, OpStep, Outbound,
};
pub use store::{EntryUse, Evicted, EvictionPolicy, LineKey, LineStore, StoreLimits};
pub use types::{
    BackingRequestId, DirectorySeq, Key, LineData, NodeId, OpId, TxnId, Value, Version,
};
