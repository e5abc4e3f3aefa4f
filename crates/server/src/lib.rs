//! The IO shell of distsync: everything that touches sockets, disks and clocks. Protocol
//! decisions live in the pure cores (`distsync-raft`, `distsync-lock`, …); this crate feeds them
//! and carries out what they return, in the order they demand.
//!
//! One module folder per service keeps each service's shell in one place:
//! - [`raft`]: the Raft driver task (persist, send, apply, advance) and its peer transport;
//! - [`cache`]: the cache service (MESI core shell, peer messages, backing store, HTTP routes);
//! - [`lock`]: the lock service (state machine adapter, sessions, forwarding, HTTP routes);
//! - [`http`]: what every HTTP API shares: the JSON error body, body limits, health;
//! - [`metrics`]: Prometheus metrics.
#![warn(missing_docs)]

pub mod cache;
pub mod http;
pub mod lock;
pub mod metrics;
mod openapi;
pub mod queue;
pub mod raft;

pub use openapi::{openapi_document, openapi_json};
