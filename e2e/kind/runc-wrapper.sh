#!/bin/sh
# An OCI runtime for dockerd on hosts whose capability bounding set lacks CAP_SYS_RESOURCE
# (some sandboxes). A privileged container (kind's nodes, `docker exec --privileged`) asks for
# every capability, and runc fails with "unable to apply caps" when one of them is outside the
# bounding set. This drops CAP_SYS_RESOURCE from the container's config.json (create, run) or
# from the process spec (exec), then runs the real runc with the same arguments.
# Registered by e2e/kind/docker.sh only where the capability is missing.
REAL_RUNC=${LOCUS_REAL_RUNC:-/usr/sbin/runc}

drop_cap() { # file [path-prefix]
    f=$1 p=$2
    [ -f "$f" ] || return 0
    tmp="$f.locus-tmp"
    jq "if $p.capabilities then $p.capabilities |= with_entries(.value |= (if type == \"array\" then map(select(. != \"CAP_SYS_RESOURCE\")) else . end)) else . end" \
        "$f" > "$tmp" && mv "$tmp" "$f" || rm -f "$tmp"
}

cmd= bundle= process= prev=
for a in "$@"; do
    case $prev in
        --bundle|-b) bundle=$a ;;
        --process|-p) [ "$cmd" = exec ] && process=$a ;;
    esac
    case $a in
        --bundle=*) bundle=${a#--bundle=} ;;
        --process=*) process=${a#--process=} ;;
        create|run|exec) [ -z "$cmd" ] && cmd=$a ;;
    esac
    prev=$a
done

case $cmd in
    create|run) drop_cap "${bundle:-.}/config.json" .process ;;
    exec) [ -n "$process" ] && drop_cap "$process" "" ;;
esac
exec "$REAL_RUNC" "$@"
