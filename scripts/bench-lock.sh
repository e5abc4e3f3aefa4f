#!/usr/bin/env bash
# Lock-service benchmark: 3-node and 1-node clusters on loopback, fsync on, 1/16/64 clients,
# uncontended and contended (one hot name). Prints one JSON line per run and appends them to
# docs/performance/results/lock-<date>.jsonl.
#   usage: scripts/bench-lock.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
bin=${DISTSYNC_BIN:-target/release/distsync}
[ -x "$bin" ] || cargo build --release -p distsync
out=docs/performance/results/lock-$(date -u +%Y%m%d).jsonl
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_cluster() { # $1 = nodes, $2 = base port
    local n=$1 base=$2 spec="" id
    for id in $(seq 1 "$n"); do
        spec+="${spec:+,}$id=127.0.0.1:$((base + id))/127.0.0.1:$((base + 100 + id))"
    done
    for id in $(seq 1 "$n"); do
        "$bin" --log warn serve lock --id "$id" --cluster "$spec" --data-dir "$work/n$n-$id" &
        pids+=($!)
    done
    for id in $(seq 1 "$n"); do
        until curl -sf "127.0.0.1:$((base + id))/readyz" >/dev/null; do sleep 0.05; done
    done
    targets=$(seq -s, -f "127.0.0.1:%g" $((base + 1)) $((base + n)))
}

stop_cluster() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

for nodes in 3 1; do
    start_cluster "$nodes" $((9000 + nodes * 10))
    for clients in 1 16 64; do
        for contended in "" "--contended"; do
            result=$("$bin" --log warn bench lock --targets "$targets" --clients "$clients" \
                --duration "${seconds}s" $contended --json)
            leader=$(curl -sf "127.0.0.1:$((9000 + nodes * 10 + 1))/v1/cluster" | python3 -c "import json,sys; print(json.load(sys.stdin)['leader_id'])")
            line=$(printf '%s' "$result" | python3 -c "import json,sys; r=json.load(sys.stdin); r['nodes']=$nodes; r['leader_id']=$leader; print(json.dumps(r))")
            echo "$line" | tee -a "$out"
        done
    done
    stop_cluster
done
