//! The home side of the protocol: one [`Directory`] per node, holding the entries of the keys
//! the ring maps to that node.
//!
//! The directory is a *blocking* directory: per key, one transaction is active at a time and
//! later requests wait in a bounded queue. A transaction ends only when the requester
//! acknowledges the grant (`GrantAck`) or when a `PutModified` is written back, so the entry's
//! holder set is exact at the start of every transaction (up to lost `PutShared`/`PutExclusive`
//! notices, which leave stale holders that simply answer "not here"). Because the home is also
//! the only writer of the backing store for its keys, the backing store is up to date whenever
//! no node owns the key: dirty data is written back on every downgrade and ownership change.
//!
//! Membership ([`Directory::set_members`]): a new view drops every entry and puts the home in
//! *recovery*: it answers heartbeats and write-throughs but starts no transaction until every
//! member of the view has reported what it holds of the keys homed here (`Holdings`), and — when
//! the view removed a node — until `lease_ticks + lease_revoke_margin_ticks` more have passed,
//! so a removed node that is in fact alive has stopped serving (every member stopped confirming
//! its leases when it adopted the view). The entries are then rebuilt from the reports. The
//! sequences of a view start at `epoch << EPOCH_SEQ_SHIFT`, above every grant of an older view,
//! so a node can still tell current `Invalidate`/`Fetch` messages from stale ones by sequence.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::CacheConfig;
use crate::line::LineState;
use crate::protocol::{
    BackingOp, BackingRequest, BackingResponse, BackingResult, CoherenceMessage, HeldLine, Outbound,
};
use crate::types::{BackingRequestId, DirectorySeq, Key, LineData, NodeId, TxnId, Version};

/// A view's directory sequences start at `epoch << EPOCH_SEQ_SHIFT`: 2^40 transactions per home
/// and view before they would run into the next view's range (at a million transactions a second,
/// 12 days without a membership change), 2^24 views.
pub const EPOCH_SEQ_SHIFT: u32 = 40;

/// How a node holds a key, as the home records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderMode {
    /// A read-only copy.
    Shared,
    /// The only copy, E or M (the home cannot tell: E→M is silent).
    Owned,
}

/// One node's copy as the home records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    /// S, or E/M.
    pub mode: HolderMode,
    /// The home transaction that granted (or last downgraded) the copy.
    pub grant: DirectorySeq,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RequestKind {
    GetShared,
    GetModified,
    Upgrade,
    PutModified {
        data: LineData,
        grant: DirectorySeq,
    },
    /// After a membership change: write back dirty data a member reported handing to the old
    /// home (which may have died or moved on before writing it back). Started by the home itself.
    Restore,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Request {
    from: NodeId,
    txn: TxnId,
    kind: RequestKind,
}

/// The active transaction of a key.
#[derive(Debug)]
struct Active {
    request: Request,
    seq: DirectorySeq,
    /// Owner asked to send its data (and the state it drops to).
    awaiting_fetch: Option<(NodeId, LineState)>,
    /// Sharers whose `InvalidateAck` is still missing.
    awaiting_acks: BTreeSet<NodeId>,
    /// The data to grant (or write back), once known.
    data: Option<LineData>,
    /// `data` is newer than the backing store and must be written back first.
    dirty: bool,
    /// Backing-store request in flight.
    backing: Option<BackingRequest>,
    /// The grant, once sent (awaiting `GrantAck`).
    grant: Option<CoherenceMessage>,
    /// Tick of the last (re)transmission of whatever this transaction waits for.
    last_sent_tick: u64,
}

/// A key's directory entry.
#[derive(Debug, Default)]
pub struct DirectoryEntry {
    holders: BTreeMap<NodeId, Holding>,
    /// Highest version the home has seen for the key.
    version: Version,
    active: Option<Active>,
    queue: VecDeque<Request>,
    /// Highest transaction accepted from each node, to drop retransmitted duplicates.
    accepted_txn: BTreeMap<NodeId, TxnId>,
}

impl DirectoryEntry {
    /// The recorded holders of the key.
    pub fn holders(&self) -> &BTreeMap<NodeId, Holding> {
        &self.holders
    }

    /// Highest version the home has seen.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether a transaction is in progress.
    pub fn is_busy(&self) -> bool {
        self.active.is_some()
    }

    /// Requests waiting behind the active transaction.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn is_idle_and_empty(&self) -> bool {
        self.active.is_none() && self.queue.is_empty() && self.holders.is_empty()
    }

    fn assert_invariants(&self, key: &Key) {
        let owners = self
            .holders
            .values()
            .filter(|holding| holding.mode == HolderMode::Owned)
            .count();
        assert!(
            owners <= 1,
            "directory invariant: at most one owner of {key:?}, found {owners}"
        );
        assert!(
            owners == 0 || self.holders.len() == 1,
            "directory invariant: an owner of {key:?} excludes every sharer: {:?}",
            self.holders
        );
    }
}

