#!/usr/bin/env bash
# Cache benchmark, every scenario of issue 7 in one run, one JSON file per result
# (docs/performance/results/SCHEMA.md) into docs/performance/results/runs/:
#   1. load: 1 node vs 3 nodes (in-memory backing store) with `distsync bench cache`, read-heavy
#      (95/5) and write-heavy (50/50) Zipf(1.0) loads over HTTP;
#   2. redis-benchmark -t get,set against a cache node's RESP port (1 and 3 nodes) and against a
#      real redis-server, then -t get pipelined 16 deep (-P 16) against both; then -t get with
#      every core busy: a node on one RESP thread per core against redis-server, and
#      redis-benchmark on as many threads (scenario redis-benchmark-get-threadsN);
#   3. hit-ratio: one node, read-only Zipf load over HIT_KEYS keys, capacity at 1..100 % of them,
#      --policy lru and lfu (hit ratio from the node's /v1/stats deltas);
#   4. coherence: 3 and 5 nodes, `bench cache --mode coherence` with 0..N-1 sharers per write
#      (messages and invalidations per write from /metrics and /v1/stats deltas).
# Progress lines go to stderr ("--> ..."), result JSON to stdout.
#   usage: scripts/bench-cache.sh [seconds per load run, default 10] [redis-benchmark requests, default 200000]
#   env:   CLIENTS (32) KEYS (1000) HIT_KEYS (10000) HIT_SECONDS (= seconds) WRITES (200 per
#          coherence run) ROUNDS (3 alternating redis-benchmark rounds, node then redis-server)
#          CACHE_BENCH_PORT_BASE (17600) ONLY (space-separated subset of
#          "load redis hit-ratio coherence")
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
requests=${2:-200000}
clients=${CLIENTS:-32}
keys=${KEYS:-1000}
hit_keys=${HIT_KEYS:-10000}
hit_seconds=${HIT_SECONDS:-$seconds}
writes=${WRITES:-200}
rounds=${ROUNDS:-3}
only=${ONLY:-load redis hit-ratio coherence}
bin=${DISTSYNC_BIN:-target/release/distsync}
[ -x "$bin" ] || cargo build --release -p distsync
runs=docs/performance/results/runs
mkdir -p "$runs"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}" ${redis_pid:-}; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# HTTP base+i, peer base+100+i, RESP base+200+i; redis-server on base+300.
base=${CACHE_BENCH_PORT_BASE:-17600}
distsync_version=$("$bin" --version | awk '{print $2}')
progress() { printf -- '--> cache %s (%s)\n' "$*" "$(date -u +%H:%M:%S)" >&2; }
wants() { case " $only " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

meta() { # $1 = command line, $2 = durability
    python3 - "$1" "$2" "$distsync_version" <<'PY'
import json, os, platform, subprocess, sys, datetime
sys.path.insert(0, "scripts")
from benchlib import git_commit
def sh(cmd):
    try: return subprocess.check_output(cmd, shell=True, text=True).strip()
    except Exception: return None
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
mem = sh("awk '/MemTotal/ {print $2}' /proc/meminfo")
print(json.dumps({
    "git_commit": git_commit(),
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "command": sys.argv[1],
    "machine": {"cpus": os.cpu_count(), "memory_gib": round(int(mem) / 1048576, 1) if mem else None,
                "kernel": platform.release(), "cpu_model": cpu.strip() if cpu else None,
                "load_avg_1m_at_start": os.getloadavg()[0]},
    "versions": {"distsync": sys.argv[3], "redis": sh("redis-server --version | sed -E 's/.*v=([^ ]+).*/\\1/'")},
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

start_cache() { # $1 = nodes, $2 = capacity (default 100000), $3 = policy (default lru), $4 = RESP threads (default: the node's)
    local n=$1 capacity=${2:-100000} policy=${3:-lru} spec="" i resp_threads=()
    [ -z "${4:-}" ] || resp_threads=(--resp-threads "$4")
    for i in $(seq 1 "$n"); do spec+="${spec:+,}c$i=127.0.0.1:$((base + i))/127.0.0.1:$((base + 100 + i))"; done
    for i in $(seq 1 "$n"); do
        "$bin" --log warn serve cache --id "c$i" --cluster "$spec" --store memory \
            --capacity "$capacity" --policy "$policy" --resp "127.0.0.1:$((base + 200 + i))" "${resp_threads[@]}" &
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

# $1 = port, $2 = system, $3 = nodes in the cluster behind the port, $4 = durability, $5 = round,
# $6 = pipeline depth (1: GET and SET, one request per round trip; N > 1: GET only, `-P N`, five
# times the requests, scenario `redis-benchmark-get-pN`), $7 = redis-benchmark threads (1; N > 1:
# GET only, six times the requests, scenario `redis-benchmark-get-threadsN`). Unpipelined,
# redis-benchmark's one thread saturates its core before either server does
# (docs/performance/cache.md); pipelined, it spends a fraction of the system calls per GET and
# the servers become the bottleneck. On more than one thread, a thread whose clients are done
# stops only at its 250 ms progress tick (passes of 2,000,000 pipelined GETs, 2 to 2.75 s, came
# out at rates a tenth apart), so its passes are made long enough for that step to stay small.
redis_bench() {
    local port=$1 system=$2 pipeline=${6:-1} threads=${7:-1} csv command tests=(SET GET) n=$requests suffix=""
    if ((pipeline > 1)); then
        tests=(GET) n=$((requests * 5)) suffix="-p$pipeline"
    elif ((threads > 1)); then
        tests=(GET) n=$((requests * 6)) suffix="-threads$threads"
    fi
    # `--threads 1` would still switch redis-benchmark to its threaded mode: pass it only for more.
    local threaded=""
    ((threads > 1)) && threaded=" --threads $threads"
    command="redis-benchmark -p $port -t $(IFS=,; echo "${tests[*]}" | tr A-Z a-z) -n $n -c 50 -r 100000 -d 100 -P $pipeline$threaded --csv"
    csv=$($command | tr -d '\r')
    for test in "${tests[@]}"; do
        line=$(printf '%s\n' "$csv" | grep "^\"$test\"")
        result=$(python3 - "$line" "$system" "$test$suffix" "$n" "$3" "$pipeline" <<'PY'
import csv, json, sys
row = next(csv.reader([sys.argv[1]]))
rps, avg, mn, p50, p95, p99, mx = map(float, row[1:8])
ops = int(sys.argv[4])
print(json.dumps({
    "schema": "distsync-bench/1", "service": "cache", "scenario": "redis-benchmark-" + sys.argv[3].lower(),
    "system": sys.argv[2], "nodes": int(sys.argv[5]), "clients": 50,
    "params": {"tool": "redis-benchmark", "requests": ops, "random_keys": 100000, "value_bytes": 100, "pipeline": int(sys.argv[6])},
    "duration_s": ops / rps, "ops": ops, "throughput_per_s": rps,
    "latency_ms": {"p50": p50, "p99": p99, "max": mx}, "errors": 0,
    "extra": {"avg_ms": avg, "p95_ms": p95},
}))
PY
)
        save "cache-redis-benchmark-$(echo "$test$suffix" | tr A-Z a-z)-$system-${3}n-$stamp-r$5.json" "$result" "$(meta "$command" "$4")"
    done
}

if wants load; then
    for nodes in 1 3; do
        start_cache "$nodes"
        for mix in "read-95 0.95" "write-50 0.5"; do
            set -- $mix
            progress "load $1, $nodes node(s), $clients clients, ${seconds}s"
            command="$bin bench cache --targets $targets --clients $clients --duration ${seconds}s --read-ratio $2 --keys $keys --zipf 1.0 --scenario $1 --json"
            result=$($command)
            save "cache-$1-distsync-${nodes}n-$stamp.json" "$result" "$(meta "$command" "in-memory backing store, write-back")"
        done
        stop_all
    done
fi

# A fresh cluster, not the one the load runs just filled, and redis-server beside it, measured in
# alternating rounds: on two shared cores the throughput of either swings by a third from one
# minute to the next, so a single run of each, minutes apart, compared the machine's moods as
# much as the servers. The report takes the median of the rounds (one result file per round).
if wants redis; then
    redis-server --port $((base + 300)) --bind 127.0.0.1 --save "" --appendonly no --daemonize no --loglevel warning &
    redis_pid=$!
    until redis-cli -p $((base + 300)) ping >/dev/null 2>&1; do sleep 0.05; done
    for nodes in 1 3; do
        start_cache "$nodes"
        for round in $(seq 1 "$rounds"); do
            progress "redis-benchmark round $round/$rounds: node c1's RESP port ($nodes node(s)), then redis-server"
            for pipeline in 1 16; do
                redis_bench $((base + 201)) distsync "$nodes" "in-memory backing store, write-back; GET hits served from the node's store" "$round-beside-${nodes}n" "$pipeline"
                redis_bench $((base + 300)) redis 1 "no persistence (save '' appendonly no)" "$round-beside-${nodes}n" "$pipeline"
            done
        done
        stop_all
    done
    # Every core busy: hits are served on as many RESP threads as the machine has cores, and
    # the load generator runs as many threads, so neither side is held to one core.
    cores=$(nproc)
    if ((cores > 1)); then
        start_cache 1 100000 lru "$cores"
        redis-benchmark -p $((base + 201)) -t set -n "$requests" -c 50 -r 100000 -d 100 -q >/dev/null
        for round in $(seq 1 "$rounds"); do
            progress "redis-benchmark round $round/$rounds, every core: node c1 on $cores RESP threads, then redis-server"
            redis_bench $((base + 201)) distsync 1 "in-memory backing store, write-back; GET hits served from the node's store on $cores RESP threads" "$round-all-cores" 1 "$cores"
            redis_bench $((base + 300)) redis 1 "no persistence (save '' appendonly no)" "$round-all-cores" 1 "$cores"
        done
        stop_all
    else
        progress "one core: no every-core rounds (they would repeat the unpipelined GET)"
    fi
    kill "$redis_pid" && wait "$redis_pid" 2>/dev/null || true
fi

if wants hit-ratio; then
    for policy in lru lfu; do
        for percent in 1 5 10 25 50 100; do
            capacity=$((hit_keys * percent / 100))
            progress "hit-ratio $policy, capacity $capacity ($percent % of $hit_keys keys), ${hit_seconds}s"
            start_cache 1 "$capacity" "$policy"
            command="$bin bench cache --targets $targets --clients 8 --duration ${hit_seconds}s --read-ratio 1.0 --keys $hit_keys --zipf 1.0 --scenario hit-ratio --json"
            result=$($command)
            save "cache-hit-ratio-$policy-c$capacity-distsync-1n-$stamp.json" "$result" "$(meta "$command" "in-memory backing store, write-back")"
            stop_all
        done
    done
fi

if wants coherence; then
    for nodes in 3 5; do
        start_cache "$nodes"
        for sharers in $(seq 0 $((nodes - 1))); do
            progress "coherence, $nodes nodes, $sharers sharer(s), $writes writes"
            command="$bin bench cache --mode coherence --targets $targets --sharers $sharers --writes $writes --json"
            result=$($command)
            save "cache-coherence-s$sharers-distsync-${nodes}n-$stamp.json" "$result" "$(meta "$command" "in-memory backing store, write-back")"
        done
        stop_all
    done
fi
