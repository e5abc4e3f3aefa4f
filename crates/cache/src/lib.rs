//! Pure MESI coherence protocol (directory and cache node) and bounded LRU/LFU line stores
