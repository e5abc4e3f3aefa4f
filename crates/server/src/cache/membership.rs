//! Who is in the cache cluster, and which node homes which key: the one place that knows.
//!
//! Every node is named (`c1`, `c2`, …); its [`NodeId`] is a fixed hash of the name, so every
//! node computes the same ids and the same homes from the same `--cluster` list without any
//! coordination. Homes come from the consistent-hash ring over the names of the current view's
//! members. The view `(epoch, members)` changes at run time: the [`FailureDetector`] suspects a
//! silent node, the coordinator (the live node that sorts first) issues a view without it (or
//! with a node that came back), and every node adopts the highest epoch it hears of; a dead
//! node's keys thereby move to the next node on the ring.

use distsync_cache::{HomeSelector, Key, NodeId};
use distsync_ring::HashRing;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

/// A member of a view: its name and the incarnation (process start stamp) the coordinator saw.
/// A restarted node has a new incarnation, so a view that lists its previous life does not
/// include it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ViewMember {
    /// The member's name.
    pub name: String,
    /// Its incarnation (0: unknown, only in the boot view of epoch 0).
    pub incarnation: u64,
}

/// Bits of an epoch that hold the rank of the coordinator that issued it: two nodes that both
/// believe they coordinate never issue the same epoch.
pub const EPOCH_RANK_BITS: u32 = 8;

/// Epochs stay below this: directory sequences are `epoch << 40` in a `u64`.
pub const EPOCH_LIMIT: u64 = 1 << 24;

/// The epoch a coordinator of roster rank `rank` issues as its `counter`-th view.
pub fn epoch_of(counter: u64, rank: usize) -> u64 {
    (counter << EPOCH_RANK_BITS) | rank as u64
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
    incarnations: BTreeMap<NodeId, u64>,
    ids_by_name: BTreeMap<String, NodeId>,
    ring: HashRing<String>,
}

impl MembershipView {
    /// The boot view (epoch 0) of `members` (at least one), incarnations unknown.
    ///
    /// # Errors
    /// No members, or the ring refuses a name.
    pub fn new(members: Vec<CacheMember>) -> anyhow::Result<Self> {
        Self::with_epoch(0, members.into_iter().map(|m| (m, 0)).collect())
    }

