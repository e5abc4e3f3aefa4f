//! Who is in the cache cluster, and which node homes which key: the one place that knows.
//!
//! Every node is named (`c1`, `c2`, …); its [`NodeId`] is a fixed hash of the name, so every
//! node computes the same ids and the same homes from the same names without any coordination.
//! Homes come from the consistent-hash ring over the names of the current view's members. The
//! view `(epoch, members)` changes at run time: the [`FailureDetector`] suspects a silent node,
//! the coordinator (the live member of the current view that sorts first) issues a view without
//! it, or with a node that came back or joined — only while it hears a majority of the current
//! view, so a partition's minority never goes on as a cluster of its own — and every node adopts
//! the highest epoch it hears of; a dead node's keys thereby move to the next node on the ring, and a new node takes over
//! its share of the ring.
//!
//! The roster (every node this one may talk to) starts as the `--cluster` list (the seeds) and
//! grows when a node it has never heard of announces itself with its addresses: that is how a
//! node started later, with the seeds in its `--cluster`, joins without restarting the others.

use distsync_cache::{HomeSelector, NodeId};
use distsync_ring::HashRing;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the name → id hash. Changing it changes every node's id: never change it.
const NODE_ID_SEED: u64 = 0x6361_6368_656e_6f64; // "cachenod"

/// Virtual nodes per member on the ring (the same on every node).
pub const VNODES_PER_MEMBER: u32 = 128;

/// The id every node derives for the node called `name`.
pub fn node_id_of(name: &str) -> NodeId {
    // 0 is never used as an id, so a zeroed field can never name a real node.
    NodeId(xxh3_64_with_seed(name.as_bytes(), NODE_ID_SEED).max(1))
}

/// One node of the cache cluster and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheMember {
    /// Its name (`c1`).
    pub name: String,
    /// Its id, derived from the name.
    pub id: NodeId,
    /// HTTP API address (`host:port`).
    pub http: String,
    /// Peer (coherence) address (`host:port`).
    pub peer: String,
}

/// `c1=HTTP_ADDR/PEER_ADDR,c2=…`: the cluster as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheClusterSpec {
    /// Members in the order given.
    pub members: Vec<CacheMember>,
}

/// Why a cluster specification could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid cache cluster {entry:?}: {reason} (expected NAME=HTTP_ADDR/PEER_ADDR,…)")]
pub struct CacheClusterSpecError {
    entry: String,
    reason: String,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl FromStr for CacheClusterSpec {
    type Err = CacheClusterSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut members: Vec<CacheMember> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let error = |reason: &str| CacheClusterSpecError {
                entry: entry.to_string(),
                reason: reason.to_string(),
            };
            let (name, addresses) = entry.split_once('=').ok_or_else(|| error("missing '='"))?;
            let name = name.trim();
            if !valid_name(name) {
                return Err(error("a node name is 1-64 of [A-Za-z0-9_-]"));
            }
            let (http, peer) = addresses
                .split_once('/')
                .ok_or_else(|| error("missing '/' between the two addresses"))?;
            if http.trim().is_empty() || peer.trim().is_empty() {
                return Err(error("empty address"));
            }
            let id = node_id_of(name);
            if let Some(other) = members.iter().find(|m| m.name == name || m.id == id) {
                return Err(error(&format!("node name clashes with {}", other.name)));
            }
            members.push(CacheMember {
                name: name.to_string(),
                id,
                http: http.trim().to_string(),
                peer: peer.trim().to_string(),
            });
        }
        if members.is_empty() {
            return Err(CacheClusterSpecError {
                entry: text.to_string(),
                reason: "no members".into(),
            });
        }
        Ok(CacheClusterSpec { members })
    }
}

impl fmt::Display for CacheClusterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}/{}", m.name, m.http, m.peer))
            .collect();
        write!(f, "{}", entries.join(","))
    }
}

/// A node's name and addresses as it announces itself to nodes that may not know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedMember {
    /// Its name.
    pub name: String,
    /// HTTP API address.
    pub http: String,
    /// Peer address.
    pub peer: String,
}

impl AnnouncedMember {
    /// The member this announcement describes, if its name is valid.
    pub fn to_member(&self) -> Option<CacheMember> {
        valid_name(&self.name).then(|| CacheMember {
            name: self.name.clone(),
            id: node_id_of(&self.name),
            http: self.http.clone(),
            peer: self.peer.clone(),
        })
    }
}

impl From<&CacheMember> for AnnouncedMember {
    fn from(member: &CacheMember) -> Self {
        AnnouncedMember {
            name: member.name.clone(),
            http: member.http.clone(),
            peer: member.peer.clone(),
        }
    }
}

/// A member of a view: its name, the incarnation (process start stamp) the coordinator saw, and
/// its slot. A restarted node has a new incarnation, so a view that lists its previous life does
/// not include it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ViewMember {
    /// The member's name.
    pub name: String,
    /// Its incarnation (0: unknown, only in the boot view of epoch 0).
    pub incarnation: u64,
    /// Its slot: unique among the view's members, kept for as long as it stays a member, and
    /// the low bits of every epoch it issues as coordinator (see [`epoch_of`]).
    pub slot: u8,
}

