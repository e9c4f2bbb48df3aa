#!/usr/bin/env bash
# Builds the control-plane binaries of the local test cluster from Go modules
# and caches them outside the checkout, keyed by their versions and go.sum.
#
#   e2e/cluster/build.sh            build what is missing, print the bin dir
#   LOCUS_CACHE=/path e2e/cluster/build.sh
#
# A cold build takes many minutes on two cores; a warm one returns at once.
set -euo pipefail

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
HELM_VERSION=v3.22.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${LOCUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/locus}

log() { printf '[cluster-build] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH: install Go >= 1.26 (https://go.dev/dl or your distribution's golang package) and run again"
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "${go_minor:-0}" -ge 26 ] || die "Go $(go env GOVERSION) is too old: Kubernetes $K8S_VERSION needs Go >= 1.26 (or export GOTOOLCHAIN=go1.26.8 to let go fetch it)"

# The key covers the pinned versions and the exact module graph.
key=$(cat "$here/tools/go.sum" "$here/etcd/go.sum" | sha256sum | cut -c1-12)
bin="$cache/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-$key/bin"
mkdir -p "$bin"

# Prints a heartbeat while a long build runs, so a cold build shows progress.
with_progress() {
    local what=$1; shift
    local start=$SECONDS
    "$@" &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 5
        if kill -0 "$pid" 2>/dev/null && (( (SECONDS - start) % 30 < 5 )); then
            log "  ... still building $what ($((SECONDS - start))s)"
        fi
    done
    wait "$pid" || die "building $what failed (see the go output above); a failed module download usually means the Go module proxy is unreachable: check GOPROXY"
    log "  built $what in $((SECONDS - start))s"
}

build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
k8s_ldflags() {
    local major minor
    major=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
    minor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+).*/\1/')
    local flags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitCommit=module-$K8S_VERSION -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
    done
    echo "$flags"
}

export CGO_ENABLED=0
targets=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm)
missing=()
for t in "${targets[@]}"; do [ -x "$bin/$t" ] || missing+=("$t"); done
if [ ${#missing[@]} -eq 0 ]; then
    log "cached: $bin"
    echo "$bin"
    exit 0
fi

# One build at a time per cache directory: a second caller (a test next to `make demo`) waits
# for the first and then finds the binaries cached.
exec 9>"$bin/.build.lock"
if ! flock -n 9; then
    log "another build of $bin is running; waiting for it"
    flock 9
fi
missing=()
for t in "${targets[@]}"; do [ -x "$bin/$t" ] || missing+=("$t"); done
if [ ${#missing[@]} -eq 0 ]; then
    log "cached: $bin"
    echo "$bin"
    exit 0
fi

log "building ${missing[*]} into $bin (cold builds take 15-40 minutes on 2 cores)"
n=0
for t in "${missing[@]}"; do
    n=$((n + 1))
    log "[$n/${#missing[@]}] $t"
    case $t in
        etcd)
            (cd "$here/etcd" && with_progress etcd go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" .)
            ;;
        helm)
            with_progress helm env GOBIN="$bin/helm.d" go install -trimpath \
                -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
                "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
            mv "$bin/helm.d/helm" "$bin/helm.tmp" && rmdir "$bin/helm.d"
            ;;
        *)
            (cd "$here/tools" && with_progress "$t" go build -trimpath -ldflags "$(k8s_ldflags)" -o "$bin/$t.tmp" "k8s.io/kubernetes/cmd/$t")
            ;;
    esac
    mv "$bin/$t.tmp" "$bin/$t"
done
log "done: $bin"
echo "$bin"
