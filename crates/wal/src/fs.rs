//! Small file-system helpers shared by segments and snapshots.

use crate::error::{IoContext, WalError};
use std::fs::File;
use std::path::Path;

/// Makes the directory entries of `dir` durable: a created, renamed or removed file is only
/// guaranteed to survive a crash once its directory has been fsynced.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).at(dir)?.sync_all().at(dir)
}

/// Whether every byte is zero (also true for an empty slice).
pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}