/// Rebuilding the entries after a membership change.
#[derive(Debug)]
struct Recovery {
    /// Members whose `Holdings` have not arrived.
    awaiting: BTreeSet<NodeId>,
    /// The reports so far, per key.
    held: BTreeMap<Key, Vec<(NodeId, HeldLine)>>,
    /// The view removed a node, which may still serve under a lease until it runs out.
    removed_member: bool,
    /// Tick the last report arrived.
    reports_done_tick: Option<u64>,
}

/// The home side of the MESI protocol for the keys homed on one node.
#[derive(Debug)]
pub struct Directory {
    id: NodeId,
    config: CacheConfig,
    entries: BTreeMap<Key, DirectoryEntry>,
    /// Keys with an active transaction, for `tick` retransmission.
    active_keys: BTreeSet<Key>,
    /// Per node, the newest tick this home sent it a lease confirmation (`HeartbeatAck` or
    /// `Grant`); a Shared copy is revoked `lease_ticks + lease_revoke_margin_ticks` after it.
    confirm_sent_tick: BTreeMap<NodeId, u64>,
    /// Write-through requests in flight: request, requester, tick last sent.
    write_backs: BTreeMap<BackingRequestId, (BackingRequest, NodeId, u64)>,
    next_seq: u64,
    next_backing_id: u64,
    now_tick: u64,
    /// Epoch of the current membership view (0: the initial one, no recovery).
    epoch: u64,
    /// Members of the current view (empty: unknown, the initial view of `new`).
    members: Vec<NodeId>,
    recovery: Option<Recovery>,
}

impl Directory {
    /// An empty directory for home node `id`.
    ///
    /// # Errors
    /// [`crate::CacheError::InvalidConfig`] when the config does not validate.
    pub fn new(id: NodeId, config: CacheConfig) -> Result<Self, crate::CacheError> {
        config.validate()?;
        Ok(Self {
            id,
            config,
            entries: BTreeMap::new(),
            active_keys: BTreeSet::new(),
            write_backs: BTreeMap::new(),
            confirm_sent_tick: BTreeMap::new(),
            next_seq: 0,
            next_backing_id: 0,
            now_tick: 0,
            epoch: 0,
            members: Vec::new(),
            recovery: None,
        })
    }

