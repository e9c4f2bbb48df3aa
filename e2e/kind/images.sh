#!/usr/bin/env bash
# Builds the project's container images without any registry: static binaries built on the host
# (glibc, +crt-static) copied into an empty base (the `host` stage of docker/*.Dockerfile).
#
#   e2e/kind/images.sh          build locus/operator:dev, locus/sample:dev (and :v2, the same
#                               binaries under the tag the update tests roll out to)
#   LOCUS_IMAGE_PROFILE=debug e2e/kind/images.sh
#                               the same images from the workspace's debug binaries (what
#                               `make test` built), with the shared libraries they load: CI's
#                               way, which saves a release build of the workspace
#
# Users with internet access can build the same images from the Dockerfiles' default stages
# (docker build -f docker/operator.Dockerfile .), which compile in the Rust image instead.
# Cargo's output goes to $LOCUS_IMAGE_TARGET_DIR (default: target-image/ in the checkout).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target_dir=${LOCUS_IMAGE_TARGET_DIR:-$repo/target-image}
triple=$(rustc -vV | sed -n 's/^host: //p')
log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
docker info >/dev/null 2>&1 || die "no Docker engine answers (e2e/kind/docker.sh starts one)"

start=$SECONDS
if [ "${LOCUS_IMAGE_PROFILE:-release}" = debug ]; then
    # The workspace's own debug binaries (those `make test` already built: no second build),
    # dynamically linked: the shared libraries they load are copied into the image below.
    log "building debug binaries (cargo build, the workspace's target directory)"
    (cd "$repo" && cargo build --locked -p locus-operator --bin locus-operator \
        -p locus-examples --bin locus-sample --bin locus-loadgen)
    out=${CARGO_TARGET_DIR:-$repo/target}/debug
else
    log "building static binaries (cargo --release, $triple, +crt-static) into $target_dir"
    # An explicit --target keeps build scripts and proc macros dynamic; only the binaries are
    # static.
    (cd "$repo" && nice -n 19 ionice -c3 env RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        CARGO_TARGET_DIR="$target_dir" cargo build --release --locked --target "$triple" \
        -p locus-operator --bin locus-operator -p locus-examples --bin locus-sample --bin locus-loadgen)
    out=$target_dir/$triple/release
    for b in locus-operator locus-sample locus-loadgen; do
        # A static binary has no program interpreter and needs no shared library.
        if readelf -lW "$out/$b" | grep -q 'program interpreter' || readelf -dW "$out/$b" | grep -q NEEDED; then
            die "$b is not static: $(readelf -dW "$out/$b" | grep NEEDED | head -n3)"
        fi
    done
fi
log "binaries built in $((SECONDS - start))s"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
# The few files a program in an empty image needs: who uid 65532 is, and how names resolve
# (Kubernetes mounts resolv.conf and hosts).
mkdir -p "$ctx/common/rootfs/etc"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > "$ctx/common/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$ctx/common/rootfs/etc/group"
printf 'hosts: files dns\n' > "$ctx/common/rootfs/etc/nsswitch.conf"

# Docker's legacy builder builds every stage up to --target; the `host` stage comes first in
# each Dockerfile, so neither builder touches a registry. BuildKit is used where buildx exists.
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
image() { # dockerfile tag binaries...
    local file=$1 tag=$2; shift 2
    local dir="$ctx/$tag"
    rm -rf "$dir" && mkdir -p "$dir" && cp -a "$ctx/common/rootfs" "$dir/"
    # Debug line tables stay on the host (target dir); the images carry symbols only.
    for b in "$@"; do
        cp "$out/$b" "$dir/" && strip --strip-debug "$dir/$b"
        # A dynamic (debug) binary: its loader and libraries, at the paths it looks them up.
        if readelf -lW "$out/$b" | grep -q 'program interpreter'; then
            ldd "$out/$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' |
                while read -r lib; do cp -L --parents "$lib" "$dir/rootfs/"; done
        fi
    done
    log "image $tag ($file, stage host)"
    local msg rc=0
    msg=$(nice -n 19 ionice -c3 docker build -q --target host -f "$repo/docker/$file" -t "$tag" "$dir" 2>&1 >/dev/null) || rc=$?
    # Drop the legacy builder's deprecation notice; keep anything else it says.
    printf '%s\n' "$msg" | grep -v -e '^DEPRECATED: The legacy builder' -e 'BuildKit is currently disabled' \
        -e 'environment-variable.$' -e '^$' >&2 || true
    return "$rc"
}
image operator.Dockerfile locus/operator:dev locus-operator
image sample.Dockerfile locus/sample:dev locus-sample locus-loadgen
docker tag locus/sample:dev locus/sample:v2
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^locus/' >&2
log "done in $((SECONDS - start))s"
