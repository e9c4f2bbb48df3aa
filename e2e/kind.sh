#!/usr/bin/env bash
# `make kind-e2e`, for users with Docker: create the kind cluster, build and load the images,
# and run the same end-to-end suite against that cluster (the tests install the operator's chart).
# It cannot run where Locus is developed (no container engine there); it is kept small so
# that it stays plainly right.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "kind-e2e needs $tool on PATH" >&2; exit 1; }
done

cluster=locus
if ! kind get clusters | grep -qx "$cluster"; then
    echo "[kind-e2e] creating kind cluster $cluster"
    kind create cluster --config kind-config.yaml
fi
export KUBECONFIG
KUBECONFIG=$(mktemp)
kind get kubeconfig --name "$cluster" > "$KUBECONFIG"

echo "[kind-e2e] building images"
docker build -f docker/operator.Dockerfile -t locus/operator:dev .
docker build -f docker/sample.Dockerfile -t locus/sample:dev .
kind load docker-image --name "$cluster" locus/operator:dev locus/sample:dev

# No operator is installed here: each end-to-end test helm-installs the chart into its own
# namespace, watching only that namespace (a cluster-wide operator next to it would reconcile
# the same StatefulServices twice).
echo "[kind-e2e] running the end-to-end suite against $KUBECONFIG"
LOCUS_E2E_KUBECONFIG=$KUBECONFIG cargo test -p locus-e2e --test 'e2e_*' -- --test-threads=1
