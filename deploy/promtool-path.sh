#!/usr/bin/env bash
# Prints the path of a promtool that runs here: the one on PATH, else Debian's, unpacked from the
# `prometheus` package into QIKCHAT_TOOLS_DIR/bin (default /var/tmp/qikchat-relay-tools), not
# installed (installing would add a user and start a Prometheus server). Used by deploy/validate.sh
# (rules, dashboards) and tests/external/promtool.sh (the relay's /metrics); it logs to stderr.
set -euo pipefail

TOOLS_DIR=${QIKCHAT_TOOLS_DIR:-/var/tmp/qikchat-relay-tools}
# The upstream version of Debian's `prometheus` package that promtool is taken from. Pinned by its
# upstream part only: Debian replaces the package in place for security fixes (2.42.0+ds-5+deb12uN),
# and an exact revision would soon be gone from the archive.
PROMTOOL_VERSION=2.42.0

log() { printf '[promtool-path] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

promtool=$(command -v promtool || true)
if [[ -z $promtool ]]; then
    promtool=$TOOLS_DIR/bin/promtool
    if [[ ! -x $promtool ]]; then
        if ! command -v apt-get > /dev/null || ! command -v dpkg-deb > /dev/null; then
            die "promtool is missing and this is not Debian: install promtool $PROMTOOL_VERSION or later"
        fi
        WORK=$(mktemp -d)
        trap 'rm -rf "$WORK"' EXIT
        download() { (cd "$WORK" && apt-get -o DPkg::Lock::Timeout=600 download -q prometheus > "$WORK/apt.log" 2>&1); }
        log "apt-get download prometheus (for promtool)"
        if ! download; then
            [[ $(id -u) -eq 0 ]] || { cat "$WORK/apt.log" >&2; die "apt-get download prometheus failed; install promtool (or run as root)"; }
            DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq > /dev/null
            download || { cat "$WORK/apt.log" >&2; die "apt-get download prometheus failed"; }
        fi
        deb=$(echo "$WORK"/prometheus_*.deb)
        deb_version=$(dpkg-deb -f "$deb" Version)
        [[ $deb_version == "$PROMTOOL_VERSION"+* ]] ||
            die "Debian's prometheus is $deb_version, not the pinned $PROMTOOL_VERSION: check it, then update PROMTOOL_VERSION here"
        dpkg-deb -x "$deb" "$WORK/prometheus"
        # Unpacked beside its place and renamed into it, so that a run at the same time never
        # sees half a binary.
        mkdir -p "$TOOLS_DIR/bin"
        staged=$(mktemp "$TOOLS_DIR/bin/.promtool.XXXXXX")
        install -m 0755 "$WORK/prometheus/usr/bin/promtool" "$staged"
        mv -f "$staged" "$promtool"
    fi
fi
# Debian's promtool is a Go binary that needs only libc; check that it runs here.
"$promtool" --version 2>&1 | grep -q '^promtool, version ' || die "$promtool does not run"
echo "$promtool"
