#!/usr/bin/env bash
# WAL preallocation off (`--wal-preallocate-bytes 0`) against on (1 MiB, the default), in the
# same run: 3-node clusters under one client (scripts/lock-flag-ab.sh does the work).
#
# usage: scripts/wal-preallocate-ab.sh [BINARY] [ROUNDS] [SECONDS]
set -euo pipefail
exec "$(dirname "$0")/lock-flag-ab.sh" "${1:-target/release/distsync}" "${2:-2}" "${3:-6}" \
    1 uncontended --wal-preallocate-bytes 0 1048576
