#!/usr/bin/env bash
# Queue benchmark: the redis-benchmark ceilings and `distsync bench queue` in the same run, on
# the same Redis servers with the same durability setting (AOF, appendfsync always). Writes one
# distsync-bench/1 file per measurement into docs/performance/results/runs/ (SCHEMA.md).
#
# consume+ack is recorded from the batch-100 run only (the others drain too few messages to
# measure more than start-up).
# Scenarios (issue 7): publish with batch 1, 10, 100; consume+ack; end-to-end latency; 1 vs 3
# shards; 1 vs 2 queue nodes; the embedded backend; the redis-benchmark XADD and read+ack
# ceilings on 1 shard and on all 3 shards at once.
#
# Usage: scripts/bench-queue.sh [MESSAGES] [LATENCY_SAMPLES]
#   MESSAGES (default 50000) for batch 100; batch 10 uses MESSAGES/2, batch 1 MESSAGES/10.
# Needs redis-server and redis-benchmark (apt-get install redis-server redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${1:-50000}
SAMPLES=${2:-1000}
FSYNC=${FSYNC:-always}
CEILING_REQUESTS=${CEILING_REQUESTS:-$((MESSAGES * 4))}
WORK=$(mktemp -d /tmp/distsync-bench-queue.XXXXXX)
# start_* run in $(…) subshells, so child pids are kept in a file, not an array.
cleanup() {
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORK/pids"
        # Not children of this shell ($(…) subshells started them): poll until they are gone.
        while read -r pid; do
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        done <"$WORK/pids"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

BIN=${DISTSYNC_BIN:-${CARGO_TARGET_DIR:-target}/release/distsync}
[ -x "$BIN" ] || cargo build --release --quiet -p distsync
RESULT="python3 scripts/bench-result.py"
DURABILITY="Redis AOF, appendfsync $FSYNC (a publish is acknowledged after the fsync)"

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
echo "# date: $(date -u +%FT%TZ); appendfsync=$FSYNC; messages=$MESSAGES"

R1=$(start_redis r1); R2=$(start_redis r2); R3=$(start_redis r3)
BODY=$(head -c 100 /dev/zero | tr '\0' x)
READ_ACK="local r = redis.call('XREADGROUP','GROUP','g','c','COUNT',1,'STREAMS',KEYS[1],'>') if r then redis.call('XACK',KEYS[1],'g',r[1][2][1][1]) end return 1"

# The ceilings on `ports` at the same time (one redis-benchmark per shard), summed.
ceilings() { # label ports...
    local shards=$# n=0 files=() port running=()
    echo
    echo "## ceiling: redis-benchmark on $shards shard(s) at once (same AOF setting)"
    for port in "$@"; do
        n=$((n + 1))
        redis-benchmark -p "$port" -n "$CEILING_REQUESTS" -c 50 -P 16 --csv \
            XADD ceiling:s '*' b "$BODY" >"$WORK/xadd.$n.csv" &
        running+=($!)
        files+=("$WORK/xadd.$n.csv")
    done
    wait "${running[@]}"
    $RESULT redis-benchmark --scenario xadd-ceiling --shards "$shards" --clients 50 \
        --requests "$CEILING_REQUESTS" --params '{"pipeline":16,"body_bytes":100}' \
        --durability "$DURABILITY" \
        --command "redis-benchmark -n $CEILING_REQUESTS -c 50 -P 16 --csv XADD ceiling:s '*' b <100 B> (on each of $shards shard(s) at once)" \
        "${files[@]}"
    files=(); n=0; running=()
    for port in "$@"; do
        n=$((n + 1))
        redis-cli -p "$port" XGROUP CREATE ceiling:s g 0 >/dev/null
        redis-benchmark -p "$port" -n "$CEILING_REQUESTS" -c 50 -P 16 --csv \
            EVAL "$READ_ACK" 1 ceiling:s >"$WORK/readack.$n.csv" &
        running+=($!)
        files+=("$WORK/readack.$n.csv")
    done
    wait "${running[@]}"
    $RESULT redis-benchmark --scenario read-ack-ceiling --shards "$shards" --clients 50 \
        --requests "$CEILING_REQUESTS" --params '{"pipeline":16}' --durability "$DURABILITY" \
        --command "redis-benchmark -n $CEILING_REQUESTS -c 50 -P 16 --csv EVAL <XREADGROUP COUNT 1 + XACK> 1 ceiling:s (on each of $shards shard(s) at once)" \
        "${files[@]}"
    for port in "$@"; do redis-cli -p "$port" DEL ceiling:s >/dev/null; done
}

run_bench() { # params-json addrs durability
    local params=$1 addrs=$2 durability=$3 batch messages producers samples flags
    echo
    echo "## distsync: $params on $addrs"
    for batch in 100 10 1; do
        case $batch in
            100) messages=$MESSAGES; producers=8; samples=$SAMPLES; flags="" ;;
            10) messages=$((MESSAGES / 2)); producers=16; samples=0; flags="--no-latency --no-consume" ;;
            1) messages=$((MESSAGES / 10)); producers=32; samples=0; flags="--no-latency --no-consume" ;;
        esac
        local cmd="distsync bench queue --addr $addrs --messages $messages --batch $batch --producers $producers --consumers 8 --receive-max 100 --latency-samples $samples --json"
        # shellcheck disable=SC2086
        "$BIN" --log warn bench queue --addr "$addrs" --messages "$messages" --batch "$batch" \
            --producers "$producers" --consumers 8 --receive-max 100 \
            --latency-samples "$samples" --json 2> >(sed 's/^/  /' >&2) |
            $RESULT queue --params "$params" --durability "$durability" --command "$cmd" $flags
    done
}

ceilings "$R1"
ceilings "$R1" "$R2" "$R3"

N1=$(start_node "r1=redis://127.0.0.1:$R1")
run_bench '{"shards":1,"backend":"redis"}' "$N1" "$DURABILITY"
kill "$(cat "$WORK/last-node.pid")"

SHARDS3="r1=redis://127.0.0.1:$R1,r2=redis://127.0.0.1:$R2,r3=redis://127.0.0.1:$R3"
N3A=$(start_node "$SHARDS3")
run_bench '{"shards":3,"backend":"redis"}' "$N3A" "$DURABILITY"
N3B=$(start_node "$SHARDS3")
run_bench '{"shards":3,"backend":"redis"}' "$N3A,$N3B" "$DURABILITY"

EMB=$(start_node "embedded:$WORK/embedded")
run_bench '{"backend":"embedded"}' "$EMB" "embedded log, fsync per partition touched per request"
