//! Durable Raft storage: segmented write-ahead log with per-record CRC, fsync, torn-tail repair, atomic snapshots
