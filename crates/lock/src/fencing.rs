//! Fencing tokens: a number that strictly increases with every grant, so a resource can reject a
//! request from a holder whose lock has since been granted to someone else.

use distsync_raft::LogIndex;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The number handed out with a grant. Tokens strictly increase across all grants of the table
/// (hence per lock name too) and are never reused, so a resource that remembers the highest token
/// it has seen can reject a paused, stale holder.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Issues fencing tokens derived from the log index of the granting entry.
///
/// A token is `max(last + 1, index)`: it equals the grant's log index whenever it can, and is
/// bumped past the previous token when one entry grants several waiters (a release can wake a
/// whole run of shared waiters) or when an earlier entry's grants ran ahead of the index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenIssuer {
    last: FencingToken,
}

impl TokenIssuer {
    /// The most recently issued token (0 before any grant).
    pub(crate) fn last(&self) -> FencingToken {
        self.last
    }

    /// Issue the token for a grant made while applying the entry at `index`.
    ///
    /// # Panics
    /// If the token would not increase (a u64 overflow, which 2^64 grants never reach).
    pub(crate) fn issue(&mut self, index: LogIndex) -> FencingToken {
        let next = self
            .last
            .0
            .checked_add(1)
            .expect("fencing token space exhausted")
            .max(index.0);
        let token = FencingToken(next);
        assert!(
            token > self.last,
            "fencing token did not increase: {token} after {}",
            self.last
        );
        self.last = token;
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_the_log_index_when_it_can_be() {
        // Proves a lone grant gets its entry's index as token.
        let mut issuer = TokenIssuer::default();
        assert_eq!(issuer.issue(LogIndex(7)), FencingToken(7));
        assert_eq!(issuer.issue(LogIndex(9)), FencingToken(9));
    }

    #[test]
    fn tokens_strictly_increase_within_one_entry_and_after_it() {
        // Proves several grants in one entry get distinct increasing tokens and the next entry
        // continues above them.
        let mut issuer = TokenIssuer::default();
        let a = issuer.issue(LogIndex(5));
        let b = issuer.issue(LogIndex(5));
        let c = issuer.issue(LogIndex(5));
        let d = issuer.issue(LogIndex(6));
        assert_eq!([a, b, c, d].map(|t| t.0), [5, 6, 7, 8]);
        assert_eq!(issuer.last(), FencingToken(8));
    }
}
