#!/usr/bin/env bash
# tests/external/promtool.sh <relay-url>: Prometheus's own checker on a running relay's /metrics.
# `promtool check metrics` parses the exposition as Prometheus would and lints it (a family
# without # HELP, a counter not ending in _total, units not in base units or abbreviated, ...).
# Any finding fails, whether promtool exits non-zero or only prints it. /metrics takes no
# credentials (docs/operating.md, the contract), so the URL is the only argument.
#
# promtool: the one on PATH, else the one deploy/validate.sh keeps under QIKCHAT_TOOLS_DIR
# (default /var/tmp/qikchat-relay-tools), else taken from Debian's `prometheus` package as
# validate.sh does: downloaded and unpacked, not installed (installing would add a user and start
# a Prometheus server).
set -euo pipefail

usage="usage: $0 <relay-url>   (for example http://127.0.0.1:8080)"
[[ $# -eq 1 && -n $1 ]] || { echo "$usage" >&2; exit 2; }
url=${1%/}/metrics

TOOLS_DIR=${QIKCHAT_TOOLS_DIR:-/var/tmp/qikchat-relay-tools}
# The same pin as deploy/validate.sh (they share the binary): Debian 12's promtool.
PROMTOOL_VERSION=2.42.0

log() { printf '[promtool] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

apt_get() {
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 "$@"
}

promtool=$(command -v promtool || true)
if [[ -z $promtool ]]; then
    promtool=$TOOLS_DIR/bin/promtool
    if [[ ! -x $promtool ]]; then
        if ! command -v apt-get > /dev/null || ! command -v dpkg-deb > /dev/null; then
            die "promtool is missing and this is not Debian: install promtool $PROMTOOL_VERSION or later"
        fi
        log "apt-get download prometheus (for promtool)"
        download() { (cd "$WORK" && apt-get -o DPkg::Lock::Timeout=600 download -q prometheus > "$WORK/apt.log" 2>&1); }
        if ! download; then
            apt_get update -qq > /dev/null
            download || { cat "$WORK/apt.log" >&2; die "apt-get download prometheus failed"; }
        fi
        deb=$(echo "$WORK"/prometheus_*.deb)
        deb_version=$(dpkg-deb -f "$deb" Version)
        [[ $deb_version == "$PROMTOOL_VERSION"+* ]] ||
            die "Debian's prometheus is $deb_version, not the pinned $PROMTOOL_VERSION: check it, then update PROMTOOL_VERSION here and in deploy/validate.sh"
        dpkg-deb -x "$deb" "$WORK/prometheus"
        # Unpacked beside its place and renamed into it, so that a run of validate.sh at the same
        # time never sees half a binary.
        mkdir -p "$TOOLS_DIR/bin"
        staged=$(mktemp "$TOOLS_DIR/bin/.promtool.XXXXXX")
        install -m 0755 "$WORK/prometheus/usr/bin/promtool" "$staged"
        mv -f "$staged" "$promtool"
    fi
fi
promtool_version=$("$promtool" --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p')
[[ -n $promtool_version ]] || die "$promtool does not run"

curl -fsS --max-time 10 -o "$WORK/metrics" "$url" || die "GET $url failed"
families=$(grep -c '^# TYPE ' "$WORK/metrics" || true)
[[ $families -gt 0 ]] || die "GET $url: no metric family in the answer"

# Exit 3 for lint findings, 1 for a parse error; both print their findings.
status=0
"$promtool" check metrics < "$WORK/metrics" > "$WORK/findings" 2>&1 || status=$?
if [[ $status -ne 0 || -s $WORK/findings ]]; then
    cat "$WORK/findings" >&2
    die "promtool $promtool_version check metrics: findings in $url (exit $status)"
fi
log "promtool $promtool_version check metrics: $url is clean ($families families)"