    /// Epoch of the current membership view.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the home is rebuilding its entries after a membership change (it starts no
    /// transaction meanwhile).
    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// Installs the membership view `(epoch, members)`; ignored unless `epoch` is newer. Every
    /// entry is dropped (with its active transaction and queue: the requesters re-send to the
    /// new homes) and rebuilt from the members' `Holdings` reports. A home outside the view homes
    /// nothing and does not recover.
    ///
    /// Dropping an active transaction loses nothing: a grant's data is in the backing store
    /// before the grant is sent, an evicting node keeps its data until `PutAck`, and an owner
    /// that answered a `Fetch` keeps the answer until the home moves on, so it reports it.
    pub fn set_members(&mut self, epoch: u64, mut members: Vec<NodeId>) -> Vec<Outbound> {
        if epoch <= self.epoch {
            return Vec::new();
        }
        members.sort();
        members.dedup();
        // A removal whose wait has not run out yet still counts: the nodes it removed may still
        // serve under their leases, and this view may come too soon after it to outlast them.
        let removed_member = self.members.iter().any(|member| !members.contains(member))
            || self
                .recovery
                .as_ref()
                .is_some_and(|recovery| recovery.removed_member);
        self.epoch = epoch;
        self.entries.clear();
        self.active_keys.clear();
        self.next_seq = self.next_seq.max(epoch << EPOCH_SEQ_SHIFT);
        self.recovery = members.contains(&self.id).then(|| Recovery {
            awaiting: members.iter().copied().collect(),
            held: BTreeMap::new(),
            removed_member,
            reports_done_tick: None,
        });
        self.members = members;
        Vec::new()
    }

    /// Handles a message sent in membership epoch `epoch`: dropped unless it is this home's
    /// epoch (see [`crate::CacheNode::on_message_at`] for why that is safe).
    pub fn handle_at(
        &mut self,
        from: NodeId,
        epoch: u64,
        message: CoherenceMessage,
    ) -> Vec<Outbound> {
        if epoch != self.epoch {
            return Vec::new();
        }
        self.handle(from, message)
    }

    fn on_holdings(&mut self, from: NodeId, lines: Vec<HeldLine>, out: &mut Vec<Outbound>) {
        let Some(recovery) = self.recovery.as_mut() else {
            if self.members.is_empty() || self.members.contains(&from) {
                // Recovery is over; the ack was lost.
                out.push(Outbound::Send {
                    to: from,
                    message: CoherenceMessage::HoldingsAck,
                });
            }
            return;
        };
        if !self.members.contains(&from) {
            return;
        }
        if recovery.awaiting.remove(&from) {
            for line in lines {
                recovery
                    .held
                    .entry(line.key.clone())
                    .or_default()
                    .push((from, line));
            }
            if recovery.awaiting.is_empty() {
                recovery.reports_done_tick = Some(self.now_tick);
            }
        }
        out.push(Outbound::Send {
            to: from,
            message: CoherenceMessage::HoldingsAck,
        });
        self.finish_recovery_if_due(out);
    }

    fn finish_recovery_if_due(&mut self, out: &mut Vec<Outbound>) {
        let Some(recovery) = self.recovery.as_ref() else {
            return;
        };
        let Some(done) = recovery.reports_done_tick else {
            return;
        };
        let wait = if recovery.removed_member {
            self.config.lease_ticks + self.config.lease_revoke_margin_ticks
        } else {
            0
        };
        if self.now_tick < done + wait {
            return;
        }
        let mut recovery = self.recovery.take().expect("checked above");
        if self.config.injected_bugs.rebuild_without_holdings {
            recovery.held.clear();
        }
        for (key, reports) in recovery.held {
            self.rebuild_entry(key, reports, out);
        }
    }

