#!/usr/bin/env bash
# `make kind-e2e`: the end-to-end suite against a kind cluster (kind-config.yaml: one control
# plane, two workers).
#
#   1. a Docker engine (e2e/kind/docker.sh starts one where none answers; root);
#   2. the node image: built offline from Go modules and Debian packages (e2e/kind/node-image.sh,
#      cached), unless KIND_NODE_IMAGE names one to use (e.g. the standard kindest/node image of
#      Kubernetes v1.36 on a machine that reaches its registry);
#   3. the cluster (kept between runs; `kind delete cluster --name locus` removes it);
#   4. the project's images, built from host binaries without registries (e2e/kind/images.sh),
#      loaded into the nodes;
#   5. the e2e_* tests through that cluster's kubeconfig (each test helm-installs the chart).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[kind-e2e] %s\n' "$*" >&2; }
t0=$SECONDS
lap() { log "$1 ($((SECONDS - t0))s so far)"; }

bash e2e/kind/docker.sh
if [ -n "${KIND_NODE_IMAGE:-}" ]; then
    image=$KIND_NODE_IMAGE
else
    image=$(bash e2e/kind/node-image.sh)
fi
bins=$(bash e2e/kind/node-image.sh --bins)
lap "node image $image"
# The kind CLI, kubectl and helm: on PATH if there, else the ones built from Go modules.
export PATH="$PATH:$bins:$(bash e2e/cluster/build.sh)"

cluster=locus
# The cluster's kubeconfig goes to its own file, never ~/.kube/config: the local cluster's pods
# are host processes, and kube clients read ~/.kube/config before their in-cluster
# configuration, so a kind context there makes them call the kind cluster (seen here: the
# local cluster's demo never converged while ~/.kube/config named kind).
export KUBECONFIG
KUBECONFIG=${LOCUS_KIND_KUBECONFIG:-$HOME/.kube/kind-$cluster}
mkdir -p "$(dirname "$KUBECONFIG")"
# A cluster whose nodes stopped with the Docker engine (a host restart, a killed session) does
# not come back by itself: recreate it.
if kind get clusters 2>/dev/null | grep -qx "$cluster" &&
    ! { kind get kubeconfig --name "$cluster" > "$KUBECONFIG" 2>/dev/null &&
        kubectl --request-timeout=10s get --raw /readyz >/dev/null 2>&1; }; then
    log "kind cluster $cluster does not answer: deleting it to create it again"
    kind delete cluster --name "$cluster"
fi
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "creating kind cluster $cluster"
    kind create cluster --config kind-config.yaml --image "$image" --kubeconfig "$KUBECONFIG" --wait 180s
    lap "cluster created"
fi
kind get kubeconfig --name "$cluster" > "$KUBECONFIG"
log "kubeconfig: $KUBECONFIG"
bash e2e/kind/routes.sh

bash e2e/kind/images.sh
kind load docker-image --name "$cluster" locus/operator:dev locus/sample:dev locus/sample:v2
lap "images loaded"

# On an external cluster the tests do not install the operator (e2e/tests/demo_support): one
# cluster-wide operator, installed here with the chart as users install it, serves them all.
log "installing the operator (chart charts/locus-operator, image locus/operator:dev) into locus-system"
helm upgrade --install locus-operator charts/locus-operator --namespace locus-system --create-namespace \
    --set image.repository=locus/operator --set image.tag=dev --wait --timeout 180s >/dev/null
lap "operator installed"
log "running the end-to-end suite against $KUBECONFIG"
LOCUS_E2E_KUBECONFIG=$KUBECONFIG cargo test -p locus-e2e --test 'e2e_*' -- --test-threads=1
lap "suite done"
