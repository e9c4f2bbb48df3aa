#!/usr/bin/env bash
# `make demo`: the operator installed with its Helm chart, the sample session ledger deployed as
# a StatefulService, and the load generator running through steady load, a scale-up, a rolling
# update and a scale-down (locus-demo; see e2e/src/demo/mod.rs). On the cluster $KUBECONFIG points
# to if set (the images locus/operator:dev and locus/sample:dev must be there, as
# `make kind-e2e` loads them), else on the local cluster, started for the run and gone with it.
# Extra arguments go to locus-demo (`--help` lists them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=${CARGO_TARGET_DIR:-target}
cargo=${CARGO:-cargo}

# The Makefile builds the workspace first; built here too when run on its own.
if [ ! -x "$target/debug/locus-demo" ] || [ "${LOCUS_DEMO_BUILD:-1}" = 1 ]; then
    echo "[demo] building the operator, the sample, the local cluster and locus-demo"
    "$cargo" build -q -p locus-operator -p locus-examples -p locus-e2e --bins
fi

if [ -n "${KUBECONFIG:-}" ]; then
    helm=$(command -v helm || true)
    if [ -z "$helm" ]; then
        # The helm built with the local cluster's control plane (cached after the first build).
        helm="$(bash e2e/cluster/build.sh)/helm"
    fi
    exec "$target/debug/locus-demo" --helm "$helm" "$@"
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "[demo] the local cluster needs root (network namespaces): run 'sudo -E make demo'" >&2
    exit 1
fi
exec "$target/debug/locus-demo" "$@"
