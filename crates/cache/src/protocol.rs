//! Messages between nodes and homes, backing-store effects, and operation completions.
//!
//! Every request a node sends is retransmitted on `tick` until answered, and every home-side
//! message that expects an answer (`Invalidate`, `Fetch`, `Grant`) likewise; duplicates are
//! recognised by [`TxnId`] (node transactions) and [`DirectorySeq`] (home transactions).

use crate::line::LineState;
use crate::types::{BackingRequestId, DirectorySeq, Key, LineData, NodeId, OpId, TxnId, Version};

/// What a node holds of one key, reported to the key's home after a membership change so that
/// the home can rebuild the key's directory entry (see `docs/cache-protocol.md`, "Membership").
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldLine {
    /// The key.
    pub key: Key,
    /// M, E or S: the node's copy. Invalid: the node holds no copy but has dirty `data` the
    /// previous home may never have written back: a `PutModified` not yet acknowledged, or a
    /// `FetchResponse` it answered.
    pub state: LineState,
    /// The grant sequence of the copy (for Invalid: the answered `Fetch`'s sequence).
    pub grant: DirectorySeq,
    /// The data.
    pub data: LineData,
    /// The data may be newer than the backing store.
    pub dirty: bool,
}

/// A node-to-node coherence message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CoherenceMessage {
    // ---- node -> home: transaction requests (retransmitted until answered) ----
    /// Read miss: asks for a readable copy (S, or E when no other node holds one).
    GetShared {
        /// The key.
        key: Key,
        /// The requester's transaction.
        txn: TxnId,
    },
    /// Write miss from Invalid: asks for the only copy (M).
    GetModified {
        /// The key.
        key: Key,
        /// The requester's transaction.
        txn: TxnId,
    },
    /// Write hit on a Shared copy: asks for M (the requester has already dropped its S copy, so
    /// the grant carries the data).
    Upgrade {
        /// The key.
        key: Key,
        /// The requester's transaction.
        txn: TxnId,
    },
    /// Eviction of a dirty owned line: the data to write back. Answered by `PutAck`.
    PutModified {
        /// The key.
        key: Key,
        /// The requester's transaction.
        txn: TxnId,
        /// The line's data.
        data: LineData,
        /// The line's grant sequence (ignored by the home unless it still names this copy).
        grant: DirectorySeq,
    },
    // ---- node -> home: notices and answers ----
    /// Eviction of a Shared line (not answered; a lost notice leaves a harmless stale sharer).
    PutShared {
        /// The key.
        key: Key,
        /// Grant sequence of the dropped copy.
        grant: DirectorySeq,
    },
    /// Eviction of a clean Exclusive (or clean Modified) line (not answered).
    PutExclusive {
        /// The key.
        key: Key,
        /// Grant sequence of the dropped copy.
        grant: DirectorySeq,
    },
    /// The grant of `txn` was installed; the home may start the key's next transaction.
    GrantAck {
        /// The key.
        key: Key,
        /// The granted transaction.
        txn: TxnId,
    },
    /// The copy named by `Invalidate { seq }` is gone (or was never there).
    InvalidateAck {
        /// The key.
        key: Key,
        /// The home transaction being answered.
        seq: DirectorySeq,
    },
    /// Answer to `Fetch`: the owner's data (or `None` if it no longer holds the line).
    FetchResponse {
        /// The key.
        key: Key,
        /// The home transaction being answered.
        seq: DirectorySeq,
        /// The owner's data, if it still had the line.
        data: Option<LineData>,
        /// The data is newer than the backing store.
        dirty: bool,
    },
    /// Write-through of an owner's write; answered by `WriteBackAck` once it is in the backing
    /// store.
    WriteBack {
        /// The key.
        key: Key,
        /// The written data.
        data: LineData,
    },
    /// After a membership change: everything the sender holds of the keys the receiver now
    /// homes (possibly nothing). Retransmitted until `HoldingsAck`.
    Holdings {
        /// The sender's copies and in-transit data of those keys.
        lines: Vec<HeldLine>,
    },
    /// Lease renewal probe.
    Heartbeat {
        /// The sender's tick when sent; echoed back.
        sent_tick: u64,
    },
    // ---- home -> node ----
    /// Grant of a copy in `state` (S, E or M) with its data. Answered by `GrantAck`.
    Grant {
        /// The key.
        key: Key,
        /// The request being granted.
        txn: TxnId,
        /// The home transaction; becomes the line's grant sequence.
        seq: DirectorySeq,
        /// S, E or M.
        state: LineState,
        /// The current data.
        data: LineData,
    },
    /// Drop your Shared copy (if granted before `seq`) and answer `InvalidateAck`.
    Invalidate {
        /// The key.
        key: Key,
        /// The home transaction.
        seq: DirectorySeq,
    },
    /// Send your owned copy's data and drop to `downgrade_to` (Shared or Invalid).
    Fetch {
        /// The key.
        key: Key,
        /// The home transaction.
        seq: DirectorySeq,
        /// Shared (another node reads) or Invalid (another node writes).
        downgrade_to: LineState,
    },
    /// The `PutModified` of `txn` is done (written back, or superseded).
    PutAck {
        /// The key.
        key: Key,
        /// The eviction transaction.
        txn: TxnId,
    },
    /// The backing store holds `version` (or newer) of `key`.
    WriteBackAck {
        /// The key.
        key: Key,
        /// The acknowledged version.
        version: Version,
    },
    /// The home recorded the sender's `Holdings` for the current membership epoch.
    HoldingsAck,
    /// Answer to `Heartbeat`.
    HeartbeatAck {
        /// The echoed tick.
        sent_tick: u64,
    },
}

