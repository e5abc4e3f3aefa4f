#!/usr/bin/env bash
# Two variants of a 3-node lock cluster in the same run: for each round, a cluster of variant A,
# then one of variant B, each under CLIENTS clients of `distsync bench lock` for SECONDS (on one
# hot name when WORKLOAD is `contended`, one name per client when `uncontended`). A variant is a
# binary followed by any `serve lock` flags, in one quoted word ("BINARY [FLAG VALUE]...").
# Prints pairs/s, pair p99 and acquire p50; the three servers' CPU time (user + system) and peer
# messages per measured pair, counted from start to end of the benchmark and so including its
# 1 s warm-up; and from each node's /metrics its mean persist (write + fsync) time and its
# proposals per persist.
#
# usage: scripts/lock-ab.sh ROUNDS SECONDS CLIENTS WORKLOAD VARIANT_A VARIANT_B
# e.g.   scripts/lock-ab.sh 3 6 1 uncontended /tmp/distsync-before target/release/distsync
#        scripts/lock-ab.sh 3 6 64 contended "target/release/distsync --queued-acquire-batch-ms 0" \
#            "target/release/distsync --queued-acquire-batch-ms 5"
set -euo pipefail
if (($# != 6)); then
    sed -n 2,14p "$0" >&2
    exit 2
fi
rounds=$1 seconds=$2 clients=$3 workload=$4 variant_a=$5 variant_b=$6
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

# Clock ticks of CPU (user + system) the servers used so far.
server_cpu_ticks() {
    local total=0 pid
    for pid in "${pids[@]}"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

peer_messages_sent() {
    local total=0 i
    for i in 1 2 3; do
        total=$((total + $(curl -s "http://127.0.0.1:2700$i/metrics" |
            awk '/^distsync_raft_peer_messages_sent / {print $2}')))
    done
    echo "$total"
}

run() {
    local variant=$1
    local words
    read -r -a words <<<"$variant"
    local bin=${words[0]}
    local dir="$work/run"
    rm -rf "$dir"
    mkdir -p "$dir"
    pids=()
    for i in 1 2 3; do
        "$bin" --log warn serve lock --id "$i" --cluster "$spec" --data-dir "$dir/n$i" \
            "${words[@]:1}" >"$dir/n$i.log" 2>&1 &
        pids+=($!)
    done
    for i in 1 2 3; do
        for _ in $(seq 1 200); do
            curl -sf "http://127.0.0.1:2700$i/readyz" >/dev/null && break
            sleep 0.1
        done
    done
    local cpu_before messages_before report cpu_after messages_after
    cpu_before=$(server_cpu_ticks)
    messages_before=$(peer_messages_sent)
    report=$("$bin" --log warn bench lock --targets "$targets" --clients "$clients" \
        "${contended[@]}" --duration "${seconds}s" --json)
    cpu_after=$(server_cpu_ticks)
    messages_after=$(peer_messages_sent)
    local result
    result=$(jq -c --argjson cpu_ms $(((cpu_after - cpu_before) * 1000 / $(getconf CLK_TCK))) \
        --argjson messages $((messages_after - messages_before)) \
        '{pairs_per_s: (.pairs_per_s | round), pair_p99_ms: .pair_ms.p99,
          acquire_p50_ms: .acquire_ms.p50,
          server_cpu_us_per_pair: (($cpu_ms * 1000 / ([.pairs, 1] | max)) | round),
          peer_messages_per_pair: (($messages / ([.pairs, 1] | max)) * 10 | round / 10)}' <<<"$report")
    local nodes=""
    for i in 1 2 3; do
        nodes+=$(curl -s "http://127.0.0.1:2700$i/metrics" | awk '
            /^distsync_raft_persist_seconds_sum/ {s=$2}
            /^distsync_raft_persist_seconds_count/ {c=$2}
            /^distsync_raft_proposals_total/ {p=$2}
            END {printf " %.3fms/%.2f", s/c*1000, p/c}')
    done
    echo "$variant $result persist_mean/proposals_per_persist:$nodes"
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}

echo "machine: $(nproc) cores; $(date -u +%FT%TZ); git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for round in $(seq 1 "$rounds"); do
    echo "round $round"
    run "$variant_a"
    run "$variant_b"
done
