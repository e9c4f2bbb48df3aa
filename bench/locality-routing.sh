#!/usr/bin/env bash
# Data locality and routing benchmarks of the Locus sample (docs/benchmarks.md).
#
#   bash bench/locality-routing.sh
#
# (a) Data locality: three `locus-sample` pods in sticky mode (sessions in memory, PostgreSQL
#     persistence configured, every session warm) against three pods in `--stateless` mode
#     (every request reads and writes PostgreSQL). The load generator routes by a ring over the
#     three pods in both cases, with the same sessions, concurrency, read share and duration.
# (b) Routing: the SDK's client router (one hop, straight to the owner) against nginx in front
#     of the same sticky pods:
#       nginx-map   a per-session `map` generated from the ring: the proxy knows each session's
#                   owner (two hops, no forwarding);
#       nginx-hash  `hash $http_x_locus_session consistent` over the same pods, which forward
#                   what nginx sends to the wrong pod (three hops for most sessions) —
#                   what an unmodified consistent-hash proxy gets, shown for reference.
#
# Each configuration runs twice: closed loop (--concurrency workers as fast as answers come)
# and at a fixed rate (half the closed-loop throughput of the slowest configuration of its
# comparison), each after a warm-up phase that touches every session. In closed loop the
# latency ratio follows the throughput ratio (Little's law: as many requests in flight on both
# sides), so latencies are compared at the fixed rate, where the load generator counts each
# request's latency from its intended send time. Every process the benchmark starts gets the
# same number of worker threads (LOCUS_BENCH_WORKERS: the pods' and the load generator's tokio
# workers, nginx's worker processes), and each measured phase reports the CPU seconds used by
# the load generator, the pods, PostgreSQL and nginx, and by everything else on the machine.
# With LOCUS_BENCH_BASELINE_BIN, every run is made twice in a row, first with the load
# generator found there (`before`: an older build, its router included), then with this
# tree's (`after`), against the same pods. Everything listens on
# loopback only: pods on 127.0.0.2/.3/.4, nginx on 127.0.0.1, PostgreSQL on a unix socket.
# Installs nginx, postgresql and python3-xxhash with apt-get when missing (as root).
# Every process it starts is stopped by its PID on exit. When PostgreSQL cannot start, the
# locality rows say SKIPPED with the reason and the routing comparison runs with memory-only pods.
#
# Settings (environment):
#   LOCUS_BENCH_DURATION   measured seconds per configuration and mode (default 20)
#   LOCUS_BENCH_WARMUP     warm-up seconds before each measurement (default 4)
#   LOCUS_BENCH_SESSIONS   sessions (default 1000)
#   LOCUS_BENCH_CONCURRENCY  requests in flight (default 32)
#   LOCUS_BENCH_READ_PERCENT share of reads (default 20)
#   LOCUS_BENCH_WORKERS    worker threads of each pod and of the load generator, and nginx's
#                          worker_processes (default: the number of cores)
#   LOCUS_BENCH_BASELINE_BIN  a directory with an older `locus-loadgen` to run beside this one;
#                          build it in its own CARGO_TARGET_DIR (in a shared one, cargo can take
#                          the older binary for up to date and this tree's build is skipped)
#   LOCUS_BENCH_PIN=1      the load generator on the last core, everything else (pods, PostgreSQL,
#                          nginx) on the others (`taskset`), so that the service side and the
#                          generator do not take each other's cores; needs 2 cores or more
#   LOCUS_BENCH_PORT       first of the ports used (default 18080; uses PORT..PORT+3)
#   LOCUS_BENCH_KEEP=1     keep the work directory (logs, configs, JSON lines)
#   CARGO_TARGET_DIR       where cargo builds (default target/)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
duration=${LOCUS_BENCH_DURATION:-20}
warmup=${LOCUS_BENCH_WARMUP:-4}
sessions=${LOCUS_BENCH_SESSIONS:-1000}
concurrency=${LOCUS_BENCH_CONCURRENCY:-32}
read_percent=${LOCUS_BENCH_READ_PERCENT:-20}
cores=$(nproc)   # before any pinning below
workers=${LOCUS_BENCH_WORKERS:-$cores}
nginx_workers=$workers
baseline_bin=${LOCUS_BENCH_BASELINE_BIN:-}
export TOKIO_WORKER_THREADS=$workers
base_port=${LOCUS_BENCH_PORT:-18080}
nginx_port=$base_port              # 127.0.0.1: nginx (map and hash servers on +0 and +1)
sticky_port=$((base_port + 2))     # 127.0.0.2-4: sticky pods
stateless_port=$((base_port + 3))  # 127.0.0.2-4: stateless pods
pod_ips=(127.0.0.2 127.0.0.3 127.0.0.4)
py=/usr/bin/python3                # Debian's, where python3-xxhash installs

