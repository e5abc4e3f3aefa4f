//! The verdict on a seed sweep, shared by every simulated protocol so that every
//! `distsync sim …` ends with the same line.

use std::fmt;

/// The verdict on a sweep of seeds; `R` is the protocol's per-seed report.
#[derive(Clone, Debug)]
pub struct SweepSummary<R> {
    /// Seeds run.
    pub seeds: u64,
    /// Steps over all seeds.
    pub steps: u64,
    /// Seeds with an invariant violation.
    pub violations: u64,
    /// Seeds with a liveness failure.
    pub liveness_failures: u64,
    /// The first failing seeds' reports (at most 10).
    pub failures: Vec<R>,
}

impl<R> Default for SweepSummary<R> {
    fn default() -> Self {
        SweepSummary {
            seeds: 0,
            steps: 0,
            violations: 0,
            liveness_failures: 0,
            failures: Vec::new(),
        }
    }
}

impl<R> fmt::Display for SweepSummary<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seeds={} steps={} violations={} liveness_failures={}",
            self.seeds, self.steps, self.violations, self.liveness_failures
        )
    }
}
