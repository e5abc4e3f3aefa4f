#!/usr/bin/env bash
# GET on a cache node's RESP port against redis-server, in paired rounds: one node serving RESP
# on one thread, one on two, and a redis-server (no persistence), all up at once; each round
# runs `redis-benchmark -t get` once against each, in alternating order (odd rounds: 1 thread,
# 2 threads, redis; even rounds the reverse), and prints each round's ratios to redis-server.
# On shared cores the throughput of either side drifts by a third within minutes; the ratio
# of a round's pair is what this script is for, and the median of those ratios.
#
# With `perf` installed (apt-get install linux-perf), `--syscalls` adds one more pass per
# target counting the server's system calls, CPU time and context switches per GET.
#
# Each pass also reports how busy the load generator was (its user + system CPU over the wall
# time): near 100 % means redis-benchmark, one thread by default, is the bottleneck and both
# servers are being measured at its ceiling. CLIENT_THREADS=N passes `--threads N` to it, and
# PIPELINE=N passes `-P N` (N requests per round trip, which spares the load generator most of
# its system calls per GET and so moves the bottleneck towards the servers).
#
# usage: [CLIENT_THREADS=N] [PIPELINE=N] scripts/cache-get-vs-redis.sh [BINARY] [ROUNDS] [REQUESTS] [--syscalls]
set -euo pipefail
bin=${1:-target/release/distsync}
rounds=${2:-8}
requests=${3:-200000}
syscalls=false
[ "${4:-}" = --syscalls ] && syscalls=true
base=${BASE_PORT:-17400}
client_threads=${CLIENT_THREADS:-1}
pipeline=${PIPELINE:-1}
work=$(mktemp -d)
pids=()
cleanup() {
    if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

resp=()
for threads in 1 2; do
    "$bin" --log warn serve cache --id c1 \
        --cluster "c1=127.0.0.1:$((base + 10 + threads))/127.0.0.1:$((base + 20 + threads))" \
        --store memory --capacity 200000 --resp "127.0.0.1:$((base + threads))" \
        --resp-threads "$threads" >"$work/node-$threads.log" 2>&1 &
    pids+=($!)
    resp+=($((base + threads)))
done
redis_port=$((base + 9))
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --loglevel warning >"$work/redis.log" 2>&1 &
pids+=($!)
for port in "${resp[@]}" "$redis_port"; do
    for _ in $(seq 1 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
done

benchmark() { # $1 = port; prints the redis-benchmark output, one line per report
    redis-benchmark -p "$1" -t get -n "$requests" -c 50 -r 100000 -d 100 -q \
        --threads "$client_threads" -P "$pipeline" 2>/dev/null | tr '\r' '\n'
}
get_per_s() { # $1 = port
    benchmark "$1" | awk '/requests per second/ {print int($2)}'
}
client_busy=()
timed_pass() { # $1 = port, $2 = name: GET/s into $work/$2, the client's CPU share onto client_busy
    local TIMEFORMAT='%U %S %R'
    { time benchmark "$1" >"$work/pass"; } 2>"$work/time"
    awk '/requests per second/ {print int($2)}' "$work/pass" >"$work/$2"
    client_busy+=("$(awk '{printf "%.0f", ($1 + $2) / $3 * 100}' "$work/time")")
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ);" \
    "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(redis-server --version | cut -d' ' -f3)"
echo "command per target: redis-benchmark -p PORT -t get -n $requests -c 50 -r 100000 -d 100 -q --threads $client_threads -P $pipeline" \
    "(after one -t set,get pass to fill every key)"
for port in "${resp[@]}" "$redis_port"; do
    redis-benchmark -p "$port" -t set,get -n 100000 -c 50 -r 100000 -d 100 -q >/dev/null 2>&1
done

ratios1=() ratios2=()
for round in $(seq 1 "$rounds"); do
    if ((round % 2)); then
        timed_pass "${resp[0]}" one; timed_pass "${resp[1]}" two; timed_pass "$redis_port" redis
    else
        timed_pass "$redis_port" redis; timed_pass "${resp[1]}" two; timed_pass "${resp[0]}" one
    fi
    one=$(<"$work/one") two=$(<"$work/two") redis=$(<"$work/redis")
    ratios1+=("$(ratio "$one" "$redis")")
    ratios2+=("$(ratio "$two" "$redis")")
    echo "round $round: 1 thread $one GET/s, 2 threads $two, redis-server $redis;" \
        "ratios ${ratios1[-1]} / ${ratios2[-1]}; load generator CPU ${client_busy[-3]}, ${client_busy[-2]}, ${client_busy[-1]} % (pass order)"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "median ratio to redis-server: 1 thread $(median "${ratios1[@]}"), 2 threads $(median "${ratios2[@]}");" \
    "load generator's CPU per pass: median $(median "${client_busy[@]}") % of one core ($client_threads thread(s))"

if $syscalls; then
    events=raw_syscalls:sys_enter,task-clock,context-switches
    for target in "1:${pids[0]}:${resp[0]}" "2:${pids[1]}:${resp[1]}" "redis:${pids[2]}:$redis_port"; do
        IFS=: read -r name pid port <<<"$target"
        perf stat -x, -e "$events" -p "$pid" -o "$work/perf-$name" &
        perf_pid=$!
        sleep 0.2
        rate=$(get_per_s "$port")
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        awk -F, -v name="$name" -v n="$requests" -v rate="$rate" '
            /sys_enter/ {sc = $1} /task-clock/ {cpu = $1} /context-switches/ {cs = $1}
            END {printf "%s: %d GET/s, %.2f syscalls, %.2f µs CPU, %.3f context switches per GET\n",
                 name, rate, sc / n, cpu * 1000 / n, cs / n}' "$work/perf-$name"
    done
fi
