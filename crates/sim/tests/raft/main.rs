//! Named Raft simulation tests: the 6.5840 ports R-01..R-23, the paper-section tests R-30..R-39,
//! PreVote/CheckQuorum R-40..R-45, membership changes under faults, and the seed sweeps (R-50..R-70
//! plus the negative controls). Every cluster test runs the I1–I7 checkers after every step and
//! panics with the replay command on a violation.

mod common;
mod election;
mod membership;
mod paper;
mod persistence;
mod prevote;
mod replication;
mod snapshot;
mod sweep;
