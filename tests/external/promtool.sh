#!/usr/bin/env bash
# tests/external/promtool.sh <relay-url>: Prometheus's own checker on a running relay's /metrics.
# `promtool check metrics` parses the exposition as Prometheus would and lints it (a family
# without # HELP, a counter not ending in _total, units not in base units or abbreviated, ...).
# Any finding fails, whether promtool exits non-zero or only prints it. /metrics takes no
# credentials (docs/operating.md, the contract), so the URL is the only argument.
#
# promtool: as deploy/validate.sh finds it (deploy/promtool-path.sh).
set -euo pipefail

usage="usage: $0 <relay-url>   (for example http://127.0.0.1:8080)"
[[ $# -eq 1 && -n $1 ]] || { echo "$usage" >&2; exit 2; }
url=${1%/}/metrics

log() { printf '[promtool] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

promtool=$("$(dirname "$0")/../../deploy/promtool-path.sh")
promtool_version=$("$promtool" --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p')

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
