#!/usr/bin/env bash
# Container tests of deploy/docker-compose.yml (issue 6, "Container tests"), run by .ci/run.
#
#   bash deploy/test-containers.sh [--binary PATH] [--keep]
#
# Builds the image from a host binary (target `prebuilt`; default: `cargo build --profile test
# -p distsync`, which CI has already built), starts the stack under its own project name, host
# ports 19000-19999 and subnet 172.28.77.0/24, and checks:
#   1. every service healthy, and a smoke request through each published port
#   2. SIGKILL of the lock leader's container: a new leader, the grant kept, no second grant
#   3. `docker network disconnect` of a lock follower: it answers 503 while the others commit;
#      reconnected, it reaches the leader's commit index
#   4. SIGKILL + restart of a Redis shard: every acknowledged message is still delivered
#   5. `compose down` (volumes kept) then `up`: lock, session and queued messages still there
#   6. cache: a write on one node seen on the others, at most one M/E owner, RESP
#   7. cache scaled 3 -> 5 -> 3 (`--scale cache=2`, then 0) under load, no stale read
#   8. `distsync demo` against the stack (it crashes the lock leader; the restart policy heals it)
# Every wait polls with a deadline. The stack and its volumes are removed at the end (--keep
# leaves them up). Needs docker, docker compose (v2) or docker-compose (v1.28+), curl, jq; the
# base images come from deploy/build-base-images.sh when no registry is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
keep=false
while (($#)); do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --keep) keep=true; shift ;;
        *) echo "usage: $0 [--binary PATH] [--keep]" >&2; exit 2 ;;
    esac
done

PROJECT="${DSDEPLOY_PROJECT:-dsdeploy-ci}"
IMAGE="distsync:${PROJECT}"
LOCK_PORTS=(19001 19002 19003)
QUEUE_PORTS=(19401 19402)
CACHE_PORTS=(19501 19502 19503)
CACHE_RESP_PORTS=(19591 19592 19593)
started_at=$SECONDS
passed=0
failed=0
skipped=0

log() { printf '[%4ds] %s\n' "$((SECONDS - started_at))" "$*"; }
pass() { passed=$((passed + 1)); log "PASS  $*"; }
failure=""
fail() {
    failed=$((failed + 1))
    failure="$*"
    log "FAIL  $*"
    exit 1
}

for tool in docker curl jq; do
    command -v "$tool" >/dev/null || { echo "ERROR: $tool is required" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "ERROR: the docker daemon does not answer" >&2; exit 1; }
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    echo "ERROR: neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 1
fi

workdir="$(mktemp -d /tmp/dsdeploy-test.XXXXXX)"
env_file="$workdir/env"
cat >"$env_file" <<EOF
DISTSYNC_IMAGE=${IMAGE}
DISTSYNC_IMAGE_TARGET=prebuilt
DISTSYNC_SUBNET=172.28.77.0/24
DISTSYNC_PUBLISH_ADDR=127.0.0.1
DISTSYNC_LOCK1_PORT=${LOCK_PORTS[0]}
DISTSYNC_LOCK2_PORT=${LOCK_PORTS[1]}
DISTSYNC_LOCK3_PORT=${LOCK_PORTS[2]}
DISTSYNC_LOCK4_PORT=19004
DISTSYNC_QUEUE1_PORT=${QUEUE_PORTS[0]}
DISTSYNC_QUEUE2_PORT=${QUEUE_PORTS[1]}
DISTSYNC_CACHE1_PORT=${CACHE_PORTS[0]}
DISTSYNC_CACHE2_PORT=${CACHE_PORTS[1]}
DISTSYNC_CACHE3_PORT=${CACHE_PORTS[2]}
DISTSYNC_CACHE1_RESP_PORT=${CACHE_RESP_PORTS[0]}
DISTSYNC_CACHE2_RESP_PORT=${CACHE_RESP_PORTS[1]}
DISTSYNC_CACHE3_RESP_PORT=${CACHE_RESP_PORTS[2]}
DISTSYNC_HEALTHCHECK_INTERVAL=1s
DISTSYNC_LOG=info
DISTSYNC_ALLOW_FAULT_INJECTION=true
EOF

compose() { "${COMPOSE[@]}" -p "$PROJECT" -f deploy/docker-compose.yml --env-file "$env_file" "$@"; }
# Container ids by service, looked up after each `up` (v1 and v2 name containers differently).
declare -A CID
refresh_ids() {
    local service
    for service in "$@"; do CID[$service]=$(compose ps -q "$service"); done
}
container() { echo "${CID[$1]:?no container for $1}"; }

finish() {
    local status=$?
    # Background clients of the failover test, if a check failed while they ran.
    touch "$workdir/stop-contenders" 2>/dev/null || true
    local job
    for job in $(jobs -p); do kill "$job" 2>/dev/null || true; done
    if ((status != 0)); then
        [[ $failed -gt 0 ]] || failed=$((failed + 1))
        log "logs of the stack (last 40 lines per service):"
        compose logs --no-color --tail 40 2>&1 | sed 's/^/    /' || true
    fi
    if $keep; then
        log "--keep: stack $PROJECT left running (${COMPOSE[*]} -p $PROJECT -f deploy/docker-compose.yml --env-file $env_file down -v)"
    else
        compose down -v --remove-orphans >/dev/null 2>&1 || true
        rm -rf "$workdir"
    fi
    log "container tests took $((SECONDS - started_at)) s"
    echo "container tests: $passed passed, $failed failed, $skipped skipped"
    # Repeated after the stack's logs, which would otherwise bury it in a CI log's tail.
    [[ -z $failure ]] || echo "container tests: FAILED: $failure"
    if ((status == 0 && failed > 0)); then status=1; fi
    exit "$status"
}
trap finish EXIT

# ---- helpers ------------------------------------------------------------------------------
# http METHOD URL [JSON]: sets $status and $body; never fails (a refused connection is 000).
http() {
    local out="$workdir/body"
    status=$(curl -s -o "$out" -w '%{http_code}' --max-time 10 -X "$1" \
        -H 'content-type: application/json' ${3:+--data "$3"} "$2") || status=000
    body=$(cat "$out" 2>/dev/null || true)
}

# until_true DEADLINE_S DESCRIPTION COMMAND...: polls every 0.2 s until COMMAND succeeds.
until_true() {
    local deadline=$((SECONDS + $1)) what="$2"
    shift 2
    until "$@"; do
        ((SECONDS < deadline)) || fail "timed out after ${deadline}s mark waiting for: $what"
        sleep 0.2
    done
}

lock_url() { echo "http://127.0.0.1:${LOCK_PORTS[$(($1 - 1))]}"; }
queue_url() { echo "http://127.0.0.1:${QUEUE_PORTS[$(($1 - 1))]}"; }

# The leader id as node $1 sees it (empty if none or unreachable).
leader_seen_by() {
    http GET "$(lock_url "$1")/v1/cluster"
    [[ $status == 200 ]] && jq -r '.leader_id // empty' <<<"$body" || true
}

knows_leader() { [[ -n $(leader_seen_by "$1") ]]; }

healthy() { [[ "$(docker inspect -f '{{.State.Health.Status}}' "$(container "$1")" 2>/dev/null)" == healthy ]]; }
all_healthy() {
    local service
    for service in "$@"; do healthy "$service" || return 1; done
}

new_session() { # new_session NODE TTL_MS -> prints the session id
    http POST "$(lock_url "$1")/v1/sessions" "{\"ttl_ms\":$2}"
    [[ $status == 201 ]] || fail "create session on lock$1: HTTP $status $body"
    jq -r .session_id <<<"$body"
}

# Publishes $3 messages to queue $2 through queue node $1 in batches of 20; each body is
# "m-<n>". Every batch must be acknowledged (201).
publish_n() {
    local node=$1 queue=$2 count=$3 i batch
    for ((i = 0; i < count; i += 20)); do
        batch=$(jq -nc --argjson from "$i" --argjson to "$((i + 20 < count ? i + 20 : count))" \
            '{messages: [range($from; $to) | {body: "m-\(.)"}]}')
        http POST "$(queue_url "$node")/v1/queues/$queue/messages" "$batch"
        [[ $status == 201 ]] || fail "publish to $queue: HTTP $status $body"
    done
}

# Receives and acks from queue $2 (group $3) through node $1 until $4 distinct bodies arrived.
consume_all() {
    local node=$1 queue=$2 group=$3 want=$4 deadline=$((SECONDS + 60))
    local seen="$workdir/seen-$queue"
    : >"$seen"
    while (($(sort -u "$seen" | wc -l) < want)); do
        ((SECONDS < deadline)) || fail "$queue: only $(sort -u "$seen" | wc -l) of $want messages came back"
        http POST "$(queue_url "$node")/v1/queues/$queue/receive" \
            "{\"group\":\"$group\",\"consumer\":\"tester\",\"max\":100,\"wait_ms\":500}"
        [[ $status == 200 ]] || continue
        jq -r '.messages[].body' <<<"$body" >>"$seen"
        local receipts
        receipts=$(jq -c '[.messages[].receipt]' <<<"$body")
        if [[ $receipts != "[]" ]]; then
            http POST "$(queue_url "$node")/v1/queues/$queue/ack" "{\"group\":\"$group\",\"receipts\":$receipts}"
        fi
    done
    local expected
    expected=$(for ((i = 0; i < want; i++)); do echo "m-$i"; done | sort)
    diff <(sort -u "$seen") <(echo "$expected") >/dev/null || fail "$queue: delivered bodies differ from the published ones"
}

# ---- image --------------------------------------------------------------------------------
bash deploy/build-base-images.sh
if [[ -z $binary ]]; then
    log "cargo build --profile test -p distsync (a no-op when cargo test built it already)"
    cargo build --profile test -p distsync --quiet
    binary=target/debug/distsync
fi
[[ -x $binary ]] || fail "no executable binary at $binary"
mkdir -p deploy/bin
# Debug info is most of a debug binary's size and useless in the image.
objcopy --strip-debug "$binary" deploy/bin/distsync 2>/dev/null || cp "$binary" deploy/bin/distsync
log "image $IMAGE from $binary ($(du -h deploy/bin/distsync | cut -f1) stripped)"
compose down -v --remove-orphans >/dev/null 2>&1 || true
compose build lock1 >"$workdir/build.log" 2>&1 || { cat "$workdir/build.log"; fail "docker build"; }

SERVICES=(lock1 lock2 lock3 redis1 redis2 redis3 queue1 queue2 cache1 cache2 cache3)

# ---- 1. the stack comes up healthy; smoke test through every published port ---------------
log "compose up: ${SERVICES[*]}"
up_started=$SECONDS
compose up -d --no-build "${SERVICES[@]}" >"$workdir/up.log" 2>&1 || { cat "$workdir/up.log"; fail "compose up"; }
refresh_ids "${SERVICES[@]}"
until_true 90 "every service healthy" all_healthy "${SERVICES[@]}"
pass "stack healthy: ${#SERVICES[@]} containers in $((SECONDS - up_started)) s"

for node in 1 2 3; do
    until_true 10 "lock$node knows a leader" knows_leader "$node"
done
session=$(new_session 1 10000)
http POST "$(lock_url 2)/v1/locks/smoke/acquire" "{\"session_id\":$session,\"mode\":\"exclusive\"}"
[[ $status == 200 ]] || fail "smoke acquire via lock2: HTTP $status $body"
http GET "$(lock_url 3)/v1/locks/smoke"
[[ $(jq -r '.holders[0].session_id' <<<"$body") == "$session" ]] || fail "smoke: lock3 does not show the holder: $body"
http POST "$(lock_url 3)/v1/locks/smoke/release" "{\"session_id\":$session}"
[[ $status == 200 ]] || fail "smoke release via lock3: HTTP $status $body"
pass "lock smoke: session on lock1, acquire on lock2, read and release on lock3"

for node in 1 2; do
    http GET "$(queue_url "$node")/readyz"
    [[ $status == 200 && $(grep -c ': ok' <<<"$body") == 3 ]] || fail "queue$node readyz: HTTP $status $body"
done
publish_n 1 smoke 10
consume_all 2 smoke g 10
pass "queue smoke: 3 shards up on both nodes; 10 published on queue1, consumed on queue2"
for port in "${LOCK_PORTS[@]}" "${QUEUE_PORTS[@]}"; do
    http GET "http://127.0.0.1:$port/metrics"
    [[ $status == 200 && $body == *"# EOF"* ]] || fail "metrics on port $port: HTTP $status"
done
pass "metrics answered on every published lock and queue port"

# ---- 2. kill the lock leader's container --------------------------------------------------
leader=$(leader_seen_by 1)
[[ -n $leader ]] || fail "no leader before the failover test"
followers=()
for node in 1 2 3; do [[ $node == "$leader" ]] || followers+=("$node"); done
holder=$(new_session "${followers[0]}" 20000)
http POST "$(lock_url "${followers[0]}")/v1/locks/fenced/acquire" "{\"session_id\":$holder,\"mode\":\"exclusive\"}"
[[ $status == 200 ]] || fail "acquire before failover: HTTP $status $body"
token_before=$(jq -r .fencing_token <<<"$body")
# Contending clients on the followers, across the kill: each takes 'contended', notes the time
# it got the answer and the time it sent its first release request, then releases. That interval
# lies inside the server's hold, so two overlapping intervals are a double grant.
contender() {
    local node=$1 out=$2 session answer token granted released code i tries
    local url
    url="$(lock_url "$node")"
    session=$(curl -s --max-time 5 -X POST -H 'content-type: application/json' \
        --data '{"ttl_ms":60000}' "$url/v1/sessions" | jq -r '.session_id // empty')
    [[ -n $session ]] || return 0
    for ((i = 0; i < 300; i++)); do
        [[ -e $workdir/stop-contenders ]] && return 0
        answer=$(curl -s --max-time 5 -X POST -H 'content-type: application/json' \
            --data "{\"session_id\":$session,\"mode\":\"exclusive\",\"wait_ms\":1000}" \
            "$url/v1/locks/contended/acquire") || continue
        token=$(jq -r '.fencing_token // empty' <<<"$answer" 2>/dev/null) || continue
        [[ -n $token ]] || continue
        granted=$(date +%s%6N)
        released=$(date +%s%6N)
        for ((tries = 0; tries < 50; tries++)); do
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -H 'content-type: application/json' \
                --data "{\"session_id\":$session,\"fencing_token\":$token}" "$url/v1/locks/contended/release") || code=000
            [[ $code == 200 || $code == 409 ]] && break
            sleep 0.1
        done
        echo "$granted $released $token $session" >>"$out"
    done
}
for worker in 0 1 2; do
    contender "${followers[$((worker % 2))]}" "$workdir/grants" &