impl CoherenceMessage {
    /// Whether the message is addressed to the home's [`crate::Directory`] (otherwise to the
    /// [`crate::CacheNode`]).
    pub fn is_for_directory(&self) -> bool {
        matches!(
            self,
            CoherenceMessage::GetShared { .. }
                | CoherenceMessage::GetModified { .. }
                | CoherenceMessage::Upgrade { .. }
                | CoherenceMessage::PutModified { .. }
                | CoherenceMessage::PutShared { .. }
                | CoherenceMessage::PutExclusive { .. }
                | CoherenceMessage::GrantAck { .. }
                | CoherenceMessage::InvalidateAck { .. }
                | CoherenceMessage::FetchResponse { .. }
                | CoherenceMessage::WriteBack { .. }
                | CoherenceMessage::Holdings { .. }
                | CoherenceMessage::Heartbeat { .. }
        )
    }

    /// The key the message is about (`None` for heartbeats and holdings reports).
    pub fn key(&self) -> Option<&Key> {
        match self {
            CoherenceMessage::GetShared { key, .. }
            | CoherenceMessage::GetModified { key, .. }
            | CoherenceMessage::Upgrade { key, .. }
            | CoherenceMessage::PutModified { key, .. }
            | CoherenceMessage::PutShared { key, .. }
            | CoherenceMessage::PutExclusive { key, .. }
            | CoherenceMessage::GrantAck { key, .. }
            | CoherenceMessage::InvalidateAck { key, .. }
            | CoherenceMessage::FetchResponse { key, .. }
            | CoherenceMessage::WriteBack { key, .. }
            | CoherenceMessage::Grant { key, .. }
            | CoherenceMessage::Invalidate { key, .. }
            | CoherenceMessage::Fetch { key, .. }
            | CoherenceMessage::PutAck { key, .. }
            | CoherenceMessage::WriteBackAck { key, .. } => Some(key),
            CoherenceMessage::Heartbeat { .. }
            | CoherenceMessage::HeartbeatAck { .. }
            | CoherenceMessage::Holdings { .. }
            | CoherenceMessage::HoldingsAck => None,
        }
    }
}

/// A request to the backing store ("main memory"), issued only by a key's home.
///
/// The shell (Redis, or an in-memory map) must store each key's value together with its
/// [`Version`], apply a `Write` only if its version is at least the stored one (so a delayed
/// retransmission never overwrites newer data), and answer with [`BackingResponse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackingRequest {
    /// Correlation id, echoed in the response.
    pub id: BackingRequestId,
    /// The key.
    pub key: Key,
    /// What to do.
    pub op: BackingOp,
}

/// What a [`BackingRequest`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackingOp {
    /// Read the key's value and version (`None`/0 when absent).
    Read,
    /// Store the data if its version is at least the stored one; a `None` value deletes.
    Write(LineData),
}

/// The backing store's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackingResponse {
    /// The request's id.
    pub id: BackingRequestId,
    /// The key.
    pub key: Key,
    /// The outcome.
    pub result: BackingResult,
}

/// Outcome of a [`BackingRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackingResult {
    /// The stored data (for `Read`).
    Read(LineData),
    /// The write is applied (or a newer version was already stored).
    Written,
}

/// The result of a local operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// A read's data (`value == None`: not found).
    Read(LineData),
    /// A write or delete took effect with this version.
    Written(Version),
    /// The line is no longer held (written back first if it was dirty).
    Evicted,
    /// Every line held when the flush started is written back and dropped.
    Flushed,
}

/// A local operation finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The operation.
    pub op: OpId,
    /// Its key (empty for `flush`).
    pub key: Key,
    /// Its result.
    pub result: OpResult,
}

/// An effect the shell must carry out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Send `message` to node `to` (possibly this node itself).
    Send {
        /// Destination node.
        to: NodeId,
        /// The message.
        message: CoherenceMessage,
    },
    /// Perform a backing-store request and feed the answer to `Directory::on_backing`.
    Backing(BackingRequest),
    /// Report a finished local operation to whoever awaits it.
    Complete(Completion),
}

/// What a local operation returned right away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpStep {
    /// Finished immediately (a hit, or a write on an owned line under write-back).
    Done {
        /// The result.
        result: OpResult,
        /// Effects to carry out (e.g. a `PutShared` notice of an eviction).
        outbound: Vec<Outbound>,
    },
    /// Waiting on a coherence transaction; an [`Outbound::Complete`] with `op` follows later.
    Pending {
        /// The operation to wait for.
        op: OpId,
        /// Effects to carry out (the request to the home, …).
        outbound: Vec<Outbound>,
    },
}
