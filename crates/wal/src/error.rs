//! The one error type of this crate.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while opening, writing or recovering the durable storage.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system call on `path` failed.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },
    /// Data on disk is damaged somewhere other than a torn tail, or the files do not fit
    /// together (a missing segment, a gap in log indexes). Never repaired automatically: an
    /// operator must look at `path`.
    #[error("corrupt WAL data in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file (or the WAL directory when files are missing).
        path: PathBuf,
        /// Byte offset of the first damaged record inside `path`.
        offset: u64,
        /// What is wrong, in words.
        reason: String,
    },
    /// A record could not be encoded; this is a bug in a `Serialize` implementation.
    #[error("encoding a WAL record")]
    Encode(#[source] postcard::Error),
    /// A record passed its checksum but could not be decoded: it was written by an incompatible
    /// version of this crate, or the encoder and decoder disagree (a bug). Not a torn write.
    #[error("decoding the record in {} at offset {offset}", path.display())]
    Decode {
        /// The file holding the record.
        path: PathBuf,
        /// Byte offset of the record inside `path`.
        offset: u64,
        /// What the decoder reported.
        #[source]
        source: postcard::Error,
    },
    /// One persist call produced a record larger than the frame's 32-bit length field allows.
    #[error("a WAL record of {bytes} bytes exceeds the 4 GiB frame limit")]
    RecordTooLarge {
        /// Encoded size of the record.
        bytes: usize,
    },
    /// The data directory belongs to another node: running on it would reuse that node's votes.
    #[error(
        "{} says this data directory belongs to node {recorded}, not node {proposed}; give each node its own directory",
        path.display()
    )]
    IdentityMismatch {
        /// The identity file.
        path: PathBuf,
        /// The node id recorded there.
        recorded: u64,
        /// The node id this process was started with.
        proposed: u64,
    },
    /// Another process holds the data directory open.
    #[error("{} is locked by another process (is this node already running?)", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An earlier write or fsync failed, so what the files hold is no longer known (after a
    /// failed fsync the kernel may have dropped the dirty pages). Reopen the storage to recover.
    #[error("the WAL is unusable after an earlier write or fsync failure; reopen it")]
    Poisoned,
}

/// Attaches the path an I/O error is about.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`WalError::Io`] naming `path`.
    fn at(self, path: &Path) -> Result<T, WalError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, WalError> {
        self.map_err(|source| WalError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl WalError {
    /// A [`WalError::Corrupt`] for `path` at `offset`.
    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
        WalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}
