#!/usr/bin/env bash
# Queue benchmark: the redis-benchmark ceilings and `distsync bench queue` in the same run, on
# the same Redis servers with the same durability setting (AOF, appendfsync always).
#
# Usage: scripts/bench-queue.sh [MESSAGES]    (default 50000; batch-1 runs use MESSAGES/10)
# Needs redis-server and redis-benchmark (apt-get install redis-server redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-50000}
SMALL=$((MESSAGES / 10))
FSYNC=${FSYNC:-always}
WORK=$(mktemp -d /tmp/distsync-bench-queue.XXXXXX)
# start_* run in $(…) subshells, so child pids are kept in a file, not an array.
cleanup() {
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORK/pids"
    fi
    sleep 0.2
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet -p distsync
BIN=${CARGO_TARGET_DIR:-target}/release/distsync

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_redis() { # name -> prints port
    local port dir
    port=$(free_port)
    dir="$WORK/$1"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
        --appendfsync "$FSYNC" --save '' --daemonize no --loglevel warning >/dev/null &
    echo $! >>"$WORK/pids"
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
    echo "$port"
}

start_node() { # shards -> prints addr
    local out="$WORK/node.$RANDOM.out"
    RUST_LOG=warn "$BIN" serve queue --listen 127.0.0.1:0 --shards "$1" >"$out" &
    echo $! >>"$WORK/pids"
    echo $! >"$WORK/last-node.pid"
    until grep -q '^listening on ' "$out" 2>/dev/null; do sleep 0.05; done
    local addr
    addr=$(sed -n 's/^listening on //p' "$out")
    until curl -sf "http://$addr/readyz" >/dev/null; do sleep 0.05; done
    echo "$addr"
}

echo "# machine: $(nproc) cores, $(uname -sr), $(redis-server --version | cut -d' ' -f3)"
echo "# date: $(date -u +%FT%TZ); appendfsync=$FSYNC; messages=$MESSAGES (batch 1: $SMALL)"

R1=$(start_redis r1); R2=$(start_redis r2); R3=$(start_redis r3)
BODY=$(head -c 100 /dev/zero | tr '\0' x)

echo
echo "## ceiling: redis-benchmark on r1 (same AOF setting)"
echo "XADD pipelined -P 16, 50 clients, 100-byte body:"
redis-benchmark -p "$R1" -n 200000 -c 50 -P 16 -q XADD ceiling:s '*' b "$BODY" | tr '\r' '\n' | tail -1
redis-cli -p "$R1" XGROUP CREATE ceiling:s g 0 >/dev/null
echo "XREADGROUP COUNT 1 + XACK of that entry (one Lua call each), -P 16, 50 clients:"
READ_ACK="local r = redis.call('XREADGROUP','GROUP','g','c','COUNT',1,'STREAMS',KEYS[1],'>') if r then redis.call('XACK',KEYS[1],'g',r[1][2][1][1]) end return 1"
redis-benchmark -p "$R1" -n 200000 -c 50 -P 16 -q EVAL "$READ_ACK" 1 ceiling:s | tr '\r' '\n' | tail -1
redis-cli -p "$R1" DEL ceiling:s >/dev/null

run_bench() { # label addrs
    echo
    echo "## distsync: $1"
    echo "batch 100:"
    "$BIN" bench queue --addr "$2" --messages "$MESSAGES" --batch 100 --producers 8 --consumers 8 \
        --receive-max 100 --latency-samples 1000 | sed 's/^/  /'
    echo "batch 1:"
    "$BIN" bench queue --addr "$2" --messages "$SMALL" --batch 1 --producers 32 --consumers 8 \
        --receive-max 100 --latency-samples 0 | grep -v latency | sed 's/^/  /'
}

N1=$(start_node "r1=redis://127.0.0.1:$R1")
run_bench "1 shard, 1 node" "$N1"
kill "$(cat "$WORK/last-node.pid")"

SHARDS3="r1=redis://127.0.0.1:$R1,r2=redis://127.0.0.1:$R2,r3=redis://127.0.0.1:$R3"
N3A=$(start_node "$SHARDS3")
run_bench "3 shards, 1 node" "$N3A"
N3B=$(start_node "$SHARDS3")
run_bench "3 shards, 2 nodes" "$N3A,$N3B"

EMB=$(start_node "embedded:$WORK/embedded")
run_bench "embedded backend (fsync per batch), 1 node" "$EMB"
