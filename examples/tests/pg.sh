#!/usr/bin/env bash
# A private PostgreSQL for the examples' tests (examples/tests/postgres.rs).
#
#   pg.sh start DIR   initdb in DIR/data, serve on a unix socket in DIR only (no TCP port),
#                     print DATABASE_URL=<connection string> on stdout
#   pg.sh stop DIR    stop it
#
# When the PostgreSQL binaries are missing and we are root, installs them with apt-get.
# Exits non-zero with the reason on its last stderr line when PostgreSQL cannot start; the
# tests then skip (or fail, with LOCUS_REQUIRE_POSTGRES=1).
set -euo pipefail
cmd=${1:?usage: pg.sh start|stop DIR}
dir=${2:?usage: pg.sh start|stop DIR}

find_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    done
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
    return 1
}

# The server refuses to run as root: run it as the `postgres` user then.
as_server=()
if [ "$(id -u)" -eq 0 ]; then as_server=(runuser -u postgres --); fi

bin=$(find_bin || true)
case $cmd in
start)
    if [ -z "$bin" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        # Tests start in parallel: one installs, the others wait for it.
        exec 9>/tmp/locus-examples-pg-install.lock
        command -v flock >/dev/null 2>&1 && flock 9
        bin=$(find_bin || true)
        if [ -z "$bin" ]; then
            echo "[pg.sh] installing postgresql with apt-get" >&2
            if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >&2; then
                echo "apt-get install postgresql failed" >&2
                exit 1
            fi
            bin=$(find_bin || true)
        fi
        exec 9>&-
    fi
    if [ -z "$bin" ]; then
        echo "no PostgreSQL binaries (initdb) found and cannot install them (not root, or no apt-get)" >&2
        exit 1
    fi
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "running as root but there is no 'postgres' user to run the server as" >&2
        exit 1
    fi
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$dir"; fi
    if ! "${as_server[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        echo "initdb failed (log above)" >&2
        exit 1
    fi
    if ! "${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off -c max_connections=200" \
        start >&2; then
        cat "$dir/server.log" >&2 || true
        echo "the PostgreSQL server did not start (log above)" >&2
        exit 1
    fi
    echo "DATABASE_URL=host=$dir user=postgres dbname=postgres"
    ;;
stop)
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        "${as_server[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    ;;
*)
    echo "usage: pg.sh start|stop DIR" >&2
    exit 2
    ;;
esac
