//! Consistent-hash ring with virtual nodes and a fixed, process-independent hash
