#!/usr/bin/env bash
# GET on a cache node's RESP port against redis-server, in paired rounds: three single nodes
# (RESP on one thread; on two; on one thread that busy-polls for BUSY_POLL_US after each
# request) and a redis-server (no persistence), all up at once; each round runs
# `redis-benchmark -t get` once against each, in alternating order (odd rounds as listed, even
# rounds the reverse), and prints each round's ratios to redis-server, then their medians.
# On shared cores the throughput of either side drifts by a third within minutes; the ratio
# of a round's pair is what this script is for, and the median of those ratios.
#
# With `perf` installed (apt-get install linux-perf), `--syscalls` adds one more pass per
# target counting the server's system calls, CPU time and context switches per GET.
#
# Each pass also reports how busy the load generator was (its user + system CPU over the wall
# time): near 100 % means redis-benchmark, one thread by default, is the bottleneck and the
# servers are being measured at its ceiling. CLIENT_THREADS=N passes `--threads N` to it,
# PIPELINE=N passes `-P N` (N requests per round trip, which spares the load generator most of
# its system calls per GET and so moves the bottleneck towards the servers), CONNECTIONS=N
# passes `-c N` (default 50; 1 measures one request at a time, i.e. latency).
#
# BASELINE_BIN=PATH adds one more node, another build of distsync on one RESP thread (say,
# the commit before a change), so that a change is measured against its baseline in the same
# rounds.
#
# usage: [CLIENT_THREADS=N] [PIPELINE=N] [CONNECTIONS=N] [BUSY_POLL_US=N] [BASELINE_BIN=PATH] \
#        scripts/cache-get-vs-redis.sh [BINARY] [ROUNDS] [REQUESTS] [--syscalls]
set -euo pipefail
shopt -s inherit_errexit
bin=${1:-target/release/distsync}
rounds=${2:-8}
requests=${3:-200000}
syscalls=false
[ "${4:-}" = --syscalls ] && syscalls=true
base=${BASE_PORT:-17400}
client_threads=${CLIENT_THREADS:-1}
pipeline=${PIPELINE:-1}
connections=${CONNECTIONS:-50}
busy_poll_us=${BUSY_POLL_US:-200}
if ((busy_poll_us <= 0)); then
    echo "BUSY_POLL_US must be positive (the other nodes are the ones without busy polling)" >&2
    exit 2