log() { echo "[bench] $*" >&2; }
die() { log "error: $*"; exit 1; }

for n in duration warmup sessions concurrency read_percent base_port workers; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number (got '${!n}')"
done

# Pinning: this script (and so every process it starts) on cores 0..n-2, the load generator
# alone on core n-1.
loadgen_on=()
pinned="no"
if [ "${LOCUS_BENCH_PIN:-0}" = 1 ]; then
    [ "$cores" -ge 2 ] || die "LOCUS_BENCH_PIN=1 needs 2 cores or more (have $cores)"
    command -v taskset >/dev/null 2>&1 || die "LOCUS_BENCH_PIN=1 needs taskset (util-linux)"
    taskset -p -c "0-$((cores - 2))" $$ >/dev/null
    loadgen_on=(taskset -c "$((cores - 1))")
    pinned="load generator on core $((cores - 1)), the rest on cores 0-$((cores - 2))"
    log "pinned: the load generator on core $((cores - 1)), everything else on cores 0-$((cores - 2))"
fi

# --- prerequisites -------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
    || missing+=(postgresql)
"$py" -c 'import xxhash' >/dev/null 2>&1 || missing+=(python3-xxhash)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 \
        || die "missing ${missing[*]} and cannot install them (needs root and apt-get)"
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

log "building release binaries"
(cd "$repo" && cargo build --release -q -p locus-examples --bins)
bin=${CARGO_TARGET_DIR:-$repo/target}/release
[ -x "$bin/locus-sample" ] && [ -x "$bin/locus-loadgen" ] || die "release binaries not found in $bin"
variants=(after)
if [ -n "$baseline_bin" ]; then
    [ -x "$baseline_bin/locus-loadgen" ] || die "no locus-loadgen in $baseline_bin"
    variants=(before after)
fi

"$py" "$repo/bench/ring_owners.py" check "$repo/contract/testdata/ring-vectors.json" >&2

# --- work directory and clean-up ---------------------------------------------------------
work=$(mktemp -d /tmp/locus-bench.XXXXXX)
chmod 755 "$work"   # the PostgreSQL server runs as `postgres` and needs to reach its directory
mkdir -p "$work/logs" "$work/nginx" "$work/results"
pids=()             # pods
pid_kinds=()        # sticky or stateless, for each of pids
nginx_pid=""
loadgen_pid=""
pg_started=""

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$loadgen_pid" ]; then kill -TERM "$loadgen_pid" 2>/dev/null || true; fi
    if [ -n "$nginx_pid" ]; then
        kill -QUIT "$nginx_pid" 2>/dev/null || true
    fi
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # The pods write their sessions back on SIGTERM; give them a bounded time.
    for pid in "${pids[@]}" $nginx_pid; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$pg_started" ]; then bash "$repo/examples/tests/pg.sh" stop "$work/pg" || true; fi
    if [ "${LOCUS_BENCH_KEEP:-0}" = 1 ] || [ "$status" -ne 0 ]; then
        log "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
for ip in "${pod_ips[@]}"; do
    for p in $sticky_port $stateless_port; do port_free "$ip" "$p" || die "$ip:$p is in use"; done
done
for p in $nginx_port $((nginx_port + 1)); do port_free 127.0.0.1 "$p" || die "127.0.0.1:$p is in use"; done

