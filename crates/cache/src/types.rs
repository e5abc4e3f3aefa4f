//! Newtypes for the protocol's integers, so that a transaction id and a version cannot be swapped.

use std::fmt;

use bytes::Bytes;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            serde::Serialize, serde::Deserialize,
        )]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// Identity of a cache node (it is also the home of the keys the ring maps to it).
    NodeId
);
id_type!(
    /// A node's coherence transaction (a request to a home); strictly increasing per node, so a
    /// home can drop retransmitted duplicates.
    TxnId
);
id_type!(
    /// A local operation (read, write, delete, evict, flush) whose completion the caller awaits.
    OpId
);
id_type!(
    /// A home's transaction sequence number, strictly increasing per directory. A line records
    /// the sequence of the transaction that granted it, so a node can tell a stale (duplicated,
    /// delayed) `Invalidate` or `Fetch` from a current one.
    DirectorySeq
);
id_type!(
    /// Version of a key's value: strictly increasing with every write of the key, cluster-wide.
    Version
);
id_type!(
    /// Correlates a backing-store request with its response.
    BackingRequestId
);

/// A cache key.
pub type Key = Bytes;
/// A cache value.
pub type Value = Bytes;

/// A key's data as it travels: the value (`None` = absent or deleted) and its version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LineData {
    /// The value; `None` means the key does not exist (never written, or deleted).
    pub value: Option<Value>,
    /// The version of this value; 0 for a key never written.
    pub version: Version,
}

impl LineData {
    /// Bytes this data takes in a line store (the value's length; a tombstone takes 1).
    pub fn size_bytes(&self) -> usize {
        self.value.as_ref().map_or(1, |value| value.len().max(1))
    }
}
