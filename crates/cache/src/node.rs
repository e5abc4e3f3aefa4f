//! The node side of the protocol: a [`CacheNode`] holds lines in a bounded [`LineStore`], serves
//! hits locally and runs coherence transactions with the keys' homes.
//!
//! Rules that keep the node simple and the home exact:
//! - At most one transaction per key is in flight (`GetShared`, `GetModified`, `Upgrade` or
//!   `PutModified`); local operations on that key wait behind it, in order.
//! - A key with a transaction has no line in the store: an `Upgrade` drops the S copy first (the
//!   grant brings the data), an evicted dirty line waits in the `PutModified` transaction until
//!   the home acknowledges it (and is served from there to a `Fetch`).
//! - A line is served only while the coherence lease of its home is valid: fewer than
//!   `lease_ticks` ticks since the node *sent* a request or heartbeat that the home answered. A
//!   node cut off from a home therefore stops serving that home's keys within `lease_ticks`.
//! - When a lapsed lease is renewed, the node first drops its Shared copies of that home's keys:
//!   the home may have revoked them (it counts a silent sharer as invalidated
//!   `lease_ticks + lease_revoke_margin_ticks` after it last confirmed that node's lease), so a
//!   partitioned reader never blocks writers for longer than that and never serves stale data.
//!   Owned (E/M) copies are never revoked in this version: their data may be the only copy.
//! - Membership ([`CacheNode::set_members`]): a new view (a higher epoch) clears every lease (so
//!   every Shared copy from before is dropped at the next renewal and never served again: the old
//!   home may have revoked it meanwhile), restarts every transaction with a new `TxnId` at the
//!   key's new home, and reports what the node holds to every member (`Holdings`, retransmitted
//!   until acknowledged). A node outside the view drops every line: it was declared dead.

use std::collections::{BTreeMap, VecDeque};

use crate::config::{CacheConfig, WritePolicy};
use crate::error::CacheError;
use crate::line::{Line, LineState};
use crate::protocol::{CoherenceMessage, Completion, HeldLine, OpResult, OpStep, Outbound};
use crate::store::{EntryUse, LineKey, LineStore};
use crate::types::{DirectorySeq, Key, LineData, NodeId, OpId, TxnId, Value, Version};

/// Chooses the home node of a key. Implemented for closures; the server uses the consistent-hash
/// ring, tests use a fixed map.
pub trait HomeSelector {
    /// The home of `key` among the current members: one of them (a node whose every member's
    /// lease is valid serves a hit without asking, see [`CacheNode::lease_valid_for`]). Must be
    /// the same on every node that has the same members.
    fn home_of(&self, key: &[u8]) -> NodeId;

    /// The membership changed: a selector that depends on it (a ring) rebuilds itself from
    /// `members` alone, so that every node computes the same homes for the same view. The
    /// default ignores it (a fixed map, as in tests without membership changes).
    fn set_members(&mut self, members: &[NodeId]) {
        let _ = members;
    }
}