    /// Rebuilds one key's entry from the members' reports.
    ///
    /// - At most one member reports an owned (M/E) copy: a member that adopted the view keeps its
    ///   owned line and answers no old home, so no old home can have granted it to another.
    ///   It becomes the owner; its data (dirty or not) stays the truth, written back when fetched
    ///   or evicted as always.
    /// - Shared copies are recorded as sharers only when nobody owns the key (an old home may
    ///   have revoked them and granted M since; they are never served again in any case, see
    ///   [`crate::CacheNode::set_members`], so recording them only costs `Invalidate`s).
    /// - Dirty data handed to an old home in a `FetchResponse` and newer than the owner's (or
    ///   with no owner) is written back before any transaction on the key starts.
    fn rebuild_entry(
        &mut self,
        key: Key,
        reports: Vec<(NodeId, HeldLine)>,
        out: &mut Vec<Outbound>,
    ) {
        let mut entry = DirectoryEntry::default();
        let owners: Vec<&(NodeId, HeldLine)> = reports
            .iter()
            .filter(|(_, line)| line.state.is_owned())
            .collect();
        assert!(
            owners.len() <= 1,
            "membership invariant: {key:?} reported owned by several members: {owners:?}"
        );
        let owner = owners.first().map(|(node, line)| (*node, line.clone()));
        for (node, line) in &reports {
            entry.version = entry.version.max(line.data.version);
            self.next_seq = self.next_seq.max(line.grant.0);
            let holding = match (line.state, &owner) {
                (LineState::Modified | LineState::Exclusive, _) => Holding {
                    mode: HolderMode::Owned,
                    grant: line.grant,
                },
                (LineState::Shared, None) => Holding {
                    mode: HolderMode::Shared,
                    grant: line.grant,
                },
                _ => continue,
            };
            entry.holders.insert(*node, holding);
        }
        let owner_version = owner.as_ref().map(|(_, line)| line.data.version);
        let restore = reports
            .iter()
            .filter(|(_, line)| line.dirty && Some(line.data.version) > owner_version)
            .map(|(_, line)| line.data.clone())
            .max_by_key(|data| data.version);
        entry.assert_invariants(&key);
        let Some(data) = restore else {
            if !entry.is_idle_and_empty() {
                self.entries.insert(key, entry);
            }
            return;
        };
        self.next_seq += 1;
        entry.active = Some(Active {
            request: Request {
                from: self.id,
                txn: TxnId(0),
                kind: RequestKind::Restore,
            },
            seq: DirectorySeq(self.next_seq),
            awaiting_fetch: None,
            awaiting_acks: BTreeSet::new(),
            data: Some(data),
            dirty: true,
            backing: None,
            grant: None,
            last_sent_tick: self.now_tick,
        });
        self.entries.insert(key.clone(), entry);
        self.active_keys.insert(key.clone());
        self.advance(&key, out);
    }

    /// This home's node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The entry of `key`, if the home tracks it.
    pub fn entry(&self, key: &Key) -> Option<&DirectoryEntry> {
        self.entries.get(key)
    }

    /// All tracked keys and their entries.
    pub fn entries(&self) -> impl Iterator<Item = (&Key, &DirectoryEntry)> {
        self.entries.iter()
    }

    /// Whether no transaction is active or queued.
    pub fn is_quiescent(&self) -> bool {
        self.active_keys.is_empty()
    }

    /// Handles a message from node `from` addressed to the directory (see
    /// [`CoherenceMessage::is_for_directory`]); other messages are ignored. The message is taken
    /// to belong to the current membership epoch (see [`Directory::handle_at`]).
    pub fn handle(&mut self, from: NodeId, message: CoherenceMessage) -> Vec<Outbound> {
        let mut out = Vec::new();
        if self.recovery.is_some()
            && !matches!(
                message,
                CoherenceMessage::Holdings { .. }
                    | CoherenceMessage::Heartbeat { .. }
                    | CoherenceMessage::WriteBack { .. }
            )
        {
            // No entry exists yet; requests are retransmitted, notices dropped here leave at
            // worst a stale holder (answered "not here").
            return out;
        }
        match message {
            CoherenceMessage::Holdings { lines } => self.on_holdings(from, lines, &mut out),
            CoherenceMessage::GetShared { key, txn } => {
                self.on_request(from, txn, key, RequestKind::GetShared, &mut out)
            }
            CoherenceMessage::GetModified { key, txn } => {
                self.on_request(from, txn, key, RequestKind::GetModified, &mut out)
            }
            CoherenceMessage::Upgrade { key, txn } => {
                self.on_request(from, txn, key, RequestKind::Upgrade, &mut out)
            }
            CoherenceMessage::PutModified {
                key,
                txn,
                data,
                grant,
            } => self.on_request(
                from,
                txn,
                key,
                RequestKind::PutModified { data, grant },
                &mut out,
            ),
            CoherenceMessage::PutShared { key, grant }
            | CoherenceMessage::PutExclusive { key, grant } => {
                self.on_put_notice(from, &key, grant)
            }
            CoherenceMessage::GrantAck { key, txn } => self.on_grant_ack(from, key, txn, &mut out),
            CoherenceMessage::InvalidateAck { key, seq } => {
                self.on_invalidate_ack(from, key, seq, &mut out)
            }
            CoherenceMessage::FetchResponse {
                key,
                seq,
                data,
                dirty,
            } => self.on_fetch_response(from, key, seq, data, dirty, &mut out),
            CoherenceMessage::WriteBack { key, data } => {
                self.on_write_back(from, key, data, &mut out)
            }
            CoherenceMessage::Heartbeat { sent_tick } => {
                self.confirm_sent_tick.insert(from, self.now_tick);
                out.push(Outbound::Send {
                    to: from,
                    message: CoherenceMessage::HeartbeatAck { sent_tick },
                });
            }
            CoherenceMessage::Grant { .. }
            | CoherenceMessage::Invalidate { .. }
            | CoherenceMessage::Fetch { .. }
            | CoherenceMessage::PutAck { .. }
            | CoherenceMessage::WriteBackAck { .. }
            | CoherenceMessage::HoldingsAck
            | CoherenceMessage::HeartbeatAck { .. } => {}
        }
        out
    }

