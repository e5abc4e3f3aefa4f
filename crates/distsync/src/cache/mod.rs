//! The cache service's commands: `distsync serve cache`, `distsync cache …`, `distsync bench cache`.

pub mod bench;
pub mod cmd;
pub mod serve;
