//! Segment files: naming, listing and scanning with torn-tail detection.

use crate::error::{IoContext, WalError};
use crate::fs::all_zero;
use crate::record::{Frame, Record, decode, read_frame};
use std::path::{Path, PathBuf};

/// The first bytes of every segment file (format version 1).
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"DSWAL01\n";

/// File-name suffix of segment files.
const SEGMENT_SUFFIX: &str = ".seg";

/// Path of segment number `seq` inside `wal_dir`: zero-padded so that names sort by number.
pub(crate) fn segment_path(wal_dir: &Path, seq: u64) -> PathBuf {
    wal_dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"))
}

/// The segment files of `wal_dir` in sequence order. Other files are ignored.
///
/// # Errors
/// [`WalError::Io`] when the directory cannot be read.
pub(crate) fn list_segments(wal_dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    for dirent in std::fs::read_dir(wal_dir).at(wal_dir)? {
        let dirent = dirent.at(wal_dir)?;
        let name = dirent.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
            .filter(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
        else {
            tracing::debug!(file = ?dirent.path(), "ignoring a file that is not a WAL segment");
            continue;
        };
        segments.push((seq, dirent.path()));
    }
    segments.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(segments)
}

/// How the scan of one segment ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Valid records up to `end`, then only zero bytes (space preallocated for later records)
    /// or nothing.
    Clean { end: u64 },
    /// The last segment ends in a torn write starting at `offset`; everything from there on
    /// is to be cut off.
    Torn { offset: u64, reason: String },
}

/// Checks the header of segment `data` (read from `path`) and hands each record, with its
/// offset, to `on_record` in order.
///
/// The records end where only zero bytes are left: segments are preallocated with zeros
/// ahead of the records, and no frame consists of zeros (its checksum covers the length).
/// A damaged record is a torn tail, reported as [`ScanEnd::Torn`], only when all of these
/// hold: the segment is the last one; the record runs to the end of the file or only zero
/// bytes follow it; and no valid frame starts anywhere after its first byte. Anything else is
/// [`WalError::Corrupt`].
///
/// # Errors
/// [`WalError::Corrupt`] or [`WalError::Decode`] for damage that is not a torn tail, and any
/// error `on_record` returns.
pub(crate) fn scan_segment(
    path: &Path,
    data: &[u8],
    is_last: bool,
    mut on_record: impl FnMut(u64, Record) -> Result<(), WalError>,
) -> Result<ScanEnd, WalError> {
    let magic_len = SEGMENT_MAGIC.len();
    if data.get(..magic_len) != Some(&SEGMENT_MAGIC[..]) {
        let torn_header = all_zero(data) || SEGMENT_MAGIC.starts_with(data);
        if is_last && torn_header {
            return Ok(ScanEnd::Torn {
                offset: 0,
                reason: "file ends inside the segment header".to_owned(),
            });
        }
        return Err(WalError::corrupt(
            path,
            0,
            "not a distsync WAL segment: bad magic bytes",
        ));
    }
    // Past the last non-zero byte no frame can start.
    let written = data
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |last| last + 1);
    let mut offset = magic_len;
    while offset < written {
        let (reason, end) = match read_frame(data, offset) {
            Frame::Valid { payload, next } => {
                let record = decode(payload).map_err(|e| e.at(path, offset as u64))?;
                on_record(offset as u64, record)?;
                offset = next;
                continue;
            }
            Frame::Incomplete { reason } => (reason, data.len()),
            Frame::BadChecksum { next } => ("record checksum mismatch", next),
        };
        return scan_segment_classify_damage(path, data, written, is_last, offset, end, reason);
    }
    Ok(ScanEnd::Clean { end: offset as u64 })
}

/// Decides whether the damaged record at `offset..end` is a torn tail or corruption.
fn scan_segment_classify_damage(
    path: &Path,
    data: &[u8],
    written: usize,
    is_last: bool,
    offset: usize,
    end: usize,
    reason: &str,
) -> Result<ScanEnd, WalError> {
    let corrupt = |detail: String| Err(WalError::corrupt(path, offset as u64, detail));
    if !is_last {
        return corrupt(format!("{reason} in a segment that is not the last one"));
    }
    if end < written {
        return corrupt(format!(
            "{reason}, followed by {} more bytes",
            data.len() - end
        ));
    }
    // A torn write is the last thing in the file. A valid frame after the damage means the
    // damage is in the middle (for example a flipped bit in a length field that now points
    // past the end of the file), and cutting there would drop fsynced records.
    if let Some(later) =
        (offset + 1..written).find(|&o| matches!(read_frame(data, o), Frame::Valid { .. }))
    {
        return corrupt(format!(
            "{reason}, but a valid record follows at offset {later}"
        ));
    }
    Ok(ScanEnd::Torn {
        offset: offset as u64,
        reason: reason.to_owned(),
    })
}