/// Bits of an epoch that hold the slot of the coordinator that issued it: two members of one
/// view that both believe they coordinate (a partition) never issue the same epoch.
pub const EPOCH_RANK_BITS: u32 = 8;

/// How many nodes a view can hold: one per slot.
pub const MAX_MEMBERS: usize = 1 << EPOCH_RANK_BITS;

/// Epochs stay below this: directory sequences are `epoch << 40` in a `u64`.
pub const EPOCH_LIMIT: u64 = 1 << 24;

/// The epoch a coordinator in slot `slot` issues as its `counter`-th view.
pub fn epoch_of(counter: u64, slot: u8) -> u64 {
    (counter << EPOCH_RANK_BITS) | u64::from(slot)
}

/// The counter part of `epoch`.
pub fn counter_of(epoch: u64) -> u64 {
    epoch >> EPOCH_RANK_BITS
}

/// One immutable membership view: its epoch, the members and the ring over them.
#[derive(Debug)]
pub struct MembershipView {
    epoch: u64,
    members: BTreeMap<NodeId, CacheMember>,
    /// Per member: its incarnation and slot.
    identities: BTreeMap<NodeId, (u64, u8)>,
    ids_by_name: BTreeMap<String, NodeId>,
    ring: HashRing<String>,
}

impl MembershipView {
    /// The boot view (epoch 0) of the seeds `members` (at least one, at most [`MAX_MEMBERS`]),
    /// incarnations unknown, slots in name order.
    ///
    /// # Errors
    /// No members, too many, or the ring refuses a name.
    pub fn new(mut members: Vec<CacheMember>) -> anyhow::Result<Self> {
        members.sort_by(|a, b| a.name.cmp(&b.name));
        anyhow::ensure!(
            members.len() <= MAX_MEMBERS,
            "a cache cluster has at most {MAX_MEMBERS} nodes"
        );
        let members = members
            .into_iter()
            .enumerate()
            .map(|(slot, member)| (member, 0, slot as u8))
            .collect();
        Self::with_epoch(0, members)
    }

    fn with_epoch(epoch: u64, members: Vec<(CacheMember, u64, u8)>) -> anyhow::Result<Self> {
        anyhow::ensure!(!members.is_empty(), "a cache cluster needs a member");
        let mut ring = HashRing::new(VNODES_PER_MEMBER)?;
        let mut ids_by_name = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        let mut identities = BTreeMap::new();
        for (member, incarnation, slot) in members {
            ring.add(member.name.clone())?;
            ids_by_name.insert(member.name.clone(), member.id);
            identities.insert(member.id, (incarnation, slot));
            by_id.insert(member.id, member);
        }
        Ok(MembershipView {
            epoch,
            members: by_id,
            identities,
            ids_by_name,
            ring,
        })
    }

    /// The view's epoch (0: the boot view, which serves nothing).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The home of `key`.
    pub fn home_of(&self, key: &[u8]) -> NodeId {
        let name = self.ring.owner(key).expect("a view always has a member");
        self.ids_by_name[name]
    }

    /// A member by id.
    pub fn member(&self, id: NodeId) -> Option<&CacheMember> {
        self.members.get(&id)
    }

    /// A member by name.
    pub fn member_named(&self, name: &str) -> Option<&CacheMember> {
        self.ids_by_name
            .get(name)
            .and_then(|id| self.members.get(id))
    }

    /// Every member, ordered by id.
    pub fn members(&self) -> impl Iterator<Item = &CacheMember> {
        self.members.values()
    }

    /// The members' ids, as the core takes them.
    pub fn ids(&self) -> Vec<NodeId> {
        self.members.keys().copied().collect()
    }

    /// The members' names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.ids_by_name.keys().cloned().collect()
    }

    /// The members with their incarnations and slots, sorted by name (what a `View` message
    /// carries).
    pub fn view_members(&self) -> Vec<ViewMember> {
        self.ids_by_name
            .iter()
            .map(|(name, id)| {
                let (incarnation, slot) = self.identities[id];
                ViewMember {
                    name: name.clone(),
                    incarnation,
                    slot,
                }
            })
            .collect()
    }

    /// Whether this view includes the node `name` in its incarnation `incarnation`.
    pub fn includes(&self, name: &str, incarnation: u64) -> bool {
        self.ids_by_name
            .get(name)
            .is_some_and(|id| self.identities[id].0 == incarnation)
    }

    /// The slot of member `name`.
    pub fn slot_of(&self, name: &str) -> Option<u8> {
        self.ids_by_name.get(name).map(|id| self.identities[id].1)
    }

    /// The name of `id`, or its number when it is not a member.
    pub fn name_of(&self, id: NodeId) -> String {
        self.member(id)
            .map_or_else(|| format!("#{id}"), |member| member.name.clone())
    }
}

/// One node of the roster: where to reach it, and whether it came from `--cluster` (a seed is
/// never forgotten; a node learned at run time is, once it has been gone for long).
#[derive(Clone, Debug)]
struct RosterEntry {
    member: CacheMember,
    seed: bool,
}

