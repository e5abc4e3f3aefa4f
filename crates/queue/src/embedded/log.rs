//! The per-stream log: CRC-framed postcard records, appended, optionally fsynced, replayed on
//! open with a torn tail truncated.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload (postcard Op)`.

use crate::backend::{BackendError, NewEntry, StreamId};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Largest record accepted on replay; anything larger is a corrupt length.
const RECORD_LEN_MAX: usize = 64 << 20;

/// One state change of a stream.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Op {
    Add {
        id: StreamId,
        entry: NewEntry,
    },
    CreateGroup {
        group: String,
    },
    /// New delivery or claim: ownership moves to `consumer`, count + 1.
    Deliver {
        group: String,
        consumer: String,
        ids: Vec<StreamId>,
        at_ms: u64,
    },
    Ack {
        group: String,
        ids: Vec<StreamId>,
    },
    Release {
        group: String,
        ids: Vec<StreamId>,
    },
    DeadLetter {
        group: String,
        id: StreamId,
        count: u64,
    },
    Trim {
        below: StreamId,
    },
}

#[derive(Debug)]
pub(crate) struct StreamLog {
    path: PathBuf,
    file: File,
}

fn io_error(path: &Path, what: &str, error: std::io::Error) -> BackendError {
    BackendError::Unavailable(format!("{what} {}: {error}", path.display()))
}

impl StreamLog {
    /// Opens the log, returning every intact record; a torn or corrupt tail is cut off.
    pub(crate) fn open(path: &Path) -> Result<(StreamLog, Vec<Op>), BackendError> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| io_error(path, "opening", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error(path, "reading", e))?;
        let mut ops = Vec::new();
        let mut offset = 0;
        while let Some((op, next)) = decode(&bytes, offset) {
            ops.push(op);
            offset = next;
        }
        if offset < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                kept_bytes = offset,
                dropped_bytes = bytes.len() - offset,
                "truncating torn tail of stream log"
            );
            file.set_len(offset as u64)
                .map_err(|e| io_error(path, "truncating", e))?;
            file.sync_all().map_err(|e| io_error(path, "syncing", e))?;
        }
        Ok((
            StreamLog {
                path: path.to_path_buf(),
                file,
            },
            ops,
        ))
    }

    /// Appends one record; with `sync`, returns only after it (and all before it) is on disk.
    pub(crate) fn append(&mut self, op: &Op, sync: bool) -> Result<(), BackendError> {
        let payload = postcard::to_stdvec(op)
            .map_err(|e| BackendError::Other(format!("encoding log record: {e}")))?;
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        self.file
            .write_all(&frame)
            .map_err(|e| io_error(&self.path, "writing", e))?;
        if sync {
            self.file
                .sync_data()
                .map_err(|e| io_error(&self.path, "syncing", e))?;
        }
        Ok(())
    }
}

fn decode(bytes: &[u8], offset: usize) -> Option<(Op, usize)> {
    let header = bytes.get(offset..offset + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len > RECORD_LEN_MAX {
        return None;
    }
    let payload = bytes.get(offset + 8..offset + 8 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let op = postcard::from_bytes(payload).ok()?;
    Some((op, offset + 8 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_truncated_and_intact_records_survive() {
        // Proves recovery: two records, then half a third; reopening keeps two and cuts the rest,
        // and the log accepts appends afterwards.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.log");
        {
            let (mut log, ops) = StreamLog::open(&path).expect("open");
            assert!(ops.is_empty());
            for group in ["a", "b"] {
                log.append(
                    &Op::CreateGroup {
                        group: group.into(),
                    },
                    true,
                )
                .expect("append");
            }
        }
        let full = std::fs::metadata(&path).expect("metadata").len();
        {
            let mut file = OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open raw");
            file.write_all(&[50, 0, 0, 0, 1, 2]).expect("torn write");
        }
        let (mut log, ops) = StreamLog::open(&path).expect("reopen");
        assert_eq!(ops.len(), 2);
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), full);
        log.append(&Op::CreateGroup { group: "c".into() }, true)
            .expect("append after repair");
        let (_, ops) = StreamLog::open(&path).expect("reopen again");
        assert_eq!(ops.len(), 3);
    }
}