impl<F: Fn(&[u8]) -> NodeId> HomeSelector for F {
    fn home_of(&self, key: &[u8]) -> NodeId {
        self(key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum OpKind {
    Read,
    Write(Option<Value>),
    Evict,
}

#[derive(Clone, Debug)]
struct QueuedOp {
    op: OpId,
    kind: OpKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TxnKind {
    GetShared,
    GetModified,
    Upgrade,
    PutModified { data: LineData, grant: DirectorySeq },
}

#[derive(Debug)]
struct PendingTxn {
    id: TxnId,
    kind: TxnKind,
    home: NodeId,
    first_sent_tick: u64,
    last_sent_tick: u64,
    queued: VecDeque<QueuedOp>,
}

#[derive(Debug)]
struct PendingWriteBack {
    data: LineData,
    last_sent_tick: u64,
    waiting: Vec<(OpId, Version)>,
}

/// Snapshot of a node's pending work, for tests, stats and the simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// Coherence transactions in flight.
    pub transactions: usize,
    /// Write-throughs not yet acknowledged.
    pub write_backs: usize,
    /// Operations waiting for a lease renewal.
    pub lease_blocked: usize,
    /// Flushes not yet finished.
    pub flushes: usize,
}

/// The node side of the MESI protocol.
#[derive(Debug)]
pub struct CacheNode<H> {
    id: NodeId,
    config: CacheConfig,
    homes: H,
    /// Members of the current view (all homes; heartbeats go to each).
    members: Vec<NodeId>,
    /// Epoch of the current view; messages of any other epoch are dropped.
    epoch: u64,
    /// Members that have not yet acknowledged this node's `Holdings` for the current epoch, and
    /// the tick they were last sent.
    holdings_unacked: BTreeMap<NodeId, u64>,
    store: LineStore<LineKey, Line>,
    txns: BTreeMap<Key, PendingTxn>,
    write_backs: BTreeMap<Key, PendingWriteBack>,
    /// Per home: the send tick of the newest answered request or heartbeat.
    lease_start_tick: BTreeMap<NodeId, u64>,
    /// Before this tick every member's lease is valid, so a hit needs no home looked up
    /// (0: some member has none). Kept with `lease_start_tick` and `members`.
    all_leases_valid_before_tick: u64,
    lease_blocked: BTreeMap<NodeId, VecDeque<(Key, QueuedOp)>>,
    flush_waiters: Vec<OpId>,
    /// Lines a flush still has to evict, the next last. A flush evicts only as many Modified
    /// lines at a time as `pending_transactions_max` allows: a home's tick walks every
    /// transaction it has in progress, and 86,000 write-backs started at once made each tick
    /// outlast the tick interval, so the node spent its shutdown retransmitting.
    flush_queue: Vec<Key>,
    /// Per key, the data this node last handed to its home in a `FetchResponse` (by home
    /// sequence and the tick it was given). A duplicated, reordered `Fetch` must get the same
    /// answer: the first answer may still be in flight, and a later "not here" arriving first
    /// would make the home fall back to the stale backing store. An answer is forgotten once
    /// the home sends anything newer for the key (its fetch transaction is then over) or, as a
    /// memory bound, when `fetch_answers_max` newer answers exist.
    fetch_answers: BTreeMap<Key, (DirectorySeq, LineData, u64)>,
    next_txn: u64,
    next_op: u64,
    now_tick: u64,
    last_heartbeat_tick: Option<u64>,
}

impl<H: HomeSelector> CacheNode<H> {
    /// A node with an empty store. `peers` are all homes (including this node) it sends
    /// heartbeats to.
    ///
    /// # Errors
    /// [`CacheError::InvalidConfig`] when the config does not validate.
    pub fn new(
        id: NodeId,
        config: CacheConfig,
        homes: H,
        peers: Vec<NodeId>,
    ) -> Result<Self, CacheError> {
        config.validate()?;
        let store = LineStore::with_hash_seed(
            config.eviction_policy,
            config.store_limits,
            config.store_hash_seed.0,
        )?;
        Ok(Self {
            id,
            config,
            homes,
            members: peers,
            epoch: 0,
            holdings_unacked: BTreeMap::new(),
            store,
            txns: BTreeMap::new(),
            write_backs: BTreeMap::new(),
            lease_start_tick: BTreeMap::new(),
            all_leases_valid_before_tick: 0,
            lease_blocked: BTreeMap::new(),
            flush_waiters: Vec::new(),
            flush_queue: Vec::new(),
            fetch_answers: BTreeMap::new(),
            next_txn: 0,
            next_op: 0,
            now_tick: 0,
            last_heartbeat_tick: None,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The local store (lines in M, E or S).
    pub fn store(&self) -> &LineStore<LineKey, Line> {
        &self.store
    }

    /// The state of this node's copy of `key` (Invalid when absent).
    pub fn state_of(&self, key: &Key) -> LineState {
        self.store
            .peek(&key[..])
            .map_or(LineState::Invalid, |line| line.state)
    }

    /// Epoch of the current membership view (0: the view given to `new`).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Members of the current view.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// The home of `key` in the current view.
    pub fn home_of(&self, key: &[u8]) -> NodeId {
        self.homes.home_of(key)
    }

    /// Whether a member has yet to acknowledge this node's holdings report.
    pub fn is_reporting(&self) -> bool {
        !self.holdings_unacked.is_empty()
    }

    /// Installs the membership view `(epoch, members)`; ignored unless `epoch` is newer than the
    /// current one. Returns the holdings reports and the re-sent requests.
    ///
    /// Why this is safe (see `docs/cache-protocol.md`, "Membership"): from now on only messages
    /// of `epoch` are accepted, so nothing the old homes decide can change this node's lines;
    /// the lines kept are reported to their new homes, which serve no key before every member
    /// reported. Owned lines stay owned (no old home can take them any more). Shared lines are
    /// never served again: the leases are cleared, and a lapsed lease is renewed only after the
    /// Shared copies of that home's keys are dropped (an old home may have revoked them).
    pub fn set_members(&mut self, epoch: u64, mut members: Vec<NodeId>) -> Vec<Outbound> {
        let mut out = Vec::new();
        if epoch <= self.epoch {
            return out;
        }
        members.sort();
        members.dedup();
        self.epoch = epoch;
        self.homes.set_members(&members);
        self.members = members;
        self.lease_start_tick.clear();
        self.all_leases_valid_before_tick = 0;
        self.last_heartbeat_tick = None;
        self.holdings_unacked.clear();
        let in_view = self.members.contains(&self.id);
        if !in_view {
            // Declared dead: whatever this node holds may already be reclaimed.
            self.store.clear();
            self.fetch_answers.clear();
        }
        // Every transaction starts over at the key's new home with a new id, so a late answer of
        // the old one (a Grant) can never be taken for the new one.
        let keys: Vec<Key> = self.txns.keys().cloned().collect();
        for key in keys {
            let mut txn = self.txns.remove(&key).expect("key listed from txns");
            if !in_view && matches!(txn.kind, TxnKind::PutModified { .. }) {
                // The data of a declared-dead node is not accepted anywhere any more.
                self.drain(key, txn.queued, false, &mut out);
                continue;
            }
            self.next_txn += 1;
            txn.id = TxnId(self.next_txn);
            txn.home = self.homes.home_of(&key);
            txn.first_sent_tick = self.now_tick;
            txn.last_sent_tick = self.now_tick;
            out.push(Outbound::Send {
                to: txn.home,
                message: Self::request_of(&key, &txn),
            });
            self.txns.insert(key, txn);
        }
        // Operations waiting for an old home's lease now wait for the new home's.
        let blocked = std::mem::take(&mut self.lease_blocked);
        for (key, queued) in blocked.into_values().flatten() {
            let op = queued.op;
            if let Some(result) = self.run_op(key.clone(), queued, true, &mut out) {
                out.push(Outbound::Complete(Completion { op, key, result }));
            }
        }
        if in_view {
            for member in self.members.clone() {
                self.holdings_unacked.insert(member, self.now_tick);
                out.push(Outbound::Send {
                    to: member,
                    message: CoherenceMessage::Holdings {
                        lines: self.holdings_for(member),
                    },
                });
            }
        }
        self.complete_flushes(&mut out);
        out
    }

    /// What this node holds of the keys `home` homes in the current view: lines, dirty lines
    /// being evicted, and data handed out in a `FetchResponse` the old home may not have written
    /// back yet (it may have died or moved on with it).
    fn holdings_for(&self, home: NodeId) -> Vec<HeldLine> {
        let mut lines: Vec<HeldLine> = Vec::new();
        for (key, line) in self.store.iter() {
            if self.homes.home_of(key) == home {
                lines.push(HeldLine {
                    key: key.to_key(),
                    state: line.state,
                    grant: line.grant,
                    data: line.data.clone(),
                    dirty: line.dirty,
                });
            }
        }
        for (key, txn) in &self.txns {
            if let TxnKind::PutModified { data, grant } = &txn.kind
                && self.homes.home_of(key) == home
            {
                lines.push(HeldLine {
                    key: key.clone(),
                    // Never an ownership claim: the old home may have written it back, sent a
                    // PutAck that is still in flight, and granted the key to another node since.
                    // The new home writes it back if nobody holds anything newer.
                    state: LineState::Invalid,
                    grant: *grant,
                    data: data.clone(),
                    dirty: true,
                });
            }
        }
        for (key, (seq, data, _)) in &self.fetch_answers {
            if self.homes.home_of(key) == home {
                lines.push(HeldLine {
                    key: key.clone(),
                    state: LineState::Invalid,
                    grant: *seq,
                    data: data.clone(),
                    dirty: true,
                });
            }
        }
        lines.sort_by(|a, b| a.key.cmp(&b.key).then(a.state.cmp(&b.state)));
        lines
    }

    /// Handles a message sent in membership epoch `epoch`: dropped unless it is this node's
    /// epoch. Messages of an older view may come from homes that no longer home the key (or
    /// from a dead node's previous life); messages of a newer view arrive before this node
    /// learned it, and are retransmitted until it has.
    pub fn on_message_at(
        &mut self,
        from: NodeId,
        epoch: u64,
        message: CoherenceMessage,
    ) -> Vec<Outbound> {
        if epoch != self.epoch {
            return Vec::new();
        }
        self.on_message(from, message)
    }

    /// Whether the lease covering `key` is valid now (the node would serve a hit).
    ///
    /// While every member's lease is valid, so is the lease of whichever member is the key's
    /// home, and the home is not looked up: on a GET hit that lookup (a second hash of the key
    /// and a search of the ring, behind the membership's lock in the shell) cost as much as the
    /// rest of the lease check. Homes are members: both change together in `set_members`.
    pub fn lease_valid_for(&self, key: &[u8]) -> bool {
        self.now_tick < self.all_leases_valid_before_tick
            || self.lease_valid(self.homes.home_of(key))
    }

    /// Whether a majority of the current view's members, this node counted, confirmed its
    /// coherence lease: each answered a request or heartbeat this node sent fewer than
    /// `lease_ticks` ticks ago (this node's own lease never lapses).
    ///
    /// The protocol itself does not need it; the shell does, to keep a partition's minority
    /// from serving at all. A key's lease alone cannot: a node cut off with the home of a key
    /// (the key may be homed on itself) keeps confirming that lease, while the majority goes
    /// on in a new view that re-homes the key. But every member of that view stops answering
    /// this node's heartbeats once it adopts the view, and a new home serves only after every
    /// member adopted it and `lease_ticks + lease_revoke_margin_ticks` more passed; the view
    /// holds a majority of the old one, so at least one of them is among any majority this
    /// node counts: a node with a quorum is never beside a view that moved on without it.
    pub fn has_quorum(&self) -> bool {
        if !self.members.contains(&self.id) {
            return false;
        }
        let confirmed = self
            .members
            .iter()
            .filter(|member| **member == self.id || self.lease_valid(**member))
            .count();
        confirmed * 2 > self.members.len()
    }

    /// Pending work.
    pub fn load(&self) -> NodeLoad {
        NodeLoad {
            transactions: self.txns.len(),
            write_backs: self.write_backs.len(),
            lease_blocked: self.lease_blocked.values().map(VecDeque::len).sum(),
            flushes: self.flush_waiters.len(),
        }
    }

    fn lease_valid(&self, home: NodeId) -> bool {
        self.lease_start_tick
            .get(&home)
            .is_some_and(|start| self.now_tick < start + self.config.lease_ticks)
    }

    fn new_op(&mut self) -> OpId {
        self.next_op += 1;
        OpId(self.next_op)
    }

    /// Reads `key`: a hit on a leased M/E/S line is served at once, a miss asks the home for S.
    ///
    /// # Errors
    /// [`CacheError::TooManyPendingTransactions`] / [`CacheError::TooManyQueuedOperations`].
    pub fn read(&mut self, key: Key) -> Result<OpStep, CacheError> {
        self.submit(key, OpKind::Read)
    }

    /// Serves a read of `key` only if [`CacheNode::read`] would finish it at once from the
    /// local store: the line is held (M, E or S) under a valid lease and no transaction is in
    /// flight for the key. Returns `None` otherwise, with nothing changed; the caller then runs
    /// [`CacheNode::read`]. A hit counts as a use of the line, exactly as in `read`.
    ///
    /// This is the shell's hot path: one store lookup and one lease check, no operation id and
    /// no outbound vector, so a hit holds the node for as short a time as possible.
    pub fn read_hit(&mut self, key: &Key) -> Option<LineData> {
        self.read_hit_with(key, LineData::clone)
    }

    /// [`CacheNode::read_hit`] that hands the data to `serve` in place instead of cloning it:
    /// a caller that copies the value out (into a reply) takes no reference on it.
    pub fn read_hit_with<R>(
        &mut self,
        key: &[u8],
        serve: impl FnOnce(&LineData) -> R,
    ) -> Option<R> {
        let (served, used) = self.peek_hit_with(key, serve)?;
        self.count_hit(used);
        Some(served)
    }

    /// [`CacheNode::read_hit_with`] for readers that share the node: nothing is written, and
    /// the hit's use of the line is returned, for [`CacheNode::count_hit`] before the node
    /// next changes.
    pub fn peek_hit_with<R>(
        &self,
        key: &[u8],
        serve: impl FnOnce(&LineData) -> R,
    ) -> Option<(R, EntryUse)> {
        // A key in a transaction has no line (see `start_txn`), so a held line means no
        // transaction; the check stays because serving past a queued write would reorder them.
        if !self.txns.is_empty() && self.txns.contains_key(key) {
            return None;
        }
        // The lease first: it needs no lookup in the store, so a hit costs one (the hot path
        // of every GET).
        if !self.lease_valid_for(key) {
            return None;
        }
        let (line, used) = self.store.peek_for_use(key)?;
        Some((serve(&line.data), used))
    }

    /// Counts a hit found by [`CacheNode::peek_hit_with`] as a use of its line (recency under
    /// LRU, frequency under LFU).
    pub fn count_hit(&mut self, used: EntryUse) {
        self.store.count_use(used);
    }

    /// Writes `value` under `key`: silent on M/E, an `Upgrade` from S, `GetModified` from I.
    ///
    /// # Errors
    /// [`CacheError::ValueTooLarge`] and the queue limits of [`CacheNode::read`].
    pub fn write(&mut self, key: Key, value: Value) -> Result<OpStep, CacheError> {
        if value.len() > self.config.value_bytes_max {
            return Err(CacheError::ValueTooLarge {
                size_bytes: value.len(),
                limit_bytes: self.config.value_bytes_max,
            });
        }
        self.submit(key, OpKind::Write(Some(value)))
    }

    /// Deletes `key`: a write of "absent" (the backing store deletes it on write-back).
    ///
    /// # Errors
    /// As [`CacheNode::read`].
    pub fn delete(&mut self, key: Key) -> Result<OpStep, CacheError> {
        self.submit(key, OpKind::Write(None))
    }

    /// Drops the local copy of `key`: S/E with a notice, M written back first (pending until the
    /// home acknowledges).
    ///
    /// # Errors
    /// As [`CacheNode::read`].
    pub fn evict(&mut self, key: Key) -> Result<OpStep, CacheError> {
        self.submit(key, OpKind::Evict)
    }

    /// Withdraws the local operation `op` if it has not taken effect: it still waits behind a
    /// transaction or for a lease. It then never takes effect and never completes (the
    /// transaction it waited behind goes on without it). Returns whether it was withdrawn;
    /// `false` when it already took effect (a write that waits only for its write-through
    /// acknowledgement) or is unknown (finished).
    ///
    /// The shell withdraws an operation whose client it answers "unavailable", so that a write
    /// reported as failed takes effect before that answer or never: not seconds later, after
    /// the same client's next writes of the key, as a retransmitted request eventually granted
    /// would otherwise make it.
    pub fn withdraw(&mut self, op: OpId) -> bool {
        for txn in self.txns.values_mut() {
            if let Some(index) = txn.queued.iter().position(|queued| queued.op == op) {
                txn.queued.remove(index);
                return true;
            }
        }
        for blocked in self.lease_blocked.values_mut() {
            if let Some(index) = blocked.iter().position(|(_, queued)| queued.op == op) {
                blocked.remove(index);
                return true;
            }
        }
        false
    }

    /// Shutdown: evicts every line (writing back the dirty ones), no more write-backs at a time
    /// than `pending_transactions_max` allows, and lines that arrive meanwhile (an operation
    /// in flight when the flush began) after them. Completes with [`OpResult::Flushed`] once
    /// the store is empty, every write-back is acknowledged and no operation is left waiting;
    /// at once for a node outside the view.
    pub fn flush(&mut self) -> OpStep {
        let op = self.new_op();
        let mut out = Vec::new();
        self.flush_waiters.push(op);
        self.continue_flush(&mut out);
        if self.flush_done() {
            // Answered here, not by a completion; earlier flushes still waiting complete too.
            self.flush_waiters.pop();
            self.complete_flushes(&mut out);
            OpStep::Done {
                result: OpResult::Flushed,
                outbound: out,
            }
        } else {
            OpStep::Pending { op, outbound: out }
        }
    }

    /// Evicts the flush's next lines, as long as the transaction bound allows; refills the
    /// queue from the store when it runs dry.
    fn continue_flush(&mut self, out: &mut Vec<Outbound>) {
        if self.flush_waiters.is_empty() {
            return;
        }
        if self.flush_queue.is_empty() && !self.store.is_empty() {
            let mut keys: Vec<Key> = self.store.iter().map(|(key, _)| key.to_key()).collect();
            keys.sort_unstable_by(|a, b| b.cmp(a));
            self.flush_queue = keys;
        }
        while self.txns.len() < self.config.pending_transactions_max {
            let Some(key) = self.flush_queue.pop() else {
                break;
            };
            if let Some(line) = self.store.remove(&key[..]) {
                self.on_eviction(key, line, out);
            }
        }
    }

    fn flush_done(&self) -> bool {
        // Declared dead (a view without this node was adopted; the view given to `new` is
        // taken as it comes), the node holds nothing it may still write back, and sends nothing.
        if self.epoch > 0 && !self.members.contains(&self.id) {
            return true;
        }
        // Not only the write-backs: an operation in flight when the flush began (a write whose
        // grant is on its way, or one waiting for a lease) is acknowledged later, and the line
        // it leaves must be written back too. A transaction whose operations were all
        // withdrawn (their clients were answered "unavailable") is not waited for: it
        // installs no write.
        self.flush_queue.is_empty()
            && self.store.is_empty()
            && self.write_backs.is_empty()
            && self.lease_blocked.values().all(VecDeque::is_empty)
            && !self.txns.values().any(|txn| {
                matches!(txn.kind, TxnKind::PutModified { .. }) || !txn.queued.is_empty()
            })
    }

    fn submit(&mut self, key: Key, kind: OpKind) -> Result<OpStep, CacheError> {
        if let Some(txn) = self.txns.get(&key) {
            if txn.queued.len() >= self.config.queued_operations_per_key_max {
                return Err(CacheError::TooManyQueuedOperations {
                    key,
                    limit: self.config.queued_operations_per_key_max,
                });
            }
        } else {
            let needs_txn = match (self.store.peek(&key[..]).map(|line| line.state), &kind) {
                (None, OpKind::Evict) => false,
                (None, _) => true,
                (Some(LineState::Shared), OpKind::Write(_)) => true,
                _ => false,
            };
            // An operation that would wait for a lease renewal counts against the same bound.
            let waits_for_lease = kind != OpKind::Evict
                && self.store.contains(&key[..])
                && !self.lease_valid(self.homes.home_of(&key));
            let pending = self.txns.len() + self.load().lease_blocked;
            if (needs_txn || waits_for_lease) && pending >= self.config.pending_transactions_max {
                return Err(CacheError::TooManyPendingTransactions {
                    limit: self.config.pending_transactions_max,
                });
            }
        }
        let op = self.new_op();
        let mut out = Vec::new();
        match self.run_op(key, QueuedOp { op, kind }, true, &mut out) {
            Some(result) => Ok(OpStep::Done {
                result,
                outbound: out,
            }),
            None => Ok(OpStep::Pending { op, outbound: out }),
        }
    }

    /// Runs one operation; `Some` when it finished now. `check_lease` is false for operations
    /// that waited for the grant just installed (its data is current as of the home's answer).
    fn run_op(
        &mut self,
        key: Key,
        queued: QueuedOp,
        check_lease: bool,
        out: &mut Vec<Outbound>,
    ) -> Option<OpResult> {
        if let Some(txn) = self.txns.get_mut(&key) {
            txn.queued.push_back(queued);
            return None;
        }
        let home = self.homes.home_of(&key);
        let Some(state) = self.store.peek(&key[..]).map(|line| line.state) else {
            return match queued.kind {
                OpKind::Evict => Some(OpResult::Evicted),
                OpKind::Read => {
                    self.start_txn(key, TxnKind::GetShared, Some(queued), out);
                    None
                }
                OpKind::Write(_) => {
                    self.start_txn(key, TxnKind::GetModified, Some(queued), out);
                    None
                }
            };
        };
        if queued.kind == OpKind::Evict {
            let line = self.store.remove(&key[..]).expect("line checked above");
            self.on_eviction(key.clone(), line, out);
            if let Some(txn) = self.txns.get_mut(&key) {
                txn.queued.push_back(queued);
                return None;
            }
            return Some(OpResult::Evicted);
        }
        let ignore_lease = self.config.injected_bugs.serve_without_lease;
        if check_lease && !ignore_lease && !self.lease_valid(home) {
            self.lease_blocked
                .entry(home)
                .or_default()
                .push_back((key, queued));
            return None;
        }
        match queued.kind.clone() {
            OpKind::Read => {
                let line = self.store.get(&key[..]).expect("line checked above");
                Some(OpResult::Read(line.data.clone()))
            }
            OpKind::Write(_) if state == LineState::Shared => {
                self.store.remove(&key[..]);
                self.start_txn(key, TxnKind::Upgrade, Some(queued), out);
                None
            }
            OpKind::Write(value) => {
                // peek, then insert: the write counts as one use and re-sizes the entry.
                let line = self.store.peek_mut(&key[..]).expect("line checked above");
                assert!(
                    line.state.is_owned(),
                    "only an M/E line is written in place"
                );
                line.state = LineState::Modified;
                line.dirty = true;
                line.data = LineData {
                    value,
                    version: Version(line.data.version.0 + 1),
                };
                let data = line.data.clone();
                let size_bytes = data.size_bytes();
                let line = line.clone();
                let evicted = self
                    .store
                    .insert(LineKey::from(key.clone()), line, size_bytes)
                    .expect("value size was checked against value_bytes_max <= bytes_max");
                for victim in evicted {
                    self.on_eviction(victim.key.into(), victim.value, out);
                }
                match self.config.write_policy {
                    WritePolicy::WriteBack => Some(OpResult::Written(data.version)),
                    WritePolicy::WriteThrough => {
                        let version = data.version;
                        out.push(Outbound::Send {
                            to: home,
                            message: CoherenceMessage::WriteBack {
                                key: key.clone(),
                                data: data.clone(),
                            },
                        });
                        let pending =
                            self.write_backs
                                .entry(key)
                                .or_insert_with(|| PendingWriteBack {
                                    data: data.clone(),
                                    last_sent_tick: self.now_tick,
                                    waiting: Vec::new(),
                                });
                        pending.data = data;
                        pending.last_sent_tick = self.now_tick;
                        pending.waiting.push((queued.op, version));
                        None
                    }
                }
            }
            OpKind::Evict => unreachable!("handled above"),
        }
    }

    fn start_txn(
        &mut self,
        key: Key,
        kind: TxnKind,
        first: Option<QueuedOp>,
        out: &mut Vec<Outbound>,
    ) {
        assert!(
            !self.txns.contains_key(&key),
            "node invariant: one transaction per key"
        );
        assert!(
            !self.store.contains(&key[..]),
            "node invariant: a key in transaction has no line in the store"
        );
        self.next_txn += 1;
        let home = self.homes.home_of(&key);
        let txn = PendingTxn {
            id: TxnId(self.next_txn),
            kind,
            home,
            first_sent_tick: self.now_tick,
            last_sent_tick: self.now_tick,
            queued: first.into_iter().collect(),
        };
        out.push(Outbound::Send {
            to: home,
            message: Self::request_of(&key, &txn),
        });
        self.txns.insert(key, txn);
    }

    fn request_of(key: &Key, txn: &PendingTxn) -> CoherenceMessage {
        let key = key.clone();
        match &txn.kind {
            TxnKind::GetShared => CoherenceMessage::GetShared { key, txn: txn.id },
            TxnKind::GetModified => CoherenceMessage::GetModified { key, txn: txn.id },
            TxnKind::Upgrade => CoherenceMessage::Upgrade { key, txn: txn.id },
            TxnKind::PutModified { data, grant } => CoherenceMessage::PutModified {
                key,
                txn: txn.id,
                data: data.clone(),
                grant: *grant,
            },
        }
    }

    /// A line left the store (capacity, explicit evict or flush): write back or notify.
    fn on_eviction(&mut self, key: Key, line: Line, out: &mut Vec<Outbound>) {
        let home = self.homes.home_of(&key);
        let skip_write_back = self.config.injected_bugs.skip_write_back_on_eviction;
        if line.state == LineState::Modified && line.dirty && !skip_write_back {
            self.start_txn(
                key,
                TxnKind::PutModified {
                    data: line.data,
                    grant: line.grant,
                },
                None,
                out,
            );
            return;
        }
        let message = if line.state == LineState::Shared {
            CoherenceMessage::PutShared {
                key,
                grant: line.grant,
            }
        } else {
            CoherenceMessage::PutExclusive {
                key,
                grant: line.grant,
            }
        };
        out.push(Outbound::Send { to: home, message });
    }

    /// Handles a message addressed to the node side (see
    /// [`CoherenceMessage::is_for_directory`]); other messages are ignored. The message is taken
    /// to belong to the current membership epoch (see [`CacheNode::on_message_at`]).
    pub fn on_message(&mut self, from: NodeId, message: CoherenceMessage) -> Vec<Outbound> {
        let mut out = Vec::new();
        match message {
            CoherenceMessage::Grant {
                key,
                txn,
                seq,
                state,
                data,
            } => self.on_grant(from, key, txn, seq, state, data, &mut out),
            CoherenceMessage::Invalidate { key, seq } => {
                self.forget_fetch_answer_before(&key, seq);
                if self
                    .store
                    .peek(&key[..])
                    .is_some_and(|line| line.grant < seq)
                {
                    let line = self.store.remove(&key[..]).expect("line checked above");
                    assert!(
                        line.state == LineState::Shared,
                        "protocol invariant: Invalidate reaches only Shared copies, {key:?} is {}",
                        line.state
                    );
                }
                out.push(Outbound::Send {
                    to: from,
                    message: CoherenceMessage::InvalidateAck { key, seq },
                });
            }
            CoherenceMessage::Fetch {
                key,
                seq,
                downgrade_to,
            } => self.on_fetch(from, key, seq, downgrade_to, &mut out),
            CoherenceMessage::PutAck { key, txn } => {
                let matches = self.txns.get(&key).is_some_and(|pending| {
                    pending.id == txn && matches!(pending.kind, TxnKind::PutModified { .. })
                });
                if matches {
                    let pending = self.txns.remove(&key).expect("checked above");
                    self.drain(key, pending.queued, false, &mut out);
                    self.complete_flushes(&mut out);
                }
            }
            CoherenceMessage::WriteBackAck { key, version } => {
                if let Some(pending) = self.write_backs.get_mut(&key) {
                    let mut done = Vec::new();
                    pending.waiting.retain(|(op, written)| {
                        let acked = *written <= version;
                        if acked {
                            done.push((*op, *written));
                        }
                        !acked
                    });
                    for (op, written) in done {
                        out.push(Outbound::Complete(Completion {
                            op,
                            key: key.clone(),
                            result: OpResult::Written(written),
                        }));
                    }
                    if pending.waiting.is_empty() {
                        self.write_backs.remove(&key);
                    }
                }
                if let Some(line) = self.store.peek_mut(&key[..])
                    && line.data.version <= version
                {
                    line.dirty = false;
                }
                self.complete_flushes(&mut out);
            }
            CoherenceMessage::HoldingsAck => {
                self.holdings_unacked.remove(&from);
            }
            CoherenceMessage::HeartbeatAck { sent_tick } => {
                self.renew_lease(from, sent_tick, &mut out);
                if self.lease_valid(from)
                    && let Some(blocked) = self.lease_blocked.remove(&from)
                {
                    for (key, queued) in blocked {
                        if let Some(result) =
                            self.run_op(key.clone(), queued.clone(), true, &mut out)
                        {
                            out.push(Outbound::Complete(Completion {
                                op: queued.op,
                                key,
                                result,
                            }));
                        }
                    }
                }
            }
            _ => {}
        }
        out
    }

    #[allow(clippy::too_many_arguments, reason = "the fields of one Grant message")]
    fn on_grant(
        &mut self,
        from: NodeId,
        key: Key,
        txn: TxnId,
        seq: DirectorySeq,
        state: LineState,
        data: LineData,
        out: &mut Vec<Outbound>,
    ) {
        out.push(Outbound::Send {
            to: from,
            message: CoherenceMessage::GrantAck {
                key: key.clone(),
                txn,
            },
        });
        let current = self.txns.get(&key).is_some_and(|pending| {
            pending.id == txn && !matches!(pending.kind, TxnKind::PutModified { .. })
        });
        if !current {
            return; // a retransmitted grant of a finished transaction: acknowledged again above
        }
        self.forget_fetch_answer_before(&key, seq);
        let pending = self.txns.remove(&key).expect("checked above");
        let expected_owned = pending.kind != TxnKind::GetShared;
        assert!(
            state.is_valid() && (state == LineState::Modified) == expected_owned,
            "protocol invariant: {:?} granted {state} on {key:?}",
            pending.kind
        );
        self.renew_lease(pending.home, pending.first_sent_tick, out);
        let size_bytes = data.size_bytes();
        let line = Line {
            state,
            data,
            dirty: false,
            grant: seq,
        };
        let evicted = self
            .store
            .insert(LineKey::from(key.clone()), line, size_bytes)
            .expect("granted values were written under value_bytes_max <= bytes_max");
        for victim in evicted {
            self.on_eviction(victim.key.into(), victim.value, out);
        }
        self.drain(key, pending.queued, false, out);
    }

    fn on_fetch(
        &mut self,
        from: NodeId,
        key: Key,
        seq: DirectorySeq,
        downgrade_to: LineState,
        out: &mut Vec<Outbound>,
    ) {
        self.forget_fetch_answer_before(&key, seq);
        let (data, dirty) = if let Some((_, data, _)) = self
            .fetch_answers
            .get(&key)
            .filter(|(answered, _, _)| *answered == seq)
        {
            // A duplicate of a Fetch already answered: the same data, still marked dirty so
            // that the home writes it back whichever copy of the answer it takes.
            (Some(data.clone()), true)
        } else if self
            .store
            .peek(&key[..])
            .is_some_and(|line| line.grant < seq)
        {
            let line = self.store.peek_mut(&key[..]).expect("line checked above");
            assert!(
                line.state.is_owned(),
                "protocol invariant: Fetch reaches only the owner, {key:?} is {}",
                line.state
            );
            let answer = (Some(line.data.clone()), line.dirty);
            if downgrade_to == LineState::Shared {
                line.state = LineState::Shared;
                line.dirty = false;
                line.grant = seq;
            } else {
                self.store.remove(&key[..]);
            }
            answer
        } else if let Some(PendingTxn {
            kind: TxnKind::PutModified { data, grant },
            ..
        }) = self.txns.get(&key)
            && *grant < seq
        {
            (Some(data.clone()), true)
        } else {
            (None, false)
        };
        if let Some(data) = &data {
            self.remember_fetch_answer(key.clone(), seq, data.clone());
        }
        out.push(Outbound::Send {
            to: from,
            message: CoherenceMessage::FetchResponse {
                key,
                seq,
                data,
                dirty,
            },
        });
    }

    /// The home answered something this node sent at `start_tick`. If the lease had lapsed,
    /// the home may have revoked this node's Shared copies (it does so `lease_ticks` plus a
    /// margin after its last confirmation), so they are dropped before the lease is renewed.
    fn renew_lease(&mut self, home: NodeId, start_tick: u64, out: &mut Vec<Outbound>) {
        let keep = self.config.injected_bugs.keep_shared_after_lease_lapse;
        if !keep && !self.lease_valid(home) {
            let mut keys: Vec<Key> = self
                .store
                .iter()
                .filter(|(key, line)| {
                    line.state == LineState::Shared && self.homes.home_of(key) == home
                })
                .map(|(key, _)| key.to_key())
                .collect();
            keys.sort();
            for key in keys {
                let line = self
                    .store
                    .remove(&key[..])
                    .expect("key listed from the store");
                self.on_eviction(key, line, out);
            }
        }
        let start = self.lease_start_tick.entry(home).or_insert(start_tick);
        *start = (*start).max(start_tick);
        self.all_leases_valid_before_tick = self
            .members
            .iter()
            .map(|member| {
                self.lease_start_tick
                    .get(member)
                    .map_or(0, |start| start + self.config.lease_ticks)
            })
            .min()
            .unwrap_or(0);
    }

    fn remember_fetch_answer(&mut self, key: Key, seq: DirectorySeq, data: LineData) {
        self.fetch_answers.insert(key, (seq, data, self.now_tick));
        if self.fetch_answers.len() > self.config.fetch_answers_max {
            let oldest = self
                .fetch_answers
                .iter()
                .min_by_key(|(_, (_, _, tick))| *tick)
                .map(|(key, _)| key.clone())
                .expect("over the bound means non-empty");
            self.fetch_answers.remove(&oldest);
        }
    }

    /// The home sent `seq` for `key`: every fetch transaction before it is over.
    fn forget_fetch_answer_before(&mut self, key: &Key, seq: DirectorySeq) {
        if self
            .fetch_answers
            .get(key)
            .is_some_and(|(answered, _, _)| *answered < seq)
        {
            self.fetch_answers.remove(key);
        }
    }

    /// Runs operations that waited behind a finished transaction, in order.
    fn drain(
        &mut self,
        key: Key,
        queued: VecDeque<QueuedOp>,
        check_lease: bool,
        out: &mut Vec<Outbound>,
    ) {
        for op in queued {
            let id = op.op;
            if let Some(result) = self.run_op(key.clone(), op, check_lease, out) {
                out.push(Outbound::Complete(Completion {
                    op: id,
                    key: key.clone(),
                    result,
                }));
            }
        }
    }

    fn complete_flushes(&mut self, out: &mut Vec<Outbound>) {
        self.continue_flush(out);
        if !self.flush_waiters.is_empty() && self.flush_done() {
            for op in self.flush_waiters.drain(..) {
                out.push(Outbound::Complete(Completion {
                    op,
                    key: Key::new(),
                    result: OpResult::Flushed,
                }));
            }
        }
    }

    /// One logical tick: retransmits unanswered requests and write-throughs, sends heartbeats.
    pub fn tick(&mut self) -> Vec<Outbound> {
        self.now_tick += 1;
        let mut out = Vec::new();
        let retry = self.config.retry_interval_ticks;
        for (key, txn) in &mut self.txns {
            if self.now_tick >= txn.last_sent_tick + retry {
                txn.last_sent_tick = self.now_tick;
                out.push(Outbound::Send {
                    to: txn.home,
                    message: Self::request_of(key, txn),
                });
            }
        }
        for (key, pending) in &mut self.write_backs {
            if self.now_tick >= pending.last_sent_tick + retry {
                pending.last_sent_tick = self.now_tick;
                out.push(Outbound::Send {
                    to: self.homes.home_of(key),
                    message: CoherenceMessage::WriteBack {
                        key: key.clone(),
                        data: pending.data.clone(),
                    },
                });
            }
        }
        let due: Vec<NodeId> = self
            .holdings_unacked
            .iter()
            .filter(|(_, sent)| self.now_tick >= *sent + retry)
            .map(|(member, _)| *member)
            .collect();
        for member in due {
            self.holdings_unacked.insert(member, self.now_tick);
            out.push(Outbound::Send {
                to: member,
                message: CoherenceMessage::Holdings {
                    lines: self.holdings_for(member),
                },
            });
        }
        let heartbeat_due = self
            .last_heartbeat_tick
            .is_none_or(|last| self.now_tick >= last + self.config.heartbeat_interval_ticks);
        if heartbeat_due {
            self.last_heartbeat_tick = Some(self.now_tick);
            for member in &self.members {
                out.push(Outbound::Send {
                    to: *member,
                    message: CoherenceMessage::Heartbeat {
                        sent_tick: self.now_tick,
                    },
                });
            }
        }
        // A flush held back by the transaction bound goes on once other transactions ended,
        // and evicts the lines that operations in flight installed after it began.
        self.complete_flushes(&mut out);
        out
    }
}
