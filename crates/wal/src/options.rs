//! Tuning knobs of the storage.

/// How [`crate::RaftStorage`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment is started before a write once the current one has reached this size.
    /// A segment can exceed it by one persist call, since records are never split. Smaller
    /// segments let compaction free disk space sooner; larger ones mean fewer files.
    pub segment_size_bytes: u64,
    /// Whether [`crate::RaftStorage::persist`] fsyncs. **Turning this off is unsafe**: a crash
    /// of the machine (not just the process) can then lose entries and votes that were already
    /// acknowledged, which breaks Raft's safety. Only for benchmarks and tests. Segment
    /// creation and snapshot files are fsynced either way.
    pub sync: bool,
    /// Zeros are written this far ahead of the records, a chunk at a time, so that most
    /// persists overwrite allocated, already-written blocks: their fsync then flushes data
    /// only, without a journal commit for the file's new size (about a third faster, and two
    /// nodes' fsyncs on one disk overlap; see docs/performance/wal.md). 0 turns it off.
    pub preallocate_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size_bytes: 64 * 1024 * 1024,
            sync: true,
            preallocate_bytes: 1024 * 1024,
        }
    }
}
