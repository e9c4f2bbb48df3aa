#!/bin/bash
# Docker's embedded DNS server answers at 127.0.0.11 inside a node's network namespace, which a
# pod cannot reach (127.0.0.11 in a pod is the pod itself: CoreDNS, forwarding to the node's
# resolv.conf, would query itself and stop with "Loop detected"). This makes the node's default
# gateway on the Docker network answer DNS instead: queries to <gateway>:53, from the node or
# from its pods, are sent to Docker's DNS server, and the node's resolv.conf names the gateway.
# Run by the entrypoint, before systemd; idempotent.
set -euo pipefail
gw=$(ip -4 route show default | awk '{print $3; exit}')
[ -n "$gw" ] || { echo "[locus-node] no default route: DNS left as it is" >&2; exit 0; }
grep -q '^nameserver 127\.0\.0\.11$' /etc/resolv.conf || exit 0
rules=$(iptables-save -t nat)
port() { # proto
    sed -n "s|.*-d 127.0.0.11/32 -p $1 .*--to-destination 127.0.0.11:\([0-9]*\).*|\1|p" <<<"$rules" | head -n1
}
udp=$(port udp) tcp=$(port tcp)
[ -n "$udp" ] && [ -n "$tcp" ] || { echo "[locus-node] Docker's DNS rules not found: DNS left as it is" >&2; exit 0; }
if ! iptables -t nat -S LOCUS_DNS >/dev/null 2>&1; then
    iptables -t nat -N LOCUS_DNS
    iptables -t nat -A LOCUS_DNS -p udp --dport 53 -j DNAT --to-destination "127.0.0.11:$udp"
    iptables -t nat -A LOCUS_DNS -p tcp --dport 53 -j DNAT --to-destination "127.0.0.11:$tcp"
    iptables -t nat -I PREROUTING -d "$gw/32" -j LOCUS_DNS
    iptables -t nat -I OUTPUT -d "$gw/32" -j LOCUS_DNS
    # Answers leave Docker's server from 127.0.0.11:<port>; they must come back from <gateway>:53.
    iptables -t nat -I POSTROUTING -s 127.0.0.11/32 -p udp --sport "$udp" -j SNAT --to-source "$gw:53"
    iptables -t nat -I POSTROUTING -s 127.0.0.11/32 -p tcp --sport "$tcp" -j SNAT --to-source "$gw:53"
fi
# Replies from 127.0.0.11 to a pod are routed only with route_localnet.
sysctl -qw net.ipv4.conf.all.route_localnet=1
# resolv.conf is a bind mount: rewrite it in place.
sed "s/^nameserver 127\.0\.0\.11$/nameserver $gw/" /etc/resolv.conf > /etc/resolv.conf.locus
cat /etc/resolv.conf.locus > /etc/resolv.conf && rm -f /etc/resolv.conf.locus
echo "[locus-node] DNS through the Docker network's gateway $gw" >&2