done
grants_recorded() { [[ -e $workdir/grants ]] && wc -l <"$workdir/grants" || echo 0; }
at_least() { (($("$2") >= $1)); }
# Let the contenders get going before the kill.
until_true 20 "contenders making progress" at_least 5 grants_recorded
log "lock$leader leads; session $holder holds 'fenced' with token $token_before; 3 clients contend for 'contended'; docker kill lock$leader"
killed_at=$SECONDS
killed_ns=$(date +%s%6N)
docker kill "$(container "lock$leader")" >/dev/null
new_leader_elected() {
    local seen
    seen=$(leader_seen_by "${followers[0]}")
    [[ -n $seen && $seen != "$leader" && $(leader_seen_by "${followers[1]}") == "$seen" ]]
}
until_true 15 "a new leader after killing lock$leader" new_leader_elected
new_leader=$(leader_seen_by "${followers[0]}")
pass "new leader lock$new_leader $((SECONDS - killed_at)) s after killing lock$leader"

# The grant survived, and nobody else gets it while its session lives.
http POST "$(lock_url "${followers[1]}")/v1/sessions/$holder/keepalive"
[[ $status == 200 ]] || fail "the holder's session did not survive the failover: HTTP $status $body"
http GET "$(lock_url "${followers[1]}")/v1/locks/fenced"
[[ $status == 200 && $(jq -c '[.holders[] | [.session_id, .fencing_token]]' <<<"$body") == "[[$holder,$token_before]]" ]] \
    || fail "after failover the holders are $body, expected only session $holder with token $token_before"