# --- PostgreSQL ------------------------------------------------------------------------------
log "starting PostgreSQL (unix socket in $work/pg)"
database_url=""
pg_failure=""
if pg_out=$(bash "$repo/examples/tests/pg.sh" start "$work/pg" 2>"$work/logs/pg.log"); then
    pg_started=1
    database_url=${pg_out#DATABASE_URL=}
else
    # The routing comparison still runs (sticky pods in memory only); the locality one cannot.
    pg_failure=$(tail -1 "$work/logs/pg.log")
    tail -5 "$work/logs/pg.log" >&2
    log "PostgreSQL did not start ($pg_failure): skipping the data-locality comparison"
fi

# --- rings -----------------------------------------------------------------------------------
# The committed three-pod ring with the benchmark's addresses: the assignment is the planner's,
# only the addresses change.
sticky_addrs=() stateless_addrs=()
for ip in "${pod_ips[@]}"; do
    sticky_addrs+=("$ip:$sticky_port")
    stateless_addrs+=("$ip:$stateless_port")
done
"$py" "$repo/bench/ring_owners.py" readdress "$repo/examples/ring.local.json" "$work/ring-sticky.json" \
    "${sticky_addrs[@]}"
"$py" "$repo/bench/ring_owners.py" readdress "$repo/examples/ring.local.json" "$work/ring-stateless.json" \
    "${stateless_addrs[@]}"
pod_names=($("$py" -c 'import json,sys; print(" ".join(s["pod"]["name"] for s in json.load(open(sys.argv[1]))["slots"]))' \
    "$work/ring-sticky.json"))

# --- pods ------------------------------------------------------------------------------------
wait_ready() {
    local url=$1 name=$2 i
    for i in $(seq 300); do
        if curl -fsS -o /dev/null --max-time 1 "$url/readyz" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    tail -5 "$work/logs/$name.log" >&2
    die "$name ($url) did not become ready within 30 s (its log above)"
}

log "starting 3 sticky pods on ${sticky_addrs[*]} and 3 stateless pods on ${stateless_addrs[*]}"
# Sticky pods: sessions in memory, written back to PostgreSQL when idle for an hour (not during
# the run), under memory pressure (none: the bounds are far) and at shutdown.
persistence=()
if [ -n "$database_url" ]; then persistence=(--postgres "$database_url"); fi
for i in 0 1 2; do
    RUST_LOG=warn "$bin/locus-sample" --pod "${pod_names[$i]}" --ring-file "$work/ring-sticky.json" \
        --listen "${sticky_addrs[$i]}" "${persistence[@]}" --idle-timeout 1h \
        >"$work/logs/sticky-$i.log" 2>&1 &
    pids+=($!) pid_kinds+=(sticky)
    # The first pod creates the table; concurrent `CREATE TABLE IF NOT EXISTS` can collide in
    # PostgreSQL's catalog, so the others start once it is ready.
    if [ "$i" -eq 0 ]; then wait_ready "http://${sticky_addrs[0]}" sticky-0; fi
    if [ -n "$database_url" ]; then
        # Same pod names as the ring's: the generator's `not_owner` then checks that each
        # request reached the pod the ring names (the load spreads as in the sticky runs).
        RUST_LOG=warn "$bin/locus-sample" --stateless --pod "${pod_names[$i]}" \
            --listen "${stateless_addrs[$i]}" --postgres "$database_url" \
            >"$work/logs/stateless-$i.log" 2>&1 &
        pids+=($!) pid_kinds+=(stateless)
    fi
done
for i in 0 1 2; do
    wait_ready "http://${sticky_addrs[$i]}" "sticky-$i"
    if [ -n "$database_url" ]; then wait_ready "http://${stateless_addrs[$i]}" "stateless-$i"; fi
done

# --- nginx -----------------------------------------------------------------------------------
# Session ids are PREFIX-0 .. PREFIX-(sessions-1); the map covers the prefixes of both nginx-map
# runs. A request whose session is not in the map gets 400 from nginx (none should).
run_id=$(date +%s)
prefix_of() { echo "b$run_id-$1-$2-$3"; }  # configuration, mode, variant
{
    for mode in closed rate; do
        for variant in "${variants[@]}"; do
            "$py" "$repo/bench/ring_owners.py" nginx-map "$work/ring-sticky.json" \
                "$(prefix_of nginx-map "$mode" "$variant")" "$sessions" owner | sed '1d;$d;/default ""/d'
        done
    done
} >"$work/nginx/map-entries.conf"
mkdir -p "$work/nginx/tmp"
{
    cat <<EOF
worker_processes $nginx_workers;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    keepalive_requests 1000000;
    map_hash_max_size $((8 * sessions + 1024));
    map_hash_bucket_size 128;

    # The owner of each benchmark session under the Locus ring (generated by
    # bench/ring_owners.py from the same ring file the pods and the router read).
    map \$http_x_locus_session \$locus_owner {
        default "";
        include $work/nginx/map-entries.conf;
    }
EOF
    for i in 0 1 2; do
        echo "    upstream owner$i { server ${sticky_addrs[$i]}; keepalive 64; keepalive_requests 1000000; }"
    done
    cat <<EOF
    upstream pods_hash {
        hash \$http_x_locus_session consistent;
        server ${sticky_addrs[0]};
        server ${sticky_addrs[1]};
        server ${sticky_addrs[2]};
        keepalive 64;
        keepalive_requests 1000000;
    }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$host;
    proxy_buffering on;
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            if (\$locus_owner = "") { return 400; }
            proxy_pass http://\$locus_owner;
        }
    }
    server {
        listen 127.0.0.1:$((nginx_port + 1));
        location / { proxy_pass http://pods_hash; }
    }
}
EOF
} >"$work/nginx/nginx.conf"
"$nginx_bin" -t -q -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/logs/nginx-test.log" \
    || { cat "$work/logs/nginx-test.log" >&2; die "nginx refused the generated configuration"; }
