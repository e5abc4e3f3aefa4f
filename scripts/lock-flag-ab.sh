#!/usr/bin/env bash
# One `serve lock` flag at two values, in the same run (scripts/lock-ab.sh does the work and
# says what is printed).
#
# usage: scripts/lock-flag-ab.sh BINARY ROUNDS SECONDS CLIENTS WORKLOAD FLAG A B
# e.g.   scripts/lock-flag-ab.sh target/release/distsync 3 6 64 contended --queued-acquire-batch-ms 0 5
set -euo pipefail
if (($# != 8)); then
    sed -n 2,6p "$0" >&2
    exit 2
fi
bin=$1 flag=$6
exec "$(dirname "$0")/lock-ab.sh" "$2" "$3" "$4" "$5" "$bin $flag $7" "$bin $flag $8"
