#!/usr/bin/env bash
# Lock-service benchmark, distsync only: 3-node and 1-node clusters on loopback, fsync on,
# 1/16/64 clients, uncontended, contended and shared-heavy. One JSON per run per
# docs/performance/results/SCHEMA.md. For the side-by-side with etcd run
# scripts/bench-lock-vs-etcd.py, which this delegates to.
#   usage: scripts/bench-lock.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
bin=${DISTSYNC_BIN:-target/release/distsync}
[ -x "$bin" ] || cargo build --release -p distsync
exec scripts/bench-lock-vs-etcd.py --systems distsync --clients 1,16,64 --seconds "$seconds" --bin "$bin"
