#!/usr/bin/env bash
# Cache benchmark: 1 node vs 3 nodes (in-memory backing store) with `distsync bench cache`,
# read-heavy (95/5) and write-heavy (50/50) Zipf(1.0) loads over HTTP; then, in the same run,
# `redis-benchmark -t get,set` against a cache node's RESP port and against a real redis-server.
# Writes one JSON file per result (docs/performance/results/SCHEMA.md) into
# docs/performance/results/runs/ and prints each.
#   usage: scripts/bench-cache.sh [seconds per distsync run, default 10] [redis-benchmark requests, default 200000]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
requests=${2:-200000}
clients=${CLIENTS:-32}
keys=${KEYS:-1000}
bin=${DISTSYNC_BIN:-target/release/distsync}
[ -x "$bin" ] || cargo build --release -p distsync
runs=docs/performance/results/runs
mkdir -p "$runs"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
base=17600 # HTTP base+i, peer base+100+i, RESP base+200+i; redis-server on base+300

meta() { # $1 = command line, $2 = durability
    python3 - "$1" "$2" <<'PY'
import json, os, platform, subprocess, sys, datetime
def sh(cmd):
    try: return subprocess.check_output(cmd, shell=True, text=True).strip()
    except Exception: return None
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
mem = sh("awk '/MemTotal/ {print $2}' /proc/meminfo")
print(json.dumps({
    "git_commit": sh("git rev-parse --short HEAD"),
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "command": sys.argv[1],
    "machine": {"cpus": os.cpu_count(), "memory_gib": round(int(mem) / 1048576, 1) if mem else None,
                "kernel": platform.release(), "cpu_model": cpu.strip() if cpu else None,
                "load_avg_1m_at_start": os.getloadavg()[0]},
    "versions": {"distsync": "0.1.0", "redis": sh("redis-server --version | sed -E 's/.*v=([^ ]+).*/\\1/'")},
    "durability": sys.argv[2],
}))
PY
}

save() { # $1 = file name, $2 = result JSON, $3 = meta JSON
    python3 - "$runs/$1" "$2" "$3" <<'PY'
import json, sys
record = json.loads(sys.argv[2]); record["meta"] = json.loads(sys.argv[3])
open(sys.argv[1], "w").write(json.dumps(record, indent=2) + "\n")
print(json.dumps(record))
PY
}

start_cache() { # $1 = nodes
    local n=$1 spec="" i
    for i in $(seq 1 "$n"); do spec+="${spec:+,}c$i=127.0.0.1:$((base + i))/127.0.0.1:$((base + 100 + i))"; done
    for i in $(seq 1 "$n"); do
        "$bin" --log warn serve cache --id "c$i" --cluster "$spec" --store memory \
            --capacity 100000 --resp "127.0.0.1:$((base + 200 + i))" &
        pids+=($!)
    done
    for i in $(seq 1 "$n"); do
        until curl -sf "127.0.0.1:$((base + i))/readyz" >/dev/null; do sleep 0.05; done
    done
    targets=$(seq -s, -f "127.0.0.1:%g" $((base + 1)) $((base + n)))
}

stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

redis_bench() { # $1 = port, $2 = system, $3 = nodes in the cluster behind the port, $4 = durability
    local port=$1 system=$2 csv command
    command="redis-benchmark -p $port -t get,set -n $requests -c 50 -r 100000 -d 100 --csv"
    csv=$($command | tr -d '\r')
    for test in SET GET; do
        line=$(printf '%s\n' "$csv" | grep "^\"$test\"")
        result=$(python3 - "$line" "$system" "$test" "$requests" "$3" <<'PY'
import csv, json, sys
row = next(csv.reader([sys.argv[1]]))
rps, avg, mn, p50, p95, p99, mx = map(float, row[1:8])
ops = int(sys.argv[4])
print(json.dumps({
    "schema": "distsync-bench/1", "service": "cache", "scenario": "redis-benchmark-" + sys.argv[3].lower(),
    "system": sys.argv[2], "nodes": int(sys.argv[5]), "clients": 50,
    "params": {"tool": "redis-benchmark", "requests": ops, "random_keys": 100000, "value_bytes": 100, "pipeline": 1},
    "duration_s": ops / rps, "ops": ops, "throughput_per_s": rps,
    "latency_ms": {"p50": p50, "p99": p99, "max": mx}, "errors": 0,
    "extra": {"avg_ms": avg, "p95_ms": p95},
}))
PY
)
        save "cache-redis-benchmark-$(echo "$test" | tr A-Z a-z)-$system-$stamp.json" "$result" "$(meta "$command" "$4")"
    done
}

for nodes in 1 3; do
    start_cache "$nodes"
    for mix in "read-95 0.95" "write-50 0.5"; do
        set -- $mix
        command="$bin bench cache --targets $targets --clients $clients --duration ${seconds}s --read-ratio $2 --keys $keys --zipf 1.0 --scenario $1 --json"
        result=$($command)
        save "cache-$1-distsync-${nodes}n-$stamp.json" "$result" "$(meta "$command" "in-memory backing store, write-back")"
    done
    if [ "$nodes" = 3 ]; then
        redis_bench $((base + 201)) distsync 3 "in-memory backing store, write-back; GET hits served from the node's store"
    fi
    stop_all
done

redis-server --port $((base + 300)) --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning &
pids+=($!)
until redis-cli -p $((base + 300)) ping >/dev/null 2>&1; do sleep 0.05; done
redis_bench $((base + 300)) redis 1 "no persistence (save '' appendonly no)"
stop_all
