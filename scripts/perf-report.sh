#!/usr/bin/env bash
# The performance report in one command (issue 7): build release, run every benchmark script that
# exists, write raw results (docs/performance/results/runs/*.json, SCHEMA.md), draw the charts,
# render docs/performance/README.md and docs/performance/report.pdf.
#
#   usage: scripts/perf-report.sh [--quick] [--seconds N] [--trials N] [--messages N]
#                                 [--raft-seconds N] [--render-only]
#     --quick         smoke run: 2 s per run, 5 failover trials, 20 000 queue messages
#     --seconds N     length of each cache run (default 10)
#     --lock-seconds N  length of each lock run (default 5: 60 runs, distsync and etcd, 1/3/5 nodes)
#     --trials N      failover trials (default 20)
#     --messages N    queue messages per publish-batch-100 run (default 100000)
#     --raft-seconds  criterion measurement time per raft case (default 5)
#     --render-only   skip the benchmarks; redraw charts, README.md and the PDF from the JSON
#
# The profile step needs perf (apt-get install linux-perf) and inferno (cargo install inferno).
# Every step prints its name and start time. A benchmark script that does not exist on this
# branch is reported as MISSING here and in the report; a step that fails is reported as FAILED
# and the script exits non-zero after the report is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full seconds=10 lock_seconds=5 trials=20 messages=100000 samples=1000 raft_seconds=5 raft_samples=20
render_only=false
while [ $# -gt 0 ]; do
    case $1 in
        --quick) mode=quick seconds=2 lock_seconds=2 trials=5 messages=20000 samples=200 raft_seconds=1 raft_samples=10 ;;
        --seconds) seconds=$2; shift ;;
        --lock-seconds) lock_seconds=$2; shift ;;
        --trials) trials=$2; shift ;;
        --messages) messages=$2; shift ;;
        --raft-seconds) raft_seconds=$2; shift ;;
        --render-only) render_only=true ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "perf-report.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

target=${CARGO_TARGET_DIR:-target}
export DISTSYNC_BIN="$target/release/distsync"
runs=docs/performance/results/runs
steps_log=docs/performance/results/perf-report-steps.json
mkdir -p "$runs"
step_lines=$(mktemp)
trap 'rm -f "$step_lines"' EXIT
started=$(date -u +%FT%TZ)
t0=$(date +%s%N)
failed=0 missing=0

# The planned steps: name | script that must exist | command.
plan=(
    "build||cargo build --release --quiet -p distsync -p distsync-report"
    "lock|scripts/bench-lock-vs-etcd.py|scripts/bench-lock-vs-etcd.py --seconds $lock_seconds --nodes 3,1,5 --bin $DISTSYNC_BIN"
    "profile|scripts/profile-lock.py|scripts/profile-lock.py --bin $DISTSYNC_BIN"
    "failover|scripts/bench-failover.py|scripts/bench-failover.py --trials $trials --bin $DISTSYNC_BIN"
    "queue|scripts/bench-queue.sh|scripts/bench-queue.sh $messages $samples"
    "cache|scripts/bench-cache.sh|scripts/bench-cache.sh $seconds"
    "raft|scripts/bench-raft.sh|scripts/bench-raft.sh $raft_seconds $raft_samples"
)
if $render_only; then plan=("${plan[0]}"); fi
total=$((${#plan[@]} + 2))

count_runs() { find "$runs" -maxdepth 1 -name '*.json' | wc -l; }

record() { # name status milliseconds files command
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$step_lines"
}

i=0
for entry in "${plan[@]}"; do
    IFS='|' read -r name script command <<<"$entry"
    i=$((i + 1))
    printf '\n==> [%d/%d] %s (%s): %s\n' "$i" "$total" "$name" "$(date -u +%H:%M:%S)" "$command"
    if [ -n "$script" ] && [ ! -e "$script" ]; then
        printf '!!! MISSING: %s does not exist on this branch; the report says "not measured yet" for it\n' "$script" >&2
        record "$name" missing 0 0 "$command"
        missing=$((missing + 1))
        continue
    fi
    before=$(count_runs)
    s0=$(date +%s%N)
    status=ok
    # shellcheck disable=SC2086
    if ! $command; then
        status=failed
        failed=$((failed + 1))
        printf '!!! FAILED: %s (exit status above); continuing with the next step\n' "$name" >&2
    fi
    ms=$((($(date +%s%N) - s0) / 1000000))
    files=$(($(count_runs) - before))
    # build and profile write no result file (the profile is an SVG under docs/performance/profiles/).
    if [ "$name" != build ] && [ "$name" != profile ] && [ "$status" = ok ] && [ "$files" -eq 0 ]; then
        printf '!!! %s wrote no result file into %s (does its script write the schema yet?)\n' "$name" "$runs" >&2
    fi
    record "$name" "$status" "$ms" "$files" "$command"
done

# --render-only ran no benchmark: the step log keeps describing the last run that did.
if ! $render_only; then
python3 - "$step_lines" "$steps_log" "$mode" "$started" "$((($(date +%s%N) - t0) / 1000000))" <<'EOF'
import json, sys
lines, out, mode, started, elapsed_ms = sys.argv[1:]
steps = []
for line in open(lines):
    name, status, ms, files, command = line.rstrip("\n").split("\t")
    steps.append({"name": name, "status": status, "seconds": round(int(ms) / 1000, 1),
                  "files": int(files), "command": command})
json.dump({"mode": mode, "started": started, "total_s": round(int(elapsed_ms) / 1000, 1), "steps": steps},
          open(out, "w"), indent=2)
EOF
fi

i=$((i + 1))
printf '\n==> [%d/%d] report: validate %s, draw charts, render README.md (%s)\n' "$i" "$total" "$runs" "$(date -u +%H:%M:%S)"
"$target/release/distsync-report" render --steps "$steps_log"

i=$((i + 1))
printf '\n==> [%d/%d] pdf: docs/performance/report.pdf (%s)\n' "$i" "$total" "$(date -u +%H:%M:%S)"
if ! python3 -c 'import weasyprint, markdown' 2>/dev/null; then
    echo "installing the PDF converter from PyPI: weasyprint markdown"
    pip3 install --quiet weasyprint markdown
fi
python3 scripts/report-pdf.py

printf '\n==> done in %d s (mode %s): %d step(s) failed, %d script(s) missing\n' \
    "$((($(date +%s%N) - t0) / 1000000000))" "$mode" "$failed" "$missing"
[ "$failed" -eq 0 ]
