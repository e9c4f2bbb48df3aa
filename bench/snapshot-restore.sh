#!/usr/bin/env bash
# Fast restart against PostgreSQL, side by side (docs/benchmarks.md, "ADR 0005 step 3"):
#
#   bash bench/snapshot-restore.sh
#
# 1. the 1 GiB snapshot (1 M sessions of 1 KiB, every record written back first, so the restore
#    keeps them encoded: a service with a database) written, then restored alone in a process
#    of its own, three times (the restore phase's figures without the writer's heap around it);
# 2. one run of the whole report in one process against a private PostgreSQL on a unix socket
#    (examples/tests/pg.sh): snapshot write and restore, PostgreSQL write, reload through
#    `Persistence` and one streamed `SELECT` installed in bulk.
#
# Settings (environment): LOCUS_BENCH_BYTES (default 1GiB), LOCUS_BENCH_DIR (default
# /dev/shm/locus-snapshot-bench: memory-backed, like the operator's emptyDir).
# Needs about 3 GiB of memory for the directory and twice the state in the process.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bytes=${LOCUS_BENCH_BYTES:-1GiB}
dir=${LOCUS_BENCH_DIR:-/dev/shm/locus-snapshot-bench}
pg=$(mktemp -d /tmp/locus-snapshot-pg.XXXXXX)
chmod 755 "$pg"   # the PostgreSQL server runs as `postgres` and needs to reach its directory

log() { echo "[snapshot-bench] $*" >&2; }
cleanup() {
    bash "$repo/examples/tests/pg.sh" stop "$pg" >/dev/null 2>&1 || true
    rm -rf "$dir" "$pg"
}
trap cleanup EXIT

log "building the report"
(cd "$repo" && cargo build --release -q -p locus --example snapshot_report)
report=${CARGO_TARGET_DIR:-$repo/target}/release/examples/snapshot_report

log "restore alone: write once, then three restores, each in its own process"
rm -rf "$dir" "$dir.kept"
"$report" --bytes "$bytes" --dir "$dir" --phase write --durable yes
cp -r "$dir" "$dir.kept"
for run in 1 2 3; do
    rm -rf "$dir"
    cp -r "$dir.kept" "$dir"
    log "restore $run of 3"
    "$report" --bytes "$bytes" --dir "$dir" --phase restore --durable yes | grep 'snapshot restore'
done
rm -rf "$dir" "$dir.kept"

log "starting PostgreSQL on a unix socket in $pg"
url=$(bash "$repo/examples/tests/pg.sh" start "$pg" | sed -n 's/^DATABASE_URL=//p')
[ -n "$url" ] || { log "PostgreSQL did not start"; exit 1; }
log "side by side in one process (about a minute)"
"$report" --bytes "$bytes" --dir "$dir" --durable yes --postgres "$url"
