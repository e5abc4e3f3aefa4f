//! Record framing (`[len u32 LE][crc32 u32 LE][payload]`) and the records a segment holds.

use crate::error::WalError;
use distsync_raft::{Entry, HardState, LogIndex, Term};
use serde::{Deserialize, Serialize};

/// Bytes before a frame's payload: the length, then the checksum.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;

/// The log position a snapshot ends at, as recorded in the WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRef {
    /// Index of the last entry the snapshot covers.
    pub(crate) last_index: LogIndex,
    /// Term of that entry.
    pub(crate) last_term: Term,
}

/// First record of every segment: the state when the segment was started. It makes each
/// segment self-describing, so that segments before it can be deleted once a snapshot covers
/// `last_index` without losing the hard state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The hard state in force when the segment was started.
    pub(crate) hard_state: HardState,
    /// Index of the last log entry (or of the snapshot) when the segment was started.
    pub(crate) last_index: LogIndex,
    /// Term of that entry.
    pub(crate) last_term: Term,
}

/// One persist call, written as one record so that it is applied all or nothing on recovery.
/// Borrowing twin of [`Batch`] used for writing; the two must serialize identically.
#[derive(Serialize)]
pub(crate) struct BatchRef<'a> {
    pub(crate) snapshot: Option<SnapshotRef>,
    pub(crate) entries: &'a [Entry],
    pub(crate) hard_state: Option<&'a HardState>,
}

/// One persist call as read back: first the installed snapshot (which replaces the whole log),
/// then entries that replace the log from `entries[0].index` on, then the hard state.
#[derive(Debug, Deserialize)]
pub(crate) struct Batch {
    pub(crate) snapshot: Option<SnapshotRef>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) hard_state: Option<HardState>,
}

/// Borrowing twin of [`Record`] used for writing.
#[derive(Serialize)]
pub(crate) enum RecordRef<'a> {
    Checkpoint(&'a Checkpoint),
    Batch(BatchRef<'a>),
}

/// A decoded WAL record.
#[derive(Debug, Deserialize)]
pub(crate) enum Record {
    Checkpoint(Checkpoint),
    Batch(Batch),
}

/// Appends one frame holding `value` to `buf`.
pub(crate) fn encode_frame<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<(), WalError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    postcard::to_io(value, &mut *buf).map_err(WalError::Encode)?;
    let payload_bytes = buf.len() - start - FRAME_HEADER_BYTES;
    let Ok(len) = u32::try_from(payload_bytes) else {
        buf.truncate(start);
        return Err(WalError::RecordTooLarge {
            bytes: payload_bytes,
        });
    };
    let len = len.to_le_bytes();
    let crc = frame_crc(len, &buf[start + FRAME_HEADER_BYTES..]);
    buf[start..start + 4].copy_from_slice(&len);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The checksum covers the length field too, so that a zero-filled region (length 0,
/// checksum 0) never passes for a record.
fn frame_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(payload);
    hasher.finalize()
}

/// What sits at an offset of a file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A complete frame with a matching checksum; the next frame starts at `next`.
    Valid { payload: &'a [u8], next: usize },
    /// The file ends inside the frame's header or payload.
    Incomplete { reason: &'static str },
    /// A complete frame whose checksum does not match; it ends at `next`.
    BadChecksum { next: usize },
}

/// Reads the frame starting at `offset` (which must be before the end of `data`).
pub(crate) fn read_frame(data: &[u8], offset: usize) -> Frame<'_> {
    let rest = &data[offset..];
    let Some((header, body)) = rest.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return Frame::Incomplete {
            reason: "file ends inside a record header",
        };
    };
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let len = u32::from_le_bytes(len_bytes) as usize;
    let Some(payload) = body.get(..len) else {
        return Frame::Incomplete {
            reason: "file ends inside a record payload",
        };
    };
    let next = offset + FRAME_HEADER_BYTES + len;
    if frame_crc(len_bytes, payload) == crc {
        Frame::Valid { payload, next }
    } else {
        Frame::BadChecksum { next }
    }
}

/// Decodes a payload that passed its checksum; trailing bytes are an error too.
pub(crate) fn decode<'de, T: Deserialize<'de>>(payload: &'de [u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(payload).map_err(DecodeError::Postcard)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes(rest.len()))
    }
}

/// Why a checksummed payload could not be decoded.
#[derive(Debug)]
pub(crate) enum DecodeError {
    Postcard(postcard::Error),
    TrailingBytes(usize),
}

impl DecodeError {
    /// The public error for a record at `offset` of `path`.
    pub(crate) fn at(self, path: &std::path::Path, offset: u64) -> WalError {
        match self {
            DecodeError::Postcard(source) => WalError::Decode {
                path: path.to_path_buf(),
                offset,
                source,
            },
            DecodeError::TrailingBytes(n) => WalError::corrupt(
                path,
                offset,
                format!("record payload has {n} bytes after the encoded value"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distsync_raft::{EntryPayload, NodeId};

    fn entry(index: u64, term: u64, data: &'static [u8]) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(data.into()),
        }
    }

    #[test]
    fn borrowed_and_owned_batches_share_one_encoding() {
        // Proves the writer's borrowing types decode as the reader's owned types, field by field.
        let entries = vec![entry(3, 2, b"a"), entry(4, 2, b"bc")];
        let hard_state = HardState {
            term: Term(2),
            voted_for: Some(NodeId(1)),
            commit: LogIndex(3),
        };
        let snapshot = Some(SnapshotRef {
            last_index: LogIndex(2),
            last_term: Term(1),
        });
        let record = RecordRef::Batch(BatchRef {
            snapshot,
            entries: &entries,
            hard_state: Some(&hard_state),
        });
        let mut buf = Vec::new();
        encode_frame(&record, &mut buf).expect("encoding into a Vec cannot fail");
        let Frame::Valid { payload, next } = read_frame(&buf, 0) else {
            panic!("a freshly encoded frame must be valid");
        };
        assert_eq!(next, buf.len());
        let Ok(Record::Batch(batch)) = decode::<Record>(payload) else {
            panic!("payload must decode as a batch");
        };
        assert_eq!(batch.snapshot, snapshot);
        assert_eq!(batch.entries, entries);
        assert_eq!(batch.hard_state, Some(hard_state));
    }

    #[test]
    fn zero_filled_bytes_are_not_a_valid_frame() {
        // Proves a preallocated or zero-filled tail is never mistaken for a record.
        let zeros = [0u8; 64];
        assert_eq!(read_frame(&zeros, 0), Frame::BadChecksum { next: 8 });
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        // Proves the checksum (which covers the length) catches any one flipped bit in a frame.
        let mut buf = Vec::new();
        let checkpoint = Checkpoint {
            hard_state: HardState::default(),
            last_index: LogIndex(7),
            last_term: Term(3),
        };
        encode_frame(&RecordRef::Checkpoint(&checkpoint), &mut buf).expect("Vec encode");
        for bit in 0..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(read_frame(&damaged, 0), Frame::Valid { .. }),
                "flipping bit {bit} went unnoticed"
            );
        }
    }
}
