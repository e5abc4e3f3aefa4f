//! The cache service's commands: `distsync serve cache`, `distsync cache …`, `distsync bench cache`
//! and the HTTP client they share.

pub mod bench;
pub mod client;
pub mod cmd;
pub mod serve;
