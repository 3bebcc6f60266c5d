#!/usr/bin/env bash
# bench/ab.sh: two relay binaries against each other, to measure one optimisation.
#
#   bash bench/ab.sh OLD_BINARY NEW_BINARY
#
# Same setup as bench/run.sh (fake Qikchat = nginx on one CPU with wrk; the relay under test
# alone on the other CPU; default configuration, JSON logs to a file), without nginx as a proxy.
# Alternating rounds (A B, B A, ...) of AB_DURATION seconds at AB_CONNS connections, then the
# median requests/s, relay CPU per request, one-connection p50/p99 of each, and B/A.
#
# Environment: AB_ROUNDS=6 AB_DURATION=6 AB_CONNS=64 AB_LAT_DURATION=3

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# -eq 2 && -x $1 && -x $2 ]] || {
    echo "usage: bash bench/ab.sh OLD_BINARY NEW_BINARY" >&2
    exit 2
}
BIN_A=$(realpath "$1")
BIN_B=$(realpath "$2")
ROUNDS=${AB_ROUNDS:-6}
DURATION=${AB_DURATION:-6}
LAT_DURATION=${AB_LAT_DURATION:-3}
CONNS=${AB_CONNS:-64}
for tool in nginx wrk taskset python3 curl; do
    command -v "$tool" > /dev/null || [[ $tool == nginx && -x /usr/sbin/nginx ]] ||
        { echo "ab.sh: $tool is missing (bash bench/run.sh installs nginx and wrk)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
PYTHON=$(python3 -c 'import sys; print(sys.executable)')

read -r -a CPUS < <("$PYTHON" -c 'import os; print(*sorted(os.sched_getaffinity(0)))')
((${#CPUS[@]} >= 2)) || { echo "ab.sh: needs 2 CPUs" >&2; exit 1; }
ON_RELAY=(taskset -c "${CPUS[0]}")
ON_LOAD=(taskset -c "${CPUS[1]}")

WORK=$(mktemp -d /tmp/qikchat-ab.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2> /dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/fake.sh
source "$BENCH_DIR/fake.sh"
read -r FAKE_PORT PORT_A PORT_B < <(free_ports 3)
mkdir -p "$WORK/fake"
fake_conf "$WORK/fake" "$FAKE_PORT" > "$WORK/fake/nginx.conf"
"${ON_LOAD[@]}" "$NGINX" -p "$WORK/fake" -c "$WORK/fake/nginx.conf" -e "$WORK/fake/error.log" \
    -g 'daemon off;' &
PIDS+=($!)
start() { # $1: binary, $2: port, $3: log
    "${ON_RELAY[@]}" env -i "PATH=$PATH" "QIKCHAT_API_KEY=$KEY" \
        "QIKCHAT_BASE_URL=http://127.0.0.1:$FAKE_PORT" "RELAY_CLIENTS=bench:$TOKEN" \
        "RELAY_LISTEN_ADDR=127.0.0.1:$2" "$1" >> "$3" 2>&1 &
    PIDS+=($!)
    STARTED=$!
}
start "$BIN_A" "$PORT_A" "$WORK/a.log"
PID_A=$STARTED
start "$BIN_B" "$PORT_B" "$WORK/b.log"
PID_B=$STARTED
for port in "$PORT_A" "$PORT_B"; do
    for i in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2> /dev/null && break
        ((i < 100)) || { echo "ab.sh: relay on :$port did not start" >&2; exit 1; }
        sleep 0.05
    done
done

ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
HZ=$(getconf CLK_TCK)
RESULTS=$WORK/ab.tsv
one() { # $1: A|B, $2: round, $3: test, $4: conns, $5: seconds
    local pid port t0 t1 line
    if [[ $1 == A ]]; then pid=$PID_A port=$PORT_A; else pid=$PID_B port=$PORT_B; fi
    t0=$(ticks "$pid")
    line=$(timeout $(($5 + 30)) "${ON_LOAD[@]}" wrk -t1 -c"$4" -d"$5s" --timeout 5s \
        -s "$BENCH_DIR/send.lua" "http://127.0.0.1:$port/send" | grep '^BENCHJSON ' | sed 's/^BENCHJSON //')
    t1=$(ticks "$pid")
    : > "$WORK/$(tr AB ab <<< "$1").log"
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" $(((t1 - t0) * 1000 / HZ)) "$line" >> "$RESULTS"
}
one A 0 warmup "$CONNS" 2
one B 0 warmup "$CONNS" 2
for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then order=(A B); else order=(B A); fi
    for x in "${order[@]}"; do one "$x" "$round" thr "$CONNS" "$DURATION"; done
    for x in "${order[@]}"; do one "$x" "$round" lat1 1 "$LAT_DURATION"; done
    echo "[ab] round $round/$ROUNDS done" >&2
done
HWM_A=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$PID_A/status")
HWM_B=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$PID_B/status")

"$PYTHON" - "$RESULTS" "$BIN_A" "$BIN_B" "$HWM_A" "$HWM_B" << 'EOF'
import json, statistics as st, sys
path, a, b, hwm_a, hwm_b = sys.argv[1:]
rows = []
for line in open(path):
    who, rnd, test, cpu_ms, js = line.rstrip("\n").split("\t")
    rows.append((who, int(rnd), test, int(cpu_ms), json.loads(js)))
rows = [r for r in rows if r[1] >= 1]
def m(who, test, f):
    return st.median(f(r) for r in rows if r[0] == who and r[2] == test)
rps = lambda r: r[4]["requests"] / (r[4]["duration_us"] / 1e6)
cpu = lambda r: r[3] * 1000 / r[4]["requests"]
ratios = []
for rnd in sorted({r[1] for r in rows}):
    x = {r[0]: rps(r) for r in rows if r[1] == rnd and r[2] == "thr"}
    ratios.append(x["B"] / x["A"])
print(f"A = {a}\nB = {b}\n")
print("| | A | B | B/A |\n|---|---|---|---|")
ra, rb = m("A", "thr", rps), m("B", "thr", rps)
print(f"| requests/s | {ra:,.0f} | {rb:,.0f} | {st.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f}) |")
ca, cb = m("A", "thr", cpu), m("B", "thr", cpu)
print(f"| relay CPU per request | {ca:.1f} µs | {cb:.1f} µs | {cb / ca:.3f} |")
for p in ("p50", "p99"):
    la, lb = m("A", "lat1", lambda r: r[4][p + "_us"]), m("B", "lat1", lambda r: r[4][p + "_us"])
    print(f"| one connection {p} | {la / 1000:.3f} ms | {lb / 1000:.3f} ms | {lb / la:.3f} |")
print(f"| peak RSS | {int(hwm_a) / 1000:.1f} MB | {int(hwm_b) / 1000:.1f} MB | |")
EOF
