//! Lock modes and their compatibility.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a lock is held: many shared holders may coexist, an exclusive holder is alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockMode {
    /// Readers: any number of shared holders coexist.
    Shared,
    /// Writer: an exclusive holder excludes every other holder.
    Exclusive,
}

impl LockMode {
    /// Whether a holder in `self` mode and a holder in `other` mode may hold the same name at the
    /// same time (only shared with shared).
    pub fn is_compatible_with(self, other: LockMode) -> bool {
        matches!((self, other), (LockMode::Shared, LockMode::Shared))
    }

    /// Whether holding `self` already satisfies a request for `requested` (exclusive covers
    /// shared), so an acquire for `requested` returns the existing grant.
    pub fn covers(self, requested: LockMode) -> bool {
        self == LockMode::Exclusive || requested == LockMode::Shared
    }

    /// The lower-case name used in the API and logs: `shared` or `exclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::LockMode::{Exclusive, Shared};

    #[test]
    fn only_shared_with_shared_is_compatible() {
        // Proves the compatibility matrix: S/S yes, every pair with X no.
        assert!(Shared.is_compatible_with(Shared));
        assert!(!Shared.is_compatible_with(Exclusive));
        assert!(!Exclusive.is_compatible_with(Shared));
        assert!(!Exclusive.is_compatible_with(Exclusive));
    }

    #[test]
    fn exclusive_covers_shared_but_not_the_reverse() {
        // Proves which held mode satisfies a repeated acquire without a new grant.
        assert!(Exclusive.covers(Shared));
        assert!(Exclusive.covers(Exclusive));
        assert!(Shared.covers(Shared));
        assert!(!Shared.covers(Exclusive));
    }
}
