#!/usr/bin/env bash
# `make demo`: runs the main job on the local cluster, or on the cluster $KUBECONFIG points to.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-target}

if [ -n "${KUBECONFIG:-}" ]; then
    echo "[demo] using the cluster KUBECONFIG points to ($KUBECONFIG)"
    kubectl get nodes
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "[demo] the local cluster needs root (network namespaces): run 'sudo -E make demo'" >&2
    exit 1
fi
echo "[demo] starting the local cluster: control plane from Go modules + the Locus node agent"
exec "$target/debug/locus-cluster" up