    /// Feeds the backing store's answer to a request this directory issued.
    pub fn on_backing(&mut self, response: BackingResponse) -> Vec<Outbound> {
        let mut out = Vec::new();
        let key = response.key.clone();
        if let Some(write_back) = self.pending_write_backs_remove(&response) {
            out.push(write_back);
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return out;
        };
        let Some(active) = entry.active.as_mut() else {
            return out;
        };
        if active.backing.as_ref().map(|request| request.id) != Some(response.id) {
            return out;
        }
        active.backing = None;
        match response.result {
            BackingResult::Read(data) => {
                entry.version = entry.version.max(data.version);
                active.data = Some(data);
            }
            BackingResult::Written => active.dirty = false,
        }
        self.advance(&key, &mut out);
        out
    }

    /// One logical tick: retransmits whatever active transactions still wait for.
    pub fn tick(&mut self) -> Vec<Outbound> {
        self.now_tick += 1;
        let mut out = Vec::new();
        self.finish_recovery_if_due(&mut out);
        let retry = self.config.retry_interval_ticks;
        for key in &self.active_keys {
            let entry = self
                .entries
                .get_mut(key)
                .expect("an active key has an entry");
            let active = entry
                .active
                .as_mut()
                .expect("an active key has a transaction");
            if self.now_tick < active.last_sent_tick + retry {
                continue;
            }
            active.last_sent_tick = self.now_tick;
            if active.grant.is_some() {
                self.confirm_sent_tick
                    .insert(active.request.from, self.now_tick);
            }
            Self::send_waiting_for(key, active, &mut out);
        }
        self.revoke_expired_sharers(&mut out);
        for (request, _, last_sent_tick) in self.write_backs.values_mut() {
            if self.now_tick >= *last_sent_tick + retry {
                *last_sent_tick = self.now_tick;
                out.push(Outbound::Backing(request.clone()));
            }
        }
        out
    }

    /// A sharer that has not answered an `Invalidate` and whose lease has certainly run out
    /// (no confirmation sent to it for `lease_ticks + lease_revoke_margin_ticks`) no longer
    /// serves its copy and drops it before its lease is renewed: count it as acknowledged, so a
    /// partitioned reader does not block writers for longer than that.
    fn revoke_expired_sharers(&mut self, out: &mut Vec<Outbound>) {
        let expiry = self.config.lease_ticks + self.config.lease_revoke_margin_ticks;
        let mut progressed = Vec::new();
        for key in &self.active_keys {
            let entry = self
                .entries
                .get_mut(key)
                .expect("an active key has an entry");
            let active = entry
                .active
                .as_mut()
                .expect("an active key has a transaction");
            let expired: Vec<NodeId> = active
                .awaiting_acks
                .iter()
                .copied()
                .filter(|node| {
                    let confirmed = self.confirm_sent_tick.get(node).copied().unwrap_or(0);
                    self.now_tick >= confirmed + expiry
                })
                .collect();
            if expired.is_empty() {
                continue;
            }
            for node in expired {
                active.awaiting_acks.remove(&node);
                entry.holders.remove(&node);
            }
            progressed.push(key.clone());
        }
        for key in progressed {
            self.advance(&key, out);
        }
    }