/// Every node this one knows (the `--cluster` seeds, itself, and nodes that announced
/// themselves since) and the current view over them, shared by the node's core (as its
/// [`HomeSelector`]), the handlers and the failure detector. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Membership {
    roster: Arc<RwLock<BTreeMap<String, RosterEntry>>>,
    current: Arc<RwLock<Arc<MembershipView>>>,
}

impl Membership {
    /// The cluster of the seeds `roster`, starting with their boot view (epoch 0). `own` is
    /// this node: one of the seeds, or a node joining the seeds' cluster.
    ///
    /// # Errors
    /// An empty or oversized roster, or the ring refuses a name.
    pub fn new(roster: Vec<CacheMember>, own: &CacheMember) -> anyhow::Result<Self> {
        let view = MembershipView::new(roster.clone())?;
        let mut entries: BTreeMap<String, RosterEntry> = roster
            .into_iter()
            .map(|member| (member.name.clone(), RosterEntry { member, seed: true }))
            .collect();
        entries
            .entry(own.name.clone())
            .or_insert_with(|| RosterEntry {
                member: own.clone(),
                seed: false,
            });
        Ok(Membership {
            roster: Arc::new(RwLock::new(entries)),
            current: Arc::new(RwLock::new(Arc::new(view))),
        })
    }

