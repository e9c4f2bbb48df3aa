#!/usr/bin/env bash
# Routes from this host to the kind cluster's pods: each node's podCIDR via the node's address on
# the `kind` Docker network. The demo's load generator and the end-to-end tests run on the host
# and reach pods by their IPs (as on the local cluster); Linux with root only.
#
#   KUBECONFIG=<kind kubeconfig> e2e/kind/routes.sh
set -euo pipefail
log() { printf '[kind-routes] %s\n' "$*" >&2; }
kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDR}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' |
while read -r name cidr ip; do
    [ -n "$cidr" ] && [ -n "$ip" ] || { log "node $name has no podCIDR or address yet"; continue; }
    ip route replace "$cidr" via "$ip"
    log "$cidr via $ip ($name)"
done
