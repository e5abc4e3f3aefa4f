#!/usr/bin/env bash
# How a cache node's shutdown writes back its Modified lines (issue 5: "a Modified line is
# written back ... on shutdown"). Two passes per binary:
#   memory: 1 node, then 3, with --store memory; SETs through c1's RESP port leave c1 holding about
#           86,000 keys Modified (200,000 SETs over 100,000 random keys); then SIGTERM to every
#           node at once. Prints the time until all have exited and whether any node logged
#           that its flush ran out of time (the rest of its dirty lines never written back).
#   redis:  one node with a redis-server behind it, about 17,000 dirty lines; redis-server is
#           made to stall for 1.5 s (DEBUG SLEEP) just before the SIGTERM. Prints how many
#           writes redis-server ran (EVAL calls) against the lines written back, and whether
#           every line reached it.
# usage: scripts/cache-shutdown-flush.sh BINARY [BINARY...]   (e.g. a build before a change
#        and one after; each gets both passes)
set -euo pipefail
shopt -s inherit_errexit
(($#)) || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
base=${BASE_PORT:-18000}
work=$(mktemp -d)
pids=()
redis_started=false
cleanup() {
    if ((${#pids[@]})); then kill -9 "${pids[@]}" 2>/dev/null || true; fi
    if $redis_started; then redis-cli -p $((base + 300)) shutdown nosave >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

start_nodes() { # $1 = binary, $2 = nodes, $3 = store
    local spec="" i
    pids=()
    for i in $(seq 1 "$2"); do spec+="${spec:+,}c$i=127.0.0.1:$((base + i))/127.0.0.1:$((base + 100 + i))"; done
    for i in $(seq 1 "$2"); do
        "$1" --log warn serve cache --id "c$i" --cluster "$spec" --store "$3" --capacity 100000 \
            --resp "127.0.0.1:$((base + 200 + i))" >"$work/node-$i.log" 2>&1 &
        pids+=($!)
    done
    local deadline=$((SECONDS + 30))
    for i in $(seq 1 "$2"); do
        until curl -sf "127.0.0.1:$((base + i))/readyz" >/dev/null; do
            if ((SECONDS > deadline)) || ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
                echo "node c$i did not become ready:" >&2
                cat "$work/node-$i.log" >&2
                exit 1
            fi
            sleep 0.05
        done
    done
}

stop_nodes() { # sets $seconds: from SIGTERM until every node exited
    local start pid
    start=$(date +%s.%N)
    kill -TERM "${pids[@]}"
    for pid in "${pids[@]}"; do wait "$pid" || true; done
    pids=()
    seconds=$(echo "$(date +%s.%N) - $start" | bc)
}

lines_on_c1() { curl -s "127.0.0.1:$((base + 1))/v1/stats" | jq .lines; }
flush_gave_up() { cat "$work"/node-*.log | grep -c 'not every Modified line was written back' || true; }

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ); git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for bin in "$@"; do
    echo "binary: $bin ($("$bin" --version))"
    for nodes in 1 3; do
        rm -f "$work"/node-*.log
        start_nodes "$bin" "$nodes" memory
        redis-benchmark -p $((base + 201)) -t set -n 200000 -c 50 -r 100000 -d 100 -q >/dev/null
        lines=$(lines_on_c1)
        stop_nodes
        echo "  memory, $nodes node(s): c1 held $lines lines; SIGTERM to all: exited after ${seconds} s; flushes that ran out of time: $(flush_gave_up)"
    done
    redis_port=$((base + 300))
    if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
        echo "port $redis_port is taken by another redis-server; set BASE_PORT" >&2
        exit 1
    fi
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --enable-debug-command yes --daemonize yes --loglevel warning >/dev/null
    redis_started=true
    until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
    rm -f "$work"/node-*.log
    start_nodes "$bin" 1 "redis://127.0.0.1:$redis_port"
    redis-benchmark -p $((base + 201)) -t set -n 40000 -c 50 -r 20000 -d 100 -q >/dev/null
    lines=$(lines_on_c1)
    redis-cli -p "$redis_port" config resetstat >/dev/null
    redis-cli -p "$redis_port" debug sleep 1.5 >/dev/null &
    stall=$!
    # Nothing tells when the stall began (redis-server answers nobody while it sleeps): give
    # redis-cli a tenth of the stall to get its command there.
    sleep 0.15
    stop_nodes
    wait "$stall"
    evals=$(redis-cli -p "$redis_port" info commandstats | grep -o 'cmdstat_eval:calls=[0-9]*' | cut -d= -f2)
    stored=$(redis-cli -p "$redis_port" dbsize)
    echo "  redis, 1 node, redis-server stalled 1.5 s at SIGTERM: c1 held $lines lines; exited after ${seconds} s; redis-server ran ${evals:-0} writes; it holds $stored keys; flushes that ran out of time: $(flush_gave_up)"
    redis-cli -p "$redis_port" shutdown nosave >/dev/null
    redis_started=false
done
