#!/usr/bin/env bash
# Builds a kind node image for the Kubernetes version the local cluster pins, offline: every
# binary from the Go module proxy (or, for pause, from C source in the Kubernetes module), every
# root filesystem from Debian packages, no container registry. Every image kubeadm and kind
# need is preloaded into the node's containerd under the exact name they ask for.
#
#   e2e/kind/node-image.sh            build what is missing; prints the node image's name
#   e2e/kind/node-image.sh --bins     only build (or find cached) the binaries; prints their dir
#   e2e/kind/node-image.sh --rootfs   only build (or find cached) the two Debian root filesystems
#   LOCUS_KIND_CACHE=/path e2e/kind/node-image.sh
#
# Everything is cached outside the checkout, keyed by versions (and, for the node image, by the
# content of the files in e2e/kind/node/): a second run finds the image and returns at once.
# Progress goes to stderr. Needs root, a running Docker engine (e2e/kind/docker.sh), Go, gcc,
# debootstrap.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# One source of truth for the Kubernetes and etcd versions: the local cluster's build script.
K8S_VERSION=$(sed -n 's/^K8S_VERSION=//p' "$repo/e2e/cluster/build.sh")
ETCD_VERSION=$(sed -n 's/^ETCD_VERSION=//p' "$repo/e2e/cluster/build.sh")
KIND_VERSION=v0.33.0
CRICTL_VERSION=v1.37.0
# kubeadm v1.36 asks for coredns v1.14.2, which the Go module proxy does not serve; v1.14.3 is
# built and tagged with the name kubeadm expects.
COREDNS_VERSION=v1.14.3
COREDNS_TAG=v1.14.2
LOCAL_PATH_VERSION=v0.0.30
PAUSE_TAG=3.10
# kubeadm v1.36's own default sandbox image; kind points containerd at pause:3.10, but the other
# tag costs nothing and keeps kubeadm's image checks content.
KUBEADM_PAUSE_TAG=3.10.2
ETCD_TAG=${ETCD_VERSION#v}-0
# The tags kind v0.33's default manifests name (pkg/build/nodeimage/const_cni.go, const_storage.go).
KINDNETD_TAG=v20260820-69b56db7
LOCAL_PATH_PROVISIONER_TAG=v20260820-69b56db7
LOCAL_PATH_HELPER_TAG=v20260131-7181c60a
# Debian bookworm: its systemd 252 still boots on cgroup v1 hosts (256+ does not).
DEBIAN_SUITE=bookworm

cache=${LOCUS_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/locus-kind}

log() { printf '[node-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# Heavy work runs at the lowest CPU and I/O priority: this builds next to other work.
low() { nice -n 19 ionice -c3 "$@"; }

with_progress() {
    local what=$1; shift
    local start=$SECONDS
    "$@" &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 5
        if kill -0 "$pid" 2>/dev/null && (( (SECONDS - start) % 30 < 5 )); then
            log "  ... still building $what ($((SECONDS - start))s)"
        fi
    done
    wait "$pid" || die "building $what failed (see the output above)"
    log "  built $what in $((SECONDS - start))s"
}

# Docker's legacy builder (the only one without buildx) builds these one-line Dockerfiles; its
# deprecation notice is dropped, everything else it says is kept.
legacy_build() {
    local out rc=0
    out=$(DOCKER_BUILDKIT=0 low docker build -q "$@" 2>&1 >/dev/null) || rc=$?
    printf '%s\n' "$out" | grep -v -e '^DEPRECATED: The legacy builder' -e 'BuildKit is currently disabled' \
        -e 'environment-variable.$' -e '^$' >&2 || true
    return "$rc"
}

# ---------------------------------------------------------------------------------------------
# Binaries
# ---------------------------------------------------------------------------------------------
gosum_key=$(cat "$repo/e2e/cluster/tools/go.sum" "$repo/e2e/cluster/tools/go.mod" | sha256sum | cut -c1-12)
bins="$cache/bin/k8s-$K8S_VERSION-kind-$KIND_VERSION-crictl-$CRICTL_VERSION-coredns-$COREDNS_VERSION-lpp-$LOCAL_PATH_VERSION-pause-$PAUSE_TAG-$gosum_key"

k8s_ldflags() {
    local major minor flags="-s -w" date
    major=$(echo "$K8S_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')
    minor=$(echo "$K8S_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+).*/\1/')
    # A fixed date: the binaries are the same on every build of the same versions.
    date=1970-01-01T00:00:00Z
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitCommit=module-$K8S_VERSION -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    echo "$flags"
}

build_bins() {
    command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH (Go >= 1.26)"
    command -v gcc >/dev/null 2>&1 || die "no gcc on PATH (apt-get install gcc libc6-dev)"
    mkdir -p "$bins"
    exec 8>"$bins/.lock"
    flock 8
    # The control plane and etcd: the local cluster's build (cached there).
    local cp
    cp=$(bash "$repo/e2e/cluster/build.sh")
    for t in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd; do
        [ -x "$bins/$t" ] || cp "$cp/$t" "$bins/$t"
    done

    export CGO_ENABLED=0
    # The node's binaries from the same module graph. The build runs in a copy of the local
    # cluster's tools module so that -mod=mod may add go.sum lines without touching the checkout.
    local mod="$cache/gomod/tools-$gosum_key"
    if [ ! -f "$mod/go.mod" ]; then
        mkdir -p "$mod"
        cp "$repo/e2e/cluster/tools/go.mod" "$repo/e2e/cluster/tools/go.sum" "$mod/"
    fi
    local t
    for t in kubelet kubeadm kube-proxy; do
        [ -x "$bins/$t" ] && continue
        log "building $t $K8S_VERSION"
        (cd "$mod" && with_progress "$t" low env GOFLAGS=-mod=mod go build -trimpath \
            -ldflags "$(k8s_ldflags)" -o "$bins/$t.tmp" "k8s.io/kubernetes/cmd/$t")
        mv "$bins/$t.tmp" "$bins/$t"
    done

    goinstall() { # name package@version [ldflags]
        local name=$1 pkg=$2 ldflags=${3:-}
        [ -x "$bins/$name" ] && return 0
        log "building $name ($pkg)"
        rm -rf "$bins/.gobin"
        with_progress "$name" low env GOBIN="$bins/.gobin" go install -trimpath -ldflags "-s -w $ldflags" "$pkg"
        mv "$bins/.gobin/"* "$bins/$name.tmp"
        rmdir "$bins/.gobin"
        mv "$bins/$name.tmp" "$bins/$name"
    }
    goinstall kind "sigs.k8s.io/kind@$KIND_VERSION"
    goinstall crictl "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" \
        "-X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}"
    goinstall coredns "github.com/coredns/coredns@$COREDNS_VERSION"
    goinstall local-path-provisioner "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION" \
        "-X main.VERSION=$LOCAL_PATH_VERSION"

    if [ ! -x "$bins/pause" ]; then
        log "building pause $PAUSE_TAG (static C, from the Kubernetes module)"
        local src
        src=$(cd "$mod" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
        [ -f "$src" ] || die "pause.c not found at $src"
        gcc -Os -Wall -static -DVERSION="v$PAUSE_TAG-locus" -o "$bins/pause.tmp" "$src"
        strip "$bins/pause.tmp"
        mv "$bins/pause.tmp" "$bins/pause"
    fi
    log "binaries: $bins"
}

if [ "${1:-}" != --rootfs ]; then
    build_bins
    if [ "${1:-}" = --bins ]; then
        echo "$bins"
        exit 0
    fi
fi

# ---------------------------------------------------------------------------------------------
# Root filesystems (debootstrap from the Debian mirror this host's apt uses)
# ---------------------------------------------------------------------------------------------
command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || die "no Docker engine answers: run e2e/kind/docker.sh first"
command -v debootstrap >/dev/null 2>&1 || {
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

debian_mirror() {
    local m
    m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)
    [ -n "$m" ] || m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)
    [ -n "$m" ] || die "no Debian mirror found in /etc/apt sources; set LOCUS_DEBIAN_MIRROR"
    echo "$m"
}
mirror=${LOCUS_DEBIAN_MIRROR:-$(debian_mirror)}

# The node: systemd, containerd, runc, the CNI plugins, iptables (nft backend) and tools.
NODE_PACKAGES=systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,iptables,nftables,conntrack,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,ca-certificates,procps,jq,socat,bash
# The base of the component images: a shell, iptables and iproute2 (kube-proxy, the CNI agent,
# local-path's helper pods).
BASE_PACKAGES=iptables,nftables,conntrack,iproute2,ca-certificates

rootfs_tar() { # name packages -> prints the path of a cached tarball of the root filesystem
    local name=$1 pkgs=$2 key dir tar
    key=$(printf '%s %s %s' "$DEBIAN_SUITE" "$pkgs" "$name" | sha256sum | cut -c1-12)
    tar="$cache/rootfs/$name-$DEBIAN_SUITE-$key.tar"
    if [ -f "$tar" ]; then
        log "cached rootfs: $tar"
        echo "$tar"
        return
    fi
    mkdir -p "$cache/rootfs" "$cache/debs"
    dir="$cache/rootfs/$name.tmp"
    rm -rf "$dir"
    log "debootstrap $DEBIAN_SUITE ($name): $pkgs"
    log "  (debootstrap's output: $cache/rootfs/$name.log)"
    with_progress "rootfs $name" low bash -c 'log=$1; shift; exec debootstrap "$@" >"$log" 2>&1' _ \
        "$cache/rootfs/$name.log" --variant=minbase --cache-dir="$cache/debs" \
        --include="$pkgs" "$DEBIAN_SUITE" "$dir" "$mirror"
    # The package versions in it, kept next to the tarball: what this build is made of.
    chroot "$dir" dpkg-query -W -f '${Package} ${Version}\n' > "${tar%.tar}.packages"
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb "$dir"/var/log/*.log "$dir"/dev/*
    low tar -C "$dir" --numeric-owner -cf "$tar.tmp" .
    rm -rf "$dir"
    mv "$tar.tmp" "$tar"
    log "rootfs $name: $tar ($(du -h "$tar" | cut -f1))"
    echo "$tar"
}

if [ "${1:-}" = --rootfs ]; then
    rootfs_tar base "$BASE_PACKAGES"
    rootfs_tar node "$NODE_PACKAGES"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Component images (the names kubeadm and kind ask for)
# ---------------------------------------------------------------------------------------------
node_files_key=$( (cd "$here" && find node cni -type f | LC_ALL=C sort | xargs sha256sum; sha256sum node-image.sh) | sha256sum | cut -c1-12)
key=$(printf '%s\n' "$bins" "$node_files_key" "$NODE_PACKAGES" "$BASE_PACKAGES" "$DEBIAN_SUITE" | sha256sum | cut -c1-12)
NODE_IMAGE=${LOCUS_KIND_NODE_IMAGE:-locus.dev/kind-node:$K8S_VERSION-$key}
CNI_IMAGE=locus.dev/kind-cni:$key

if docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
    log "cached node image: $NODE_IMAGE"
    echo "$NODE_IMAGE"
    exit 0
fi
exec 7>"$cache/.node-image.lock"
flock 7

base_tar=$(rootfs_tar base "$BASE_PACKAGES")
node_tar=$(rootfs_tar node "$NODE_PACKAGES")
BASE_IMAGE=locus.dev/kind-base:$DEBIAN_SUITE-$(basename "$base_tar" .tar | sed 's/.*-//')
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "importing the component base image $BASE_IMAGE"
    docker import "$base_tar" "$BASE_IMAGE" >/dev/null
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
component() { # image binary... (the first binary is the entrypoint)
    local image=$1; shift
    # Built by this key already (a component image's name does not change with its content).
    if [ "$(docker image inspect -f '{{index .Config.Labels "dev.locus.kind-key"}}' "$image" 2>/dev/null)" = "$key" ]; then
        log "  image $image (built)"
        return
    fi
    rm -rf "$ctx/c" && mkdir -p "$ctx/c"
    local b from=$BASE_IMAGE entry
    for b in "$@"; do cp "$bins/$b" "$ctx/c/" 2>/dev/null || cp "$here/cni/$b" "$ctx/c/"; done
    entry=/usr/local/bin/$1
    [ "$1" = pause ] && { from=scratch; entry=/pause; }
    {
        echo "FROM $from"
        if [ "$from" = scratch ]; then
            echo "COPY pause /pause"
        else
            # An imported root filesystem has no environment; the components run by name.
            echo "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            echo "COPY . /usr/local/bin/"
        fi
        [ "$1" = coredns ] && echo "RUN ln -s /usr/local/bin/coredns /coredns"
        echo "ENTRYPOINT [\"$entry\"]"
        echo "LABEL dev.locus.kind-key=$key"
    } > "$ctx/c.Dockerfile"
    log "  image $image"
    legacy_build -f "$ctx/c.Dockerfile" -t "$image" "$ctx/c"
}

log "component images"
IMAGES=(
    "registry.k8s.io/kube-apiserver:$K8S_VERSION"
    "registry.k8s.io/kube-controller-manager:$K8S_VERSION"
    "registry.k8s.io/kube-scheduler:$K8S_VERSION"
    "registry.k8s.io/kube-proxy:$K8S_VERSION"
    "registry.k8s.io/etcd:$ETCD_TAG"
    "registry.k8s.io/coredns/coredns:$COREDNS_TAG"
    "registry.k8s.io/pause:$PAUSE_TAG"
    "registry.k8s.io/pause:$KUBEADM_PAUSE_TAG"
    "docker.io/kindest/local-path-provisioner:$LOCAL_PATH_PROVISIONER_TAG"
    "docker.io/kindest/local-path-helper:$LOCAL_PATH_HELPER_TAG"
    "$CNI_IMAGE"
)
component "${IMAGES[0]}" kube-apiserver
component "${IMAGES[1]}" kube-controller-manager
component "${IMAGES[2]}" kube-scheduler
component "${IMAGES[3]}" kube-proxy
component "${IMAGES[4]}" etcd
component "${IMAGES[5]}" coredns
component "${IMAGES[6]}" pause
docker tag "${IMAGES[6]}" "${IMAGES[7]}"
component "${IMAGES[8]}" local-path-provisioner
# The helper pods of local-path only run a shell script (mkdir, rm): the base image.
docker tag "$BASE_IMAGE" "${IMAGES[9]}"
component "$CNI_IMAGE" locus-kind-cni kubectl

# ---------------------------------------------------------------------------------------------
# The node image
# ---------------------------------------------------------------------------------------------
ROOTFS_IMAGE=locus.dev/kind-node-rootfs:$key
log "node image: importing the node rootfs with the node files"
# The node's own files go in as a second layer over the Debian root filesystem.
rm -rf "$ctx/n" && mkdir -p "$ctx/n/root/usr/bin" "$ctx/n/root/usr/local/bin" "$ctx/n/root/kind/manifests" "$ctx/n/root/opt/cni/bin" "$ctx/n/root/etc/kubernetes/manifests"
cp -a "$here/node/." "$ctx/n/root/"
for b in kubelet kubeadm kubectl; do cp "$bins/$b" "$ctx/n/root/usr/bin/"; done
cp "$bins/crictl" "$ctx/n/root/usr/local/bin/"
echo "$K8S_VERSION" > "$ctx/n/root/kind/version"
for t in "$LOCAL_PATH_PROVISIONER_TAG" "$LOCAL_PATH_HELPER_TAG"; do
    grep -q ":$t" "$here/node/kind/manifests/default-storage.yaml" || die "node/kind/manifests/default-storage.yaml does not name tag $t"
done
sed "s|LOCUS_KIND_CNI_IMAGE|$CNI_IMAGE|" "$here/cni/default-cni.yaml" > "$ctx/n/root/kind/manifests/default-cni.yaml"
for p in host-local loopback ptp portmap bridge; do ln -s "/usr/lib/cni/$p" "$ctx/n/root/opt/cni/bin/$p"; done
tar -C "$ctx/n/root" --numeric-owner --owner=0 --group=0 -cf "$ctx/n/files.tar" .
if ! docker image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1; then
    docker import "$node_tar" "$ROOTFS_IMAGE.debian" >/dev/null
    cat > "$ctx/n/Dockerfile" <<'DOCKERFILE'
ARG FROM
FROM $FROM
ADD files.tar /
RUN set -e; \
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete; \
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
          /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
          /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*; \
    echo ReadKMsg=no >> /etc/systemd/journald.conf; \
    systemctl enable containerd.service kubelet.service undo-mount-hacks.service; \
    systemctl mask systemd-binfmt.service getty@tty1.service console-getty.service; \
    update-alternatives --set iptables /usr/sbin/iptables-nft; \
    update-alternatives --set ip6tables /usr/sbin/ip6tables-nft; \
    echo 'kind-node' > /etc/hostname
DOCKERFILE
    legacy_build --build-arg FROM="$ROOTFS_IMAGE.debian" -t "$ROOTFS_IMAGE" "$ctx/n"
    docker rmi "$ROOTFS_IMAGE.debian" >/dev/null
fi

log "node image: preloading ${#IMAGES[@]} images into the node's containerd"
builder=locus-kind-node-build-$key
docker rm -f "$builder" >/dev/null 2>&1 || true
docker run -d --privileged --name "$builder" --entrypoint /bin/sleep "$ROOTFS_IMAGE" infinity >/dev/null
trap 'docker rm -f "$builder" >/dev/null 2>&1 || true; rm -rf "$ctx"' EXIT
docker exec -d "$builder" sh -c 'containerd >/var/log/containerd-build.log 2>&1'
for i in $(seq 1 30); do
    docker exec "$builder" ctr version >/dev/null 2>&1 && break
    [ "$i" = 30 ] && { docker exec "$builder" cat /var/log/containerd-build.log >&2; die "containerd did not start in the build container"; }
    sleep 1
done
# The base runtime spec of the CRI plugin: containerd's default without rlimits (a container
# must not need CAP_SYS_RESOURCE to start).
docker exec "$builder" sh -c 'ctr oci spec | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
docker save "${IMAGES[@]}" | docker exec -i "$builder" ctr -n k8s.io images import --all-platforms --no-unpack - >/dev/null
for img in "${IMAGES[@]}"; do
    # Pinned: the kubelet's image garbage collection never removes them (they cannot be pulled).
    docker exec "$builder" ctr -n k8s.io images label "$img" io.cri-containerd.pinned=pinned >/dev/null \
        || die "image $img is missing in the node's containerd after import"
done
docker exec "$builder" sh -c 'kill $(pidof containerd); sleep 1; rm -f /var/log/containerd-build.log'
docker commit \
    --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
    --change 'ENV container=docker' "$builder" "$NODE_IMAGE.unsigned" >/dev/null
docker rm -f "$builder" >/dev/null
# `docker commit --change` cannot set STOPSIGNAL on Docker 20.10; a one-line build can.
printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$NODE_IMAGE.unsigned" > "$ctx/n/Dockerfile.stop"
legacy_build -f "$ctx/n/Dockerfile.stop" -t "$NODE_IMAGE" "$ctx/n"
docker rmi "$NODE_IMAGE.unsigned" >/dev/null
log "node image: $NODE_IMAGE ($(docker image inspect -f '{{.Size}}' "$NODE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$NODE_IMAGE"