    fn with_epoch(epoch: u64, members: Vec<(CacheMember, u64)>) -> anyhow::Result<Self> {
        anyhow::ensure!(!members.is_empty(), "a cache cluster needs a member");
        let mut ring = HashRing::new(VNODES_PER_MEMBER)?;
        let mut ids_by_name = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        let mut incarnations = BTreeMap::new();
        for (member, incarnation) in members {
            ring.add(member.name.clone())?;
            ids_by_name.insert(member.name.clone(), member.id);
            incarnations.insert(member.id, incarnation);
            by_id.insert(member.id, member);
        }
        Ok(MembershipView {
            epoch,
            members: by_id,
            incarnations,
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

    /// The members with their incarnations, sorted by name (what a `View` message carries).
    pub fn view_members(&self) -> Vec<ViewMember> {
        self.ids_by_name
            .iter()
            .map(|(name, id)| ViewMember {
                name: name.clone(),
                incarnation: self.incarnations[id],
            })
            .collect()
    }

    /// Whether this view includes the node `name` in its incarnation `incarnation`.
    pub fn includes(&self, name: &str, incarnation: u64) -> bool {
        self.ids_by_name
            .get(name)
            .is_some_and(|id| self.incarnations[id] == incarnation)
    }

    /// The name of `id`, or its number when it is not a member.
    pub fn name_of(&self, id: NodeId) -> String {
        self.member(id)
            .map_or_else(|| format!("#{id}"), |member| member.name.clone())
    }
}

/// Every node the cluster may ever contain (the `--cluster` list) and the current view over
/// them, shared by the node's core (as its [`HomeSelector`]), the handlers and the failure
/// detector. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Membership {
    roster: Arc<BTreeMap<String, CacheMember>>,
    current: Arc<RwLock<Arc<MembershipView>>>,
}

impl Membership {
    /// The cluster of `roster`, starting with its boot view (epoch 0).
    ///
    /// # Errors
    /// An empty roster, or the ring refuses a name.
    pub fn new(roster: Vec<CacheMember>) -> anyhow::Result<Self> {
        let view = MembershipView::new(roster.clone())?;
        Ok(Membership {
            roster: Arc::new(
                roster
                    .into_iter()
                    .map(|member| (member.name.clone(), member))
                    .collect(),
            ),
            current: Arc::new(RwLock::new(Arc::new(view))),
        })
    }

    /// Every node of the cluster, by name.
    pub fn roster(&self) -> impl Iterator<Item = &CacheMember> {
        self.roster.values()
    }

    /// A roster node by id.
    pub fn roster_member(&self, id: NodeId) -> Option<&CacheMember> {
        self.roster.values().find(|member| member.id == id)
    }

    /// The view `(epoch, members)` over the roster.
    ///
    /// # Errors
    /// A member is not in the roster, or there is none.
    pub fn view(&self, epoch: u64, members: &[ViewMember]) -> anyhow::Result<MembershipView> {
        let mut resolved = Vec::new();
        for member in members {
            let known = self.roster.get(&member.name).ok_or_else(|| {
                anyhow::anyhow!("view member {} is not in the cluster", member.name)
            })?;
            resolved.push((known.clone(), member.incarnation));
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
    fn home_of(&self, key: &Key) -> NodeId {
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
                self.roster
                    .get(&member.name)
                    .is_some_and(|known| members.contains(&known.id))
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
/// Every node hears every roster node's periodic `View` gossip (and any other message); a node
/// silent for `timeout` is suspected. The coordinator is the live roster node that sorts first
/// by name; only it issues views, so every node adopts the same `(epoch, members)`. Epochs carry
/// the issuer's rank, so two nodes that both believe they coordinate (a partition) never issue the
/// same epoch; the higher epoch wins everywhere.
#[derive(Debug)]
pub struct FailureDetector {
    own: String,
    own_incarnation: u64,
    timeout: Duration,
    started: Instant,
    /// Roster names, sorted: the coordinator order and the epoch rank.
    roster: Vec<String>,
    /// Per other node: when it was last heard, and its newest known incarnation (None until
    /// its first `View`).
    heard: BTreeMap<String, (Instant, Option<u64>)>,
    highest_counter: u64,
}

impl FailureDetector {
    /// A detector for node `own` (incarnation `own_incarnation`) of `roster`, started at `now`.
    pub fn new(
        own: &str,
        own_incarnation: u64,
        roster: impl IntoIterator<Item = String>,
        timeout: Duration,
        now: Instant,
    ) -> Self {
        let mut roster: Vec<String> = roster.into_iter().collect();
        roster.sort();
        roster.dedup();
        FailureDetector {
            own: own.to_string(),
            own_incarnation,
            timeout,
            started: now,
            roster,
            heard: BTreeMap::new(),
            highest_counter: 0,
        }
    }

    /// `name` sent something at `now` (with its incarnation, when the message carries it).
    pub fn heard(&mut self, name: &str, incarnation: Option<u64>, now: Instant) {
        let entry = self
            .heard
            .entry(name.to_string())
            .or_insert((now, incarnation));
        entry.0 = now;
        if incarnation.is_some() {
            entry.1 = incarnation;
        }
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

    /// The node that decides views, as this node sees it now.
    pub fn coordinator(&self, now: Instant) -> &str {
        self.roster
            .iter()
            .find(|name| self.presumed_live(name, now))
            .map_or(self.own.as_str(), String::as_str)
    }

    /// The roster nodes alive now (heard within the timeout, incarnation known) and this one.
    pub fn live_members(&self, now: Instant) -> Vec<ViewMember> {
        self.roster
            .iter()
            .filter_map(|name| {
                self.heard_recently(name, now)
                    .map(|incarnation| ViewMember {
                        name: name.clone(),
                        incarnation,
                    })
            })
            .collect()
    }

    /// The view this node issues now, if it coordinates and `current` is not what it sees:
    /// `(epoch, members)`. At boot it waits until it heard every roster node or the timeout
    /// passed, so a cluster starting together begins with one full view.
    pub fn proposal(
        &self,
        current: &MembershipView,
        now: Instant,
    ) -> Option<(u64, Vec<ViewMember>)> {
        if self.coordinator(now) != self.own {
            return None;
        }
        let live = self.live_members(now);
        if current.epoch() == 0
            && live.len() < self.roster.len()
            && now.saturating_duration_since(self.started) < self.timeout
        {
            return None;
        }
        if current.epoch() != 0 && current.view_members() == live {
            return None;
        }
        let rank = self.roster.iter().position(|name| *name == self.own)?;
        let counter = self.highest_counter.max(counter_of(current.epoch())) + 1;
        let epoch = epoch_of(counter, rank);
        if epoch >= EPOCH_LIMIT {
            tracing::error!(epoch, "view epochs exhausted; restart the cluster");
            return None;
        }
        Some((epoch, live))
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

    #[test]
    fn coordinator_leaves_out_a_silent_node_and_rivals_never_share_an_epoch() {
        // Proves the view rules: boot waits for every node, a silent node is dropped, a
        // restarted one (new incarnation) forces a new view, and two would-be coordinators
        // issue different epochs.
        let spec: CacheClusterSpec = "c1=a:1/a:2,c2=b:1/b:2,c3=c:1/c:2".parse().unwrap();
        let membership = Membership::new(spec.members).unwrap();
        let names = || ["c1", "c2", "c3"].map(String::from);
        let timeout = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut c1 = FailureDetector::new("c1", 11, names(), timeout, t0);
        assert_eq!(c1.proposal(&membership.current(), t0), None, "boot waits");
        c1.heard("c2", Some(22), t0);
        c1.heard("c3", Some(33), t0);
        let (epoch, members) = c1.proposal(&membership.current(), t0).unwrap();
        assert_eq!(epoch, epoch_of(1, 0));
        assert_eq!(members.len(), 3);
        let view = membership.view(epoch, &members).unwrap();
        assert!(view.includes("c3", 33) && !view.includes("c3", 34));
        assert_eq!(c1.proposal(&view, t0), None, "nothing changed");
        let later = t0 + Duration::from_millis(150);
        c1.heard("c2", Some(22), later);
        let (next, members) = c1.proposal(&view, later).unwrap();
        assert!(next > epoch);
        assert_eq!(
            members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["c1", "c2"]
        );
        c1.heard("c3", Some(34), later);
        let (_, members) = c1.proposal(&view, later).unwrap();
        assert!(members.contains(&ViewMember {
            name: "c3".into(),
            incarnation: 34
        }));
        // c2 cut off from c1 coordinates too, with its own rank in the epoch.
        let mut c2 = FailureDetector::new("c2", 22, names(), timeout, t0);
        c2.heard("c3", Some(33), later);
        assert_eq!(c2.coordinator(later), "c2");
        let (rival, _) = c2.proposal(&view, later).unwrap();
        assert_ne!(rival, next);
        assert_eq!(counter_of(rival), counter_of(next));
    }
}