rival=$(new_session "${followers[1]}" 20000)
http POST "$(lock_url "${followers[1]}")/v1/locks/fenced/acquire" "{\"session_id\":$rival,\"mode\":\"exclusive\",\"wait_ms\":0}"
[[ $status == 408 ]] || fail "a second session got the held lock after failover (double grant?): HTTP $status $body"
http POST "$(lock_url "${followers[0]}")/v1/locks/fenced/release" "{\"session_id\":$holder,\"fencing_token\":$token_before}"
[[ $status == 200 ]] || fail "release after failover: HTTP $status $body"
http POST "$(lock_url "${followers[1]}")/v1/locks/fenced/acquire" "{\"session_id\":$rival,\"mode\":\"exclusive\",\"wait_ms\":2000}"
token_after=$(jq -r '.fencing_token // 0' <<<"$body")
[[ $status == 200 && $token_after -gt $token_before ]] \
    || fail "the next grant must carry a larger token than $token_before: HTTP $status $body"
pass "no double grant: holder kept token $token_before, rival refused (408), then granted token $token_after"
grants_after_kill() { awk -v t="$killed_ns" '$1 > t' "$workdir/grants" | wc -l; }
until_true 30 "5 contended grants after the kill" at_least 5 grants_after_kill
touch "$workdir/stop-contenders"
wait
# Sorted by grant time: each grant must start after every earlier hold ended, with a larger token.
overlap=$(sort -n "$workdir/grants" | awk '
    NR > 1 && $1 < latest_end { print "grant at " $1 " (token " $3 ", session " $4 ") overlaps a hold until " latest_end " (token " latest_token ")"; exit }
    NR > 1 && $3 <= last_token { print "token " $3 " after token " last_token; exit }
    { if ($2 > latest_end) { latest_end = $2; latest_token = $3 } last_token = $3 }')
[[ -z $overlap ]] || fail "double grant among the contending clients: $overlap"
pass "contended lock: $(wc -l <"$workdir/grants") grants ($(grants_after_kill) after the kill), no overlapping holds, tokens increasing"
docker start "$(container "lock$leader")" >/dev/null
until_true 30 "lock$leader healthy again after restart" healthy "lock$leader"
pass "lock$leader restarted from its volume and rejoined"

# ---- 3. disconnect one lock follower from the network ---------------------------------------
leader=$(leader_seen_by 1)
cut=""
for node in 1 2 3; do [[ $node == "$leader" ]] || { cut=$node; break; }; done
others=()
for node in 1 2 3; do [[ $node == "$cut" ]] || others+=("$node"); done
network="${PROJECT}_distsync"
log "docker network disconnect $network lock$cut (leader is lock$leader)"
docker network disconnect "$network" "$(container "lock$cut")"
# Ask the cut-off node itself: its published port goes through the network it just lost.
cut_refuses() {
    local out
    out=$(docker exec "$(container "lock$cut")" distsync --log error probe --timeout-ms 6000 \
        http://127.0.0.1:7001/v1/locks/partition 2>&1) && return 1
    grep -q '503' <<<"$out"
}
until_true 20 "lock$cut refusing with 503 while cut off" cut_refuses
writer=$(new_session "${others[0]}" 10000)
for round in 1 2 3 4 5; do
    http POST "$(lock_url "${others[$((round % 2))]}")/v1/locks/partition-$round/acquire" "{\"session_id\":$writer,\"mode\":\"exclusive\"}"
    [[ $status == 200 ]] || fail "the majority side did not serve while lock$cut was cut off: HTTP $status $body"
done
http GET "$(lock_url "$leader")/v1/cluster"
commit_during=$(jq -r .commit_index <<<"$body")
pass "lock$cut answers 503 while cut off; lock${others[0]} and lock${others[1]} committed 5 grants (commit index $commit_during)"
docker network connect "$network" "$(container "lock$cut")"
reconnected_at=$SECONDS
caught_up() {
    local mine theirs
    mine=$(docker exec "$(container "lock$cut")" distsync --log error probe http://127.0.0.1:7001/v1/cluster 2>/dev/null | jq -r .commit_index) || return 1
    http GET "$(lock_url "$leader")/v1/cluster"
    theirs=$(jq -r .commit_index <<<"$body")
    [[ $mine -ge $commit_during && $mine == "$theirs" ]]
}
until_true 30 "lock$cut catching up to the leader's commit index" caught_up
until_true 30 "lock$cut healthy after reconnect" healthy "lock$cut"
http GET "$(lock_url "$cut")/v1/locks/partition-5"
[[ $(jq -r '.holders[0].session_id' <<<"$body") == "$writer" ]] || fail "lock$cut does not serve the grant made while it was away: $body"
pass "lock$cut reconnected, caught up to commit index $(jq -r .commit_index <<<"$(curl -s "$(lock_url "$leader")/v1/cluster")") in $((SECONDS - reconnected_at)) s, serves what it missed"

# ---- 4. kill and restart a Redis shard ----------------------------------------------------
publish_n 1 durable 300
log "300 messages acknowledged; docker kill redis2"
docker kill "$(container redis2)" >/dev/null
http GET "$(queue_url 1)/readyz"
log "queue1 readyz with redis2 down: HTTP $status, $(grep -c unavailable <<<"$body") shard(s) unavailable"
docker start "$(container redis2)" >/dev/null
until_true 30 "redis2 healthy after restart" healthy redis2
consume_all 2 durable g 300
pass "redis2 SIGKILLed and restarted from its AOF volume: all 300 acknowledged messages delivered"

# ---- 5. compose down (volumes kept) then up --------------------------------------------------
keeper=$(new_session 1 300000)
http POST "$(lock_url 1)/v1/locks/persist/acquire" "{\"session_id\":$keeper,\"mode\":\"exclusive\"}"
[[ $status == 200 ]] || fail "acquire before down: HTTP $status $body"
persist_token=$(jq -r .fencing_token <<<"$body")
publish_n 2 persist 100
log "session $keeper holds 'persist' (token $persist_token), 100 messages queued; compose down (no -v)"
compose down >/dev/null 2>&1
compose up -d --no-build "${SERVICES[@]}" >"$workdir/up2.log" 2>&1 || { cat "$workdir/up2.log"; fail "compose up after down"; }
refresh_ids "${SERVICES[@]}"
until_true 90 "every service healthy after down/up" all_healthy "${SERVICES[@]}"
http POST "$(lock_url 2)/v1/sessions/$keeper/keepalive"
[[ $status == 200 ]] || fail "session $keeper lost across down/up: HTTP $status $body"
http GET "$(lock_url 3)/v1/locks/persist"
[[ $(jq -c '[.holders[] | [.session_id, .fencing_token]]' <<<"$body") == "[[$keeper,$persist_token]]" ]] \
    || fail "lock 'persist' after down/up: $body"
consume_all 1 persist g 100
pass "after down/up: session $keeper alive, 'persist' held with token $persist_token, 100 queued messages delivered"

# ---- 6. cache ------------------------------------------------------------------------------
cache_url() { echo "http://127.0.0.1:${CACHE_PORTS[$(($1 - 1))]}"; }
http PUT "$(cache_url 1)/v1/cache/greeting" '{"value":"hello"}'
[[ $status == 200 ]] || fail "cache put on cache1: HTTP $status $body"
http GET "$(cache_url 2)/v1/cache/greeting"
[[ $status == 200 && $(jq -r .value <<<"$body") == hello ]] || fail "cache get on cache2: HTTP $status $body"
http PUT "$(cache_url 3)/v1/cache/greeting" '{"value":"again"}'
[[ $status == 200 ]] || fail "cache put on cache3: HTTP $status $body"
for node in 1 2; do
    http GET "$(cache_url "$node")/v1/cache/greeting"
    [[ $(jq -r .value <<<"$body") == again ]] || fail "cache$node serves a stale value after a write on cache3: $body"
done
http GET "$(cache_url 1)/v1/cache/greeting/coherence"
owners=$(jq '[.states[] | select(. == "M" or . == "E")] | length' <<<"$body")
[[ $status == 200 && $owners -le 1 ]] || fail "coherence: $body"
resp=$(redis-cli -p "${CACHE_RESP_PORTS[0]}" PING 2>&1 || true)
[[ $resp == PONG ]] || fail "cache1 RESP port: $resp"
pass "cache: write on cache1, read on cache2, overwrite on cache3 seen everywhere, at most one M/E owner, RESP PING"

# ---- 7. cache: scale 3 -> 5 -> 3 under load -------------------------------------------------
# `distsync bench cache` loads the seeds while extra nodes of the `cache` service join and leave;
# meanwhile a checker writes a new value through one seed and reads it back on every seed (a
# read that starts after a write completed must see it). 503 node_unavailable during a view
# change is allowed and counted; a stale or lost value fails the test.
view_members() { # the members of cache node $1's view, one per line (nothing if unreachable)
    http GET "$(cache_url "$1")/v1/stats"
    if [[ $status == 200 ]]; then jq -r '.view_members[]' <<<"$body"; fi
}
seeds_see() { # every seed's view has $1 members, the same ones
    local first node
    first=$(view_members 1 | sort | tr '\n' ' ')
    [[ $(wc -w <<<"$first") == "$1" ]] || return 1
    for node in 2 3; do [[ $(view_members "$node" | sort | tr '\n' ' ') == "$first" ]] || return 1; done
}
check_round=0
unavailable=0
check_coherence() { # one write through a seed, then a read on every seed
    check_round=$((check_round + 1))
    local key="scale-$((check_round % 16))" value="v$check_round" node=$((check_round % 3 + 1)) other
    http PUT "$(cache_url "$node")/v1/cache/$key" "{\"value\":\"$value\"}"
    if [[ $status == 503 ]]; then unavailable=$((unavailable + 1)); return 0; fi
    [[ $status == 200 ]] || fail "cache put $key via cache$node while scaling: HTTP $status $body"
    for other in 1 2 3; do
        http GET "$(cache_url "$other")/v1/cache/$key"
        if [[ $status == 503 ]]; then unavailable=$((unavailable + 1)); continue; fi
        [[ $status == 200 && $(jq -r .value <<<"$body") == "$value" ]] \
            || fail "cache$other after a completed write of $key=$value via cache$node: HTTP $status $body"
    done
}
checked_until() { check_coherence; "$@"; }

targets="c1=127.0.0.1:${CACHE_PORTS[0]},c2=127.0.0.1:${CACHE_PORTS[1]},c3=127.0.0.1:${CACHE_PORTS[2]}"
# Back-to-back 5 s runs until told to stop, so the load lasts exactly as long as the scaling.
(
    while [[ ! -e $workdir/stop-cache-load ]]; do
        "$binary" --log warn bench cache --targets "$targets" --clients 8 --keys 200 \
            --read-ratio 0.8 --duration 5s --json >>"$workdir/cache-load.json" 2>>"$workdir/cache-load.log" || exit 1
    done
) &
load_pid=$!
scale_started=$SECONDS
compose --profile scale-cache up -d --no-build --no-deps --scale cache=2 cache >"$workdir/scale-up.log" 2>&1 \
    || { cat "$workdir/scale-up.log"; fail "compose up --scale cache=2"; }
until_true 60 "every seed's view has 5 members" checked_until seeds_see 5
joiners=$(view_members 1 | grep -vx 'c[123]' | tr '\n' ' ')
log "scaled to 5 in $((SECONDS - scale_started)) s: joined $joiners"
# A key homed on a joiner works through the seeds.
search_started=$SECONDS
for joiner in $joiners; do
    found=""
    for ((i = 0; i < 300; i++)); do
        http GET "$(cache_url 1)/v1/cache/joined-$i/coherence"
        if [[ $(jq -r .home <<<"$body") == "$joiner" ]]; then found="joined-$i"; break; fi
    done
    [[ -n $found ]] || fail "no key of 300 is homed on $joiner"
    http PUT "$(cache_url 2)/v1/cache/$found" '{"value":"homed-on-a-joiner"}'
    [[ $status == 200 ]] || fail "put $found (home $joiner) via cache2: HTTP $status $body"
    http GET "$(cache_url 3)/v1/cache/$found"
    [[ $(jq -r .value <<<"$body") == homed-on-a-joiner ]] || fail "get $found (home $joiner) via cache3: $body"
done
log "a key homed on each joiner written and read through the seeds ($((SECONDS - search_started)) s)"
checks_started=$SECONDS
for ((i = 0; i < 30; i++)); do check_coherence; done
log "30 checks at 5 nodes in $((SECONDS - checks_started)) s"
shrink_started=$SECONDS
compose --profile scale-cache up -d --no-build --no-deps --scale cache=0 cache >"$workdir/scale-down.log" 2>&1 \
    || { cat "$workdir/scale-down.log"; fail "compose up --scale cache=0"; }
until_true 30 "every seed's view is back to 3 members" checked_until seeds_see 3
log "scaled back to 3 in $((SECONDS - shrink_started)) s"
for ((i = 0; i < 30; i++)); do check_coherence; done
touch "$workdir/stop-cache-load"
wait "$load_pid" || { cat "$workdir/cache-load.log"; fail "the cache load failed: $(tail -n 3 "$workdir/cache-load.log" | tr '\n' ' ')"; }
load=$(jq -rs '"\(length) runs, \(map(.ops) | add) operations, \(map(.errors) | add) errors"' "$workdir/cache-load.json")
pass "cache scaled 3 -> 5 -> 3 under load ($load): $check_round write-then-read-everywhere checks, none stale, $unavailable answered 503 in view changes"

# ---- 8. the guided demo against the stack ---------------------------------------------------
lock_targets=$(printf '127.0.0.1:%s,' "${LOCK_PORTS[@]}")
queue_targets=$(printf '127.0.0.1:%s,' "${QUEUE_PORTS[@]}")
"$binary" --log warn demo --step-delay-ms 0 --lock-endpoints "${lock_targets%,}" \
    --queue-addr "${queue_targets%,}" --cache-endpoints "$targets" >"$workdir/demo.log" 2>&1 \
    || { cat "$workdir/demo.log"; fail "distsync demo against the stack: $(tail -n 2 "$workdir/demo.log" | tr '\n' ' ')"; }
for evidence in "new leader elected: node" "deadlock refused: 409 deadlock, cycle session" \
    "redelivered to worker-c after" "dead-lettered after" "MESI states of" "demo finished"; do
    grep -qF "$evidence" "$workdir/demo.log" || { cat "$workdir/demo.log"; fail "demo output lacks '$evidence'"; }
done
until_true 60 "every lock node healthy again after the demo crashed the leader" all_healthy lock1 lock2 lock3
pass "distsync demo against Compose: new leader, deadlock refused, redelivery, dead letter, MESI states; the crashed leader's container restarted by its policy"
