#!/usr/bin/env bash
# Raft core commit throughput (crates/raft/benches/commit_throughput.rs, criterion) written as
# distsync-bench/1 result files (docs/performance/results/SCHEMA.md).
#   usage: scripts/bench-raft.sh [measurement seconds, default 5] [samples, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
samples=${2:-20}
target=${CARGO_TARGET_DIR:-target}
args=(--warm-up-time 1 --measurement-time "$seconds" --sample-size "$samples")
cargo bench --quiet -p distsync-raft --bench commit_throughput -- "${args[@]}"
python3 scripts/bench-result.py criterion --dir "$target/criterion/raft_core_commit" \
    --command "cargo bench -p distsync-raft --bench commit_throughput -- ${args[*]}"
