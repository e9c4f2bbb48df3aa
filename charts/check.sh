#!/usr/bin/env bash
# Checks the Helm chart: lint, render with the default and the optional values (the dashboard's
# ConfigMap among them), the chart's CRD equals crds/, and the committed rendering
# (charts/rendered/, for review) is current.
#   charts/check.sh           check
#   charts/check.sh --update  rewrite charts/rendered/ and the chart's CRD copy
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=$(bash e2e/cluster/build.sh)
helm="$bin/helm"
chart=charts/locus-operator
render() { "$helm" template locus-operator "$chart" --namespace locus-system --kube-version 1.36.3 "$@"; }

if [ "${1:-}" = "--update" ]; then
    cp crds/statefulservices.locus.dev.yaml "$chart/crds/"
    render > charts/rendered/locus-operator.yaml
    echo "updated $chart/crds and charts/rendered"
    exit 0
fi

"$helm" lint "$chart" --kube-version 1.36.3 --quiet
render --set metrics.serviceMonitor.enabled=true >/dev/null
if render --set replicaCount=0 >/dev/null 2>&1; then
    echo "chart: values.schema.json accepted replicaCount=0" >&2; exit 1
fi
# The dashboard's ConfigMap, only when enabled, with the sidecar's label (its JSON is checked
# against the exported metrics by e2e/tests/dashboard.rs).
# (Rendered into a variable first: `grep -q` stops reading at the first match, and with
# pipefail the writer's SIGPIPE would fail the pipeline.)
dashboard=$(render --set dashboard.enabled=true --show-only templates/dashboard-configmap.yaml)
if ! grep -qx '    grafana_dashboard: "1"' <<<"$dashboard"; then
    echo "chart: dashboard.enabled=true rendered no ConfigMap labelled grafana_dashboard: \"1\"" >&2; exit 1
fi
default=$(render)
if grep -q 'grafana_dashboard' <<<"$default"; then
    echo "chart: the default rendering has the dashboard, which is off by default" >&2; exit 1
fi
if render --set dashboard.enabled=yes >/dev/null 2>&1; then
    echo "chart: values.schema.json accepted dashboard.enabled=yes" >&2; exit 1
fi
if ! cmp -s crds/statefulservices.locus.dev.yaml "$chart/crds/statefulservices.locus.dev.yaml"; then
    echo "chart: $chart/crds is stale: run charts/check.sh --update" >&2; exit 1
fi
if ! diff -u charts/rendered/locus-operator.yaml <(render) >&2; then
    echo "chart: charts/rendered/locus-operator.yaml is stale: run charts/check.sh --update" >&2; exit 1
fi
echo "chart: lint, schema, CRD copy and rendering OK"
