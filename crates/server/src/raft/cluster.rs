//! The cluster as given on the command line: node ids and the addresses to dial them at.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Where to reach one node. Addresses are only for dialing; a node is identified by its id, so a
/// test may hand each node different (proxied) addresses for the same peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddress {
    /// Client API address (`host:port`).
    pub http: String,
    /// Peer (Raft) address (`host:port`).
    pub raft: String,
}

/// `1=HTTP_ADDR/RAFT_ADDR,2=…`: the bootstrap members and their addresses.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClusterSpec {
    /// Members by id.
    pub members: BTreeMap<u64, MemberAddress>,
}

/// Why a cluster specification could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid cluster specification {entry:?}: {reason} (expected ID=HTTP_ADDR/RAFT_ADDR,…)")]
pub struct ClusterSpecError {
    entry: String,
    reason: &'static str,
}

impl FromStr for ClusterSpec {
    type Err = ClusterSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut members = BTreeMap::new();
        for entry in text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let error = |reason| ClusterSpecError {
                entry: entry.to_string(),
                reason,
            };
            let (id, addresses) = entry.split_once('=').ok_or_else(|| error("missing '='"))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| error("node id is not a number"))?;
            if id == 0 {
                return Err(error("node id 0 is reserved"));
            }
            let (http, raft) = addresses
                .split_once('/')
                .ok_or_else(|| error("missing '/' between the two addresses"))?;
            if http.trim().is_empty() || raft.trim().is_empty() {
                return Err(error("empty address"));
            }
            let address = MemberAddress {
                http: http.trim().to_string(),
                raft: raft.trim().to_string(),
            };
            if members.insert(id, address).is_some() {
                return Err(error("node id listed twice"));
            }
        }
        if members.is_empty() {
            return Err(ClusterSpecError {
                entry: text.to_string(),
                reason: "no members",
            });
        }
        Ok(ClusterSpec { members })
    }
}

impl fmt::Display for ClusterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .members
            .iter()
            .map(|(id, address)| format!("{id}={}/{}", address.http, address.raft))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_both_addresses() {
        // Proves the documented `ID=HTTP/RAFT,…` syntax round-trips.
        let spec: ClusterSpec = "1=127.0.0.1:7001/127.0.0.1:8001, 2=h2:7002/h2:8002"
            .parse()
            .unwrap();
        assert_eq!(spec.members.len(), 2);
        assert_eq!(spec.members[&2].raft, "h2:8002");
        assert_eq!(spec.to_string().parse::<ClusterSpec>().unwrap(), spec);
    }

    #[test]
    fn rejects_malformed_entries_with_a_reason() {
        // Proves bad specs fail with a message instead of a half-built cluster.
        for bad in ["", "1=a", "x=a/b", "0=a/b", "1=a/b,1=c/d", "1=/b"] {
            assert!(bad.parse::<ClusterSpec>().is_err(), "{bad:?} accepted");
        }
    }
}
