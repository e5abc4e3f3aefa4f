//! The cache service's commands: `distsync serve cache`, `distsync cache …` and its HTTP client.

pub mod client;
pub mod cmd;
pub mod serve;
