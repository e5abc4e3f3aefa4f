//! Deterministic simulator: seeded network, clock, disk and crashes, with invariant checkers.
//!
//! What it is: a discrete-event simulator that runs several pure protocol cores (today the Raft
//! core of `distsync-raft`) as if they were a cluster, with no sockets, no threads, no clock and
//! no ambient randomness. One root seed drives everything, so any run can be replayed exactly.
//! What it is not: a test of the real shell (`server`) or of real IO; those run under turmoil and
//! as black-box processes.
//!
//! - [`net::SimNetwork`] carries any message type (`M: SimMessage`): per-link drop, duplicate,
//!   delay and reorder probabilities, partitions of every shape (symmetric, one-way cuts, a bridge
//!   node that sees both sides, isolate), clogs, and message/byte counters.
//! - [`raft::SimDisk`] is what a node's shell persisted, with an fsync boundary: a crash loses
//!   only writes that were never fsynced.
//! - [`raft::Cluster`] plays the shell of each node exactly in `Ready` order (persist, fsync,
//!   send, apply, advance), applies committed entries to a small KV state machine, snapshots
//!   every K applied entries, and crashes, restarts, pauses and ticks nodes at uneven rates.
//!   After **every** step its [`raft::Checker`] checks the invariants I1–I7 of TESTING.md R-00.
//! - [`raft::run_seed`] and [`raft::sweep`] run randomized swarm scenarios (fault kinds and
//!   intensities drawn per seed), then the liveness phase R-60.
//!
//! # Replaying a seed
//!
//! Every violation and liveness failure prints its seed and the command that replays it:
//!
//! ```text
//! distsync sim raft --seed 1234 --nodes 5 --trace     # replay one seed, printing its events
//! distsync sim raft --seeds 500 --first-seed 0        # a sweep; last line:
//! seeds=500 steps=… violations=0 liveness_failures=0
//! ```
//!
//! The same seed always gives the same trace hash (R-70), so a replay shows the exact failing
//! schedule. Add `--log error` to keep the Raft core's own `info` logs out of the event trace,
//! and `--fault-ticks N` to replay a sweep that ran with a non-default fault phase. Without the
//! binary, the ignored test `soak_from_env` does the same:
//!
//! ```text
//! RAFT_SIM_SEED=1234 RAFT_SIM_TRACE=1 cargo test -p distsync-sim --test raft -- --ignored soak_from_env --nocapture
//! RAFT_SIM_SEEDS=20000 cargo test --release -p distsync-sim --test raft -- --ignored soak_from_env --nocapture
//! ```
//!
//! From code, `raft::run_seed(seed, &SweepOptions { trace: true, ..Default::default() })`.
//! A named test (R-01…R-45) that fails prints the same kind of message; rerun it by name
//! (`cargo test -p distsync-sim --test raft r17_`): its seed is fixed in the test.
//!
//! Time is simulated: one tick is [`raft::TICK_US`] (10 ms); the election timeout is 30–60 ticks
//! and the heartbeat 5 ticks.

pub mod cache;
pub mod net;
pub mod raft;
pub mod sweep;

/// Prints one line of a replay's output on stdout, ignoring a closed stdout: `distsync sim …
/// --trace | head` must end quietly when `head` exits, not panic on the broken pipe.
pub fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
