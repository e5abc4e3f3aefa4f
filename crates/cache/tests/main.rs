//! Integration tests of the cache core, mounted under one binary.

mod common;
mod eviction;
mod lease;
mod limits;
mod membership;
mod races;
mod retransmission;
mod store_model;
mod transitions;
