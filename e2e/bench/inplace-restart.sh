#!/usr/bin/env bash
# Benchmark (d) on the local cluster: an in-place restart of the sample's pod that restores its
# sessions from the snapshot, against a cold restart (SIGKILL) that loads each session from
# PostgreSQL on first touch. See e2e/src/bin/locus_restart_report/main.rs for what is measured.
#
#   bash e2e/bench/inplace-restart.sh [locus-restart-report flags]
#   e.g. bash e2e/bench/inplace-restart.sh --sessions 100000 --appends 4 --note-bytes 200
#
# As root (the local cluster needs network namespaces). Installs PostgreSQL from Debian with
# apt-get when it is missing, builds the release binaries (the node agent runs the pods'
# images from the directory the binaries are built into; CARGO_TARGET_DIR is honoured) and runs
# the report. The cluster's run directory, and with it the pods' memory-backed snapshot volume,
# goes to $LOCUS_BENCH_TMPDIR (default /dev/shm, a tmpfs, as a kubelet's emptyDir with
# medium: Memory is). With LOCUS_E2E_KUBECONFIG set it uses that local cluster instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

log() { echo "[inplace-restart] $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "needs root (network namespaces of the local cluster): run it with sudo -E"
    exit 1
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    log "installing postgresql with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

log "cargo build --release (operator, sample, cluster, node agent, report)"
cargo build --release -q -p locus-operator -p locus-examples -p locus-e2e --bins
target=${CARGO_TARGET_DIR:-target}

if commit=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
else
    commit=unknown
fi
log "commit $commit; load average $(cut -d' ' -f1-3 /proc/loadavg)"

TMPDIR=${LOCUS_BENCH_TMPDIR:-/dev/shm} exec "$target/release/locus-restart-report" "$@"