log "starting nginx on 127.0.0.1:$nginx_port (map) and 127.0.0.1:$((nginx_port + 1)) (consistent hash)"
"$nginx_bin" -c "$work/nginx/nginx.conf" -p "$work/nginx" >"$work/logs/nginx.log" 2>&1 &
nginx_pid=$!
for _ in $(seq 100); do
    if port_free 127.0.0.1 "$nginx_port"; then sleep 0.1; else break; fi
done
port_free 127.0.0.1 "$nginx_port" && die "nginx did not start (see $work/nginx/error.log)"

# --- runs ------------------------------------------------------------------------------------
# The processes whose CPU time is counted, as NAME=PID (the pods of a kind add up).
cpu_roots() {
    local i
    for i in "${!pids[@]}"; do echo "${pid_kinds[$i]}=${pids[$i]}"; done
    if [ -n "$nginx_pid" ]; then echo "nginx=$nginx_pid"; fi
    if [ -f "$work/pg/data/postmaster.pid" ]; then
        echo "postgresql=$(head -1 "$work/pg/data/postmaster.pid")"
    fi
}

# run NAME MODE TARGET-FLAGS... : one load generator run per variant (before, after), each with a
# warm-up phase (every session touched), then the measured phase; keeps the measured phase's and
# the total's JSON lines, and the CPU time each process used during the measured phase.
run() {
    local variant
    for variant in "${variants[@]}"; do run_one "$variant" "$@"; done
}

run_one() {
    local variant=$1 name=$2 mode=$3; shift 3
    local tag="$name-$mode-$variant"
    local out="$work/results/$tag.jsonl" rate_flags=() loadgen="$bin/locus-loadgen"
    if [ "$variant" = before ]; then loadgen="$baseline_bin/locus-loadgen"; fi
    if [ "$mode" = rate ]; then rate_flags=(--rate "$rate"); fi
    log "$name ($mode${rate_flags[*]:+, ${rate_flags[*]}}, $variant): ${warmup}s warm-up + ${duration}s"
    "${loadgen_on[@]}" "$loadgen" "$@" --sessions "$sessions" --concurrency "$concurrency" \
        --read-percent "$read_percent" --prefix "$(prefix_of "$name" "$mode" "$variant")" \
        --duration "$((warmup + duration))s" --json "${rate_flags[@]}" \
        >"$out" 2>"$work/logs/loadgen-$tag.log" &
    loadgen_pid=$!
    # The warm-up phase ends on SIGUSR1 once the generator has a ring and has run $warmup s.
    sleep "$warmup"
    kill -USR1 "$loadgen_pid" 2>/dev/null || true   # already gone: the summary says so
    "$py" "$repo/bench/cpu.py" snapshot "$work/results/$tag.cpu0" "loadgen=$loadgen_pid" $(cpu_roots)
    # The measured phase ends when its summary line is out (the read-back follows).
    while kill -0 "$loadgen_pid" 2>/dev/null && ! grep -q '"phase":"phase-2"' "$out"; do sleep 0.05; done
    "$py" "$repo/bench/cpu.py" snapshot "$work/results/$tag.cpu1" "loadgen=$loadgen_pid" $(cpu_roots)
    "$py" "$repo/bench/cpu.py" diff "$work/results/$tag.cpu0" "$work/results/$tag.cpu1" \
        >"$work/results/$tag.cpu" || true
    local status=0
    wait "$loadgen_pid" || status=$?
    loadgen_pid=""
    if [ "$status" -ne 0 ]; then
        log "$name ($mode, $variant): locus-loadgen exited with status $status (3: lost write, stale read or version conflict)"
        tail -3 "$work/logs/loadgen-$tag.log" >&2
    fi
    summary "$name" "$mode" "$variant" "$out" "${rate_flags[1]:-}"
}

