//! Newtypes for the protocol's integers, so that a term and an index cannot be swapped.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
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
    /// Identity of a Raft node; never reused for a different node.
    NodeId
);
id_type!(
    /// A Raft term. Term 0 is the term before any election.
    Term
);
id_type!(
    /// Position of an entry in the log. Index 0 is the empty prefix; real entries start at 1.
    LogIndex
);
id_type!(
    /// Caller-chosen identifier of a linearizable read request.
    ReadId
);

impl LogIndex {
    /// The index right after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index right before this one (saturating at 0).
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl Term {
    /// The term right after this one.
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}
