#!/usr/bin/env bash
# WAL preallocation on against off, in the same run: for each round, a 3-node lock cluster with
# `--wal-preallocate-bytes 0`, then one with the default (1 MiB), each under one client for
# SECONDS; prints pairs/s and acquire p50 from `distsync bench lock`, and each node's mean
# persist (write + fsync) time from its /metrics.
#
# usage: scripts/wal-preallocate-ab.sh [BINARY] [ROUNDS] [SECONDS]
set -euo pipefail
bin=${1:-target/release/distsync}
rounds=${2:-2}
seconds=${3:-6}
work=$(mktemp -d)
pids=()
cleanup() {
    if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

spec="1=127.0.0.1:27001/127.0.0.1:27101,2=127.0.0.1:27002/127.0.0.1:27102,3=127.0.0.1:27003/127.0.0.1:27103"
targets=127.0.0.1:27001,127.0.0.1:27002,127.0.0.1:27003

run() {
    local preallocate=$1 label=$2
    rm -rf "${work:?}/$label"
    mkdir -p "$work/$label"
    pids=()
    for i in 1 2 3; do
        "$bin" --log warn serve lock --id "$i" --cluster "$spec" --data-dir "$work/$label/n$i" \
            --wal-preallocate-bytes "$preallocate" >"$work/$label/n$i.log" 2>&1 &
        pids+=($!)
    done
    for i in 1 2 3; do
        for _ in $(seq 1 200); do
            curl -sf "http://127.0.0.1:2700$i/readyz" >/dev/null && break
            sleep 0.1
        done
    done
    local result
    result=$("$bin" --log warn bench lock --targets "$targets" --clients 1 \
        --duration "${seconds}s" --json | jq -c '{pairs_per_s, acquire_p50_ms: .acquire_ms.p50}')
    local persists=""
    for i in 1 2 3; do
        persists+=$(curl -s "http://127.0.0.1:2700$i/metrics" |
            awk '/persist_seconds_sum/ {s=$2} /persist_seconds_count/ {c=$2} END {printf " %.3f", s/c*1000}')
    done
    echo "preallocate=$label $result persist_mean_ms_per_node:$persists"
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}

echo "machine: $(nproc) cores; $(date -u +%FT%TZ); git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for round in $(seq 1 "$rounds"); do
    echo "round $round"
    run 0 off
    run 1048576 on
done
