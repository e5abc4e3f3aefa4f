//! Integration tests of the cache core, mounted under one binary.

mod common;
mod eviction;
mod lease;
mod limits;
mod races;
mod retransmission;
mod store_model;
mod transitions;
