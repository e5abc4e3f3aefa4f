//! MESI line states and the node-side line.

use crate::types::{DirectorySeq, LineData};

/// The MESI state of a node's copy of a key.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum LineState {
    /// Only copy, written since it was granted; must be written back before it is dropped.
    Modified,
    /// Only copy, equal to the backing store; may become Modified without asking anyone.
    Exclusive,
    /// One of possibly several read-only copies, equal to the backing store.
    Shared,
    /// No valid copy.
    Invalid,
}

impl LineState {
    /// One-letter name used in traces, docs and the HTTP API (`M`, `E`, `S`, `I`).
    pub fn letter(self) -> char {
        match self {
            LineState::Modified => 'M',
            LineState::Exclusive => 'E',
            LineState::Shared => 'S',
            LineState::Invalid => 'I',
        }
    }

    /// Whether the copy may be read (M, E, S).
    pub fn is_valid(self) -> bool {
        self != LineState::Invalid
    }

    /// Whether this copy is the only one (M or E).
    pub fn is_owned(self) -> bool {
        matches!(self, LineState::Modified | LineState::Exclusive)
    }
}

impl std::fmt::Display for LineState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// A node's valid copy of a key, as kept in its [`crate::LineStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// M, E or S (an Invalid line is simply absent from the store).
    pub state: LineState,
    /// Value and version.
    pub data: LineData,
    /// The data is newer than the backing store (a write not yet written back). Only an M line
    /// can be dirty; under write-through it is clean again once the home acknowledges.
    pub dirty: bool,
    /// Sequence of the home transaction that granted (or last downgraded) this copy; an
    /// `Invalidate`/`Fetch` with a sequence at or below it is stale and ignored.
    pub grant: DirectorySeq,
}
