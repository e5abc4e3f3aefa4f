//! Typed Rust client for the distsync HTTP API.
