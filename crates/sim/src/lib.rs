//! Deterministic simulator: seeded network, clock, disk and crashes, with invariant checkers
