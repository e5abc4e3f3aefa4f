//! Property and statistical tests of the ring: TESTING.md B3, scenarios H-01..H-05.
//!
//! One test binary with one module per area, so the crate links a single test executable.
//! Run with `--nocapture` to see the measured statistics.

mod balance;
mod common;
mod determinism;
mod membership;
mod properties;
