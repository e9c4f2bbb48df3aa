#!/usr/bin/env bash
# Measures the local cluster: start time (supervisor start → node Ready) and pod create → Ready
# (kubectl run → kubectl wait returns), each as the median of RUNS (default 5) fresh clusters.
#   e2e/bench/cluster-start.sh [RUNS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
runs=${1:-5}
target=${CARGO_TARGET_DIR:-target}
cargo build -q -p locus-e2e --bins
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
starts=(); readies=()
for i in $(seq "$runs"); do
    fifo=$(mktemp -u); mkfifo "$fifo"
    out=$(mktemp)
    # The supervisor reads the fifo; this shell holds its only writer (fd 3), the lifeline.
    "$target/debug/locus-cluster" up --json --lifeline <"$fifo" >"$out" 2>/dev/null &
    sup=$!
    exec 3>"$fifo"
    until grep -q '"ready"\|"error"' "$out" 2>/dev/null; do sleep 0.2; done
    line=$(grep -m1 '"ready"' "$out")
    start=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ready"]["start_seconds"])' "$line")
    kc=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ready"]["kubeconfig"])' "$line")
    bin=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ready"]["bin_dir"])' "$line")
    t0=$(date +%s.%N)
    "$bin/kubectl" --kubeconfig "$kc" run "probe-$i" --image=locus/test-server:dev --restart=Never \
        --overrides='{"spec":{"containers":[{"name":"probe-'"$i"'","image":"locus/test-server:dev","readinessProbe":{"httpGet":{"path":"/healthz","port":8080},"periodSeconds":1}}]}}' >/dev/null
    "$bin/kubectl" --kubeconfig "$kc" wait "pod/probe-$i" --for=condition=Ready --timeout=60s >/dev/null
    t1=$(date +%s.%N)
    ready=$(python3 -c "print($t1 - $t0)")
    printf 'run %d: cluster start %.2fs, pod create->Ready %.2fs\n' "$i" "$start" "$ready"
    starts+=("$start"); readies+=("$ready")
    exec 3>&-; rm -f "$fifo" "$out"
    wait "$sup"
done
printf 'cluster-start: runs=%d start_median_s=%.2f pod_ready_median_s=%.2f\n' "$runs" \
    "$(printf '%s\n' "${starts[@]}" | median)" "$(printf '%s\n' "${readies[@]}" | median)"