# summary NAME MODE VARIANT FILE [RATE]: one line from the measured phase (phase-2) and the
# total's checks, one line of CPU time by process over the measured phase.
summary() {
    "$py" - "$1" "$2" "$3" "$4" "${5:-}" <<'EOF'
import json, sys
name, mode, variant, path, rate = sys.argv[1:]
name = "%s/%s" % (name, variant)
lines = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
phases = {l["phase"]: l for l in lines}
m, total = phases.get("phase-2"), phases.get("total")
if m is None:
    print("%-11s %-6s NO MEASUREMENT (the run ended before its measured phase)" % (name, mode))
    sys.exit(0)
v = (total or {}).get("verification") or {}
lat = m["latency_ms"]
cache = m["cache"]
lag = m.get("send_lag_ms")
print("%-18s %-6s rps=%9.1f%s p50=%7.3fms p99=%7.3fms p999=%7.3fms%s requests=%d errors=%d "
      "cache=warm:%d,cold:%d,stateless:%d forwarded=%d not_owner=%d lost_writes=%s conflicts=%d "
      "stale_reads=%d elapsed=%.1fs"
      % (name, mode, m["throughput_rps"], " (target %s)" % rate if rate else "", lat["p50"], lat["p99"],
         lat["p999"], " send_lag_p99=%.3fms" % lag["p99"] if lag else "", m["requests"], m["errors"],
         cache["warm"], cache["cold"], cache["stateless"],
         m["forwarded"], m["not_owner"], v.get("lost_writes", "?"), m["version_conflicts"],
         m["stale_reads"], m["elapsed_s"]))
try:
    cpu = json.load(open(path[:-len(".jsonl")] + ".cpu"))
    by = cpu["by_process"]
    # The load generator reports its own phase exactly (cpu_s); an older one does not, and its
    # /proc reading is missing (NaN) when it exited before the second reading.
    if m.get("cpu_s") is not None:
        by["loadgen"] = m["cpu_s"]
    ours = sum(v for v in by.values() if v == v)
    others = max(cpu["machine_busy"] - ours, 0.0)
    print("%-18s %-6s cpu_s %s | benchmark=%.2f others=%.2f machine_busy=%.2f of %.2f | "
          "benchmark_cpu_us_per_request=%.0f loadgen_cpu_us_per_request=%.0f"
          % (name, mode, " ".join("%s=%.2f" % kv for kv in sorted(by.items())), ours,
             others, cpu["machine_busy"], cpu["machine_capacity"],
             1e6 * ours / max(m["requests"], 1), 1e6 * by.get("loadgen", float("nan")) / max(m["requests"], 1)))
except (OSError, ValueError, KeyError, TypeError):
    print("%-18s %-6s cpu_s not measured" % (name, mode))
if m["errors"]:
    print("%-18s %-6s errors by kind: %s" % (name, mode, json.dumps(m["errors_by_kind"])))
EOF
}

# rps NAME MODE: the measured throughput of a run, the lowest over its variants (0 if none).
rps() {
    "$py" - "$work/results" "$1-$2-" <<'EOF'
import json, os, sys
found = []
for f in os.listdir(sys.argv[1]):
    if f.startswith(sys.argv[2]) and f.endswith(".jsonl"):
        for l in open(os.path.join(sys.argv[1], f)):
            if l.strip().startswith("{") and json.loads(l)["phase"] == "phase-2":
                found.append(int(json.loads(l)["throughput_rps"]))
print(min(found) if found else 0)
EOF
}