    fn send_waiting_for(key: &Key, active: &Active, out: &mut Vec<Outbound>) {
        if let Some((owner, downgrade_to)) = active.awaiting_fetch {
            out.push(Outbound::Send {
                to: owner,
                message: CoherenceMessage::Fetch {
                    key: key.clone(),
                    seq: active.seq,
                    downgrade_to,
                },
            });
        }
        for sharer in &active.awaiting_acks {
            out.push(Outbound::Send {
                to: *sharer,
                message: CoherenceMessage::Invalidate {
                    key: key.clone(),
                    seq: active.seq,
                },
            });
        }
        if let Some(request) = &active.backing {
            out.push(Outbound::Backing(request.clone()));
        }
        if let Some(grant) = &active.grant {
            out.push(Outbound::Send {
                to: active.request.from,
                message: grant.clone(),
            });
        }
    }

    fn on_request(
        &mut self,
        from: NodeId,
        txn: TxnId,
        key: Key,
        kind: RequestKind,
        out: &mut Vec<Outbound>,
    ) {
        let limit = self.config.pending_requests_per_key_max;
        let entry = self.entries.entry(key.clone()).or_default();
        if entry
            .accepted_txn
            .get(&from)
            .is_some_and(|last| txn <= *last)
        {
            // A retransmission. A finished PutModified is acknowledged again (its PutAck may
            // have been lost); everything else is in progress or already answered.
            let in_progress = entry
                .active
                .as_ref()
                .is_some_and(|active| active.request.from == from && active.request.txn == txn)
                || entry
                    .queue
                    .iter()
                    .any(|request| request.from == from && request.txn == txn);
            if !in_progress && matches!(kind, RequestKind::PutModified { .. }) {
                out.push(Outbound::Send {
                    to: from,
                    message: CoherenceMessage::PutAck { key, txn },
                });
            }
            return;
        }
        if entry.queue.len() >= limit {
            // Backpressure: drop it; the requester retransmits on its tick.
            return;
        }
        entry.accepted_txn.insert(from, txn);
        entry.queue.push_back(Request { from, txn, kind });
        if entry.active.is_none() {
            self.start_next(&key, out);
        }
    }

