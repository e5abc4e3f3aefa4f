//! Who is in the cache cluster, and which node homes which key: the one place that knows.
//!
//! Every node is named (`c1`, `c2`, …); its [`NodeId`] is a fixed hash of the name, so every
//! node computes the same ids and the same homes from the same `--cluster` list without any
//! coordination. Homes come from the consistent-hash ring over the names. The view is replaceable
//! at run time ([`Membership::replace`]) so that failure handling can move a dead node's keys to
//! the next node on the ring by publishing a new view.

use distsync_cache::{HomeSelector, Key, NodeId};
use distsync_ring::HashRing;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
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

/// One immutable membership: the members and the ring over them.
#[derive(Debug)]
pub struct MembershipView {
    members: BTreeMap<NodeId, CacheMember>,
    ids_by_name: BTreeMap<String, NodeId>,
    ring: HashRing<String>,
}

impl MembershipView {
    /// A view of `members` (at least one).
    ///
    /// # Errors
    /// No members, or the ring refuses a name.
    pub fn new(members: Vec<CacheMember>) -> anyhow::Result<Self> {
        anyhow::ensure!(!members.is_empty(), "a cache cluster needs a member");
        let mut ring = HashRing::new(VNODES_PER_MEMBER)?;
        let mut ids_by_name = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        for member in members {
            ring.add(member.name.clone())?;
            ids_by_name.insert(member.name.clone(), member.id);
            by_id.insert(member.id, member);
        }
        Ok(MembershipView {
            members: by_id,
            ids_by_name,
            ring,
        })
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

    /// The name of `id`, or its number when it is not a member.
    pub fn name_of(&self, id: NodeId) -> String {
        self.member(id)
            .map_or_else(|| format!("#{id}"), |member| member.name.clone())
    }
}

/// The current membership, shared by the node's core (as its [`HomeSelector`]), the handlers
/// and the peer transport. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Membership(Arc<RwLock<Arc<MembershipView>>>);

impl Membership {
    /// Starts with `view`.
    pub fn new(view: MembershipView) -> Self {
        Membership(Arc::new(RwLock::new(Arc::new(view))))
    }

    /// The current view (a snapshot; a later [`Membership::replace`] does not change it).
    pub fn current(&self) -> Arc<MembershipView> {
        Arc::clone(&self.0.read().unwrap_or_else(|poison| poison.into_inner()))
    }

    /// Publishes a new view; every later home lookup uses it. The caller updates the peer
    /// transport to match (see `CacheEngine::replace_membership`).
    pub fn replace(&self, view: MembershipView) {
        *self.0.write().unwrap_or_else(|poison| poison.into_inner()) = Arc::new(view);
    }
}

impl HomeSelector for Membership {
    fn home_of(&self, key: &Key) -> NodeId {
        self.0
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .home_of(key)
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
}
