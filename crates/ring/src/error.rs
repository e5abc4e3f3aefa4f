//! The one error type of the ring.

/// Why a ring operation was refused.
///
/// Lookups never fail: an empty ring answers `None`. Only configuration and membership changes
/// can be refused, and each variant carries what the caller needs to react.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// `vnodes_per_member` was outside `1..=VNODES_PER_MEMBER_MAX`.
    #[error("vnodes_per_member must be in 1..={max}, got {got}")]
    InvalidVnodesPerMember {
        /// The value that was asked for.
        got: u32,
        /// The largest value accepted ([`crate::VNODES_PER_MEMBER_MAX`]).
        max: u32,
    },
    /// A member with this name is already on the ring; placement depends only on names, so two
    /// members with one name would own exactly the same points.
    #[error("member {name:?} is already on the ring")]
    MemberExists {
        /// The name that is already taken.
        name: String,
    },
    /// No member with this name is on the ring.
    #[error("member {name:?} is not on the ring")]
    UnknownMember {
        /// The name that was not found.
        name: String,
    },
}
