#!/usr/bin/env bash
# Builds, without any registry, the two images the Dockerfile and the compose file start FROM:
#
#   debian:bookworm-slim   a minimal Debian bookworm root made by debootstrap, `docker import`ed
#   redis:7-bookworm       that root plus Debian's redis-server, running as user `redis` in /data
#
# A machine with internet pulls the real images instead and never needs this script. An image
# that already exists under its tag is kept (pass --force to rebuild both). Needs root,
# debootstrap and a reachable Debian mirror (DEBIAN_MIRROR, default deb.debian.org).
set -euo pipefail

BASE_TAG="${DISTSYNC_BASE_IMAGE:-debian:bookworm-slim}"
REDIS_TAG="${DISTSYNC_REDIS_IMAGE:-redis:7-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
FORCE=false
[[ "${1:-}" == "--force" ]] && FORCE=true

say() { printf '[build-base-images] %s\n' "$*"; }
die() { printf '[build-base-images] ERROR: %s\n' "$*" >&2; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the docker daemon does not answer (is it running? are you root?)"

if ! $FORCE && have_image "$BASE_TAG" && have_image "$REDIS_TAG"; then
    say "$BASE_TAG and $REDIS_TAG exist already; nothing to do (--force rebuilds)"
    exit 0
fi

[[ $EUID -eq 0 ]] || die "debootstrap and chroot need root"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"

work="$(mktemp -d /tmp/distsync-base.XXXXXX)"
# Unmount before removing: a failed chroot step may leave /proc mounted inside the root.
cleanup() {
    umount "$work/redis/proc" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

root="$work/bookworm"
started=$SECONDS

if $FORCE || ! have_image "$BASE_TAG"; then
    say "debootstrap --variant=minbase bookworm from $MIRROR into $root"
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    # What -slim leaves out: docs, man pages, apt lists, the package cache.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    say "docker import -> $BASE_TAG ($(du -sh "$root" | cut -f1))"
    tar -C "$root" -c . | docker import \
        --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$BASE_TAG" >/dev/null
else
    say "$BASE_TAG exists; kept"
fi

if $FORCE || ! have_image "$REDIS_TAG"; then
    if [[ ! -d "$root" ]]; then
        # The base image exists but its root is gone: unpack the image instead of bootstrapping.
        say "exporting $BASE_TAG to build $REDIS_TAG on it"
        mkdir -p "$root"
        container="$(docker create "$BASE_TAG" true)"
        docker export "$container" | tar -C "$root" -x
        docker rm "$container" >/dev/null
    fi
    redis_root="$work/redis"
    cp -a "$root" "$redis_root"
    cp /etc/resolv.conf "$redis_root/etc/resolv.conf"
    # Keep the package's scripts from starting a service inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$redis_root/usr/sbin/policy-rc.d"
    chmod +x "$redis_root/usr/sbin/policy-rc.d"
    printf 'deb %s bookworm main\n' "$MIRROR" >"$redis_root/etc/apt/sources.list"
    mount -t proc proc "$redis_root/proc"
    say "apt-get install redis-server redis-tools (in a chroot of the base root)"
    chroot "$redis_root" /bin/sh -c '
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
        mkdir -p /data && chown redis:redis /data
        apt-get clean && rm -rf /var/lib/apt/lists/*' >"$work/redis.log" 2>&1 \
        || { tail -n 30 "$work/redis.log" >&2; die "installing redis-server failed (log above)"; }
    umount "$redis_root/proc"
    rm -f "$redis_root/usr/sbin/policy-rc.d"
    : >"$redis_root/etc/resolv.conf"
    version="$(chroot "$redis_root" redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')"
    say "docker import -> $REDIS_TAG (redis $version)"
    # Same contract as the official image: redis-server on PATH, data in /data, port 6379.
    tar -C "$redis_root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'USER redis' \
        --change 'WORKDIR /data' \
        --change 'VOLUME /data' \
        --change 'EXPOSE 6379' \
        --change 'CMD ["redis-server"]' \
        - "$REDIS_TAG" >/dev/null
else
    say "$REDIS_TAG exists; kept"
fi

say "done in $((SECONDS - started)) s"
docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^  (${BASE_TAG}|${REDIS_TAG})  " || true