    fn on_put_notice(&mut self, from: NodeId, key: &Key, grant: DirectorySeq) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry
            .holders
            .get(&from)
            .is_some_and(|holding| holding.grant == grant)
        {
            entry.holders.remove(&from);
        }
        if entry.is_idle_and_empty() {
            self.entries.remove(key);
        }
    }

    fn on_grant_ack(&mut self, from: NodeId, key: Key, txn: TxnId, out: &mut Vec<Outbound>) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let Some(active) = entry.active.as_ref() else {
            return;
        };
        if active.request.from != from || active.request.txn != txn {
            return;
        }
        let Some(CoherenceMessage::Grant { state, seq, .. }) = active.grant else {
            return;
        };
        let mode = if state == LineState::Shared {
            HolderMode::Shared
        } else {
            HolderMode::Owned
        };
        if mode == HolderMode::Owned {
            let bug = self.config.injected_bugs.grant_before_invalidate_acks;
            assert!(
                bug || entry.holders.is_empty(),
                "directory invariant: M/E granted for {key:?} while others hold it: {:?}",
                entry.holders
            );
            entry.holders.clear();
        }
        entry.holders.insert(from, Holding { mode, grant: seq });
        self.finish(&key, out);
    }

    fn on_invalidate_ack(
        &mut self,
        from: NodeId,
        key: Key,
        seq: DirectorySeq,
        out: &mut Vec<Outbound>,
    ) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let Some(active) = entry.active.as_mut() else {
            return;
        };
        if active.seq != seq || !active.awaiting_acks.remove(&from) {
            return;
        }
        if entry
            .holders
            .get(&from)
            .is_some_and(|holding| holding.grant < seq)
        {
            entry.holders.remove(&from);
        }
        self.advance(&key, out);
    }

    fn on_fetch_response(
        &mut self,
        from: NodeId,
        key: Key,
        seq: DirectorySeq,
        data: Option<LineData>,
        dirty: bool,
        out: &mut Vec<Outbound>,
    ) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let Some(active) = entry.active.as_mut() else {
            return;
        };
        let Some((owner, downgrade_to)) = active.awaiting_fetch else {
            return;
        };
        if active.seq != seq || owner != from {
            return;
        }
        active.awaiting_fetch = None;
        entry.holders.remove(&from);
        if let Some(data) = data {
            entry.version = entry.version.max(data.version);
            if downgrade_to == LineState::Shared {
                entry.holders.insert(
                    from,
                    Holding {
                        mode: HolderMode::Shared,
                        grant: seq,
                    },
                );
            }
            active.dirty = dirty;
            active.data = Some(data);
        }
        self.advance(&key, out);
    }

    fn on_write_back(&mut self, from: NodeId, key: Key, data: LineData, out: &mut Vec<Outbound>) {
        // Write-through of an owner's write. The backing store applies it only if no newer
        // version is there, so it needs no serialisation with the key's transactions.
        let request = self.new_backing_request(key, BackingOp::Write(data));
        self.write_backs
            .insert(request.id, (request.clone(), from, self.now_tick));
        out.push(Outbound::Backing(request));
    }

    fn pending_write_backs_remove(&mut self, response: &BackingResponse) -> Option<Outbound> {
        let (request, to, _) = self.write_backs.remove(&response.id)?;
        let BackingOp::Write(data) = request.op else {
            unreachable!("write-back requests are writes by construction");
        };
        let version = data.version;
        Some(Outbound::Send {
            to,
            message: CoherenceMessage::WriteBackAck {
                key: response.key.clone(),
                version,
            },
        })
    }

    fn new_backing_request(&mut self, key: Key, op: BackingOp) -> BackingRequest {
        self.next_backing_id += 1;
        BackingRequest {
            id: BackingRequestId(self.next_backing_id),
            key,
            op,
        }
    }

    /// Starts the next queued request of `key`, if any and if none is active.
    fn start_next(&mut self, key: &Key, out: &mut Vec<Outbound>) {
        let entry = self.entries.get_mut(key).expect("caller checked the entry");
        assert!(entry.active.is_none(), "one transaction per key at a time");
        let Some(request) = entry.queue.pop_front() else {
            if entry.is_idle_and_empty() {
                self.entries.remove(key);
            }
            return;
        };
        self.next_seq += 1;
        let seq = DirectorySeq(self.next_seq);
        let mut active = Active {
            request: request.clone(),
            seq,
            awaiting_fetch: None,
            awaiting_acks: BTreeSet::new(),
            data: None,
            dirty: false,
            backing: None,
            grant: None,
            last_sent_tick: self.now_tick,
        };
        let requester = request.from;
        match &request.kind {
            RequestKind::GetShared | RequestKind::GetModified | RequestKind::Upgrade => {
                // The requester asks, so it holds no valid copy any more (a node sends a request
                // only from I, drops S before an Upgrade, and puts M/E back before re-asking).
                entry.holders.remove(&requester);
                let downgrade_to = if request.kind == RequestKind::GetShared {
                    LineState::Shared
                } else {
                    LineState::Invalid
                };
                for (node, holding) in &entry.holders {
                    match holding.mode {
                        HolderMode::Owned => active.awaiting_fetch = Some((*node, downgrade_to)),
                        HolderMode::Shared if downgrade_to == LineState::Invalid => {
                            active.awaiting_acks.insert(*node);
                        }
                        HolderMode::Shared => {}
                    }
                }
            }
            RequestKind::Restore => unreachable!("a restore is started by rebuild_entry"),
            RequestKind::PutModified { data, grant } => {
                let current = entry.holders.get(&requester).is_some_and(|holding| {
                    holding.mode == HolderMode::Owned && holding.grant == *grant
                });
                if current {
                    entry.holders.remove(&requester);
                    entry.version = entry.version.max(data.version);
                    active.data = Some(data.clone());
                    active.dirty = true;
                }
            }
        }
        Self::send_waiting_for(key, &active, out);
        entry.active = Some(active);
        self.active_keys.insert(key.clone());
        self.advance(key, out);
    }

    /// Moves the active transaction of `key` forward as far as its answers allow.
    fn advance(&mut self, key: &Key, out: &mut Vec<Outbound>) {
        let bug = self.config.injected_bugs.grant_before_invalidate_acks;
        let entry = self.entries.get_mut(key).expect("caller checked the entry");
        let Some(active) = entry.active.as_mut() else {
            return;
        };
        if active.awaiting_fetch.is_some()
            || (!active.awaiting_acks.is_empty() && !bug)
            || active.backing.is_some()
            || active.grant.is_some()
        {
            return;
        }
        if active.dirty {
            let data = active
                .data
                .clone()
                .expect("dirty data is present by construction");
            self.next_backing_id += 1;
            let request = BackingRequest {
                id: BackingRequestId(self.next_backing_id),
                key: key.clone(),
                op: BackingOp::Write(data),
            };
            out.push(Outbound::Backing(request.clone()));
            active.backing = Some(request);
            active.last_sent_tick = self.now_tick;
            return;
        }
        if active.request.kind == RequestKind::Restore {
            self.finish(key, out);
            return;
        }
        if let RequestKind::PutModified { .. } = active.request.kind {
            out.push(Outbound::Send {
                to: active.request.from,
                message: CoherenceMessage::PutAck {
                    key: key.clone(),
                    txn: active.request.txn,
                },
            });
            self.finish(key, out);
            return;
        }
        let Some(data) = active.data.clone() else {
            self.next_backing_id += 1;
            let request = BackingRequest {
                id: BackingRequestId(self.next_backing_id),
                key: key.clone(),
                op: BackingOp::Read,
            };
            out.push(Outbound::Backing(request.clone()));
            active.backing = Some(request);
            active.last_sent_tick = self.now_tick;
            return;
        };
        let state = match active.request.kind {
            RequestKind::GetShared => {
                let others = entry
                    .holders
                    .keys()
                    .any(|node| *node != active.request.from);
                if others {
                    LineState::Shared
                } else {
                    LineState::Exclusive
                }
            }
            _ => LineState::Modified,
        };
        if state.is_owned() && !bug {
            assert!(
                entry.holders.is_empty(),
                "directory invariant: granting {state} on {key:?} while {:?} hold copies",
                entry.holders
            );
        }
        let grant = CoherenceMessage::Grant {
            key: key.clone(),
            txn: active.request.txn,
            seq: active.seq,
            state,
            data,
        };
        out.push(Outbound::Send {
            to: active.request.from,
            message: grant.clone(),
        });
        self.confirm_sent_tick
            .insert(active.request.from, self.now_tick);
        active.grant = Some(grant);
        active.last_sent_tick = self.now_tick;
    }

    fn finish(&mut self, key: &Key, out: &mut Vec<Outbound>) {
        let entry = self.entries.get_mut(key).expect("caller checked the entry");
        entry.active = None;
        entry.assert_invariants(key);
        self.active_keys.remove(key);
        self.start_next(key, out);
    }
}
