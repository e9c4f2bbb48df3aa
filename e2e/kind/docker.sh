#!/usr/bin/env bash
# Makes sure a Docker engine runs on this host, for the kind path (`make kind-e2e`).
#
#   e2e/kind/docker.sh          start one if none answers; idempotent
#
# Where `docker info` already answers (a user's machine with Docker), it does nothing. Otherwise
# (root) it installs Debian's docker.io if dockerd is missing and starts dockerd in the
# background, logging to /var/log/locus-dockerd.log. Where the capability bounding set lacks
# CAP_SYS_RESOURCE (some sandboxes), privileged containers cannot start under plain runc, so
# dockerd gets e2e/kind/runc-wrapper.sh as its default runtime; elsewhere plain runc is used.
#
# Host side effects of dockerd: it sets the iptables FORWARD policy to DROP and loads
# br_netfilter. The local cluster (e2e/cluster) adds its own FORWARD ACCEPT rules for its bridge,
# so both can run on one host. This script also raises fs.inotify.max_user_instances to 512 (three
# kind nodes run three systemd and kubelet instances); it never lowers it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[docker] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if docker info >/dev/null 2>&1; then
    log "a Docker engine answers: $(docker info --format '{{.ServerVersion}}, runtime {{.DefaultRuntime}}' 2>/dev/null)"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "no Docker engine answers and this is not root: start Docker, then run again"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v jq >/dev/null 2>&1; then
    log "installing Debian's docker.io (and jq)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io jq >/dev/null
fi

# CAP_SYS_RESOURCE is capability 24.
capbnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
args=()
if (( (16#$capbnd >> 24 & 1) == 0 )); then
    runtime_dir=/usr/local/libexec/locus-kind
    mkdir -p "$runtime_dir"
    install -m 0755 "$here/runc-wrapper.sh" "$runtime_dir/runc"
    real_runc=$(command -v runc || true)
    [ -n "$real_runc" ] || die "runc not found (Debian's runc package comes with docker.io)"
    [ "$real_runc" = /usr/sbin/runc ] || sed -i "s|^REAL_RUNC=.*|REAL_RUNC=\${LOCUS_REAL_RUNC:-$real_runc}|" "$runtime_dir/runc"
    args+=(--add-runtime "locus-runc=$runtime_dir/runc" --default-runtime locus-runc)
    log "CAP_SYS_RESOURCE is outside this host's capability bounding set: default runtime is the runc wrapper ($runtime_dir/runc)"
fi

cur=$(sysctl -n fs.inotify.max_user_instances)
if [ "$cur" -lt 512 ]; then
    log "raising fs.inotify.max_user_instances from $cur to 512"
    sysctl -qw fs.inotify.max_user_instances=512
fi

log "starting dockerd (log: /var/log/locus-dockerd.log)"
nohup dockerd "${args[@]}" >>/var/log/locus-dockerd.log 2>&1 </dev/null &
for i in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        log "dockerd is up after ${i}s: $(docker info --format '{{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupVersion}}, runtime {{.DefaultRuntime}}')"
        exit 0
    fi
    kill -0 $! 2>/dev/null || die "dockerd exited; see /var/log/locus-dockerd.log"
    sleep 1
done
die "dockerd did not answer within 60s; see /var/log/locus-dockerd.log"