# half the slower closed-loop throughput of a comparison, at least 10 requests per second
rate_for() {
    local slowest=0 r
    for r in "$@"; do
        if [ "$slowest" -eq 0 ] || [ "$r" -lt "$slowest" ]; then slowest=$r; fi
    done
    echo $(( slowest / 2 > 10 ? slowest / 2 : 10 ))
}

echo "# machine: $cores cores (pinned: $pinned), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
pg_version=none
if [ -n "$database_url" ]; then
    pg_version=$(runuser -u postgres -- psql -h "$work/pg" -At -c 'show server_version' 2>/dev/null || echo '?')
fi
echo "# versions: $("$nginx_bin" -v 2>&1 | sed 's/.*: //'), PostgreSQL $pg_version, commit $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "# settings: sessions=$sessions concurrency=$concurrency read_percent=$read_percent warmup=${warmup}s measured=${duration}s workers=$workers (pods, load generator, nginx) variants=${variants[*]}${baseline_bin:+ (before: $baseline_bin)}"

rate=0
# (a) data locality
if [ -n "$database_url" ]; then
    run sticky closed --ring-file "$work/ring-sticky.json"
    run stateless closed --ring-file "$work/ring-stateless.json"
    rate=$(rate_for "$(rps sticky closed)" "$(rps stateless closed)")
    run sticky rate --ring-file "$work/ring-sticky.json"
    run stateless rate --ring-file "$work/ring-stateless.json"
else
    echo "sticky      SKIPPED: PostgreSQL did not start ($pg_failure)"
    echo "stateless   SKIPPED: PostgreSQL did not start ($pg_failure)"
fi
# (b) routing, in front of the sticky pods
run router closed --ring-file "$work/ring-sticky.json"
run nginx-map closed --target "http://127.0.0.1:$nginx_port"
run nginx-hash closed --target "http://127.0.0.1:$((nginx_port + 1))"
rate=$(rate_for "$(rps router closed)" "$(rps nginx-map closed)" "$(rps nginx-hash closed)")
run router rate --ring-file "$work/ring-sticky.json"
run nginx-map rate --target "http://127.0.0.1:$nginx_port"
run nginx-hash rate --target "http://127.0.0.1:$((nginx_port + 1))"

# --- ratios ----------------------------------------------------------------------------------
"$py" - "$work/results" <<'EOF'
import json, os, sys
res = {}
for f in os.listdir(sys.argv[1]):
    if not f.endswith(".jsonl"):
        continue
    for l in open(os.path.join(sys.argv[1], f)):
        if l.strip().startswith("{") and json.loads(l)["phase"] == "phase-2":
            res[f[:-len(".jsonl")]] = json.loads(l)
def ratio(fast, slow, mode, variant):
    a, b = res.get("%s-%s-%s" % (fast, mode, variant)), res.get("%s-%s-%s" % (slow, mode, variant))
    if not a or not b or not b["throughput_rps"] or not a["latency_ms"]["p50"] or not a["latency_ms"]["p99"]:
        print("ratio %-6s %-6s %s/%s: n/a (a run is missing)" % (variant, mode, fast, slow)); return
    print("ratio %-6s %-6s throughput %s/%s = %.2f   p50 %s/%s = %.2f   p99 %s/%s = %.2f"
          % (variant, mode, fast, slow, a["throughput_rps"] / b["throughput_rps"],
             slow, fast, b["latency_ms"]["p50"] / a["latency_ms"]["p50"],
             slow, fast, b["latency_ms"]["p99"] / a["latency_ms"]["p99"]))
variants = sorted({k.rsplit("-", 1)[1] for k in res}, reverse=True)  # before, after
for variant in variants:
    for mode in ("closed", "rate"):
        ratio("sticky", "stateless", mode, variant)
for variant in variants:
    for mode in ("closed", "rate"):
        ratio("router", "nginx-map", mode, variant)
        ratio("router", "nginx-hash", mode, variant)
EOF
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
