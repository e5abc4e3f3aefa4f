//! Everything queue in the binary: `distsync serve queue`, `distsync queue …` and
//! `distsync bench queue`.

pub mod bench;
pub mod cmd;
pub mod serve;
