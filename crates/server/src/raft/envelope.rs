//! What the driver puts inside a Raft command entry and a Raft snapshot: the service's own bytes
//! plus the replicated address book, which the driver keeps itself so that a node added at run
//! time can be dialed by every member, including those that restart later.

use super::cluster::MemberAddress;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The payload of a Raft `Command` entry.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Envelope {
    /// A command of the service's state machine.
    Service(Vec<u8>),
    /// Record where a node can be reached (precedes adding it to the membership).
    SetAddress { id: u64, address: MemberAddress },
}

/// The data of a Raft snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotData {
    pub(crate) addresses: BTreeMap<u64, MemberAddress>,
    pub(crate) service: Vec<u8>,
}

impl Envelope {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("envelopes always serialize")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

impl SnapshotData {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("snapshots always serialize")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}