fi
work=$(mktemp -d)
pids=()
cleanup() {
    if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# name | serve cache flags | binary; redis-server is the last target.
variants=(
    "1 thread|--resp-threads 1|$bin"
    "2 threads|--resp-threads 2|$bin"
    "1 thread busy-polling ${busy_poll_us} µs|--resp-threads 1 --resp-busy-poll-us $busy_poll_us|$bin"
)
if [ -n "${BASELINE_BIN:-}" ]; then
    [ -x "$BASELINE_BIN" ] || { echo "BASELINE_BIN=$BASELINE_BIN is not an executable" >&2; exit 2; }
    variants+=("baseline 1 thread|--resp-threads 1|$BASELINE_BIN")
fi
names=() ports=()
for index in "${!variants[@]}"; do
    IFS='|' read -r name flags variant_bin <<<"${variants[$index]}"
    port=$((base + 1 + index))
    # shellcheck disable=SC2086
    "$variant_bin" --log warn serve cache --id c1 \
        --cluster "c1=127.0.0.1:$((base + 11 + index))/127.0.0.1:$((base + 21 + index))" \
        --store memory --capacity 200000 --resp "127.0.0.1:$port" $flags \
        >"$work/node-$index.log" 2>&1 &
    pids+=($!)
    names+=("$name")
    ports+=("$port")
done
redis_port=$((base + 9))
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --loglevel warning >"$work/redis.log" 2>&1 &
pids+=($!)
names+=(redis-server)
ports+=("$redis_port")
for port in "${ports[@]}"; do
    for _ in $(seq 1 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
done

benchmark() { # $1 = port; prints the redis-benchmark output, one line per report
    redis-benchmark -p "$1" -t get -n "$requests" -c "$connections" -r 100000 -d 100 -q \
        --threads "$client_threads" -P "$pipeline" 2>/dev/null | tr '\r' '\n'
}
get_per_s() { # $1 = port
    benchmark "$1" | awk '/requests per second/ {print int($2)}'
}
timed_pass() { # $1 = port: prints "GET/s p50_ms client_cpu_percent" (p50 "?" when not printed)
    local TIMEFORMAT='%U %S %R' rate p50 busy
    { time benchmark "$1" >"$work/pass"; } 2>"$work/time"
    rate=$(awk '/requests per second/ {print int($2)}' "$work/pass")
    # redis-benchmark before 7 prints no percentiles with -q.
    p50=$(sed -n 's/.*p50=\([0-9.]*\) msec.*/\1/p' "$work/pass" | tail -1)
    busy=$(awk '{printf "%.0f", ($1 + $2) / $3 * 100}' "$work/time")
    if [ -z "$rate" ] || [ -z "$busy" ]; then
        echo "redis-benchmark on port $1 printed no result:" >&2
        cat "$work/pass" >&2
        exit 1
    fi
    printf '%s %s %s\n' "$rate" "${p50:-?}" "$busy"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ);" \
    "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(redis-server --version | cut -d' ' -f3)"
[ -z "${BASELINE_BIN:-}" ] || echo "baseline: $BASELINE_BIN ($("$BASELINE_BIN" --version))"
echo "command per target: redis-benchmark -p PORT -t get -n $requests -c $connections -r 100000 -d 100 -q --threads $client_threads -P $pipeline" \
    "(after one -t set,get pass to fill every key)"
for port in "${ports[@]}"; do
    redis-benchmark -p "$port" -t set,get -n 100000 -c 50 -r 100000 -d 100 -q >/dev/null 2>&1
done

redis=$((${#ports[@]} - 1))
ratios=()
client_busy=()
for round in $(seq 1 "$rounds"); do
    order=$(seq 0 "$redis")
    ((round % 2)) || order=$(seq "$redis" -1 0)
    rate=() p50=()
    for target in $order; do
        pass=$(timed_pass "${ports[$target]}")
        read -r "rate[$target]" "p50[$target]" busy <<<"$pass"
        client_busy+=("$busy")
    done
    line="round $round:"
    for target in $(seq 0 "$redis"); do
        line+=" ${names[$target]} ${rate[$target]} GET/s (p50 ${p50[$target]} ms)"
        if ((target < redis)); then
            r=$(ratio "${rate[$target]}" "${rate[$redis]}")
            ratios[$target]+="$r "
            line+=" = ${r}x,"
        fi
    done
    echo "$line load generator CPU ${client_busy[*]: -$((redis + 1))} % (pass order)"
done
summary="median ratio to redis-server:"
for target in $(seq 0 $((redis - 1))); do
    # shellcheck disable=SC2086
    summary+=" ${names[$target]} $(median ${ratios[$target]}),"
done
echo "$summary load generator's CPU per pass: median $(median "${client_busy[@]}") % of one core ($client_threads thread(s))"

if $syscalls; then
    events=raw_syscalls:sys_enter,task-clock,context-switches
    for target in $(seq 0 "$redis"); do
        perf stat -x, -e "$events" -p "${pids[$target]}" -o "$work/perf-$target" &
        perf_pid=$!
        sleep 0.2
        pass_rate=$(get_per_s "${ports[$target]}")
        kill -INT "$perf_pid"
        wait "$perf_pid" || true
        awk -F, -v name="${names[$target]}" -v n="$requests" -v rate="$pass_rate" '
            /sys_enter/ {sc = $1} /task-clock/ {cpu = $1} /context-switches/ {cs = $1}
            END {printf "%s: %d GET/s, %.2f syscalls, %.2f µs CPU, %.3f context switches per GET\n",
                 name, rate, sc / n, cpu * 1000 / n, cs / n}' "$work/perf-$target"
    done
fi
