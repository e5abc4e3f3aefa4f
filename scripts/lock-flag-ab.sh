#!/usr/bin/env bash
# One `serve lock` flag at two values, in the same run: for each round, a 3-node lock cluster
# with FLAG=A, then one with FLAG=B, each under CLIENTS clients of `distsync bench lock` for
# SECONDS (on one hot name when WORKLOAD is `contended`, one name per client when `uncontended`).
# Prints pairs/s, pair p99 and acquire p50, and from each node's /metrics its mean persist
# (write + fsync) time and its proposals per persist.
#
# usage: scripts/lock-flag-ab.sh BINARY ROUNDS SECONDS CLIENTS WORKLOAD FLAG A B
# e.g.   scripts/lock-flag-ab.sh target/release/distsync 3 6 64 contended --queued-acquire-batch-ms 0 5
set -euo pipefail
if (($# != 8)); then
    sed -n 2,10p "$0" >&2
    exit 2
fi
bin=$1 rounds=$2 seconds=$3 clients=$4 workload=$5 flag=$6 value_a=$7 value_b=$8
case $workload in
contended) contended=(--contended) ;;
uncontended) contended=() ;;
*)
    echo "WORKLOAD is contended or uncontended, not $workload" >&2
    exit 2
    ;;
esac
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
    local value=$1
    local dir="$work/$value"
    rm -rf "$dir"
    mkdir -p "$dir"
    pids=()
    for i in 1 2 3; do
        "$bin" --log warn serve lock --id "$i" --cluster "$spec" --data-dir "$dir/n$i" \
            "$flag" "$value" >"$dir/n$i.log" 2>&1 &
        pids+=($!)
    done
    for i in 1 2 3; do
        for _ in $(seq 1 200); do
            curl -sf "http://127.0.0.1:2700$i/readyz" >/dev/null && break
            sleep 0.1
        done
    done
    local result
    result=$("$bin" --log warn bench lock --targets "$targets" --clients "$clients" \
        "${contended[@]}" --duration "${seconds}s" --json |
        jq -c '{pairs_per_s: (.pairs_per_s | round), pair_p99_ms: .pair_ms.p99, acquire_p50_ms: .acquire_ms.p50}')
    local nodes=""
    for i in 1 2 3; do
        nodes+=$(curl -s "http://127.0.0.1:2700$i/metrics" | awk '
            /^distsync_raft_persist_seconds_sum/ {s=$2}
            /^distsync_raft_persist_seconds_count/ {c=$2}
            /^distsync_raft_proposals_total/ {p=$2}
            END {printf " %.3fms/%.2f", s/c*1000, p/c}')
    done
    echo "$flag $value $result persist_mean/proposals_per_persist:$nodes"
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}

echo "machine: $(nproc) cores; $(date -u +%FT%TZ); git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for round in $(seq 1 "$rounds"); do
    echo "round $round"
    run "$value_a"
    run "$value_b"
done
