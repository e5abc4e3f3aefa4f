#!/usr/bin/env bash
# Builds, without any registry, a stand-in for the Rust image deploy/Dockerfile compiles in
# (`rust:1.95-slim-bookworm`), so that the default target `runtime` — the one a user with
# internet builds with `docker compose up --build` — can be checked on a machine that cannot
# pull: the local debian:bookworm-slim (deploy/build-base-images.sh), gcc and libc headers from
# the Debian mirror, and this host's Rust toolchain copied in. Cargo fetches crates from
# crates.io during the build, as it would for the user.
#
#   bash deploy/build-rust-image.sh            # then:
#   docker build -f deploy/Dockerfile --target runtime -t distsync:from-source .
set -euo pipefail

RUST_TAG="${DISTSYNC_RUST_IMAGE:-rust:1.95-slim-bookworm}"
BASE_TAG="${DISTSYNC_BASE_IMAGE:-debian:bookworm-slim}"
say() { printf '[build-rust-image] %s\n' "$*"; }
die() { printf '[build-rust-image] ERROR: %s\n' "$*" >&2; exit 1; }

if docker image inspect "$RUST_TAG" >/dev/null 2>&1; then
    say "$RUST_TAG exists already; nothing to do"
    exit 0
fi
docker image inspect "$BASE_TAG" >/dev/null 2>&1 || die "$BASE_TAG is missing: run deploy/build-base-images.sh"
sysroot="$(rustc --print sysroot)" || die "no host Rust toolchain (rustc) to copy"
version="$(rustc --version)"

container="$(docker create "$BASE_TAG" sleep infinity)"
trap 'docker rm -f "$container" >/dev/null 2>&1 || true' EXIT
docker start "$container" >/dev/null
say "apt-get install gcc libc6-dev ca-certificates in $BASE_TAG"
docker exec "$container" sh -c '
    export DEBIAN_FRONTEND=noninteractive
    printf "deb http://deb.debian.org/debian bookworm main\n" >/etc/apt/sources.list
    apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev ca-certificates >/dev/null
    rm -rf /var/lib/apt/lists/*' || die "apt-get in the container failed"
# The host's trust store, so that cargo trusts what the host trusts (a TLS-inspecting proxy's
# CA, for one); a user's real Rust image has its own.
docker cp /etc/ssl/certs/ca-certificates.crt "$container:/etc/ssl/certs/ca-certificates.crt"
say "copying the host toolchain ($version, $(du -sh "$sysroot" | cut -f1)) to /usr/local/rust"
docker cp "$sysroot" "$container:/usr/local/rust"
docker exec "$container" sh -c 'mkdir -p /usr/local/cargo && /usr/local/rust/bin/cargo --version'
docker stop "$container" >/dev/null
docker commit \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'CMD ["bash"]' \
    "$container" "$RUST_TAG" >/dev/null
say "$RUST_TAG ready ($version)"
