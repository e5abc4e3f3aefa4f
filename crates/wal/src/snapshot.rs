//! The snapshot file: one checksummed frame, replaced atomically.

use crate::error::{IoContext, WalError};
use crate::fs::sync_dir;
use crate::record::{Frame, decode, encode_frame, read_frame};
use distsync_raft::Snapshot;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The first bytes of the snapshot file (format version 1).
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"DSSNP01\n";

/// Path of the current snapshot inside the storage directory.
pub(crate) fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot")
}

/// Path a new snapshot is written to before it is renamed over [`snapshot_path`].
pub(crate) fn snapshot_tmp_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.tmp")
}

/// Replaces the snapshot file atomically: write a temporary file, fsync it, rename it over
/// the old one, fsync the directory. A crash leaves either the old or the new snapshot.
///
/// # Errors
/// [`WalError::Io`] for a failed write, fsync or rename; [`WalError::Encode`] or
/// [`WalError::RecordTooLarge`] when the snapshot cannot be framed.
pub(crate) fn write_snapshot_file(dir: &Path, snapshot: &Snapshot) -> Result<(), WalError> {
    let mut buf = Vec::with_capacity(SNAPSHOT_MAGIC.len() + 64 + snapshot.data.len());
    buf.extend_from_slice(&SNAPSHOT_MAGIC);
    encode_frame(snapshot, &mut buf)?;
    let tmp = snapshot_tmp_path(dir);
    let mut file = File::create(&tmp).at(&tmp)?;
    file.write_all(&buf).at(&tmp)?;
    file.sync_all().at(&tmp)?;
    drop(file);
    let path = snapshot_path(dir);
    std::fs::rename(&tmp, &path).at(&path)?;
    sync_dir(dir)
}

/// Reads the snapshot file, if there is one. It is never torn (it appears only by an atomic
/// rename after an fsync), so any damage is corruption.
///
/// # Errors
/// [`WalError::Io`] when it cannot be read; [`WalError::Corrupt`] or [`WalError::Decode`] when
/// it is damaged.
pub(crate) fn read_snapshot_file(dir: &Path) -> Result<Option<Snapshot>, WalError> {
    let path = snapshot_path(dir);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(WalError::Io { path, source }),
    };
    let magic_len = SNAPSHOT_MAGIC.len();
    if data.get(..magic_len) != Some(&SNAPSHOT_MAGIC[..]) {
        return Err(WalError::corrupt(
            &path,
            0,
            "not a distsync snapshot: bad magic bytes",
        ));
    }
    match read_frame(&data, magic_len) {
        Frame::Valid { payload, next } if next == data.len() => decode(payload)
            .map(Some)
            .map_err(|e| e.at(&path, magic_len as u64)),
        Frame::Valid { next, .. } => Err(WalError::corrupt(
            &path,
            next as u64,
            "unexpected bytes after the snapshot record",
        )),
        Frame::Incomplete { reason } => Err(WalError::corrupt(&path, magic_len as u64, reason)),
        Frame::BadChecksum { .. } => Err(WalError::corrupt(
            &path,
            magic_len as u64,
            "snapshot checksum mismatch",
        )),
    }
}
