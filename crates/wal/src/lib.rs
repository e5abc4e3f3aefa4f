//! Durable storage of one Raft node: a segmented write-ahead log with a checksum per record,
//! one fsync per persisted `Ready`, torn-tail repair, and an atomically replaced snapshot file.
//!
//! The lock-service shell persists each [`distsync_raft::Ready`] with
//! [`RaftStorage::persist`] before sending its messages, compacts with
//! [`RaftStorage::save_snapshot`] after the state machine takes a snapshot, and on restart
//! hands the [`distsync_raft::PersistedState`] returned by [`RaftStorage::open`] to the Raft
//! core.
//!
//! ```no_run
//! use distsync_raft::{Entry, EntryPayload, HardState, LogIndex, Term};
//! use distsync_wal::{RaftStorage, WalOptions};
//!
//! # fn main() -> Result<(), distsync_wal::WalError> {
//! let (mut storage, restored) = RaftStorage::open("/var/lib/distsync/node-1", WalOptions::default())?;
//! // ... RaftNode::restore(restored) ...
//! # let _ = restored;
//! let entry = Entry { term: Term(1), index: LogIndex(1), payload: EntryPayload::Noop };
//! let hard_state = HardState { term: Term(1), voted_for: None, commit: LogIndex(0) };
//! storage.persist(Some(&hard_state), &[entry], None)?; // durable on return
//! let fsync_latency = storage.last_sync_duration();
//! # let _ = fsync_latency;
//! # Ok(()) }
//! ```
//!
//! What it is not: a general key-value store, or a cache of entries. The Raft core keeps the log
//! in memory between snapshots; this crate keeps only each entry's term (to write segment
//! checkpoints and check compactions) and reads entries back only on [`RaftStorage::open`].
//!
//! # On-disk format (version 1)
//!
//! All integers are little-endian. The storage directory holds:
//!
//! ```text
//! DIR/snapshot                         the current snapshot (absent until the first one)
//! DIR/snapshot.tmp                     a snapshot being written; removed on open
//! DIR/wal/00000000000000000001.seg     segments, named by a sequence number (20 digits),
//! DIR/wal/00000000000000000002.seg     consecutive; the highest one is appended to
//! ```
//!
//! **Frame.** Every record is framed as `[len u32][crc u32][payload: len bytes]`, where `crc` is
//! the CRC-32 (IEEE, `crc32fast`) of the four `len` bytes followed by the payload. Covering the
//! length means a zero-filled region never passes for a record. Payloads are
//! [postcard](https://docs.rs/postcard) encodings of serde types.
//!
//! **Segment.** The 8 bytes `DSWAL01\n`, then records, then zeros up to the file's length:
//! space preallocated for the next records ([`WalOptions::preallocate_bytes`] at a time, up to
//! the segment size), written at their offset. Overwriting blocks that are allocated and
//! written leaves the file's metadata alone, so the fsync after a persist flushes data only.
//! The records end where only zeros are left. The first record is a *checkpoint*:
//! the hard state and the log's last index and term when the segment was started. Every other
//! record is a *batch*, one per [`RaftStorage::persist`] call, so that one `Ready` is recovered
//! all or nothing:
//!
//! ```text
//! enum Record {
//!     Checkpoint { hard_state: HardState, last_index: LogIndex, last_term: Term },
//!     Batch {
//!         snapshot: Option<{ last_index, last_term }>, // an installed snapshot: the log is
//!                                                      // replaced by an empty one after it
//!         entries: Vec<Entry>,                         // replace the log from entries[0].index on
//!         hard_state: Option<HardState>,
//!     },
//! }
//! ```
//!
//! A new segment is started before a batch once the current one has reached
//! [`WalOptions::segment_size_bytes`]; the segment is created with its checkpoint, fsynced,
//! and the directory fsynced, before anything else is written to it.
//!
//! **Snapshot file.** The 8 bytes `DSSNP01\n`, then one frame holding a
//! [`distsync_raft::Snapshot`] (meta and data). It is replaced atomically: write
//! `snapshot.tmp`, fsync, rename over `snapshot`, fsync the directory. A received snapshot is
//! written before the batch that records its install.
//!
//! **Compaction.** After [`RaftStorage::save_snapshot`] (or an install) a segment is deleted,
//! oldest first, when the segment after it started at or below the snapshot's index: all it
//! contributes is then covered by the snapshot, and the next checkpoint carries the hard state.
//!
//! # Recovery rules
//!
//! 1. The snapshot file is read and checksummed. It is never torn (it only appears by rename),
//!    so any damage there is [`WalError::Corrupt`].
//! 2. Segment numbers must be consecutive (a missing one is `Corrupt`). Each segment is replayed
//!    in order: the first checkpoint seeds the state, later ones must agree with it; a batch
//!    applies its install, then its entries (which may start at most one past the log's end:
//!    a gap is `Corrupt`), then its hard state.
//! 3. A damaged record (incomplete header or payload, or checksum mismatch) is a **torn tail**
//!    only if it is in the last segment, runs to the end of the file or is followed only by
//!    zero bytes, and no valid frame starts anywhere after its first byte. It is logged with
//!    `tracing::warn!` and the file is truncated to the last good record (its preallocated
//!    zeros go too) and fsynced (a last
//!    segment whose checkpoint is torn is removed). Any other damage, such as a bad checksum
//!    followed by more data, a bad record in an earlier segment, or a record that passes its
//!    checksum but does not decode, is an error naming the file and offset, never skipped.
//! 4. The replayed log is combined with the snapshot: if it holds the snapshot's last entry
//!    (same index and term) the entries after it are kept; if it does not, the snapshot was
//!    installed but the crash lost the batch recording that, so the snapshot replaces the log
//!    (and that install record is written now). A log that starts after the snapshot's end is
//!    `Corrupt` (entries are missing).
//!
//! Known limit of rule 3: if a torn record's partial payload happens to contain a complete
//! valid frame (an entry whose command is itself a WAL frame), recovery reports corruption
//! instead of cutting the tail: it fails safe, never loses synced data.
#![warn(missing_docs)]

mod error;
mod fs;
mod identity;
mod options;
mod record;
mod recovery;
mod segment;
mod snapshot;
mod storage;

pub use error::WalError;
pub use identity::{NodeIdentity, check_or_record_identity};
pub use options::WalOptions;
pub use storage::RaftStorage;