    fn read_roster(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, RosterEntry>> {
        self.roster
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write_roster(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, RosterEntry>> {
        self.roster
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Every node known, by name.
    pub fn roster(&self) -> Vec<CacheMember> {
        self.read_roster()
            .values()
            .map(|entry| entry.member.clone())
            .collect()
    }

    /// The seeds' names (the `--cluster` list).
    pub fn seed_names(&self) -> Vec<String> {
        self.read_roster()
            .values()
            .filter(|entry| entry.seed)
            .map(|entry| entry.member.name.clone())
            .collect()
    }

    /// A known node by id.
    pub fn roster_member(&self, id: NodeId) -> Option<CacheMember> {
        self.read_roster()
            .values()
            .find(|entry| entry.member.id == id)
            .map(|entry| entry.member.clone())
    }

    /// Adds a node that announced itself, or updates the addresses of a node learned earlier
    /// (a restarted container may come back on a new address); returns it when something
    /// changed. A seed's addresses are never replaced: the command line's win, so a test may
    /// give each node its own (proxied) address for a peer.
    pub fn learn(&self, announced: &AnnouncedMember) -> Option<CacheMember> {
        let member = announced.to_member()?;
        let mut roster = self.write_roster();
        match roster.get(&member.name) {
            Some(entry) if entry.seed || entry.member == member => return None,
            _ => {}
        }
        if roster
            .values()
            .any(|entry| entry.member.id == member.id && entry.member.name != member.name)
        {
            return None;
        }
        roster.insert(
            member.name.clone(),
            RosterEntry {
                member: member.clone(),
                seed: false,
            },
        );
        Some(member)
    }

    /// Forgets a node learned at run time (never a seed); returns whether it was forgotten.
    pub fn forget(&self, name: &str) -> Option<CacheMember> {
        let mut roster = self.write_roster();
        if roster.get(name).is_some_and(|entry| !entry.seed) {
            roster.remove(name).map(|entry| entry.member)
        } else {
            None
        }
    }

    /// The view `(epoch, members)` over the roster.
    ///
    /// # Errors
    /// A member is not in the roster, two share a slot, or there is none.
    pub fn view(&self, epoch: u64, members: &[ViewMember]) -> anyhow::Result<MembershipView> {
        let roster = self.read_roster();
        let mut resolved = Vec::new();
        let mut slots = BTreeSet::new();
        for member in members {
            let known = roster.get(&member.name).ok_or_else(|| {
                anyhow::anyhow!("view member {} is not a known node", member.name)
            })?;
            anyhow::ensure!(
                slots.insert(member.slot),
                "two view members share slot {}",
                member.slot
            );
            resolved.push((known.member.clone(), member.incarnation, member.slot));
        }
        MembershipView::with_epoch(epoch, resolved)
    }

    /// The current view (a snapshot; a later [`Membership::replace`] does not change it).
    pub fn current(&self) -> Arc<MembershipView> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    /// Publishes a new view; every later home lookup uses it. Only the engine calls this, under
    /// the core's lock and right before it hands the same view to the core, so the shell and the
    /// core never disagree about homes.
    pub fn replace(&self, view: MembershipView) {
        *self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(view);
    }
}

impl HomeSelector for Membership {
    fn home_of(&self, key: &[u8]) -> NodeId {
        self.current
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .home_of(key)
    }

    fn set_members(&mut self, members: &[NodeId]) {
        // The engine published the view first; the core is told the same members. Anything else
        // would be two views at once: keep the core's word and rebuild the ring from it.
        let current = self.current();
        if current.ids() == members {
            return;
        }
        tracing::error!(
            ?members,
            "the core's members differ from the published view"
        );
        let rebuilt: Vec<ViewMember> = current
            .view_members()
            .into_iter()
            .filter(|member| {
                self.read_roster()
                    .get(&member.name)
                    .is_some_and(|known| members.contains(&known.member.id))
            })
            .collect();
        if let Ok(view) = self.view(current.epoch(), &rebuilt) {
            self.replace(view);
        }
    }
}

/// The heartbeat failure detector and the coordinator's view decisions of one node. Pure: the
/// caller passes the time.
///
/// Every node hears every known node's periodic `View` gossip (and any other message); a node
/// silent for `timeout` is suspected. The coordinator is the live member of the current view
/// that sorts first by name (of the seeds, before the first view); only it issues views, so
/// every node adopts the same `(epoch, members)`. A node that is not a member never
/// coordinates: a joining node is admitted by the coordinator of the view it joins. A
/// coordinator issues a view only while it hears a majority of the current view's members (of
/// the seeds, before the first view; members that said they leave do not count), so of two
/// sides of a partition at most one moves on. Epochs carry the issuer's slot, so two members
/// that both believe they coordinate (a partition whose sides overlap) never issue the same
/// epoch; the higher epoch wins everywhere.
#[derive(Debug)]
pub struct FailureDetector {
    own: String,
    own_incarnation: u64,
    timeout: Duration,
    started: Instant,
    /// The seeds' names, sorted: the boot view's members.
    seeds: Vec<String>,
    /// Every node known (seeds, this one, and nodes learned since).
    known: BTreeSet<String>,
    /// Per other node: when it was last heard, and its newest known incarnation (None until
    /// its first `View`).
    heard: BTreeMap<String, (Instant, Option<u64>)>,
    /// When each node learned at run time was learned.
    learned: BTreeMap<String, Instant>,
    /// Nodes that said they leave, with the incarnation that left: they no longer count
    /// towards a view's majority.
    departed: BTreeMap<String, u64>,
    /// Per other node, the newest view epoch it said it adopted, and the incarnation that said
    /// so: a node outside the current view is admitted only once it adopted that view.
    adopted: BTreeMap<String, (u64, u64)>,
    highest_counter: u64,
    /// Issue views without a majority of the current one (an injected bug, for negative
    /// controls only).
    ignore_majority: bool,
}

impl FailureDetector {
    /// A detector for node `own` (incarnation `own_incarnation`) of the cluster of `seeds`,
    /// started at `now`.
    pub fn new(
        own: &str,
        own_incarnation: u64,
        seeds: impl IntoIterator<Item = String>,
        timeout: Duration,
        now: Instant,
    ) -> Self {
        let mut seeds: Vec<String> = seeds.into_iter().collect();
        seeds.sort();
        seeds.dedup();
        let mut known: BTreeSet<String> = seeds.iter().cloned().collect();
        known.insert(own.to_string());
        FailureDetector {
            own: own.to_string(),
            own_incarnation,
            timeout,
            started: now,
            seeds,
            known,
            heard: BTreeMap::new(),
            learned: BTreeMap::new(),
            departed: BTreeMap::new(),
            adopted: BTreeMap::new(),
            highest_counter: 0,
            ignore_majority: false,
        }
    }

    /// Test only (negative controls): issue views without a majority, as a partition's
    /// minority must never do.
    pub fn ignoring_majority(mut self) -> Self {
        self.ignore_majority = true;
        self
    }

    /// A node announced itself at `now`: it is watched (and may be admitted) from now on.
    pub fn learn(&mut self, name: &str, now: Instant) {
        if self.known.insert(name.to_string()) {
            self.learned.insert(name.to_string(), now);
        }
    }

    /// A node learned at run time is forgotten (it left long ago).
    pub fn forget(&mut self, name: &str) {
        self.known.remove(name);
        self.heard.remove(name);
        self.learned.remove(name);
        self.departed.remove(name);
        self.adopted.remove(name);
    }

    /// `name` said its incarnation `incarnation` is leaving: it counts as dead from now on,
    /// without waiting for the timeout, until it is heard again.
    pub fn left(&mut self, name: &str, incarnation: u64) {
        if self
            .heard
            .get(name)
            .is_some_and(|(_, heard)| heard.is_none_or(|heard| heard == incarnation))
        {
            self.heard.remove(name);
            self.departed.insert(name.to_string(), incarnation);
        }
    }

    /// `name` sent something at `now` (with its incarnation, when the message carries it).
    pub fn heard(&mut self, name: &str, incarnation: Option<u64>, now: Instant) {
        if !self.known.contains(name) {
            return;
        }
        let entry = self
            .heard
            .entry(name.to_string())
            .or_insert((now, incarnation));
        entry.0 = now;
        if incarnation.is_some() {
            entry.1 = incarnation;
        }
        if let Some(incarnation) = incarnation
            && self
                .departed
                .get(name)
                .is_some_and(|left| *left != incarnation)
        {
            // A new life of a node that left: it counts again.
            self.departed.remove(name);
        }
    }

    /// `name`, in its incarnation `incarnation`, gossiped that it adopted the view `epoch`.
    pub fn reported_view(&mut self, name: &str, incarnation: u64, epoch: u64) {
        if !self.known.contains(name) {
            return;
        }
        let entry = self
            .adopted
            .entry(name.to_string())
            .or_insert((incarnation, epoch));
        if entry.0 == incarnation {
            entry.1 = entry.1.max(epoch);
        } else {
            *entry = (incarnation, epoch);
        }
    }

    /// Whether the live node `name` (in `incarnation`) may be a member of the view after
    /// `current`: a member of `current` stays; any other node must have adopted `current`
    /// first. A node left out of a view drops every line when it adopts that view; admitted
    /// to a later one before it heard of its exclusion, it would carry lines from before it
    /// into a view whose homes rebuilt without them and may have granted them elsewhere since.
    fn admissible(&self, current: &MembershipView, name: &str, incarnation: u64) -> bool {
        name == self.own
            || current.includes(name, incarnation)
            || self.adopted.get(name).is_some_and(|(adopter, epoch)| {
                *adopter == incarnation && *epoch >= current.epoch()
            })
    }

    /// When `name` was last heard, or learned if it was never heard.
    pub fn last_sign_of_life(&self, name: &str) -> Option<Instant> {
        self.heard
            .get(name)
            .map(|(at, _)| *at)
            .or_else(|| self.learned.get(name).copied())
    }

    /// An epoch was seen: later views are numbered above it.
    pub fn saw_epoch(&mut self, epoch: u64) {
        self.highest_counter = self.highest_counter.max(counter_of(epoch));
    }

    fn heard_recently(&self, name: &str, now: Instant) -> Option<u64> {
        if name == self.own {
            return Some(self.own_incarnation);
        }
        let (at, incarnation) = self.heard.get(name)?;
        if now.saturating_duration_since(*at) < self.timeout {
            *incarnation
        } else {
            None
        }
    }

    /// Whether `name` counts as alive for choosing the coordinator: heard within the timeout,
    /// or never heard while this node is younger than the timeout (a node booting must not
    /// take over before it could have heard the others).
    fn presumed_live(&self, name: &str, now: Instant) -> bool {
        if name == self.own {
            return true;
        }
        match self.heard.get(name) {
            Some((at, _)) => now.saturating_duration_since(*at) < self.timeout,
            None => now.saturating_duration_since(self.started) < self.timeout,
        }
    }

    /// The node that decides the view after `current`, as this node sees it now.
    pub fn coordinator(&self, current: &MembershipView, now: Instant) -> String {
        let candidates = if current.epoch() == 0 {
            self.seeds.clone()
        } else {
            current.names()
        };
        candidates
            .into_iter()
            .find(|name| self.presumed_live(name, now))
            .unwrap_or_else(|| self.own.clone())
    }

    /// The known nodes alive now (heard within the timeout, incarnation known) and this one.
    fn live(&self, now: Instant) -> Vec<(String, u64)> {
        self.known
            .iter()
            .filter_map(|name| {
                self.heard_recently(name, now)
                    .map(|incarnation| (name.clone(), incarnation))
            })
            .collect()
    }

    /// Whether `live` holds a majority of the members of `current` (of the seeds, before the
    /// first view), not counting members that said they leave. Only then may a coordinator
    /// issue the next view: two sides of a partition cannot both hold a majority, so the
    /// minority keeps its view (and, without a quorum of leases, serves nothing) instead of
    /// going on as a cluster of its own beside the majority.
    fn sees_majority(&self, current: &MembershipView, live: &[(String, u64)]) -> bool {
        let voters: Vec<String> = if current.epoch() == 0 {
            self.seeds.clone()
        } else {
            current
                .view_members()
                .into_iter()
                .filter(|member| self.departed.get(&member.name) != Some(&member.incarnation))
                .map(|member| member.name)
                .collect()
        };
        let reachable = voters
            .iter()
            .filter(|voter| live.iter().any(|(name, _)| name == *voter))
            .count();
        reachable * 2 > voters.len()
    }

    /// The view this node issues now, if it coordinates and `current` is not what it sees:
    /// `(epoch, members)`. At boot it waits until it heard every seed or the timeout passed, so
    /// a cluster starting together begins with one full view. Members keep their slots; a
    /// newcomer gets the lowest slot no member of `current` holds, once it adopted `current`.
    /// It needs a majority of `current` alive; the engine asks only while a majority of
    /// `current` also confirmed this node's lease lately (which this count, lagging by up to
    /// the timeout, cannot tell).
    pub fn proposal(
        &self,
        current: &MembershipView,
        now: Instant,
    ) -> Option<(u64, Vec<ViewMember>)> {
        if self.coordinator(current, now) != self.own {
            return None;
        }
        let in_current = current.epoch() == 0 || current.includes(&self.own, self.own_incarnation);
        let own_slot = current.slot_of(&self.own).filter(|_| in_current)?;
        let live = self.live(now);
        if current.epoch() == 0
            && !self
                .seeds
                .iter()
                .all(|seed| live.iter().any(|(name, _)| name == seed))
            && now.saturating_duration_since(self.started) < self.timeout
        {
            return None;
        }
        if !self.ignore_majority && !self.sees_majority(current, &live) {
            return None;
        }
        let mut taken: BTreeSet<u8> = current
            .view_members()
            .iter()
            .map(|member| member.slot)
            .collect();
        let mut members = Vec::with_capacity(live.len());
        for (name, incarnation) in live {
            if !self.admissible(current, &name, incarnation) {
                continue;
            }
            let slot = match current.slot_of(&name) {
                Some(slot) => slot,
                None => {
                    let Some(free) = (0..=u8::MAX).find(|slot| !taken.contains(slot)) else {
                        tracing::error!(node = %name, "no free slot: the view is full");
                        continue;
                    };
                    taken.insert(free);
                    free
                }
            };
            members.push(ViewMember {
                name,
                incarnation,
                slot,
            });
        }
        if current.epoch() != 0 && current.view_members() == members {
            return None;
        }
        let counter = self.highest_counter.max(counter_of(current.epoch())) + 1;
        let epoch = epoch_of(counter, own_slot);
        if epoch >= EPOCH_LIMIT {
            tracing::error!(epoch, "view epochs exhausted; restart the cluster");
            return None;
        }
        Some((epoch, members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_names_and_both_addresses() {
        // Proves the documented `NAME=HTTP/PEER` syntax and the derived ids.
        let spec: CacheClusterSpec = "c1=127.0.0.1:1/127.0.0.1:2, c2=h:3/h:4".parse().unwrap();
        assert_eq!(spec.members.len(), 2);
        assert_eq!(spec.members[1].name, "c2");
        assert_eq!(spec.members[1].http, "h:3");
        assert_eq!(spec.members[1].peer, "h:4");
        assert_eq!(spec.members[0].id, node_id_of("c1"));
        assert_ne!(spec.members[0].id, spec.members[1].id);
        assert_eq!(spec.to_string(), "c1=127.0.0.1:1/127.0.0.1:2,c2=h:3/h:4");
    }

    #[test]
    fn spec_rejects_duplicates_bad_names_and_missing_parts() {
        // Proves each malformed entry is refused with a reason instead of a half-built cluster.
        for bad in [
            "",
            "c1",
            "c1=a:1",
            "c1=/b:2",
            "c 1=a:1/b:2",
            "c1=a:1/b:2,c1=a:3/b:4",
        ] {
            assert!(bad.parse::<CacheClusterSpec>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_node_computes_the_same_homes_whatever_the_order() {
        // Proves homes depend only on names: two views built in different orders agree.
        let spec: CacheClusterSpec = "c1=a:1/a:2,c2=b:1/b:2,c3=c:1/c:2".parse().unwrap();
        let mut reversed = spec.members.clone();
        reversed.reverse();
        let one = MembershipView::new(spec.members).unwrap();
        let two = MembershipView::new(reversed).unwrap();
        let mut homes = std::collections::BTreeSet::new();
        for i in 0..200 {
            let key = format!("key-{i}");
            assert_eq!(one.home_of(key.as_bytes()), two.home_of(key.as_bytes()));
            homes.insert(one.home_of(key.as_bytes()));
        }
        assert_eq!(homes.len(), 3, "200 keys spread over every node");
    }

    fn members(names: &[&str]) -> Vec<CacheMember> {
        names
            .iter()
            .map(|name| CacheMember {
                name: (*name).to_string(),
                id: node_id_of(name),
                http: format!("{name}:1"),
                peer: format!("{name}:2"),
            })
            .collect()
    }

    /// What the engine does with a `View` gossip of `name`: it is heard, and its view noted.
    fn gossip(
        detector: &mut FailureDetector,
        name: &str,
        incarnation: u64,
        epoch: u64,
        at: Instant,
    ) {
        detector.heard(name, Some(incarnation), at);
        detector.reported_view(name, incarnation, epoch);
    }

    fn names_of(members: &[ViewMember]) -> Vec<&str> {
        members.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn coordinator_leaves_out_a_silent_node_and_rivals_never_share_an_epoch() {
        // Proves the view rules: boot waits for every node, a silent node is dropped, a
        // restarted one (new incarnation) forces a new view, and two would-be coordinators
        // issue different epochs.
        let seeds = members(&["c1", "c2", "c3"]);
        let membership = Membership::new(seeds.clone(), &seeds[0]).unwrap();
        let names = || ["c1", "c2", "c3"].map(String::from);
        let timeout = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut c1 = FailureDetector::new("c1", 11, names(), timeout, t0);
        assert_eq!(c1.proposal(&membership.current(), t0), None, "boot waits");
        gossip(&mut c1, "c2", 22, 0, t0);
        gossip(&mut c1, "c3", 33, 0, t0);
        let (epoch, members) = c1.proposal(&membership.current(), t0).unwrap();
        assert_eq!(epoch, epoch_of(1, 0));
        assert_eq!(members.len(), 3);
        let view = membership.view(epoch, &members).unwrap();
        assert!(view.includes("c3", 33) && !view.includes("c3", 34));
        assert_eq!(c1.proposal(&view, t0), None, "nothing changed");
        let later = t0 + Duration::from_millis(150);
        gossip(&mut c1, "c2", 22, epoch, later);
        let (next, members) = c1.proposal(&view, later).unwrap();
        assert!(next > epoch);
        assert_eq!(names_of(&members), ["c1", "c2"]);
        // A new life of c3 is admitted once it adopted the view (so it holds nothing from it).
        gossip(&mut c1, "c3", 34, 0, later);
        let (_, members) = c1.proposal(&view, later).unwrap();
        assert_eq!(names_of(&members), ["c1", "c2"], "c3 still booting");
        gossip(&mut c1, "c3", 34, epoch, later);
        let (_, members) = c1.proposal(&view, later).unwrap();
        assert!(members.contains(&ViewMember {
            name: "c3".into(),
            incarnation: 34,
            slot: 2,
        }));
        // c2 cut off from c1 coordinates too, with its own slot in the epoch.
        let mut c2 = FailureDetector::new("c2", 22, names(), timeout, t0);
        c2.heard("c3", Some(33), later);
        assert_eq!(c2.coordinator(&view, later), "c2");
        let (rival, _) = c2.proposal(&view, later).unwrap();
        assert_ne!(rival, next);
        assert_eq!(counter_of(rival), counter_of(next));
    }

    #[test]
    fn a_joining_node_is_admitted_by_the_coordinator_with_a_free_slot_and_never_coordinates_first()
    {
        // Proves the join rules: the coordinator admits a node it learned of, with a slot no
        // member holds; the joiner, even though its name sorts first, issues no view until it
        // is a member; members keep their slots; a node that leaves is dropped at once.
        let seeds = members(&["c1", "c2", "c3"]);
        let joiner = members(&["a9"]).remove(0);
        let at_c1 = Membership::new(seeds.clone(), &seeds[0]).unwrap();
        let at_joiner = Membership::new(seeds.clone(), &joiner).unwrap();
        let timeout = Duration::from_millis(100);
        let t0 = Instant::now();
        let seed_names = || ["c1", "c2", "c3"].map(String::from);
        let mut c1 = FailureDetector::new("c1", 11, seed_names(), timeout, t0);
        gossip(&mut c1, "c2", 22, 0, t0);
        gossip(&mut c1, "c3", 33, 0, t0);
        let (epoch, boot) = c1.proposal(&at_c1.current(), t0).unwrap();
        let view = at_c1.view(epoch, &boot).unwrap();

        // The joiner hears the cluster's view; it is not a member, so it does not propose.
        let mut a9 = FailureDetector::new("a9", 99, seed_names(), timeout, t0);
        for (name, incarnation) in [("c1", 11), ("c2", 22), ("c3", 33)] {
            gossip(&mut a9, name, incarnation, epoch, t0);
        }
        let view_at_joiner = at_joiner.view(epoch, &boot).unwrap();
        assert_eq!(a9.coordinator(&view_at_joiner, t0), "c1");
        assert_eq!(a9.proposal(&view_at_joiner, t0), None);

        // A stranger's messages count only once it is learned.
        gossip(&mut c1, "a9", 99, epoch, t0);
        assert_eq!(
            c1.proposal(&view, t0),
            None,
            "an unknown node is not admitted"
        );
        assert!(at_c1.learn(&AnnouncedMember::from(&joiner)).is_some());
        assert!(
            at_c1.learn(&AnnouncedMember::from(&joiner)).is_none(),
            "known"
        );
        c1.learn("a9", t0);
        gossip(&mut c1, "a9", 99, epoch, t0);
        let (admitted, members) = c1.proposal(&view, t0).unwrap();
        assert!(admitted > epoch);
        assert_eq!(names_of(&members), ["a9", "c1", "c2", "c3"]);
        let slots: Vec<u8> = members.iter().map(|m| m.slot).collect();
        assert_eq!(
            slots,
            [3, 0, 1, 2],
            "members keep their slots; the joiner gets a free one"
        );
        let view = at_c1.view(admitted, &members).unwrap();
        assert_eq!(view.slot_of("a9"), Some(3));

        // Now a member whose name sorts first, the joiner coordinates, with its slot.
        assert!(at_joiner.view(admitted, &members).is_ok());
        let joined_view = at_joiner.view(admitted, &members).unwrap();
        assert_eq!(a9.coordinator(&joined_view, t0), "a9");
        a9.left("c3", 33);
        let (next, members) = a9.proposal(&joined_view, t0).unwrap();
        assert_eq!(next & 0xff, 3, "issued in the joiner's slot");
        assert_eq!(
            names_of(&members),
            ["a9", "c1", "c2"],
            "c3 left: dropped at once"
        );
        a9.left("c2", 21);
        let (_, members) = a9.proposal(&joined_view, t0).unwrap();
        assert!(
            names_of(&members).contains(&"c2"),
            "an older life leaving evicts no one"
        );
    }

    #[test]
    fn only_a_coordinator_that_hears_a_majority_issues_a_view() {
        // Proves the majority rule: of 5 members split 2 | 3, c1 (which coordinates its side,
        // being first by name) issues nothing, c3 issues the view of the 3; members that said
        // they leave do not count, so 3 -> 1 by two announced departures still goes on, while
        // two silent members stop it; at boot a majority of the seeds is needed as well.
        let names = ["c1", "c2", "c3", "c4", "c5"];
        let seeds = members(&names);
        let membership = Membership::new(seeds.clone(), &seeds[0]).unwrap();
        let timeout = Duration::from_millis(100);
        let t0 = Instant::now();
        let detector = |own: &str, incarnation: u64| {
            FailureDetector::new(own, incarnation, names.map(String::from), timeout, t0)
        };
        let mut c1 = detector("c1", 1);
        for (i, name) in names.iter().enumerate().skip(1) {
            gossip(&mut c1, name, i as u64 + 1, 0, t0);
        }
        let (epoch, all) = c1.proposal(&membership.current(), t0).unwrap();
        let view = membership.view(epoch, &all).unwrap();

        let later = t0 + Duration::from_millis(150);
        gossip(&mut c1, "c2", 2, epoch, later);
        assert_eq!(c1.coordinator(&view, later), "c1");
        assert_eq!(c1.proposal(&view, later), None, "2 of 5: the minority");
        let mut c3 = detector("c3", 3);
        for (name, incarnation) in [("c4", 4), ("c5", 5)] {
            gossip(&mut c3, name, incarnation, epoch, later);
        }
        assert_eq!(c3.coordinator(&view, later), "c3");
        let (_, majority) = c3.proposal(&view, later).unwrap();
        assert_eq!(names_of(&majority), ["c3", "c4", "c5"]);
        let lenient = detector("c1", 1).ignoring_majority();
        assert!(
            lenient.proposal(&view, later).is_some(),
            "the negative control's bug"
        );

        // A view of 3 shrinks to 1 when the two others leave, not when they fall silent.
        let three = membership.view(epoch + 256, &all[..3]).unwrap();
        let mut alone = detector("c1", 1);
        assert_eq!(alone.proposal(&three, later), None, "c2 and c3 silent");
        gossip(&mut alone, "c2", 2, epoch + 256, t0);
        gossip(&mut alone, "c3", 3, epoch + 256, t0);
        alone.left("c2", 2);
        alone.left("c3", 3);
        let (_, members) = alone.proposal(&three, later).unwrap();
        assert_eq!(names_of(&members), ["c1"]);

        // Boot: after the timeout, a majority of the seeds, not whoever was heard.
        let boot = membership.current();
        let mut early = detector("c1", 1);
        gossip(&mut early, "c2", 2, 0, later);
        assert_eq!(early.proposal(&boot, later), None, "2 of 5 seeds");
        gossip(&mut early, "c3", 3, 0, later);
        let (_, members) = early.proposal(&boot, later).unwrap();
        assert_eq!(names_of(&members), ["c1", "c2", "c3"]);
    }

    #[test]
    fn a_node_left_out_of_a_view_is_admitted_again_only_once_it_adopted_that_view() {
        // Proves the return rule: c3, cut off, is left out of the next view; heard again while
        // it still has the old one (it missed its exclusion, as after a partition heals before
        // the view reached it), it is not admitted, since it still holds lines of the old view
        // that the new homes rebuilt without; once it reports the new view (having dropped
        // them), it is.
        let seeds = members(&["c1", "c2", "c3"]);
        let membership = Membership::new(seeds.clone(), &seeds[0]).unwrap();
        let timeout = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut c1 =
            FailureDetector::new("c1", 1, ["c1", "c2", "c3"].map(String::from), timeout, t0);
        gossip(&mut c1, "c2", 2, 0, t0);
        gossip(&mut c1, "c3", 3, 0, t0);
        let (epoch, all) = c1.proposal(&membership.current(), t0).unwrap();
        let full = membership.view(epoch, &all).unwrap();
        let later = t0 + Duration::from_millis(150);
        gossip(&mut c1, "c2", 2, epoch, later);
        let (next, two) = c1.proposal(&full, later).unwrap();
        assert_eq!(names_of(&two), ["c1", "c2"]);
        let without_c3 = membership.view(next, &two).unwrap();
        gossip(&mut c1, "c3", 3, epoch, later);
        assert_eq!(
            c1.proposal(&without_c3, later),
            None,
            "c3 still in the old view"
        );
        gossip(&mut c1, "c3", 3, next, later);
        let (_, three) = c1.proposal(&without_c3, later).unwrap();
        assert_eq!(names_of(&three), ["c1", "c2", "c3"]);
    }

    #[test]
    fn a_view_with_two_members_in_one_slot_or_an_unknown_member_is_refused() {
        // Proves a corrupt or foreign view cannot be adopted.
        let seeds = members(&["c1", "c2"]);
        let membership = Membership::new(seeds.clone(), &seeds[0]).unwrap();
        let member = |name: &str, slot| ViewMember {
            name: name.into(),
            incarnation: 1,
            slot,
        };
        assert!(
            membership
                .view(256, &[member("c1", 0), member("c2", 0)])
                .is_err()
        );
        assert!(
            membership
                .view(256, &[member("c1", 0), member("x", 1)])
                .is_err()
        );
        assert!(
            membership
                .view(256, &[member("c1", 0), member("c2", 1)])
                .is_ok()
        );
        assert!(
            membership.forget("c2").is_none(),
            "a seed is never forgotten"
        );
    }
}
